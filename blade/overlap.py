"""Overlapping regions R^i of the paper (Eq. 3-6) and their bitmasks (the region branch target).

For instance ``i`` with amodal box ``B_a^i``, the overlap with instance ``j`` is the intersection
``R^(i,j)`` of the two amodal boxes (Eq. 4-5). ``R^i`` is the envelope (tightest box) of all
valid ``R^(i,j)`` (Eq. 6); an instance that overlaps no other instance has no region.

Documented choices (paper-derived, no reference code exists):

* "Valid" means the intersection has *positive area*: ``x_max > x_min`` and ``y_max > y_min``.
  Two boxes that only touch along an edge or a corner do not overlap (with the half-open pixel
  convention of :mod:`blade.boxes` they share no pixel either).
* Boxes are compared only within one image (``image_ids``); an instance never overlaps itself,
  but two instances with identical boxes overlap each other fully.
* Bitmasks use :func:`blade.boxes.box_bitmasks`, the same pixel convention as the mask losses.

Everything is vectorized over all N x N pairs (no Python loop over pairs).
"""

from __future__ import annotations

import numpy as np
import torch

from .boxes import box_area, box_bitmasks


def pairwise_intersections(amodal_boxes: torch.Tensor, image_ids: torch.Tensor | None = None):
    """All R^(i,j) (Eq. 4-5) at once.

    amodal_boxes: [N,4] xyxy.  image_ids: optional [N] ints; pairs from different images are
    never valid.  Returns ``(inter [N,N,4] xyxy, valid [N,N] bool)``; ``valid[i, j]`` says that
    ``R^(i,j)`` exists (positive area, i != j, same image).
    """
    b = torch.as_tensor(amodal_boxes, dtype=torch.float32)
    n = b.shape[0]
    x1 = torch.maximum(b[:, None, 0], b[None, :, 0])  # [N,N]
    y1 = torch.maximum(b[:, None, 1], b[None, :, 1])
    x2 = torch.minimum(b[:, None, 2], b[None, :, 2])
    y2 = torch.minimum(b[:, None, 3], b[None, :, 3])
    valid = (x2 > x1) & (y2 > y1) & ~torch.eye(n, dtype=torch.bool, device=b.device)
    if image_ids is not None:
        ids = torch.as_tensor(image_ids, device=b.device)
        valid &= ids[:, None] == ids[None, :]
    return torch.stack([x1, y1, x2, y2], dim=-1), valid


def overlap_regions(amodal_boxes: torch.Tensor, image_ids: torch.Tensor | None = None):
    """Ground-truth overlapping region R^i of every instance (Eq. 6).

    amodal_boxes: [N,4] float xyxy boxes of one image (or of several images with ``image_ids``).
    Returns ``(regions [N,4] xyxy, has_region [N] bool)``; rows without a region are zeros.
    Each region lies inside the instance's own amodal box (an envelope of sub-boxes of it).
    """
    inter, valid = pairwise_intersections(amodal_boxes, image_ids)
    n = valid.shape[0]
    if n == 0:
        return inter.new_zeros((0, 4)), valid.new_zeros((0,))
    inf = torch.tensor(float("inf"), device=inter.device)
    x1 = torch.where(valid, inter[..., 0], inf).amin(dim=1)  # [N]
    y1 = torch.where(valid, inter[..., 1], inf).amin(dim=1)
    x2 = torch.where(valid, inter[..., 2], -inf).amax(dim=1)
    y2 = torch.where(valid, inter[..., 3], -inf).amax(dim=1)
    has_region = valid.any(dim=1)
    regions = torch.stack([x1, y1, x2, y2], dim=-1)
    regions = torch.where(has_region[:, None], regions, torch.zeros_like(regions))
    return regions, has_region


def region_bitmasks(amodal_boxes: torch.Tensor, height: int, width: int, stride: int = 1,
                    image_ids: torch.Tensor | None = None) -> torch.Tensor:
    """[N,1,h,w] {0,1} bitmask of R^i (zeros where there is no region), the L^r target (Eq. 7)."""
    regions, has_region = overlap_regions(amodal_boxes, image_ids)
    return box_bitmasks(regions, height, width, stride) * has_region[:, None, None, None].float()


def occluded_coverage(region_mask: np.ndarray, amodal_mask: np.ndarray,
                      visible_mask: np.ndarray) -> float:
    """Share of the true occluded pixels (amodal and not visible) that lie inside the region.

    All arguments are [H,W] bool arrays at the same resolution. NaN when nothing is occluded.
    This is how well the box-only region R approximates where the amodal mask must grow.
    """
    occluded = np.asarray(amodal_mask, bool) & ~np.asarray(visible_mask, bool)
    n = int(occluded.sum())
    if n == 0:
        return float("nan")
    return float((occluded & np.asarray(region_mask, bool)).sum()) / n


def coverage_records(item: dict) -> list:
    """Per instance of an eval-mode dataset item: does R exist, and how much of the true
    occluded mask does it cover? One dict per instance (build a pandas DataFrame from a list)."""
    boxes = item["amodal_boxes"]
    if len(boxes) == 0:
        return []
    H, W = item["image"].shape[-2:]
    regions, has = overlap_regions(boxes)
    bitmasks = region_bitmasks(boxes, H, W).bool()[:, 0].numpy()
    box_areas, reg_areas = box_area(boxes).tolist(), box_area(regions).tolist()
    rows = []
    for k in range(len(boxes)):
        a = item["amodal_masks"][k].numpy()
        v = item["visible_masks"][k].numpy()
        rows.append({
            "image_id": item["image_id"], "ann_id": item["ann_ids"][k],
            "label": int(item["labels"][k]), "occlusion": float(item["occlusion"][k]),
            "level": int(item["levels"][k]), "has_region": bool(has[k]),
            "region_share_of_box": (reg_areas[k] / box_areas[k] if box_areas[k] > 0
                                    else float("nan")),
            "coverage": occluded_coverage(bitmasks[k], a, v),
        })
    return rows
