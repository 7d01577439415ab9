"""Mask encodings of the amodal datasets, decoded through pycocotools.

Accepts every form found in KINS, COCOA, COCOA-cls and D2SA files: polygon lists
(``[[x1, y1, x2, y2, ...], ...]``), COCOA's flat polygon (``[x1, y1, ...]``), uncompressed RLE
(``{"size": [h, w], "counts": [ints]}``) and compressed RLE (``counts`` a string). A size that
disagrees with the image raises :class:`AnnotationError` naming the file and annotation.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


class AnnotationError(ValueError):
    """Bad annotation input; the message names the file, the record and what is wrong."""


def where(ann_file, ann_id, key=None) -> str:
    """Location string used in every data error message."""
    loc = f"{ann_file}: annotation id {ann_id}"
    return f"{loc}, key '{key}'" if key else loc


def encode(mask: np.ndarray) -> dict:
    """bool/uint8 [H,W] -> JSON-ready compressed RLE ``{"size": [H, W], "counts": str}``."""
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def to_rle(segm, height: int, width: int, loc: str = "") -> dict:
    """Any supported segmentation -> compressed RLE (pycocotools form), size-checked."""
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise AnnotationError(f"{loc}: RLE must have 'size' and 'counts', got keys "
                                  f"{sorted(segm)}")
        size = [int(s) for s in segm["size"]]
        if size != [height, width]:
            raise AnnotationError(f"{loc}: RLE size {size} disagrees with the image size "
                                  f"[{height}, {width}]")
        if isinstance(segm["counts"], list):
            if sum(segm["counts"]) != height * width:
                raise AnnotationError(f"{loc}: uncompressed RLE counts sum to "
                                      f"{sum(segm['counts'])}, expected {height * width}")
            return mask_utils.frPyObjects(segm, height, width)
        counts = segm["counts"]
        return {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str)
                else counts}
    if isinstance(segm, list):
        polys = [segm] if segm and not isinstance(segm[0], list) else segm  # COCOA: flat
        polys = [p for p in polys if len(p) >= 6]
        if not polys:
            return mask_utils.encode(np.zeros((height, width), np.uint8, order="F"))
        for p in polys:
            if len(p) % 2:
                raise AnnotationError(f"{loc}: polygon has an odd number of coordinates "
                                      f"({len(p)})")
            xy = np.asarray(p, dtype=np.float64).reshape(-1, 2)
            if (xy < -1).any() or (xy[:, 0] > width + 1).any() or (xy[:, 1] > height + 1).any():
                raise AnnotationError(
                    f"{loc}: polygon reaches outside the {width}x{height} image (x in "
                    f"[{xy[:, 0].min():.1f}, {xy[:, 0].max():.1f}], y in "
                    f"[{xy[:, 1].min():.1f}, {xy[:, 1].max():.1f}])")
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
