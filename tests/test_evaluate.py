"""Evaluation core: IoU agrees with pycocotools; protocol rows; mean over levels."""

import os

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from blade.data import AmodalDataset
from blade.evaluate import evaluate_item, mask_iou, summarize


def test_mask_iou_agrees_with_pycocotools():
    rng = np.random.default_rng(0)
    pred = rng.random((6, 20, 30)) > 0.6
    gt = rng.random((6, 20, 30)) > 0.5
    ours = mask_iou(torch.from_numpy(pred), torch.from_numpy(gt)).numpy()
    enc = lambda m: mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))  # noqa: E731
    ref = np.array([mask_utils.iou([enc(p)], [enc(g)], [0])[0, 0] for p, g in zip(pred, gt)])
    assert np.abs(ours - ref).max() < 1e-6
    empty = torch.zeros(1, 4, 4, dtype=torch.bool)
    assert torch.isnan(mask_iou(empty, empty)).all()


class Oracle:
    """A 'model' answering each given box with the ground truth (to test the protocol)."""

    def __init__(self, item, wrong_class=False):
        self.item, self.wrong = item, wrong_class

    def predict(self, images, boxes):
        keep = self.item["evaluated"].nonzero().flatten()
        labels = self.item["labels"][keep] + (1 if self.wrong else 0)
        return [{"masks": self.item["amodal_masks"][keep].float(),
                 "visible": self.item["visible_masks"][keep].float(), "labels": labels,
                 "matched": torch.ones(len(keep), dtype=torch.bool)}]


def test_oracle_scores_one_and_class_penalty(synthetic_dir):
    ds = AmodalDataset(os.path.join(synthetic_dir, "val.json"), os.path.join(synthetic_dir, "val"),
                       mode="eval")
    rows = []
    for i in range(len(ds)):
        rows += evaluate_item(Oracle(ds[i]), ds[i])
    assert rows and all(r["iou_amodal"] == 1.0 and r["iou_visible"] == 1.0 for r in rows)
    for r in rows:  # the occluded part is undefined exactly when nothing is occluded
        assert np.isnan(r["iou_occluded"]) == (r["level"] == 0)
    wrong = evaluate_item(Oracle(ds[0], wrong_class=True), ds[0])
    assert all(r["iou_amodal_cls"] == 0.0 and r["iou_amodal"] == 1.0 for r in wrong)


def test_summary_is_the_mean_of_level_means():
    rows = [{"level": 0, "iou_amodal": 1.0}, {"level": 0, "iou_amodal": 0.0},
            {"level": 0, "iou_amodal": 0.5}, {"level": 2, "iou_amodal": 0.2}]
    table = summarize(rows, columns=("iou_amodal",))
    assert table.loc["FG-0", "iou_amodal"] == pytest.approx(0.5)
    assert table.loc["FG-2", "iou_amodal"] == pytest.approx(0.2)
    assert table.loc["mean", "iou_amodal"] == pytest.approx(0.35)  # not the object mean 0.425
    assert table.loc["mean", "objects"] == 4


def test_runs_on_the_real_model_interface(synthetic_dir):
    from blade.config import preset
    from blade.model import BladeModel

    ds = AmodalDataset(os.path.join(synthetic_dir, "val.json"), os.path.join(synthetic_dir, "val"),
                       mode="eval")
    torch.manual_seed(0)
    model = BladeModel(preset("smoke")).eval()
    rows = evaluate_item(model, ds[0])
    assert len(rows) == int(ds[0]["evaluated"].sum())
    assert all(0.0 <= r["iou_amodal"] <= 1.0 for r in rows)
