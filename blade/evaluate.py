"""Evaluation with the paper's protocol (Bayesian-Amodal's, method-notes section 3).

For every ground-truth instance the input is its *visible* box B_test; the model answers with
an amodal mask at image resolution (``BladeModel.predict(images, boxes=...)``), thresholded at
0.5. Per object: IoU of the amodal mask with the ground-truth amodal mask over the whole image,
plus the visible-mask IoU and the occluded-part IoU (predicted amodal minus predicted visible vs
ground-truth amodal minus visible; undefined, NaN, when nothing is occluded, as Bayesian-Amodal
drops it at FG-0). Means per occlusion level, and the headline: the mean of the level means
(paper, Implementation Details).

Choices the paper leaves open, documented here:
* B_test is the ground-truth visible box itself (Bayesian-Amodal feeds the detection with the
  highest IoU with it; ``predict`` does the matching inside the model, see its docstring).
* Misclassified objects: Bayesian-Amodal multiplies IoU by class correctness. Both are
  reported: ``iou_amodal`` (class-agnostic, the transfer setting) and ``iou_amodal_cls``
  (0 when the predicted class is wrong).
* Instances that are not evaluated (level -1: over the last occlusion bound, empty visible
  mask, or filtered by the protocol) are skipped.

Status: this is the evaluation core (per-object rows and per-level summary); the CLI, COCO AP
and the experiment runner are not written yet.
"""

from __future__ import annotations

import numpy as np
import torch


def mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-object IoU of [n,H,W] boolean masks over the whole image; NaN where both are empty."""
    pred, gt = pred.flatten(1).bool(), gt.flatten(1).bool()
    inter = (pred & gt).sum(1).double()
    union = (pred | gt).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(union, float("nan")))


@torch.no_grad()
def evaluate_item(model, item: dict, threshold: float = 0.5) -> list:
    """One eval-mode dataset item -> one row (dict) per evaluated instance."""
    keep = item["evaluated"].nonzero().flatten()
    if len(keep) == 0:
        return []
    boxes = item["visible_boxes"][keep]
    out = model.predict([item["image"]], boxes=[boxes])[0]
    pred_a = out["masks"] > threshold
    pred_v = out["visible"] > threshold
    gt_a, gt_v = item["amodal_masks"][keep], item["visible_masks"][keep]
    iou_a, iou_v = mask_iou(pred_a, gt_a), mask_iou(pred_v, gt_v)
    gt_o = gt_a & ~gt_v
    iou_o = mask_iou(pred_a & ~pred_v, gt_o)
    iou_o[gt_o.flatten(1).sum(1) == 0] = float("nan")
    labels = item["labels"][keep]
    correct = out["labels"].to(labels.device) == labels
    rows = []
    for j, k in enumerate(keep.tolist()):
        rows.append({
            "image_id": item["image_id"], "ann_id": item["ann_ids"][k],
            "label": int(labels[j]), "pred_label": int(out["labels"][j]),
            "level": int(item["levels"][k]), "occlusion": float(item["occlusion"][k]),
            "matched": bool(out["matched"][j]) if "matched" in out else True,
            "iou_amodal": float(iou_a[j]), "iou_visible": float(iou_v[j]),
            "iou_occluded": float(iou_o[j]),
            "iou_amodal_cls": float(iou_a[j]) * float(correct[j]), "correct": bool(correct[j]),
        })
    return rows


def summarize(rows, columns=("iou_amodal", "iou_amodal_cls", "iou_visible", "iou_occluded")):
    """Per-level means (levels as 'FG-k') plus a 'mean' row: the mean of the level means."""
    import pandas as pd

    df = pd.DataFrame(rows)
    table = df.groupby("level")[list(columns)].mean()
    table.insert(0, "objects", df.groupby("level").size())
    table.index = [f"FG-{k}" for k in table.index]
    mean = table[list(columns)].mean(axis=0)  # every level weighs the same (paper)
    table.loc["mean"] = [int(table["objects"].sum()), *mean.to_numpy(dtype=np.float64)]
    return table
