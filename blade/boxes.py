"""Box conventions and box -> bitmask rasterization shared by the whole kit.

Pixel convention (used by the overlap regions, the mask losses and the evaluation):

* Boxes are ``xyxy`` floats in *pixel-edge* coordinates, the COCO convention: pixel ``(r, c)``
  covers ``[c, c+1) x [r, r+1)`` and its centre is ``(c + 0.5, r + 0.5)``. A COCO ``bbox``
  ``[x, y, w, h]`` is the box ``[x, y, x + w, y + h]``; the box of a mask is
  ``(min col, min row, max col + 1, max row + 1)`` (what ``pycocotools.mask.toBbox`` returns).
* A pixel is inside a box when its centre is: ``x1 <= c + 0.5 < x2`` and ``y1 <= r + 0.5 < y2``
  (half-open, so two boxes that share an edge never claim the same pixel).
* At output stride ``s`` the cell ``(i, j)`` stands for the full-resolution pixel
  ``(i*s + s//2, j*s + s//2)``: the BoxInst sampling ``bitmask_full[s//2::s, s//2::s]``
  (AdelaiDet ``add_bitmasks_from_boxes``, MASK_OUT_STRIDE = 4, start = 2). Hence
  ``box_bitmasks(b, H, W, s) == box_bitmasks(b, H, W, 1)[..., s//2::s, s//2::s]`` exactly
  (tested).
"""

from __future__ import annotations

import numpy as np
import torch


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """[N,4] (x, y, w, h) -> [N,4] (x1, y1, x2, y2)."""
    x, y, w, h = boxes.unbind(-1)
    return torch.stack([x, y, x + w, y + h], dim=-1)


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """[N,4] (x1, y1, x2, y2) -> [N,4] (x, y, w, h)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([x1, y1, x2 - x1, y2 - y1], dim=-1)


def grid_size(size: int, stride: int) -> int:
    """Number of cells along an axis of ``size`` pixels sampled at ``stride`` from ``stride//2``."""
    return len(range(stride // 2, size, stride))


def cell_centres(size: int, stride: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[grid_size] continuous coordinates of the pixel centres sampled at ``stride``."""
    start = min(stride // 2, size)  # an image smaller than stride//2 has no cells
    return torch.arange(start, size, stride, device=device, dtype=dtype) + 0.5


def box_bitmasks(boxes: torch.Tensor, height: int, width: int, stride: int = 1) -> torch.Tensor:
    """Rasterize boxes to {0,1} bitmasks with the kit's pixel convention (module docstring).

    boxes: [N,4] xyxy float (image pixels).  Returns [N,1,h,w] float32 with
    h = grid_size(height, stride), w = grid_size(width, stride). Degenerate boxes give zeros.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    ys = cell_centres(height, stride, boxes.device)  # [h]
    xs = cell_centres(width, stride, boxes.device)  # [w]
    x1, y1, x2, y2 = (boxes[:, k, None] for k in range(4))  # each [N,1]
    in_x = (xs[None] >= x1) & (xs[None] < x2)  # [N,w]
    in_y = (ys[None] >= y1) & (ys[None] < y2)  # [N,h]
    return (in_y[:, :, None] & in_x[:, None, :]).unsqueeze(1).float()  # [N,1,h,w]


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """Box of a binary [H,W] mask in the kit's convention; zeros for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return np.zeros(4, dtype=np.float32)
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """[N,4] xyxy -> [N] area, 0 for degenerate boxes."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
