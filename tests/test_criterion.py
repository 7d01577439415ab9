"""The criterion: named terms and weights, Table 2 rows as configurations, warm-up, detach."""

import dataclasses

import pytest
import torch

from blade.boxes import box_bitmasks
from blade.criterion import (TABLE2_ROWS, LossConfig, blade_criterion, table2_config, total_loss,
                             warmup_factor)
from blade.losses import color_similarity


def _batch(n=2, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    outputs = {k: torch.randn(n, 1, h, w, generator=g).requires_grad_(True)
               for k in ("visible_logits", "amodal_logits", "region_logits")}
    targets = {
        "visible_box_masks": box_bitmasks(torch.tensor([[2.0, 2, 9, 9], [5, 5, 14, 12]]), h, w),
        "amodal_box_masks": box_bitmasks(torch.tensor([[2.0, 2, 12, 12], [4, 4, 15, 14]]), h, w),
        "region_masks": box_bitmasks(torch.tensor([[4.0, 4, 12, 12], [4, 4, 12, 12]]), h, w),
        "color_similarity": color_similarity(torch.rand(n, 3, h, w, generator=g)),
    }
    return outputs, targets


ALL = {"vis_proj", "vis_pair", "amo_proj", "amo_pair", "amo_neighbor", "amo_uniform", "region"}


@pytest.mark.parametrize("row", sorted(TABLE2_ROWS))
def test_table2_rows_are_configurations(row):
    cfg = table2_config(row)
    outputs, targets = _batch()
    terms, weights = blade_criterion(outputs, targets, cfg, iteration=20000)
    assert set(terms) == set(weights)
    spec = dict(use_uniform=True, use_neighbor=True, use_fusion=True) | TABLE2_ROWS[row]
    expected = {"vis_proj", "vis_pair", "amo_proj", "amo_pair"}
    expected |= {"amo_uniform"} if spec["use_uniform"] else set()
    expected |= {"amo_neighbor"} if spec["use_neighbor"] else set()
    expected |= {"region"} if spec["use_fusion"] else set()
    assert set(terms) == expected
    assert weights["amo_proj"] == cfg.alpha_proj and weights["amo_pair"] == cfg.alpha_pair
    for k in ("amo_neighbor", "amo_uniform"):
        if k in weights:
            assert weights[k] == cfg.alpha_con
    loss = total_loss(terms, weights)
    assert torch.isfinite(loss)
    loss.backward()


def test_default_is_paper_row_b_and_1():
    cfg = LossConfig()
    assert (cfg.alpha_proj, cfg.alpha_pair, cfg.alpha_con) == (2.0, 1.0, 1.0)
    assert cfg == table2_config("1") == table2_config("b")
    with pytest.raises(ValueError, match="unknown Table 2 row"):
        table2_config("9")


def test_pairwise_warmup_is_linear():
    assert [warmup_factor(i, 100) for i in (0, 50, 100, 500)] == [0.0, 0.5, 1.0, 1.0]
    outputs, targets = _batch()
    _, w0 = blade_criterion(outputs, targets, LossConfig(pairwise_warmup=100), iteration=25)
    assert w0["vis_pair"] == 0.25 and w0["amo_pair"] == 0.25 * 1.0
    assert w0["vis_proj"] == 1.0


def test_branch_switches_for_baselines():
    outputs, targets = _batch()
    boxinst = LossConfig(use_amodal=False, use_fusion=False)
    terms, _ = blade_criterion(outputs, targets, boxinst)
    assert set(terms) == {"vis_proj", "vis_pair"}
    # BoxInst on B_a: the same terms against the amodal box
    on_ba, _ = blade_criterion(outputs, targets, dataclasses.replace(boxinst, vis_target="amodal"))
    swapped = dict(targets, visible_box_masks=targets["amodal_box_masks"])
    expected, _ = blade_criterion(outputs, swapped, boxinst)
    assert on_ba["vis_proj"] == expected["vis_proj"] and on_ba["vis_pair"] == expected["vis_pair"]
    assert on_ba["vis_proj"] != terms["vis_proj"]
    bbtp = dataclasses.replace(boxinst, vis_target="amodal", vis_loss="mil", smooth_weight=0.5)
    terms, weights = blade_criterion(outputs, targets, bbtp, iteration=10**6)
    assert set(terms) == {"vis_mil", "vis_smooth"} and weights["vis_smooth"] == 0.5
    full = dataclasses.replace(boxinst, vis_target="amodal", vis_loss="dice")
    masks = torch.zeros(2, 1, 16, 16)
    masks[:, :, 3:10, 3:10] = 1
    terms, weights = blade_criterion(outputs, dict(targets, amodal_masks=masks), full)
    assert set(terms) == {"vis_dice"} and weights == {"vis_dice": 1.0}
    with pytest.raises(ValueError, match="vis_loss must be one of"):
        LossConfig(vis_loss="grabcut")
    with pytest.raises(ValueError, match="vis_target must be one of"):
        LossConfig(vis_target="both")


def test_visible_detached_from_connectivity_terms():
    outputs, targets = _batch()
    cfg = LossConfig(use_visible=False, use_fusion=False, use_neighbor=False)
    terms, _ = blade_criterion(outputs, targets, cfg)
    grad = torch.autograd.grad(terms["amo_uniform"], outputs["visible_logits"],
                               allow_unused=True)[0]
    assert grad is None or (grad == 0).all()
    outputs, targets = _batch()
    outputs["amodal_logits"] = torch.full_like(outputs["amodal_logits"], -3.0).requires_grad_(True)
    terms, _ = blade_criterion(outputs, targets, dataclasses.replace(cfg, detach_visible=False))
    grad = torch.autograd.grad(terms["amo_uniform"], outputs["visible_logits"])[0]
    assert (grad != 0).any()
