"""Mask encodings of the amodal datasets, decoded through pycocotools.

Accepts every form found in KINS, COCOA, COCOA-cls and D2SA files: polygon lists
(``[[x1, y1, x2, y2, ...], ...]``), COCOA's flat polygon (``[x1, y1, ...]``), uncompressed RLE
(``{"size": [h, w], "counts": [ints]}``) and compressed RLE (``counts`` a string). Every
encoding is validated once, when a file is read (in every mode): an RLE whose size disagrees
with the image, whose counts are not a valid run-length string or do not cover the image
exactly, a polygon with non-numbers, NaN/infinity or points outside the image raise
:class:`AnnotationError` naming the file and annotation (pycocotools would otherwise read past
its buffer or rasterize garbage).
"""

from __future__ import annotations

import numbers

import numpy as np
from pycocotools import mask as mask_utils


class AnnotationError(ValueError):
    """Bad annotation input; the message names the file, the record and what is wrong."""


def where(ann_file, ann_id, key=None) -> str:
    """Location string used in every data error message."""
    loc = f"{ann_file}: annotation id {ann_id}"
    return f"{loc}, key '{key}'" if key else loc


def _json_rle(rle: dict) -> dict:
    """pycocotools' RLE (bytes counts, numpy sizes) -> ``{"size": [H, W], "counts": str}``."""
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def encode(mask: np.ndarray) -> dict:
    """bool/uint8 [H,W] -> JSON-ready compressed RLE ``{"size": [H, W], "counts": str}``."""
    return _json_rle(mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8)))


def encode_many(masks: np.ndarray) -> list:
    """bool/uint8 [N,H,W] -> N RLEs as :func:`encode` gives them, from one pycocotools call (no
    Python loop over the masks: COCO AP encodes up to 100 detections per image and kind)."""
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(np.moveaxis(masks, 0, -1), dtype=np.uint8))
    return [_json_rle(r) for r in rles]


def is_number(value) -> bool:
    """An int or float (not a bool, not a string)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def rle_runs(counts: bytes, loc: str = "") -> np.ndarray:
    """Run lengths of a COCO compressed RLE string (pycocotools' ``rleFrString``, vectorized),
    as int64; ``AnnotationError`` for characters outside the format or a cut-off number.

    Each number is 5-bit groups (char - 48), low group first, bit 0x20 = more groups follow,
    bit 0x10 of the last group = negative; from the fourth run on, a number is the difference
    to the run two before."""
    c = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, np.int64)
    if c.min() < 0 or c.max() > 63:
        raise AnnotationError(f"{loc}: RLE counts is not a COCO compressed RLE string "
                              f"(characters outside '0'..'o')")
    end = (c & 0x20) == 0
    if not end[-1]:
        raise AnnotationError(f"{loc}: RLE counts string is cut off (its last number is "
                              f"incomplete)")
    ends = np.flatnonzero(end)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lens = ends - starts + 1
    if lens.max() > 7:  # 35 bits: more than any image has pixels
        raise AnnotationError(f"{loc}: RLE counts string holds a number too large for a mask")
    k = np.arange(c.size) - np.repeat(starts, lens)
    x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    x = np.where((c[ends] & 0x10) != 0, x - (np.int64(1) << (5 * lens)), x)
    runs = x.copy()
    for first in (1, 2):  # runs[m] = x[m] + runs[m - 2] from m = 3 on
        runs[first::2] = np.cumsum(x[first::2])
    return runs


def _check_runs(runs: np.ndarray, height: int, width: int, loc: str, what: str) -> None:
    if len(runs) and runs.min() < 0:
        raise AnnotationError(f"{loc}: {what} RLE has a negative run length")
    total = int(runs.sum())
    if total != height * width:
        raise AnnotationError(f"{loc}: {what} RLE counts sum to {total}, expected "
                              f"{height * width} ({height}x{width} pixels)")


def _rle_from_dict(segm: dict, height: int, width: int, loc: str) -> dict:
    """A COCO RLE dict, validated once (size, every run), -> compressed RLE."""
    if "counts" not in segm or "size" not in segm:
        raise AnnotationError(f"{loc}: RLE must have 'size' and 'counts', got keys "
                              f"{sorted(segm)}")
    size = segm["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(map(is_int, size))):
        raise AnnotationError(f"{loc}: RLE 'size' must be [height, width], got {size!r}")
    size = [int(s) for s in size]
    if size != [height, width]:
        raise AnnotationError(f"{loc}: RLE size {size} disagrees with the image size "
                              f"[{height}, {width}]")
    counts = segm["counts"]
    if isinstance(counts, list):
        if not all(map(is_int, counts)):
            raise AnnotationError(f"{loc}: uncompressed RLE counts must be integers")
        _check_runs(np.asarray(counts, np.int64), height, width, loc, "uncompressed")
        return mask_utils.frPyObjects({"size": size, "counts": [int(c) for c in counts]},
                                      height, width)
    if isinstance(counts, str):
        try:
            raw = counts.encode("ascii")
        except UnicodeEncodeError:
            raise AnnotationError(f"{loc}: RLE counts string has non-ASCII characters; it is "
                                  f"not a COCO compressed RLE") from None
        _check_runs(rle_runs(raw, loc), height, width, loc, "compressed")
        return {"size": size, "counts": raw}
    raise AnnotationError(f"{loc}: RLE 'counts' must be a list of run lengths or a compressed "
                          f"string, got {type(counts).__name__}")


def _polygon(p, height: int, width: int, loc: str) -> list:
    """One polygon: a flat list of finite numbers, an even count, inside the image."""
    if not isinstance(p, list):
        raise AnnotationError(f"{loc}: a polygon must be a list of numbers [x1, y1, ...], got "
                              f"{type(p).__name__}")
    try:
        xy = np.asarray(p)
    except ValueError:  # ragged nesting
        xy = np.asarray([None])
    if xy.ndim != 1 or xy.dtype.kind not in "iuf":
        bad = next((v for v in p if not is_number(v)), p)
        raise AnnotationError(f"{loc}: polygon coordinates must be numbers, got {bad!r}")
    xy = xy.astype(np.float64)
    if not np.isfinite(xy).all():
        raise AnnotationError(f"{loc}: polygon has a non-finite coordinate (NaN or infinity)")
    if len(p) % 2:
        raise AnnotationError(f"{loc}: polygon has an odd number of coordinates ({len(p)})")
    xy = xy.reshape(-1, 2)
    if (xy < -1).any() or (xy[:, 0] > width + 1).any() or (xy[:, 1] > height + 1).any():
        raise AnnotationError(
            f"{loc}: polygon reaches outside the {width}x{height} image (x in "
            f"[{xy[:, 0].min():.1f}, {xy[:, 0].max():.1f}], y in "
            f"[{xy[:, 1].min():.1f}, {xy[:, 1].max():.1f}])")
    return p


def to_rle(segm, height: int, width: int, loc: str = "") -> dict:
    """Any supported segmentation -> compressed RLE (pycocotools form), validated: RLE size and
    run lengths, polygon coordinates (numbers, finite, inside the image)."""
    if isinstance(segm, dict):
        return _rle_from_dict(segm, height, width, loc)
    if isinstance(segm, list):
        polys = [segm] if segm and not isinstance(segm[0], list) else segm  # COCOA: flat
        polys = [_polygon(p, height, width, loc) for p in polys]
        polys = [p for p in polys if len(p) >= 6]
        if not polys:
            return mask_utils.encode(np.zeros((height, width), np.uint8, order="F"))
        return mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    raise AnnotationError(f"{loc}: segmentation must be a polygon list or an RLE dict, got "
                          f"{type(segm).__name__}")


def decode(rle: dict) -> np.ndarray:
    """Compressed RLE -> bool [H,W]."""
    return mask_utils.decode(rle).astype(bool)


def rle_box(rle: dict) -> np.ndarray:
    """xyxy box of an RLE without decoding it (pycocotools toBbox, COCO pixel-edge convention)."""
    x, y, w, h = mask_utils.toBbox(rle).tolist()
    return np.array([x, y, x + w, y + h], dtype=np.float32)


def rle_area(rle: dict) -> int:
    return int(mask_utils.area(rle))


def empty_rle(height: int, width: int) -> dict:
    return mask_utils.encode(np.zeros((height, width), np.uint8, order="F"))
