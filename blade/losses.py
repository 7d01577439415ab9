"""Every box-level training signal of BLADE, as small pure functions (no Python loop over
instances, pixels or edges). Masks are [N,1,H,W] at one resolution (the mask head's stride 4 in
training); boxes and regions come as {0,1} float bitmasks of the same shape
(:func:`blade.boxes.box_bitmasks`, :func:`blade.overlap.region_bitmasks`). Each function
returns a scalar tensor that is finite and differentiable also for N = 0 and empty masks.

Sources of the formulas and constants:

* ``projection_loss``, ``pairwise_loss``: BoxInst (Tian et al. 2021) as in AdelaiDet's code
  (``compute_project_term``, ``compute_pairwise_term``): dice with eps 1e-5 on the axis
  max-projections; -log P(same label) in log space over the 8 neighbours at dilation 2, edges
  kept where colour similarity >= threshold (code default 0.3; the BoxInst paper favoured 0.1)
  and the centre pixel lies in the box, normalised by the number of kept edges.
* ``mil_loss``, ``smoothness_loss``: the BBTP baseline (Hsu et al. 2019, box tightness prior):
  every row and column of the box crossing it holds at least one object pixel (positive bag,
  -log S), every row and column of the mask grid that misses the box holds none (negative
  bag, -log(1 - S)), S a smooth maximum (alpha-softmax, alpha = 4: the kit's choice); plus a
  colour-blind smoothness over the 8 direct neighbours. BBTP's exact bag sampling and weights
  are not reproduced: whole lines as bags, bag means.
* ``dice_loss`` on full masks: CondInst's mask loss, used here only by the fully supervised
  upper bound.
* ``neighbor_loss`` (Eq. 10-13), ``uniform_loss`` (Eq. 14), ``region_loss`` (Eq. 7): BLADE
  paper only, no reference code exists. Paper-derived choices, each a parameter: t = 0.5
  (threshold on m_v defining V_pov), K = 1.0 (the paper gives no value), the one-pixel-gap
  neighbourhood; means are taken over all edges / region pixels of the batch (every edge and
  pixel weighs the same, as BoxInst's pairwise term does).

The weights alpha, the pairwise warm-up and whether m_v is detached belong to the criterion
(:mod:`blade.criterion`), not to these functions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .pairwise import (NEIGHBOURS, color_similarity, gather_edges, neighbour_valid,
                       unfold_neighbours)

__all__ = ["projection_loss", "pairwise_loss", "pairwise_weights", "mil_loss", "smoothness_loss",
           "mask_dice_loss", "neighbor_loss",
           "neighbor_edges", "uniform_loss", "region_loss", "dice_loss", "color_similarity",
           "NEIGHBOURS"]

DICE_EPS = 1e-5  # AdelaiDet dice_coefficient
PROB_EPS = 1e-6  # clamp before log in the neighbour BCE


def _zero(x: torch.Tensor) -> torch.Tensor:
    """A 0 that stays attached to the graph (so backward() works on empty batches)."""
    return x.sum() * 0.0


def dice_loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[N,...] -> [N]: 1 - 2 sum(x t) / (sum(x^2) + sum(t^2) + 1e-5), per instance."""
    x, target = x.flatten(1), target.flatten(1)
    inter = (x * target).sum(1)
    return 1.0 - 2.0 * inter / ((x * x).sum(1) + (target * target).sum(1) + DICE_EPS)


def projection_loss(mask_logits: torch.Tensor, box_masks: torch.Tensor) -> torch.Tensor:
    """BoxInst projection term: dice of the mask's max-projections onto both axes vs the box's.

    mask_logits, box_masks: [N,1,H,W]. Mean over instances; 0 for N = 0.
    """
    if mask_logits.shape[0] == 0:
        return _zero(mask_logits)
    p = mask_logits.sigmoid()
    cols = dice_loss(p.amax(dim=2), box_masks.amax(dim=2))  # projection onto the x axis
    rows = dice_loss(p.amax(dim=3), box_masks.amax(dim=3))  # projection onto the y axis
    return (cols + rows).mean()


def pairwise_weights(color_sim: torch.Tensor, box_masks: torch.Tensor,
                     threshold: float = 0.3) -> torch.Tensor:
    """[N,8,H,W] {0,1}: an edge counts when its colour similarity >= threshold, its centre
    pixel is inside the box and its neighbour is inside the image."""
    h, w = box_masks.shape[-2:]
    valid = neighbour_valid(h, w, device=box_masks.device, dtype=box_masks.dtype)
    return (color_sim >= threshold).to(box_masks.dtype) * box_masks * valid


def pairwise_loss(mask_logits: torch.Tensor, color_similarity: torch.Tensor,
                  box_masks: torch.Tensor, threshold: float = 0.3) -> torch.Tensor:
    """BoxInst pairwise term: mean over kept edges of -log(p_i p_j + (1-p_i)(1-p_j)).

    mask_logits, box_masks: [N,1,H,W]; color_similarity: [N,8,H,W] (``color_similarity`` of
    each instance's image, in ``NEIGHBOURS`` order). Computed from log-sigmoids with logaddexp,
    so it stays finite for saturated logits, and only on the kept edges.
    """
    if mask_logits.shape[0] == 0:
        return _zero(mask_logits)
    h, w = box_masks.shape[-2:]
    valid = neighbour_valid(h, w, device=box_masks.device, dtype=torch.bool)
    keep = (color_similarity >= threshold) & (box_masks > 0.5) & valid  # [N,8,H,W], as
    # pairwise_weights > 0, in bool (a quarter of the memory traffic of the float product)
    n_kept = keep.sum()  # no early exit on 0 (a host sync on a GPU): the sums below are 0
    x_c, x_n = gather_edges(mask_logits, keep)  # logits at both ends of each kept edge
    log_same = torch.logaddexp(F.logsigmoid(x_c) + F.logsigmoid(x_n),  # log p_i p_j
                               F.logsigmoid(-x_c) + F.logsigmoid(-x_n))  # log (1-p_i)(1-p_j)
    return -log_same.sum() / n_kept.clamp(min=1)


def mil_loss(mask_logits: torch.Tensor, box_masks: torch.Tensor,
             alpha: float | None = 4.0) -> torch.Tensor:
    """BBTP-style multiple-instance loss. mask_logits, box_masks: [N,1,H,W].

    Positive bags: each row (column) that crosses the box, restricted to the box; negative bags:
    each row (column) of the grid that does not cross it. A bag's score S is a smooth maximum
    of its probabilities p, BBTP's alpha-softmax S = sum p e^(alpha p) / sum e^(alpha p)
    (``alpha=None``: the hard max, computed in log space); the loss is -log S for positive
    bags and -log(1 - S) for negative ones: the mean over positive bags plus the mean over
    negative bags, per instance, then the mean over instances; 0 for N = 0. The smooth maximum
    spreads the gradient over the bag: with the hard max a whole-image mask head trained by
    this loss alone collapsed to p = 0.5 everywhere in a ``cpu`` run (loss stuck at 2 log 2).
    """
    if mask_logits.shape[0] == 0:
        return _zero(mask_logits)
    inside = box_masks > 0.5
    loss = 0.0
    for dim in (3, 2):  # rows (max along x), then columns (max along y)
        crosses = inside.any(dim=dim)  # [N,1,H] or [N,1,W]: this line crosses the box
        if alpha is None:
            lowest = torch.finfo(mask_logits.dtype).min
            pos = mask_logits.masked_fill(~inside, lowest).amax(dim=dim)
            neg = mask_logits.amax(dim=dim)
            pos_term, neg_term = F.softplus(-pos), F.softplus(neg)
        else:
            p = mask_logits.sigmoid()
            w_pos = torch.softmax((alpha * p).masked_fill(~inside, float("-inf")), dim=dim)
            s_pos = (torch.nan_to_num(w_pos) * p).sum(dim)  # NaN rows: lines missing the box
            s_neg = (torch.softmax(alpha * p, dim=dim) * p).sum(dim)
            pos_term = -s_pos.clamp(min=PROB_EPS).log()
            neg_term = -(1 - s_neg).clamp(min=PROB_EPS).log()
        n_pos = crosses.sum((1, 2)).clamp(min=1)
        n_neg = (~crosses).sum((1, 2)).clamp(min=1)
        loss = loss + (pos_term * crosses).sum((1, 2)) / n_pos
        loss = loss + (neg_term * ~crosses).sum((1, 2)) / n_neg
    return (loss / 2).mean()


def smoothness_loss(mask_logits: torch.Tensor) -> torch.Tensor:
    """Colour-blind pairwise smoothness (BBTP's pairwise term): mean over all in-image edges to
    the 8 direct neighbours of (p_i - p_j)^2. mask_logits: [N,1,H,W]."""
    if mask_logits.shape[0] == 0:
        return _zero(mask_logits)
    p = mask_logits.sigmoid()
    h, w = p.shape[-2:]
    valid = neighbour_valid(h, w, dilation=1, device=p.device, dtype=p.dtype)  # [1,8,H,W]
    diff = (p - unfold_neighbours(p, dilation=1)[:, 0]) ** 2  # [N,8,H,W]
    return (diff * valid).sum() / (valid.sum() * p.shape[0])


def mask_dice_loss(mask_logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Fully supervised mask loss (CondInst): dice of sigmoid(logits) with the ground-truth
    masks, [N,1,H,W] each, mean over instances; 0 for N = 0. Only the upper-bound baseline
    reads masks."""
    if mask_logits.shape[0] == 0:
        return _zero(mask_logits)
    return dice_loss(mask_logits.sigmoid(), masks).mean()


def neighbor_edges(m_v: torch.Tensor, region_masks: torch.Tensor, amodal_box_masks: torch.Tensor,
                   t: float = 0.5, dilation: int = 2, allowed: torch.Tensor | None = None):
    """The graph of Eq. 10-11. Returns ``(edges [N,8,H,W] bool, c [N,8,H,W] float, v_pov)``.

    ``dilation``: distance to the 8 neighbours in mask cells (2: the paper's "one-pixel gap";
    the band the loss reaches beyond V_pov is this wide, in stride-4 cells).
    ``allowed`` [N,1,H,W] (a kit variant, None = the paper): where expansion may go. A
    "same label" edge (c = 1) is kept only when each of its ends lies in V_pov or in
    ``allowed``; "different label" edges (c = 0, across the border of B_a) are all kept. With
    ``allowed`` = B_a this is the paper's graph (V_pov lies inside R, inside B_a).

    ``v_pov`` [N,1,H,W] bool: pixels inside R whose visible probability exceeds t (Eq. 10).
    ``edges[n, k, y, x]``: the edge from (y, x) to its k-th neighbour exists (inside the image)
    and touches V_pov at either end. ``c``: 1 where both ends are on the same side of B_a (Eq. 11).
    """
    h, w = m_v.shape[-2:]
    v_pov = (region_masks > 0.5) & (m_v > t)  # [N,1,H,W]
    valid = neighbour_valid(h, w, dilation, device=m_v.device, dtype=m_v.dtype) > 0.5  # [1,8,H,W]
    v_nb = unfold_neighbours(v_pov.to(m_v.dtype), dilation)[:, 0] > 0.5  # [N,8,H,W]
    edges = (v_pov | v_nb) & valid
    b = amodal_box_masks > 0.5
    b_nb = unfold_neighbours(b.to(m_v.dtype), dilation)[:, 0] > 0.5
    c = (b == b_nb).to(m_v.dtype)  # same side of the amodal box
    if allowed is not None:  # variant: c = 1 edges only inside the allowed area
        ok = (allowed > 0.5) | v_pov
        ok_nb = unfold_neighbours(ok.to(m_v.dtype), dilation)[:, 0] > 0.5
        edges = edges & ((c < 0.5) | (ok & ok_nb))
    return edges, c, v_pov


def neighbor_loss(m_a: torch.Tensor, m_v: torch.Tensor, region_masks: torch.Tensor,
                  amodal_box_masks: torch.Tensor, t: float = 0.5, dilation: int = 2,
                  allowed: torch.Tensor | None = None) -> torch.Tensor:
    """BLADE neighbour loss l_ne (Eq. 10-13): BCE between the predicted consistency of m_a
    across each edge of E_pov and c_e, averaged over the edges; 0 when there are none.

    m_a, m_v: probabilities [N,1,H,W]; the V_pov selection (m_v > t) carries no gradient;
    ``dilation``, ``allowed`` as in :func:`neighbor_edges`.
    """
    edges, c, _ = neighbor_edges(m_v, region_masks, amodal_box_masks, t, dilation, allowed)
    n_edges = edges.sum()  # no early exit on 0 (a host sync on a GPU): the sums below are 0
    a, a_nb = gather_edges(m_a, edges, dilation)  # m_a at both ends of each edge of E_pov
    c = c[edges]
    same = a * a_nb + (1 - a) * (1 - a_nb)  # c~_e (Eq. 12)
    diff = a * (1 - a_nb) + (1 - a) * a_nb  # 1 - c~_e, computed directly for accuracy
    bce = -(c * same.clamp(min=PROB_EPS).log() + (1 - c) * diff.clamp(min=PROB_EPS).log())
    return bce.sum() / n_edges.clamp(min=1)  # Eq. 13


def uniform_loss(m_a: torch.Tensor, m_v: torch.Tensor, region_masks: torch.Tensor,
                 K: float = 1.0) -> torch.Tensor:
    """BLADE uniform loss l_un (Eq. 14): K / N_R * sum over R of max(m_v - m_a, 0); 0 if R is
    empty. m_a, m_v: probabilities [N,1,H,W]."""
    r = (region_masks > 0.5).to(m_a.dtype)
    n_r = r.sum()  # 0: the sum is 0 too, and no early exit makes the host wait (issue 15)
    return K * (F.relu(m_v - m_a) * r).sum() / n_r.clamp(min=1)


def region_loss(region_logits: torch.Tensor, region_masks: torch.Tensor) -> torch.Tensor:
    """Region branch loss (Eq. 7 without alpha_r): pixel BCE against the R bitmask, mean over
    all pixels of all instances."""
    if region_logits.shape[0] == 0:
        return _zero(region_logits)
    return F.binary_cross_entropy_with_logits(region_logits, region_masks)
