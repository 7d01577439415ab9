"""Losses: hand-computed toy cases, a loop reference, gradcheck, invariants, edge cases."""

import math

import numpy as np
import pytest
import torch
from skimage.color import rgb2lab

from blade.boxes import box_bitmasks
from blade.losses import (NEIGHBOURS, color_similarity, mask_dice_loss, mil_loss,
                          neighbor_edges, neighbor_loss, pairwise_loss, pairwise_weights,
                          projection_loss, region_loss, smoothness_loss, uniform_loss)
from blade.losses_reference import (neighbor_loss_ref, pairwise_loss_ref, projection_loss_ref,
                                    uniform_loss_ref)
from blade.pairwise import neighbour_valid, rgb_to_lab, unfold_neighbours

D = torch.float64


def logit(p):
    return math.log(p / (1 - p))


# -- geometry and colour ------------------------------------------------------------------------
def test_unfold_order_matches_documented_offsets():
    x = torch.arange(7 * 9, dtype=D).reshape(1, 1, 7, 9)
    nb = unfold_neighbours(x)[0, 0]  # [8,7,9]
    for k, (dy, dx) in enumerate(NEIGHBOURS):
        assert nb[k, 3, 4] == x[0, 0, 3 + dy, 4 + dx]
    assert nb[0, 0, 0] == 0 and neighbour_valid(7, 9)[0, 0, 0, 0] == 0  # outside: padding


def test_rgb_to_lab_matches_skimage():
    rng = np.random.default_rng(0)
    img = rng.random((2, 3, 9, 11))
    img[0, :, 0, :3] = [[0, 1, 0.5]] * 3  # black, white, grey
    img[0, :, 1, 0] = [1, 0, 0]
    ours = rgb_to_lab(torch.tensor(img)).numpy()
    ref = np.stack([rgb2lab(im.transpose(1, 2, 0)).transpose(2, 0, 1) for im in img])
    assert np.abs(ours - ref).max() < 1e-3
    ours32 = rgb_to_lab(torch.tensor(img, dtype=torch.float32)).numpy()
    assert np.abs(ours32 - ref).max() < 1e-3


def test_color_similarity_values_and_borders():
    img = torch.rand(1, 3, 6, 7, dtype=D)
    sim = color_similarity(img)
    lab = torch.tensor(rgb2lab(img[0].permute(1, 2, 0).numpy())).permute(2, 0, 1)
    for k, (dy, dx) in enumerate(NEIGHBOURS):
        y, x = 2, 3
        d = (lab[:, y, x] - lab[:, y + dy, x + dx]).norm()
        assert sim[0, k, y, x].item() == pytest.approx(math.exp(-d.item() / 2), abs=1e-4)
    assert (sim[0, :, 0, 0][[0, 1, 2, 3, 5]] == 0).all()  # neighbours above/left are outside
    flat = torch.full((1, 3, 5, 5), 0.3, dtype=D)
    assert torch.allclose(color_similarity(flat), neighbour_valid(5, 5, dtype=D))


# -- projection -----------------------------------------------------------------------------------
def test_projection_hand_case():
    logits = torch.tensor([[[[0.0, logit(0.8)], [logit(0.2), 0.0]]]], dtype=D)
    box = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]], dtype=D)
    # column maxima [0.5, 0.8] vs [1, 1]; row maxima [0.8, 0.5] vs [1, 0]
    cols = 1 - 2 * (0.5 + 0.8) / (0.25 + 0.64 + 2 + 1e-5)
    rows = 1 - 2 * 0.8 / (0.64 + 0.25 + 1 + 1e-5)
    assert projection_loss(logits, box).item() == pytest.approx(cols + rows, abs=1e-12)


# -- pairwise -------------------------------------------------------------------------------------
def test_pairwise_hand_case():
    # a 1x3 row: only pixels 0 and 2 are neighbours (one-pixel gap), in both directions
    p0, p2 = 0.9, 0.3
    logits = torch.tensor([[[[logit(p0), 0.0, logit(p2)]]]], dtype=D)
    sim = torch.ones(1, 8, 1, 3, dtype=D)
    box = torch.ones(1, 1, 1, 3, dtype=D)
    expected = -math.log(p0 * p2 + (1 - p0) * (1 - p2))
    assert pairwise_loss(logits, sim, box).item() == pytest.approx(expected, abs=1e-12)
    # only the edge whose centre is in the box counts: same value, one edge
    box0 = torch.tensor([[[[1.0, 0.0, 0.0]]]], dtype=D)
    assert pairwise_loss(logits, sim, box0).item() == pytest.approx(expected, abs=1e-12)
    # a colour edge below the threshold removes the pair: no edge left, loss 0
    assert pairwise_loss(logits, sim * 0.2, box, threshold=0.3).item() == 0.0
    assert pairwise_loss(logits, sim * 0.2, box, threshold=0.1).item() == pytest.approx(expected)


def test_pairwise_weights_vanish_outside_box_and_across_colour_edges():
    img = torch.zeros(1, 3, 12, 12, dtype=D)
    img[:, :, :, 6:] = 1.0  # a black | white colour edge between columns 5 and 6
    sim = color_similarity(img)
    box = box_bitmasks(torch.tensor([[2.0, 2.0, 10.0, 10.0]]), 12, 12).to(D)
    w = pairwise_weights(sim, box, threshold=0.3)
    assert (w * (1 - box) == 0).all()
    right = NEIGHBOURS.index((0, 2))
    # (5,4)->(5,6) and (5,5)->(5,7) cross the colour edge; (5,3)->(5,5), (5,6)->(5,8) do not
    assert w[0, right, 5, 4] == 0 and w[0, right, 5, 5] == 0
    assert w[0, right, 5, 3] == 1 and w[0, right, 5, 6] == 1


def test_pairwise_finite_for_saturated_logits():
    logits = torch.tensor([[[[50.0, 0.0, -50.0]]]], dtype=D, requires_grad=True)
    loss = pairwise_loss(logits, torch.ones(1, 8, 1, 3, dtype=D), torch.ones(1, 1, 1, 3, dtype=D))
    # p0 ~ 1, p2 ~ 0: P(same) = p0 p2 + (1-p0)(1-p2) ~ 2 e^-50, so the loss is 50 - ln 2
    assert loss.item() == pytest.approx(50.0 - math.log(2.0), rel=1e-9)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


# -- neighbour -------------------------------------------------------------------------------------
def test_neighbor_hand_case():
    # a 1x5 row; V_pov = {2} (in R, m_v > t); B_a covers pixels 0..2
    a = [0.7, 0.1, 0.6, 0.3, 0.2]
    m_a = torch.tensor([[[a]]], dtype=D)
    m_v = torch.tensor([[[[0.1, 0.9, 0.8, 0.9, 0.1]]]], dtype=D)
    region = torch.tensor([[[[0.0, 0.0, 1.0, 0.0, 0.0]]]], dtype=D)
    box = torch.tensor([[[[1.0, 1.0, 1.0, 0.0, 0.0]]]], dtype=D)
    same02 = a[0] * a[2] + (1 - a[0]) * (1 - a[2])  # c = 1: both in B_a
    diff24 = a[2] * (1 - a[4]) + (1 - a[2]) * a[4]  # c = 0: 2 in B_a, 4 outside
    expected = (-math.log(same02) - math.log(diff24)) / 2
    assert neighbor_loss(m_a, m_v, region, box).item() == pytest.approx(expected, abs=1e-12)
    edges, c, v_pov = neighbor_edges(m_v, region, box)
    assert v_pov[0, 0, 0].tolist() == [False, False, True, False, False]
    assert int(edges.sum()) == 4  # 2 undirected edges, each seen from both ends


def test_neighbor_band_width_is_the_dilation():
    """The same row as the hand case with neighbours one cell away (ne_dilation = 1): V_pov =
    {2} now pairs with 1 (inside B_a, c = 1) and 3 (outside, c = 0)."""
    a = [0.7, 0.1, 0.6, 0.3, 0.2]
    m_a = torch.tensor([[[a]]], dtype=D)
    m_v = torch.tensor([[[[0.1, 0.9, 0.8, 0.9, 0.1]]]], dtype=D)
    region = torch.tensor([[[[0.0, 0.0, 1.0, 0.0, 0.0]]]], dtype=D)
    box = torch.tensor([[[[1.0, 1.0, 1.0, 0.0, 0.0]]]], dtype=D)
    same12 = a[1] * a[2] + (1 - a[1]) * (1 - a[2])
    diff23 = a[2] * (1 - a[3]) + (1 - a[2]) * a[3]
    expected = (-math.log(same12) - math.log(diff23)) / 2
    got = neighbor_loss(m_a, m_v, region, box, dilation=1).item()
    assert got == pytest.approx(expected, abs=1e-12)
    edges, _, _ = neighbor_edges(m_v, region, box, dilation=1)
    assert int(edges.sum()) == 4
    # dilation 3 on a 1x5 row: only pixel 2's neighbours at distance 3 exist, and none does
    assert neighbor_loss(m_a, m_v, region, box, dilation=3).item() == 0.0
    with pytest.raises(ValueError, match="ne_dilation"):
        from blade.criterion import LossConfig
        LossConfig(ne_dilation=0)


def test_neighbor_edges_come_only_from_v_pov():
    torch.manual_seed(0)
    m_a = torch.rand(2, 1, 10, 10, dtype=D, requires_grad=True)
    m_v = torch.rand(2, 1, 10, 10, dtype=D)
    region = box_bitmasks(torch.tensor([[2.0, 2.0, 6.0, 6.0], [0, 0, 0, 0]]), 10, 10).to(D)
    box = box_bitmasks(torch.tensor([[1.0, 1.0, 8.0, 8.0], [0, 0, 9, 9]]), 10, 10).to(D)
    neighbor_loss(m_a, m_v, region, box).backward()
    _, _, v_pov = neighbor_edges(m_v, region, box)
    near = v_pov.to(D) + unfold_neighbours(v_pov.to(D))[:, 0].amax(1, keepdim=True)
    assert (m_a.grad[near == 0] == 0).all()  # no gradient away from V_pov and its neighbours
    assert (m_a.grad[near > 0] != 0).any()
    assert (m_a.grad[1] == 0).all()  # instance 1 has no region: no edges


def test_neighbor_zero_without_edges():
    m_a = torch.rand(1, 1, 6, 6, dtype=D, requires_grad=True)
    zeros = torch.zeros(1, 1, 6, 6, dtype=D)
    loss = neighbor_loss(m_a, zeros, torch.ones_like(zeros), torch.ones_like(zeros))
    assert loss.item() == 0.0
    loss.backward()
    assert (m_a.grad == 0).all()


# -- uniform and region ----------------------------------------------------------------------------
def test_uniform_hand_case_and_invariant():
    m_v = torch.tensor([[[[0.9, 0.2, 0.6]]]], dtype=D)
    m_a = torch.tensor([[[[0.5, 0.5, 0.1]]]], dtype=D)
    region = torch.tensor([[[[1.0, 1.0, 0.0]]]], dtype=D)
    assert uniform_loss(m_a, m_v, region, K=3.0).item() == pytest.approx(3.0 * 0.4 / 2)
    assert uniform_loss(torch.maximum(m_a, m_v), m_v, region).item() == 0.0
    assert uniform_loss(m_a, m_v, torch.zeros_like(region)).item() == 0.0


def test_region_loss_is_pixel_bce():
    logits = torch.zeros(2, 1, 3, 3, dtype=D)
    assert region_loss(logits, torch.ones_like(logits)).item() == pytest.approx(math.log(2))
    logits = torch.tensor([[[[logit(0.9), logit(0.2)]]]], dtype=D)
    target = torch.tensor([[[[1.0, 0.0]]]], dtype=D)
    assert region_loss(logits, target).item() == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)


# -- against the loop reference, gradcheck, edge cases ---------------------------------------------
def _random_batch(n=3, h=9, w=11, seed=0, dtype=D):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 1, h, w, generator=g, dtype=dtype) * 2
    m_v = torch.rand(n, 1, h, w, generator=g, dtype=dtype)
    img = torch.rand(n, 3, h, w, generator=g, dtype=dtype)
    boxes = torch.tensor([[1.0, 1.0, 8.0, 7.0], [0.0, 2.0, 11.0, 9.0], [3, 3, 6, 6]][:n])
    region_boxes = torch.tensor([[2.0, 2.0, 6.0, 5.0], [0, 0, 0, 0], [3, 3, 5, 5]][:n])
    box = box_bitmasks(boxes, h, w).to(dtype)
    region = box_bitmasks(region_boxes, h, w).to(dtype)
    return logits, m_v, color_similarity(img), box, region


def test_vectorized_equals_loop_reference():
    logits, m_v, sim, box, region = _random_batch()
    m_a = logits.sigmoid()
    assert torch.allclose(projection_loss(logits, box), projection_loss_ref(logits, box))
    for thr in (0.0, 0.3, 0.6):
        assert torch.allclose(pairwise_loss(logits, sim, box, thr),
                              pairwise_loss_ref(logits, sim, box, thr))
    assert torch.allclose(neighbor_loss(m_a, m_v, region, box),
                          neighbor_loss_ref(m_a, m_v, region, box))
    assert torch.allclose(uniform_loss(m_a, m_v, region, 2.0),
                          uniform_loss_ref(m_a, m_v, region, 2.0))


def test_gradcheck_float64():
    logits, m_v, sim, box, region = _random_batch(n=2, h=6, w=7)
    x = logits.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: projection_loss(z, box), (x,))
    assert torch.autograd.gradcheck(lambda z: pairwise_loss(z, sim, box, 0.0), (x,))
    assert torch.autograd.gradcheck(lambda z: neighbor_loss(z.sigmoid(), m_v, region, box), (x,))
    # uniform: keep away from the kink of max(m_v - m_a, 0)
    assert torch.autograd.gradcheck(lambda z: uniform_loss(z.sigmoid(), m_v.clamp(0.99), region),
                                    (x,))
    assert torch.autograd.gradcheck(lambda z: region_loss(z, region), (x,))


@pytest.mark.parametrize("case", ["empty", "zeros", "ones", "one_pixel_box", "saturated"])
def test_all_losses_finite(case):
    n, h, w = (0, 8, 8) if case == "empty" else (2, 8, 8)
    logits = torch.zeros(n, 1, h, w)
    box = torch.zeros(n, 1, h, w)
    region = torch.zeros(n, 1, h, w)
    m_v = torch.zeros(n, 1, h, w)
    if case == "ones":
        logits, box, region, m_v = logits + 30, box + 1, region + 1, m_v + 1
    elif case == "one_pixel_box":
        box[:, :, 3, 4] = region[:, :, 3, 4] = m_v[:, :, 3, 4] = 1
    elif case == "saturated":
        logits = torch.randn(n, 1, h, w) * 100
        box[:, :, 2:6, 2:6] = region[:, :, 3:5, 3:5] = m_v[:, :, 2:6, 2:6] = 1
    sim = torch.ones(n, 8, h, w)
    logits.requires_grad_(True)
    m_a = logits.sigmoid()
    losses = [projection_loss(logits, box), pairwise_loss(logits, sim, box),
              neighbor_loss(m_a, m_v, region, box), uniform_loss(m_a, m_v, region),
              region_loss(logits, region)]
    total = sum(losses)
    assert all(torch.isfinite(x) and x.dim() == 0 for x in losses)
    total.backward()
    assert torch.isfinite(logits.grad).all()


# -- baselines: BBTP multiple-instance loss, smoothness, dice -----------------------------------
def test_mil_loss_hand_computed():
    # 3x4 grid, box rows 0-1 x cols 1-2; all logits 0 except (0, 1) = 2
    box = torch.zeros(1, 1, 3, 4, dtype=D)
    box[..., 0:2, 1:3] = 1
    x = torch.zeros(1, 1, 3, 4, dtype=D)
    x[0, 0, 0, 1] = 2.0
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    # rows 0,1 cross the box (positive bags, max 2 and 0), row 2 misses it (negative, max 0);
    # columns 1,2 cross (max 2 and 0), columns 0,3 miss (max 0 each)
    rows = (sp(-2) + sp(0)) / 2 + sp(0)
    cols = (sp(-2) + sp(0)) / 2 + (sp(0) + sp(0)) / 2
    assert mil_loss(x, box, alpha=None).item() == pytest.approx((rows + cols) / 2, abs=1e-12)
    # alpha-softmax: a bag {p1, p2} scores (p1 e^(4 p1) + p2 e^(4 p2)) / (e^(4 p1) + e^(4 p2))
    p2, p0 = 1 / (1 + math.exp(-2)), 0.5
    s = (p2 * math.exp(4 * p2) + p0 * math.exp(4 * p0)) / (math.exp(4 * p2) + math.exp(4 * p0))
    rows = (-math.log(s) - math.log(p0)) / 2 - math.log(1 - p0)
    cols = (-math.log(s) - math.log(p0)) / 2 - math.log(1 - p0)
    assert mil_loss(x, box, alpha=4.0).item() == pytest.approx((rows + cols) / 2, abs=1e-12)


def test_mil_loss_is_low_only_for_masks_touching_every_line_of_the_box():
    box = box_bitmasks(torch.tensor([[4.0, 4, 20, 16]]), 24, 24, 1)
    inside = torch.where(box > 0, 10.0, -10.0)
    assert mil_loss(inside, box, alpha=None) < 1e-3
    assert mil_loss(inside, box) < 1e-3
    diag = torch.full_like(box, -10.0)  # a thin diagonal inside the box also satisfies every bag
    for k in range(12):
        diag[0, 0, 4 + k, 4 + k] = 10.0
    diag[0, 0, 15, 19] = 10.0
    for k in range(12, 16):
        diag[0, 0, 15, 4 + k] = 10.0
    assert mil_loss(diag, box, alpha=None) < 1e-3  # tightness alone does not fill the box
    assert mil_loss(diag, box) > mil_loss(inside, box)  # the smooth max prefers full lines
    outside = inside.clone()
    outside[0, 0, 0, 0] = 10.0  # one pixel on a line that misses the box
    assert mil_loss(outside, box, alpha=None) > 1.0 and mil_loss(outside, box) > 0.01
    assert mil_loss(torch.zeros(0, 1, 5, 5), torch.zeros(0, 1, 5, 5)).item() == 0


def test_smoothness_loss_hand_computed_and_dice():
    a, b = 1.0, -0.5
    x = torch.tensor([[[[a, b]]]], dtype=D)  # 1x2 image: two edges, each (p_a - p_b)^2
    pa, pb = 1 / (1 + math.exp(-a)), 1 / (1 + math.exp(-b))
    assert smoothness_loss(x).item() == pytest.approx((pa - pb) ** 2)
    assert smoothness_loss(torch.full((2, 1, 5, 5), 3.0)).item() == 0
    m = torch.zeros(1, 1, 4, 4, dtype=D)
    m[..., :2, :] = 1
    perfect = torch.where(m > 0, 30.0, -30.0).to(D)
    assert mask_dice_loss(perfect, m).item() == pytest.approx(0, abs=1e-6)
    p = torch.full_like(m, 0.5)
    expected = 1 - 2 * (0.5 * 8) / (0.25 * 16 + 8 + 1e-5)
    assert mask_dice_loss(torch.zeros_like(m), m).item() == pytest.approx(expected)
    del p


def test_mil_loss_gives_every_pixel_of_a_bag_a_gradient():
    box = box_bitmasks(torch.tensor([[2.0, 2, 6, 6]]), 8, 8, 1)
    x = torch.zeros(1, 1, 8, 8, requires_grad=True)  # the collapsed state: p = 0.5 everywhere
    mil_loss(x, box).backward()
    assert (x.grad[0, 0][box[0, 0] > 0] < 0).all()  # every pixel inside is pushed up
    assert (x.grad[0, 0][box[0, 0] == 0] > 0).all()  # every pixel outside is pushed down


def test_losses_with_nothing_to_average_are_zero_and_backpropagate():
    """No kept pairwise edge, no neighbour edge, an empty R: each loss is exactly 0, stays
    attached to the graph and gives zero gradients (no early exit, so no host sync on a GPU:
    the sums over nothing are divided by max(count, 1))."""
    from blade.losses import neighbor_loss, pairwise_loss, uniform_loss

    logits = torch.randn(2, 1, 6, 6, requires_grad=True)
    box = torch.zeros(2, 1, 6, 6)  # no box pixel: no pairwise edge, no neighbour edge
    sim = torch.ones(2, 8, 6, 6)
    p = torch.sigmoid(logits)
    m_v = torch.full((2, 1, 6, 6), 0.9)
    terms = [pairwise_loss(logits, sim, box), neighbor_loss(p, m_v, box, box),
             uniform_loss(p, m_v, box)]
    for loss in terms:
        assert loss.item() == 0.0 and loss.requires_grad
    sum(terms).backward()
    assert logits.grad is not None and (logits.grad == 0).all()
