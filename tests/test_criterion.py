"""The criterion: named terms and weights, Table 2 rows as configurations, warm-up, detach."""

import dataclasses
import math

import pytest
import torch

from blade.boxes import box_bitmasks
from blade.criterion import (TABLE2_ROWS, LossConfig, blade_criterion, expansion_area,
                             others_visible, table2_config, total_loss, warmup_factor)
from blade.losses import color_similarity, neighbor_edges, neighbor_loss
from blade.pairwise import unfold_neighbours


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


# -- kit variants (issue 13) -----------------------------------------------------------------------
def _row_case():
    """A 1x7 row: B_a = 0..4, B_v = 1..4, R = 1..4, m_v high at 2..4, so V_pov = {2, 3, 4}.
    Edges at the one-pixel gap touching V_pov: 0-2, 2-4, 1-3 (same side of B_a, c = 1) and
    3-5, 4-6 (across its border, c = 0)."""
    def row(v):
        return torch.tensor(v, dtype=torch.float64).view(1, 1, 1, 7)
    targets = {"amodal_box_masks": row([1, 1, 1, 1, 1, 0, 0]),
               "visible_box_masks": row([0, 1, 1, 1, 1, 0, 0]),
               "region_masks": row([0, 1, 1, 1, 1, 0, 0])}
    m_v = row([0.1, 0.1, 0.9, 0.9, 0.9, 0.1, 0.1])
    m_a = row([0.3, 0.2, 0.8, 0.6, 0.7, 0.4, 0.1])
    return targets, m_v, m_a


def _bce_edges(a, pairs):
    """Mean over undirected edges (i, j, c) of -log P(label relation c) under m_a = a."""
    out = []
    for i, j, c in pairs:
        same = a[i] * a[j] + (1 - a[i]) * (1 - a[j])
        out.append(-math.log(same if c else 1 - same))
    return sum(out) / len(out)


@pytest.mark.parametrize("allow,kept", [
    ("box", [(0, 2, 1), (2, 4, 1), (1, 3, 1), (3, 5, 0), (4, 6, 0)]),  # the paper's Eq. 11
    ("region", [(2, 4, 1), (1, 3, 1), (3, 5, 0), (4, 6, 0)]),  # 0 lies outside R
    ("hidden", [(2, 4, 1), (3, 5, 0), (4, 6, 0)]),  # R minus B_v is empty: no c = 1 edge
                                                     # leaves V_pov
    # B_a (0..4) reaches beyond B_v (1..4) at pixel 0: the object is pulled as in the paper
    ("occluded", [(0, 2, 1), (2, 4, 1), (1, 3, 1), (3, 5, 0), (4, 6, 0)]),
])
def test_ne_allow_variants_by_hand(allow, kept):
    targets, m_v, m_a = _row_case()
    area = expansion_area(allow, targets)
    loss = neighbor_loss(m_a, m_v, targets["region_masks"], targets["amodal_box_masks"],
                         allowed=area)
    a = m_a.flatten().tolist()
    assert loss.item() == pytest.approx(_bce_edges(a, kept), abs=1e-12)
    edges, _, _ = neighbor_edges(m_v, targets["region_masks"], targets["amodal_box_masks"],
                                 allowed=area)
    assert int(edges.sum()) == 2 * len(kept)


def test_ne_allow_hidden_expands_outside_the_visible_box_only():
    """B_v = 2..4 now: pixel 0 is in R minus B_v (allowed), pixel 1 is not in R."""
    targets, m_v, m_a = _row_case()
    targets["visible_box_masks"] = torch.tensor([0, 0, 1, 1, 1, 0, 0.0],
                                                dtype=torch.float64).view(1, 1, 1, 7)
    targets["region_masks"] = torch.tensor([1, 0, 1, 1, 1, 0, 0.0],
                                           dtype=torch.float64).view(1, 1, 1, 7)
    area = expansion_area("hidden", targets)
    assert area.flatten().tolist() == [1, 0, 0, 0, 0, 0, 0]
    loss = neighbor_loss(m_a, m_v, targets["region_masks"], targets["amodal_box_masks"],
                         allowed=area)
    a = m_a.flatten().tolist()
    assert loss.item() == pytest.approx(
        _bce_edges(a, [(0, 2, 1), (2, 4, 1), (3, 5, 0), (4, 6, 0)]), abs=1e-12)


def test_ne_allow_occluded_gates_each_object_by_its_boxes():
    """Two objects with the row case's masks: the first as given (B_a reaches beyond B_v at
    pixel 0), the second with B_v = B_a. ``occluded`` keeps the paper's edges for the first
    and, for the second, only those that do not pull outwards (the edge inside V_pov and the
    c = 0 edges across B_a's border): the same as ``hidden`` there, although ``hidden`` would
    pull the first only into R minus B_v."""
    targets, m_v, m_a = _row_case()
    both = {k: torch.cat([v, v]) for k, v in targets.items()}
    both["visible_box_masks"] = torch.cat([targets["visible_box_masks"],
                                           targets["amodal_box_masks"]])
    area = expansion_area("occluded", both)
    assert area.flatten(1).tolist() == [[1, 1, 1, 1, 1, 0, 0], [0] * 7]
    m_v2, m_a2 = torch.cat([m_v, m_v]), torch.cat([m_a, m_a])
    loss = neighbor_loss(m_a2, m_v2, both["region_masks"], both["amodal_box_masks"],
                         allowed=area)
    a = m_a.flatten().tolist()
    first = [(0, 2, 1), (2, 4, 1), (1, 3, 1), (3, 5, 0), (4, 6, 0)]
    second = [(2, 4, 1), (3, 5, 0), (4, 6, 0)]
    # the loss is the mean over all edges of the batch
    assert loss.item() == pytest.approx(_bce_edges(a, first + second), abs=1e-12)
    # the paper's rule on the same batch pulls both
    paper = neighbor_loss(m_a2, m_v2, both["region_masks"], both["amodal_box_masks"])
    assert paper.item() == pytest.approx(_bce_edges(a, first + first), abs=1e-12)
    # the first object's B_a reaches one cell beyond B_v: a margin of one cell unflags it
    assert expansion_area("occluded", targets, margin=1).sum() == 0
    assert torch.equal(expansion_area("occluded", targets, margin=0),
                       targets["amodal_box_masks"])
    wide = dict(targets, visible_box_masks=torch.tensor([0, 0, 0, 1, 1, 0, 0.0],
                                                        dtype=torch.float64).view(1, 1, 1, 7))
    # B_v = cells 3..4 now: cells 2, 1, 0 of B_a lie 1, 2, 3 cells from it
    assert expansion_area("occluded", wide, margin=2).sum() == 5
    assert expansion_area("occluded", wide, margin=3).sum() == 0
    with pytest.raises(ValueError, match="ne_margin"):
        LossConfig(ne_margin=-1)
    with pytest.raises(ValueError, match="ne_allow must be one of"):  # called directly, too
        expansion_area("hiden", targets)


def _rows(*rows):
    return torch.tensor(rows, dtype=torch.float64).view(len(rows), 1, 1, -1)


def test_others_visible_by_hand():
    """Image 0 holds objects A (instances 0, 1) and B (instance 2); image 1 only C (3)."""
    m_v = _rows([0.9, 0.9, 0.1, 0.1, 0.1],  # A, one location
                [0.1, 0.9, 0.9, 0.1, 0.1],  # A, another: A is visible on 0..2
                [0.1, 0.1, 0.1, 0.9, 0.9],  # B: visible on 3..4
                [0.9, 0.9, 0.9, 0.9, 0.9])  # C, alone in its image
    gt_index, gt_image = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 0, 1])
    others = others_visible(m_v, gt_index, gt_image).flatten(1).tolist()
    assert others == [[0, 0, 0, 1, 1], [0, 0, 0, 1, 1], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]]
    targets = {"region_masks": _rows(*[[0, 0, 1, 1, 1]] * 4), "gt_index": gt_index,
               "gt_image": gt_image}
    area = expansion_area("depth", targets, m_v).flatten(1).tolist()
    # A may grow only where B is seen inside R; B where A is seen (pixel 2); C nowhere
    assert area == [[0, 0, 0, 1, 1], [0, 0, 0, 1, 1], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]
    assert others_visible(m_v[:0], gt_index[:0], gt_image).shape == (0, 1, 1, 5)
    with pytest.raises(ValueError, match="gt_index, gt_image"):
        expansion_area("depth", {"region_masks": targets["region_masks"]}, m_v)


def _contact_scene():
    """10x10 cells: A, a diamond in box rows/cols 1..6, in front (visible = amodal); B, the
    rectangle 4..9 x 4..9 behind it (visible = rectangle minus A). R = the box overlap 4..6 x
    4..6 for both. Returns targets and the true amodal masks [2,1,10,10] (A, B)."""
    yy, xx = torch.meshgrid(torch.arange(10.0), torch.arange(10.0), indexing="ij")
    a = ((yy - 3.5).abs() + (xx - 3.5).abs() <= 3).double()
    box = (lambda y1, y2, x1, x2: ((yy >= y1) & (yy <= y2) & (xx >= x1) & (xx <= x2)).double())
    b = box(4, 9, 4, 9)
    b_vis = b * (1 - a)
    truth = torch.stack([a, b])[:, None]
    targets = {"amodal_box_masks": torch.stack([box(1, 6, 1, 6), b])[:, None],
               "visible_box_masks": torch.stack([box(1, 6, 1, 6), b])[:, None],  # B_v(B) = B_a
               "region_masks": torch.stack([box(4, 6, 4, 6)] * 2)[:, None],
               "gt_index": torch.tensor([0, 1]), "gt_image": torch.tensor([0, 0])}
    m_v = 0.05 + 0.9 * torch.stack([a, b_vis])[:, None]
    return targets, truth, m_v


def _pulls(allow, targets, truth, m_v):
    """Per object: (c = 1 edges that join a cell of its true mask to one outside it, i.e. a
    pull of m_a across its true border; c = 1 edges into its true hidden part)."""
    area = expansion_area(allow, targets, m_v)
    edges, c, _ = neighbor_edges(m_v, targets["region_masks"], targets["amodal_box_masks"],
                                 dilation=1, allowed=area)
    pull = edges & (c > 0.5)
    nb = unfold_neighbours(truth, 1)[:, 0]
    wrong = pull & ((truth > 0.5) != (nb > 0.5))
    hidden = (truth > 0.5) & (m_v < 0.5)
    into_hidden = pull & (unfold_neighbours(hidden.double(), 1)[:, 0] > 0.5)
    count = (lambda e: [int(x) for x in e.flatten(1).sum(1)])
    return count(wrong), count(into_hidden)


def test_ne_allow_depth_at_a_contact_line():
    """``depth`` is a visibility cue, not a depth order: at the contact line the occluded B is
    pulled under A (into its hidden part, as wanted) and A, in front, is pulled into B's
    visible cells inside A's own box (across A's true border) as well. ``hidden`` pulls
    neither here: both visible boxes equal the amodal boxes."""
    targets, truth, m_v = _contact_scene()
    wrong, into_hidden = _pulls("depth", targets, truth, m_v)
    assert into_hidden[1] > 0  # B grows under A
    assert wrong[0] > 0  # A grows into B: the cue does not say who is in front
    # every cell of this R is someone's visible cell: depth removes nothing of region's pulls
    assert _pulls("region", targets, truth, m_v) == (wrong, into_hidden)
    assert _pulls("hidden", targets, truth, m_v) == ([0, 0], [0, 0])
    # no box reaches beyond its visible box here, so occluded pulls neither object either
    assert _pulls("occluded", targets, truth, m_v) == ([0, 0], [0, 0])


def test_default_config_is_the_paper_graph():
    outputs, targets = _batch()
    paper, _ = blade_criterion(outputs, targets, LossConfig(), iteration=5)
    boxed, _ = blade_criterion(outputs, targets, LossConfig(ne_allow="box"), iteration=5)
    region, _ = blade_criterion(outputs, targets, LossConfig(ne_allow="region"), iteration=5)
    assert torch.equal(paper["amo_neighbor"], boxed["amo_neighbor"])
    assert not torch.equal(paper["amo_neighbor"], region["amo_neighbor"])
    with pytest.raises(ValueError, match="ne_allow"):
        LossConfig(ne_allow="everywhere")


def test_con_warmup_ramps_the_connectivity_weights():
    outputs, targets = _batch()
    cfg = LossConfig(pairwise_warmup=100, alpha_con=2.0)
    for it, expected in ((0, 0.0), (50, 1.0), (100, 2.0), (500, 2.0)):
        _, w = blade_criterion(outputs, targets, dataclasses.replace(cfg, con_warmup=True), it)
        assert w["amo_neighbor"] == w["amo_uniform"] == pytest.approx(expected)
        _, w = blade_criterion(outputs, targets, cfg, it)  # the paper: full weight from 0
        assert w["amo_neighbor"] == w["amo_uniform"] == 2.0
