"""Real photographs and textures that ship inside PyPI wheels, used by the synthetic benchmark.

Nothing is downloaded: every file below is inside an installed wheel (see
shared/reference/data-notes.md, section 2).

* Backgrounds (real photos): scikit-image ``astronaut``, ``coffee``, ``chelsea``, ``rocket``,
  ``motorcycle_left``, ``motorcycle_right`` (CC0 / public domain per their docstrings) and
  scikit-learn ``china.jpg``, ``flower.jpg`` (CC BY 2.0, authors credited in
  ``sklearn/datasets/images/README.txt``).
* Textures (grey, CC0): scikit-image ``brick``, ``grass``, ``gravel``, plus the luminance of the
  photos above; they modulate instance colours and fill "texture" occluders.
* Object cut-out: scikit-image ``horse`` (a CC0 binary silhouette) filled with a photo crop.

Assets are loaded once per process and per image size (``load_assets``). The synthetic files are
identical for the same seed as long as these packages ship the same images.

To make the same benchmark on a machine where these packages are missing or of other versions
(a GPU machine with its own image, say), ``python -m blade.data.assets --export DIR`` copies
the twelve files, byte for byte, into DIR (about 4 MB); with the environment variable
``BLADE_ASSETS_DIR=DIR`` every asset is read from there instead of the wheels, and the
benchmark comes out identical (same seed, same files; numpy and Pillow, which draw and resize,
must also behave as here: compare a digest of the files where that matters).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

BACKGROUND_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left",
                    "motorcycle_right", "china", "flower")
TEXTURE_NAMES = ("brick", "grass", "gravel")


@dataclass(frozen=True)
class Assets:
    backgrounds: tuple  # uint8 [h,w,3] photos, shorter side >= the scene size
    textures: tuple  # float32 [h,w] luminance, mean 1.0, sides >= the scene size
    horse: np.ndarray  # bool [328,400] silhouette (True = horse)


ASSETS_ENV = "BLADE_ASSETS_DIR"  # a folder written by --export, read instead of the wheels
SKIMAGE_FILES = BACKGROUND_NAMES[:6] + TEXTURE_NAMES + ("horse",)
SKLEARN_FILES = ("china", "flower")


def source_file(name: str) -> str:
    """The path of asset ``name``: in ``$BLADE_ASSETS_DIR`` when that is set, else in the
    scikit-image or scikit-learn wheel (never a download cache)."""
    import os

    folder = os.environ.get(ASSETS_ENV)
    if not folder:
        if name in SKLEARN_FILES:
            import sklearn.datasets

            folder = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
        else:
            import skimage

            folder = os.path.join(os.path.dirname(skimage.__file__), "data")
    for ext in (".png", ".jpg"):
        path = os.path.join(folder, name + ext)
        if os.path.exists(path):
            return path
    where = f"${ASSETS_ENV} ({folder})" if os.environ.get(ASSETS_ENV) else folder
    raise FileNotFoundError(f"asset {name!r} (.png or .jpg) is not in {where}")


def export_assets(out: str) -> list:
    """Copy every asset file, unchanged, into ``out`` (for ``BLADE_ASSETS_DIR``); the paths.

    A file already there with the same bytes is kept (exporting twice is harmless); one with
    other bytes is never replaced: the export stops before copying anything and names it."""
    import filecmp
    import os
    import shutil

    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"{out}: --export is a file; give a folder (new or holding an export)")
    pairs = [(src, os.path.join(out, os.path.basename(src)))
             for src in map(source_file, SKIMAGE_FILES + SKLEARN_FILES)]
    for src, dst in pairs:
        if os.path.isdir(dst) or (os.path.exists(dst) and not filecmp.cmp(src, dst, shallow=False)):
            raise ValueError(f"{dst}: exists and is not the asset {os.path.basename(src)}; "
                             f"export into another folder (nothing was written)")
    os.makedirs(out, exist_ok=True)
    for src, dst in pairs:
        if not os.path.exists(dst):  # same bytes already there: out = $BLADE_ASSETS_DIR too
            shutil.copyfile(src, dst)
    return [dst for _, dst in pairs]


def _skimage_file(name: str) -> np.ndarray:
    """Read a file that ships in the scikit-image wheel (or ``$BLADE_ASSETS_DIR``)."""
    return np.asarray(Image.open(source_file(name)))


def _load_photo(name: str) -> np.ndarray:
    if name in SKLEARN_FILES:
        return np.asarray(Image.open(source_file(name)).convert("RGB"))
    img = _skimage_file(name)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3])


def _at_least(img: np.ndarray, size: int) -> np.ndarray:
    """Resize (bicubic) so that the shorter side is at least ``size``; never shrinks."""
    h, w = img.shape[:2]
    if min(h, w) >= size:
        return img
    s = size / min(h, w)
    nw, nh = max(size, int(np.ceil(w * s))), max(size, int(np.ceil(h * s)))
    mode = "L" if img.ndim == 2 else "RGB"
    return np.asarray(Image.fromarray(img, mode).resize((nw, nh), Image.BICUBIC))


@functools.lru_cache(maxsize=4)
def load_assets(size: int = 256) -> Assets:
    """All backgrounds and textures, prepared for scenes of ``size`` x ``size`` pixels."""
    photos = [_at_least(_load_photo(n), size) for n in BACKGROUND_NAMES]
    greys = [_at_least(_skimage_file(n), size) for n in TEXTURE_NAMES]
    greys += [p.mean(axis=2).astype(np.uint8) for p in photos[:4]]
    textures = []
    for g in greys:
        t = g.astype(np.float64)
        t = 1.0 + 0.35 * (t - t.mean()) / (t.std() + 1e-6)  # contrast-normalised around 1
        t = np.round(np.clip(t, 0.4, 1.6) * 256) / 256  # quantised: same values on any CPU
        textures.append(t.astype(np.float32))
    horse = _skimage_file("horse")
    horse = ~(horse if horse.ndim == 2 else horse[..., 0]).astype(bool)
    return Assets(tuple(photos), tuple(textures), horse)


def random_crop(rng: np.random.Generator, img: np.ndarray, h: int, w: int) -> np.ndarray:
    """A random h x w crop (views, no copy) with a random horizontal flip."""
    y = int(rng.integers(0, img.shape[0] - h + 1))
    x = int(rng.integers(0, img.shape[1] - w + 1))
    crop = img[y:y + h, x:x + w]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def main(argv=None):
    """``python -m blade.data.assets --export DIR``; errors are one line."""
    from ..utils import run_cli

    return run_cli(_main, argv)


def _main(argv):
    from ..utils import CLIParser

    p = CLIParser(prog="python -m blade.data.assets", description=(
        "Copy the benchmark's image assets out of the scikit-image and scikit-learn wheels, "
        f"for machines without them (then set {ASSETS_ENV} to that folder)."))
    p.add_argument("--export", required=True, metavar="DIR", help="folder to write the files to")
    args = p.parse_args(argv)
    files = export_assets(args.export)
    print(f"wrote {len(files)} files to {args.export}; use them with {ASSETS_ENV}={args.export}")


if __name__ == "__main__":
    main()
