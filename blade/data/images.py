"""Reading images: any file Pillow opens, as 8-bit RGB, or one clear refusal naming the file.

* 8-bit RGB is used as it is; greyscale (``L``, ``1``), palette (``P``), RGBA, LA, CMYK and
  YCbCr images are converted to RGB (an alpha channel is dropped);
* 16-bit greyscale (``I;16*``, e.g. a 16-bit PNG or TIFF) is scaled to 8 bits (65535 -> 255),
  not clipped; 16-bit RGB files reach Pillow as 8-bit RGB already;
* 32-bit integer (``I``) and floating-point (``F``) pixels have no agreed range and are refused
  (convert them to 8 or 16 bits), as are modes Pillow cannot convert to RGB;
* an empty, corrupt or truncated file, or one over Pillow's decompression-bomb limit, is an
  :class:`ImageReadError` naming the file.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image


class ImageReadError(ValueError):
    """An image file that cannot be read as RGB; the message names the file and the reason."""


def to_rgb8(pil: Image.Image, name: str = "<image>") -> np.ndarray:
    """A loaded Pillow image -> uint8 [H,W,3] (see the module docstring for the rules)."""
    if pil.mode.startswith("I;16"):
        grey = np.asarray(pil).astype(np.float32)
        grey = np.round(grey / 257.0).astype(np.uint8)  # 0..65535 -> 0..255
        return np.repeat(grey[..., None], 3, axis=2)
    if pil.mode in ("I", "F"):
        kind = "32-bit integer" if pil.mode == "I" else "floating-point"
        raise ImageReadError(f"{name}: {kind} pixels (mode {pil.mode}) have no agreed range; "
                             f"save the image with 8 or 16 bits per channel")
    if pil.mode != "RGB":
        pil = pil.convert("RGB")
    return np.asarray(pil).copy()


def read_rgb(path: str) -> np.ndarray:
    """The image file at ``path`` as uint8 [H,W,3]. ``FileNotFoundError`` if it is missing,
    :class:`ImageReadError` if it cannot be read."""
    try:
        with Image.open(path) as pil:
            pil.load()  # decode now: a truncated file fails here, not later
            return to_rgb8(pil, path)
    except (FileNotFoundError, ImageReadError):
        raise
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: refused as a possible decompression bomb ({e})") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error,
            zlib.error) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageReadError(f"{path}: cannot read the image ({reason})") from e
