"""A synthetic occlusion benchmark with exact amodal ground truth (OccludedVehicles/KINS-like).

Each scene is a real photo background with several vehicle-like instances (5 classes, see
:mod:`blade.data.shapes`) that occlude each other in a random depth order, plus optional
unannotated occluders ("clutter": white, noise, texture, object cut-out) pasted in front of
everything with hard masks, as OccludedPASCAL3D+/OccludedVehicles does.

How the level mix is controlled: instances are placed front to back, so when an instance is
placed, everything that will ever cover it is already on the canvas (``front``). For each
instance the generator picks the FG level that is furthest below its target share (over all
evaluated instances generated so far in the split), then tries ``placement_trials`` positions
(half of them near already-placed pixels) and keeps the first whose occlusion rate falls in
that level, or else the closest one. Rates are exact pixel counts:
``occlude_rate = 1 - |visible| / |amodal|``.

Levels (paper / Bayesian-Amodal KINS bins): FG-0 = 0, FG-1 = (0, 0.3], FG-2 = (0.3, 0.6],
FG-3 = (0.6, 0.9]; an instance over 90 % occluded is annotated but not evaluated
(``fg_level = -1``); an instance with nothing visible is dropped (no annotator can box it).
BG level = share of the background (outside every annotated amodal mask) covered by clutter:
BG-0 = 0, BG-1 = (0, 0.2], BG-2 = (0.2, 0.4], BG-3 = (0.4, 1].

CLI::

    python -m blade.data.synthetic --out data/synthetic --train 2000 --val 300 --seed 0

writes ``DIR/train.json``, ``DIR/val.json`` (COCOA-cls schema, one record per instance, plus
``visible_bbox``, ``depth_order``, ``fg_level``, ``evaluated``) and PNGs in ``DIR/<split>/``.
The same seed gives the same files (same package versions); train and val use independent
random streams, so changing ``--train`` does not change the val split. A folder that already
holds a generated split is refused unless ``--overwrite`` (which first deletes that split's JSON
and scene PNGs, so no stale image stays); ``--train 0`` or ``--val 0`` leaves a split out. ``--digest`` prints what a folder holds
(``content_digest``), to compare two machines' benchmarks without moving them.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import re
import time
import zlib
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from .assets import load_assets, random_crop
from .shapes import CATEGORY_IDS, CLASS_NAMES, CLASSES, render_silhouette

FORMAT_VERSION = 1
FG_LEVEL_NAMES = ("FG-0", "FG-1", "FG-2", "FG-3")
BG_LEVEL_NAMES = ("BG-0", "BG-1", "BG-2", "BG-3")
FG_UPPER = (0.0, 0.3, 0.6, 0.9)  # level k holds FG_UPPER[k-1] < rate <= FG_UPPER[k]
BG_UPPER = (0.0, 0.2, 0.4, 1.0)
SPLITS = ("train", "val")
SCENE_FILE = re.compile(r"\d{6}\.png")  # names of the scene images write_split writes


def fg_level(rate: float) -> int:
    """Occlusion rate -> FG level 0..3, or -1 (over 90 % occluded: not evaluated)."""
    for k, hi in enumerate(FG_UPPER):
        if rate <= hi:
            return k
    return -1


def bg_level(rate: float) -> int:
    """Share of background covered by clutter -> BG level 0..3."""
    for k, hi in enumerate(BG_UPPER):
        if rate <= hi:
            return k
    return 3


@dataclass
class SyntheticConfig:
    image_size: int = 256  # scenes are square, image_size x image_size pixels
    min_instances: int = 3  # instances tried per scene (fully hidden ones are dropped)
    max_instances: int = 6
    min_width: float = 0.22  # instance amodal width as a fraction of image_size
    max_width: float = 0.55
    aspect_jitter: float = 0.15  # relative jitter of each class's width/height ratio
    level_mix: tuple = (0.25, 0.25, 0.25, 0.25)  # target share of FG-0..FG-3 (evaluated)
    placement_trials: int = 24  # positions tried per instance to hit its target FG level
    bg_mix: tuple = (0.5, 0.3, 0.15, 0.05)  # probability of targeting BG-0..BG-3 per image
    max_clutter: int = 3  # unannotated occluders per cluttered image (1..max_clutter)
    clutter_kinds: tuple = ("white", "noise", "texture", "object")  # OccludedVehicles types
    classes: tuple = CLASS_NAMES  # subset of blade.data.shapes.CLASS_NAMES to draw

    def __post_init__(self):
        from ..utils import check_float, check_int

        check_int(self, "image_size", 32)
        for name in ("min_instances", "placement_trials", "max_clutter"):
            check_int(self, name, 1)
        for name in ("min_width", "max_width", "aspect_jitter"):
            check_float(self, name, 0.0, 1.0)
        if not 32 <= self.image_size <= 4096:
            raise ValueError(f"image_size must be in [32, 4096], got {self.image_size}")
        if not 1 <= self.min_instances <= self.max_instances:
            raise ValueError("need 1 <= min_instances <= max_instances, got "
                             f"{self.min_instances}, {self.max_instances}")
        if not 0 < self.min_width <= self.max_width <= 1:
            raise ValueError("need 0 < min_width <= max_width <= 1")
        for name in ("level_mix", "bg_mix"):
            mix = tuple(float(x) for x in getattr(self, name))
            if (len(mix) != 4 or not all(math.isfinite(x) and x >= 0 for x in mix)
                    or abs(sum(mix) - 1) > 1e-6):
                raise ValueError(f"{name} (--{name.replace('_', '-')}) must be 4 non-negative "
                                 f"shares summing to 1, got {mix}")
            setattr(self, name, mix)
        unknown = set(self.classes) - set(CLASS_NAMES)
        if unknown or not self.classes:
            raise ValueError(f"classes must be a non-empty subset of {CLASS_NAMES}, "
                             f"unknown: {sorted(unknown)}")
        bad = set(self.clutter_kinds) - {"white", "noise", "texture", "object"}
        if bad:
            raise ValueError(f"unknown clutter kinds {sorted(bad)}")
        self.classes, self.clutter_kinds = tuple(self.classes), tuple(self.clutter_kinds)


@dataclass
class Instance:
    category: str  # class name (blade.data.shapes)
    amodal: np.ndarray  # bool [H,W] complete shape
    visible: np.ndarray  # bool [H,W] unoccluded part
    depth_order: int  # 0 = frontmost annotated instance

    @property
    def occlude_rate(self) -> float:
        return 1.0 - float(self.visible.sum()) / float(self.amodal.sum())


@dataclass
class Scene:
    image: np.ndarray  # uint8 [H,W,3]
    instances: list = field(default_factory=list)  # of Instance, front to back
    clutter: np.ndarray | None = None  # bool [H,W] union of unannotated occluders
    bg_rate: float = 0.0  # share of background pixels covered by clutter


# palette per material (0 unused, BODY is per instance, WINDOW, WHEEL, TRIM scaled from body)
_WINDOW_RGB = np.array([60.0, 72.0, 92.0], np.float32)
_WHEEL_RGB = np.array([30.0, 30.0, 33.0], np.float32)


class SceneGenerator:
    """Draws scenes one after another from one random stream; keeps the FG level counts."""

    def __init__(self, cfg: SyntheticConfig | None = None, seed: int = 0, stream: int = 0):
        self.cfg = cfg or SyntheticConfig()
        self.rng = np.random.default_rng([int(seed), int(stream)])
        self.assets = load_assets(self.cfg.image_size)
        self.level_counts = np.zeros(4, np.int64)  # evaluated instances per FG level so far

    # -- clutter -----------------------------------------------------------------------
    def _clutter(self, target_bg: int):
        rng, S = self.rng, self.cfg.image_size
        lo, hi = (0.0,) + BG_UPPER[:-1], BG_UPPER
        share = rng.uniform(lo[target_bg], min(hi[target_bg], 0.6))
        n = int(rng.integers(1, self.cfg.max_clutter + 1))
        layers = []
        for _ in range(n):
            area = share * S * S * 0.7 / n  # ~70 % of the image is background
            aspect = rng.uniform(0.5, 2.0)
            h = min(max(round(float(np.sqrt(area / aspect))), 6), S)
            w = min(max(round(h * aspect), 6), S)
            kind = self.cfg.clutter_kinds[int(rng.integers(len(self.cfg.clutter_kinds)))]
            if kind == "object":
                m = np.asarray(Image.fromarray(self.assets.horse).resize((w, h), Image.NEAREST))
            elif rng.random() < 0.5:
                m = np.ones((h, w), bool)
            else:  # ellipse
                yy, xx = np.mgrid[:h, :w]
                m = ((yy + 0.5 - h / 2) / (h / 2)) ** 2 + ((xx + 0.5 - w / 2) / (w / 2)) ** 2 <= 1
            if kind == "white":
                rgb = np.full((h, w, 3), 255, np.uint8)
            elif kind == "noise":
                rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            elif kind == "texture":
                tex = random_crop(rng, self.assets.textures[int(rng.integers(3))], h, w)
                rgb = np.clip(tex[..., None] * rng.uniform(70, 190, 3), 0, 255).astype(np.uint8)
            else:
                bg = self.assets.backgrounds[int(rng.integers(len(self.assets.backgrounds)))]
                rgb = random_crop(rng, bg, h, w)
            y, x = int(rng.integers(0, S - h + 1)), int(rng.integers(0, S - w + 1))
            layers.append((y, x, m, rgb))
        return layers

    # -- instances ---------------------------------------------------------------------
    def _target_level(self) -> int:
        total = self.level_counts.sum() + 1
        deficit = np.asarray(self.cfg.level_mix) * total - self.level_counts
        best = np.flatnonzero(deficit >= deficit.max() - 1e-9)
        return int(best[self.rng.integers(len(best))])

    def _place(self, shape: np.ndarray, front: np.ndarray, target: int):
        """Pick (y, x) for ``shape`` so its occlusion by ``front`` falls in ``target``."""
        rng, S = self.rng, self.cfg.image_size
        h, w = shape.shape
        area = float(shape.sum())
        fy = fx = None
        if target > 0:
            fy, fx = np.nonzero(front)
            if len(fy) == 0:
                fy = fx = None
        lo = FG_UPPER[target - 1] if target > 0 else -1.0
        hi = FG_UPPER[target]
        best, best_score = None, np.inf
        for t in range(self.cfg.placement_trials):
            if fy is not None and t % 2 == 0:  # aim at already-placed pixels
                k = int(rng.integers(len(fy)))
                y = min(max(int(fy[k] - rng.integers(0, h)), 0), S - h)
                x = min(max(int(fx[k] - rng.integers(0, w)), 0), S - w)
            else:
                y, x = int(rng.integers(0, S - h + 1)), int(rng.integers(0, S - w + 1))
            rate = np.count_nonzero(shape & front[y:y + h, x:x + w]) / area
            if lo < rate <= hi or (target == 0 and rate == 0):
                return y, x
            score = (lo - rate if rate <= lo else rate - hi) + (1.0 if rate > 0.9 else 0.0)
            if score < best_score:
                best, best_score = (y, x), score
        return best

    def __call__(self) -> Scene:
        cfg, rng, S = self.cfg, self.rng, self.cfg.image_size
        bgs = self.assets.backgrounds
        image = random_crop(rng, bgs[int(rng.integers(len(bgs)))], S, S).copy()
        front = np.zeros((S, S), bool)  # everything in front of the next instance
        target_bg = int(rng.choice(4, p=cfg.bg_mix))
        layers = self._clutter(target_bg) if target_bg > 0 else []
        clutter = np.zeros((S, S), bool)
        for y, x, m, _ in layers:
            clutter[y:y + m.shape[0], x:x + m.shape[1]] |= m
        front |= clutter

        placed = []  # (name, y, x, material patch, visible patch), front to back
        for _ in range(int(rng.integers(cfg.min_instances, cfg.max_instances + 1))):
            target = self._target_level()
            name = cfg.classes[int(rng.integers(len(cfg.classes)))]
            aspect = CLASSES[name][1] * rng.uniform(1 - cfg.aspect_jitter, 1 + cfg.aspect_jitter)
            wfrac = rng.uniform(cfg.min_width, cfg.max_width) * (0.75 if target == 3 else 1.0)
            w = min(max(round(wfrac * S), 8), S)
            h = min(max(round(w / aspect), 8), S)
            patch = render_silhouette(name, w, h, flip=bool(rng.random() < 0.5))
            shape = patch > 0
            y, x = self._place(shape, front, target)
            visible = shape & ~front[y:y + h, x:x + w]
            if not visible.any():
                continue  # fully hidden: nobody could annotate it
            placed.append((name, y, x, patch, visible))
            front[y:y + h, x:x + w] |= shape
            level = fg_level(1.0 - visible.sum() / shape.sum())
            if level >= 0:
                self.level_counts[level] += 1

        # paint back to front, clutter last (it is in front of everything)
        for _name, y, x, patch, _ in reversed(placed):
            h, w = patch.shape
            hue = rng.random()
            rgb = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.45, 0.95),
                                               rng.uniform(0.45, 0.95)), np.float32) * 255
            palette = np.stack([rgb, rgb, _WINDOW_RGB, _WHEEL_RGB, 0.45 * rgb])  # [5,3]
            tex = random_crop(rng, self.assets.textures[int(rng.integers(
                len(self.assets.textures)))], h, w)
            app = np.clip(palette[patch] * tex[..., None], 0, 255).astype(np.uint8)
            region = image[y:y + h, x:x + w]
            region[patch > 0] = app[patch > 0]
        for y, x, m, rgb in layers:
            region = image[y:y + m.shape[0], x:x + m.shape[1]]
            region[m] = rgb[m]

        instances, union = [], np.zeros((S, S), bool)
        for depth, (name, y, x, patch, visible) in enumerate(placed):
            amodal = np.zeros((S, S), bool)
            amodal[y:y + patch.shape[0], x:x + patch.shape[1]] = patch > 0
            vis = np.zeros((S, S), bool)
            vis[y:y + patch.shape[0], x:x + patch.shape[1]] = visible
            instances.append(Instance(name, amodal, vis, depth))
            union |= amodal
        background = ~union
        bg_rate = float((clutter & background).sum()) / max(int(background.sum()), 1)
        return Scene(image, instances, clutter, bg_rate)


# -- COCO/COCOA-cls export ---------------------------------------------------------------
def categories() -> list:
    return [{"id": CATEGORY_IDS[n], "name": n, "supercategory": "vehicle"} for n in CLASS_NAMES]


def scene_records(scene: Scene, image_id: int, first_ann_id: int, file_name: str):
    """One scene -> (image record, [annotation records]) in the kit's COCOA-cls schema."""
    S = scene.image.shape[0]
    img = {"id": image_id, "file_name": file_name, "height": S, "width": scene.image.shape[1],
           "bg_rate": round(scene.bg_rate, 6), "bg_level": bg_level(scene.bg_rate)}
    anns = []
    n = len(scene.instances)
    if n:  # one pycocotools call for all 3n masks: amodal, visible, invisible per instance
        stack = np.empty(scene.image.shape[:2] + (3 * n,), np.uint8, order="F")
        for k, inst in enumerate(scene.instances):
            stack[..., 3 * k] = inst.amodal
            stack[..., 3 * k + 1] = inst.visible
            stack[..., 3 * k + 2] = inst.amodal & ~inst.visible
        rles = mask_utils.encode(stack)
        boxes = mask_utils.toBbox(rles)  # [3n,4] XYWH, COCO convention
        areas = mask_utils.area(rles)
    for k, inst in enumerate(scene.instances):
        amodal, visible, invisible = (
            {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}
            for r in rles[3 * k:3 * k + 3])
        level = fg_level(inst.occlude_rate)
        anns.append({
            "id": first_ann_id + k, "image_id": image_id,
            "category_id": CATEGORY_IDS[inst.category], "iscrowd": 0,
            "bbox": [float(v) for v in boxes[3 * k]], "area": int(areas[3 * k]),
            "segmentation": amodal, "visible_mask": visible, "invisible_mask": invisible,
            "occlude_rate": round(inst.occlude_rate, 6),
            "visible_bbox": [float(v) for v in boxes[3 * k + 1]],
            "visible_area": int(areas[3 * k + 1]),
            "depth_order": inst.depth_order, "fg_level": level, "evaluated": level >= 0,
        })
    return img, anns


def write_split(out_dir: str, split: str, n: int, seed: int = 0,
                cfg: SyntheticConfig | None = None, progress: bool = True) -> dict:
    """Generate ``n`` scenes of ``split`` into ``out_dir``; returns the JSON dictionary."""
    from tqdm import tqdm

    cfg = cfg or SyntheticConfig()
    gen = SceneGenerator(cfg, seed, stream=SPLITS.index(split) if split in SPLITS else
                         1000 + sum(map(ord, split)))
    os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    images, anns = [], []
    for i in tqdm(range(n), desc=f"{split:5s}", disable=not progress, unit="scene"):
        scene = gen()
        fname = f"{i:06d}.png"
        Image.fromarray(scene.image).save(os.path.join(out_dir, split, fname), compress_level=1,
                                          compress_type=zlib.Z_RLE)  # lossless, fastest here
        img, recs = scene_records(scene, i + 1, len(anns) + 1, fname)
        images.append(img)
        anns.extend(recs)
    data = {"info": {"description": "BLADE kit synthetic occlusion benchmark",
                     "generator": "blade.data.synthetic", "format_version": FORMAT_VERSION,
                     "seed": seed, "split": split, "config": asdict(cfg)},
            "images": images, "annotations": anns, "categories": categories()}
    with open(os.path.join(out_dir, f"{split}.json"), "w") as f:
        json.dump(data, f, separators=(",", ":"))
    return data


def level_summary(annotations: list) -> dict:
    """Counts and shares of evaluated instances per FG level, plus the not-evaluated count."""
    levels = np.array([a["fg_level"] for a in annotations], dtype=int)
    ev = levels[levels >= 0]
    counts = {FG_LEVEL_NAMES[k]: int((ev == k).sum()) for k in range(4)}
    shares = {k: (v / len(ev) if len(ev) else 0.0) for k, v in counts.items()}
    return {"counts": counts, "shares": shares, "not_evaluated": int((levels < 0).sum()),
            "instances": int(len(levels))}


def content_digest(out_dir: str, splits=SPLITS) -> dict:
    """What a generated benchmark holds, as short SHA-256 digests per split: ``json`` (the
    annotation file's bytes), ``pixels`` (every scene decoded, names and arrays) and ``png``
    (the encoded files' bytes). Two machines with the same ``json`` and ``pixels`` hold the same
    benchmark even where their zlib builds encode the PNGs differently (``png`` differs)."""
    import hashlib

    out = {}
    for split in splits:
        files = existing_split_files(out_dir, split)
        if not files:
            continue
        h = {k: hashlib.sha256() for k in ("json", "pixels", "png")}
        for path in files:
            with open(path, "rb") as f:
                raw = f.read()
            if path.endswith(".json"):
                h["json"].update(raw)
                continue
            name = os.path.basename(path).encode()
            h["png"].update(name + raw)
            with Image.open(path) as im:
                arr = np.asarray(im)
            h["pixels"].update(name + str(arr.shape).encode() + arr.tobytes())
        out[split] = {k: v.hexdigest()[:16] for k, v in h.items()}
        if not files[0].endswith(".json"):  # scenes without their annotation file
            out[split]["json"] = "missing"
    return out


def existing_split_files(out_dir: str, split: str) -> list:
    """The files of a generated split in ``out_dir``: its JSON and its scene PNGs."""
    found = [os.path.join(out_dir, f"{split}.json")] if os.path.isfile(
        os.path.join(out_dir, f"{split}.json")) else []
    folder = os.path.join(out_dir, split)
    if os.path.isdir(folder):
        found += [os.path.join(folder, n) for n in sorted(os.listdir(folder))
                  if SCENE_FILE.fullmatch(n)]
    return found


def prepare_out(out_dir: str, splits: list, overwrite: bool) -> int:
    """Refuse to write over a generated dataset unless ``overwrite``; with it, delete the old
    files of the splits about to be written (so no stale PNG stays). Returns files removed."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"{out_dir}: --out is a file; give a folder for the dataset")
    found = [p for split in splits for p in existing_split_files(out_dir, split)]
    if found and not overwrite:
        raise ValueError(f"{out_dir}: already holds a generated dataset ({found[0]}, "
                         f"{len(found)} files of the splits {splits}); give another --out, or "
                         f"--overwrite to replace it")
    for path in found:
        os.remove(path)
    return len(found)


def main(argv=None):
    """``python -m blade.data.synthetic``; errors are one line (``--debug``: the traceback)."""
    from ..utils import run_cli

    return run_cli(_main, argv)


def _main(argv):
    from ..utils import CLIParser, add_dataclass_args, dataclass_from_args, int_at_least

    p = CLIParser(prog="python -m blade.data.synthetic",
                  description="Generate the BLADE synthetic occlusion benchmark.")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--train", type=int_at_least(0), default=2000,
                   help="number of training scenes (0: do not write the split)")
    p.add_argument("--val", type=int_at_least(0), default=300,
                   help="number of validation scenes (0: do not write the split)")
    p.add_argument("--seed", type=int_at_least(0), default=0,
                   help="random seed (same seed, same files)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a dataset already in --out (its JSON and PNGs are deleted)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--digest", action="store_true", help=(
        "generate nothing: print digests of the benchmark already in --out (per split: the "
        "JSON's bytes, the decoded pixels, the PNGs' bytes), to check that two machines hold "
        "the same one"))
    add_dataclass_args(p, SyntheticConfig)
    args = p.parse_args(argv)
    cfg = dataclass_from_args(SyntheticConfig, args)  # checks every field
    if args.digest:
        found = content_digest(args.out)
        if not found:
            p.error(f"--digest: {args.out} holds no generated split (train.json, val.json)")
        for split, d in found.items():
            print(f"{split}: " + " ".join(f"{k} {v}" for k, v in d.items()))
        return
    splits = [(split, n) for split, n in (("train", args.train), ("val", args.val)) if n > 0]
    if not splits:
        p.error("--train and --val are both 0: nothing to generate")
    removed = prepare_out(args.out, [s for s, _ in splits], args.overwrite)
    if removed:
        print(f"--overwrite: removed {removed} files of the previous dataset in {args.out}")
    t0 = time.perf_counter()
    for split, n in splits:
        data = write_split(args.out, split, n, args.seed, cfg, progress=not args.quiet)
        s = level_summary(data["annotations"])
        shares = ", ".join(f"{k} {v:.0%}" for k, v in s["shares"].items())
        bg = np.bincount([im["bg_level"] for im in data["images"]], minlength=4)
        print(f"{split}: {n} scenes, {s['instances']} instances ({s['not_evaluated']} over 90% "
              f"occluded, not evaluated); {shares}; images per BG level {bg.tolist()} -> "
              f"{os.path.join(args.out, split + '.json')}")
    print(f"done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
