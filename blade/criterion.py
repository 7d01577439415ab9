"""The BLADE training criterion: named loss terms and their weights, switchable per term.

    terms, weights = blade_criterion(outputs, targets, cfg, iteration)
    total = sum(weights[k] * terms[k] for k in terms)

``outputs`` hold the three branches' mask logits for the N training instances
(``visible_logits``, ``amodal_logits``, ``region_logits``, each [N,1,H,W]); ``targets`` hold
``visible_box_masks`` (B_v), ``amodal_box_masks`` (B_a), ``region_masks`` (R) as {0,1} bitmasks
of the same shape and ``color_similarity`` [N,8,H,W] of each instance's image.

Loss (paper Eq. 7-9):  L = L^v + L^a + L^r with
  L^v = L_proj(m_v, B_v) + w(it) L_pair(m_v)                         (BoxInst, weights 1/1)
  L^a = a1 L_proj(m_a, B_a) + a2 w(it) L_pair(m_a) + a3 (l_ne + l_un)  (Eq. 8-9)
  L^r = a_r BCE(m_r, R)                                              (Eq. 7)
where w(it) = min(it / warmup, 1) is BoxInst's pairwise warm-up (code default 10000 iterations).

The paper's Table 2 ablations are configurations of :class:`LossConfig` (``TABLE2_ROWS``):
UN = ``use_uniform``, NE = ``use_neighbor``, FS = ``use_fusion`` (region branch, L^r and the
fused output; without it the amodal branch's mask is the prediction), and the weight rows a-d
set (a1, a2, a3).

The Table 1 baselines are configurations too: with ``use_amodal=False, use_fusion=False`` only
the first head remains; ``vis_target`` picks the box that supervises it (B_v: BoxInst; B_a:
BoxInst on amodal boxes) and ``vis_loss`` its loss (``boxinst``; ``mil``: BBTP's box tightness
prior; ``dice``: full supervision with ground-truth masks, the upper bound). See
:mod:`blade.experiments` for the named methods.

Kit variants (issue 13; defaults reproduce the paper, see ``expansion_area``): ``ne_allow``
says where l_ne may expand m_a, ``ne_dilation`` sets the band's width, ``con_warmup`` ramps
l_ne and l_un up with BoxInst's pairwise warm-up instead of applying them at full weight from
iteration 0, when m_v (hence V_pov) is still noise. ``con_isolate`` scores l_ne and l_un on
``amodal_logits_iso``: the same m_a, computed from detached mask features, m_v input and
controller tower (``BladeModel._masks``), with m_v in the terms detached whatever
``detach_visible`` says, so that their gradients reach only the controller's rows that make
the amodal head's parameters, never what the visible branch shares. Measured before building
it: BLADE's visible branch scores 2.1 points below row 3's at FG-0 (``results/branches.py``);
row 3 differs from BLADE only by l_ne, so l_ne reaches m_v through what the branches share.

m_v in the connectivity terms is detached by default (``detach_visible``): l_ne and l_un are
meant to pull m_a towards what the visible branch sees (the "directed expansion"), not to move
m_v. Without the detach, l_un = max(m_v - m_a, 0) is also lowered by *shrinking* m_v, which
fights the visible branch's own box supervision. The V_pov selection (m_v > t) has no gradient
either way. The paper does not say which it did: this is the kit's documented choice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .losses import (mask_dice_loss, mil_loss, neighbor_loss, pairwise_loss, projection_loss,
                     region_loss, smoothness_loss, uniform_loss)

VIS_TARGETS = ("visible", "amodal")
VIS_LOSSES = ("boxinst", "mil", "dice")
NE_ALLOW = ("box", "region", "hidden", "depth", "occluded")


@dataclass
class LossConfig:
    alpha_proj: float = 2.0  # a1^a, amodal projection weight (paper, Table 2 row b)
    alpha_pair: float = 1.0  # a2^a, amodal pairwise weight (paper)
    alpha_con: float = 1.0  # a3^a, connectivity weight on l_ne + l_un (paper)
    alpha_region: float = 1.0  # a^r of Eq. 7; the paper gives no value: 1.0 is the kit's choice
    K: float = 1.0  # uniform loss severity (Eq. 14); the paper gives no value
    t: float = 0.5  # threshold on m_v defining V_pov (Eq. 10); paper-derived
    ne_dilation: int = 2  # l_ne neighbour distance in stride-4 mask cells (paper: one-pixel gap = 2)
    # -- kit variants of the connectivity loss (issue 13; defaults = the paper) ----------------
    ne_allow: str = "box"  # where l_ne may pull m_a: box (paper), region, hidden, depth, occluded
    ne_margin: int = 0  # ne_allow="occluded": mask cells of B_a beyond B_v that do not count
    con_warmup: bool = False  # warm l_ne and l_un up with the pairwise term (paper: full weight at 0)
    con_isolate: bool = False  # l_ne, l_un train only the amodal head's controller rows (paper: all weights)
    color_threshold: float = 0.3  # BoxInst code default (its paper favoured 0.1)
    pairwise_warmup: int = 10000  # BoxInst code default, iterations of linear pairwise warm-up
    use_visible: bool = True  # visible branch with BoxInst terms on B_v
    use_amodal: bool = True  # amodal branch terms on B_a
    use_uniform: bool = True  # UN column of Table 2
    use_neighbor: bool = True  # NE column of Table 2
    use_fusion: bool = True  # FS column of Table 2: region branch + L^r + fused output
    detach_visible: bool = True  # stop gradients from l_ne/l_un into m_v (see module docstring)
    # -- single-branch baselines (Table 1): what trains the first (visible) head ------------------
    vis_target: str = "visible"  # visible (B_v, BLADE/BoxInst) or amodal (B_a: BoxInst/BBTP on B_a)
    vis_loss: str = "boxinst"  # boxinst (projection + pairwise), mil (BBTP), dice (full masks)
    smooth_weight: float = 1.0  # BBTP smoothness weight with vis_loss=mil (kit's choice)
    mil_alpha: float = 4.0  # BBTP alpha-softmax sharpness in the MIL bags (kit's choice)

    def __post_init__(self):
        if self.vis_target not in VIS_TARGETS:
            raise ValueError(f"vis_target must be one of {VIS_TARGETS}, got {self.vis_target!r}")
        if self.vis_loss not in VIS_LOSSES:
            raise ValueError(f"vis_loss must be one of {VIS_LOSSES}, got {self.vis_loss!r}")
        if self.ne_allow not in NE_ALLOW:
            raise ValueError(f"ne_allow must be one of {NE_ALLOW}, got {self.ne_allow!r}")
        if not (isinstance(self.ne_dilation, int) and self.ne_dilation >= 1):
            raise ValueError(f"ne_dilation must be an integer >= 1, got {self.ne_dilation!r}")
        if not (isinstance(self.ne_margin, int) and self.ne_margin >= 0):
            raise ValueError(f"ne_margin must be an integer >= 0, got {self.ne_margin!r}")


# Table 2 of the paper: rows 1-8 toggle (UN, NE, FS); rows a-d set (a1, a2, a3).
TABLE2_ROWS = {
    "1": dict(use_uniform=True, use_neighbor=True, use_fusion=True),
    "2": dict(use_uniform=False, use_neighbor=True, use_fusion=True),
    "3": dict(use_uniform=True, use_neighbor=False, use_fusion=True),
    "4": dict(use_uniform=False, use_neighbor=False, use_fusion=True),
    "5": dict(use_uniform=True, use_neighbor=True, use_fusion=False),
    "6": dict(use_uniform=False, use_neighbor=True, use_fusion=False),
    "7": dict(use_uniform=True, use_neighbor=False, use_fusion=False),
    "8": dict(use_uniform=False, use_neighbor=False, use_fusion=False),
    "a": dict(alpha_proj=1.0, alpha_pair=1.0, alpha_con=1.0),
    "b": dict(alpha_proj=2.0, alpha_pair=1.0, alpha_con=1.0),
    "c": dict(alpha_proj=1.0, alpha_pair=2.0, alpha_con=1.0),
    "d": dict(alpha_proj=1.0, alpha_pair=1.0, alpha_con=2.0),
}


def table2_config(row: str, base: LossConfig | None = None) -> LossConfig:
    """The LossConfig of one row of the paper's Table 2 ('1'-'8', 'a'-'d')."""
    if row not in TABLE2_ROWS:
        raise ValueError(f"unknown Table 2 row {row!r}; rows are {sorted(TABLE2_ROWS)}")
    return replace(base or LossConfig(), **TABLE2_ROWS[row])


def warmup_factor(iteration: int, warmup: int) -> float:
    """BoxInst's linear pairwise warm-up: min(iteration / warmup, 1)."""
    return 1.0 if warmup <= 0 else min(float(iteration) / warmup, 1.0)


def others_visible(m_v: torch.Tensor, gt_index: torch.Tensor, gt_image: torch.Tensor,
                   t: float = 0.5) -> torch.Tensor:
    """[N,1,H,W] {0,1}: where another object of the same image is visible, by the model's own
    visible masks. m_v [N,1,H,W] probabilities of the N training instances (several per
    ground-truth object: one per positive location); ``gt_index`` [N] their object (an index
    into the batch's objects); ``gt_image`` [G] each object's image. An object's visible mask
    is the union over its instances of m_v > t (no gradient); an instance gets the union of
    the visible masks of the *other* objects of its image. An object without a positive
    location in this step has no instance, hence no visible mask here."""
    n = m_v.shape[0]
    if n == 0:
        return torch.zeros_like(m_v)
    on = (m_v.detach() > t).to(m_v.dtype)
    g = len(gt_image)
    per_obj = on.new_zeros((g,) + on.shape[1:]).index_add_(0, gt_index, on).clamp_(max=1)
    same_image = (gt_image[:, None] == gt_image[None, :]).to(on.dtype)  # [G,G], no host sync
    per_img = (same_image @ per_obj.flatten(1)).view_as(per_obj)  # objects visible per pixel
    others = per_img[gt_index] - per_obj[gt_index]
    return (others > 0.5).to(m_v.dtype)


def expansion_area(ne_allow: str, targets: dict, m_v: torch.Tensor | None = None,
                   t: float = 0.5, margin: int = 0) -> torch.Tensor | None:
    """[N,1,H,W] where l_ne may pull m_a outwards (``neighbor_edges``' ``allowed``).

    * ``"box"``: the paper (Eq. 11): anywhere in B_a. The band grows in every direction inside
      the box, into background too, and the projection term cannot stop it (any superset of
      the mask inside B_a has the same box projections).
    * ``"region"``: only inside the overlap region R, where another object's box could hide
      a part; the band no longer grows into the rest of the box.
    * ``"hidden"``: R minus the visible box B_v. A part outside B_v but inside B_a is hidden
      by definition, so this is where the hidden extent must be; an unoccluded object (B_v =
      B_a) gets no expansion at all, even when R covers most of its box. Uses only the boxes
      training already has.
    * ``"depth"``: R where *another* object of the image is visible, by the model's own m_v
      (``others_visible``; needs ``m_v`` and the targets ``gt_index``, ``gt_image``). A
      visibility cue, not a full depth order: an object can be hidden only behind something
      seen there, so the pull into background pixels of R that no object covers is gone. It
      is symmetric at a contact line: the object in front is pulled into the other's visible
      pixels inside its own box as much as the occluded one is pulled under the occluder
      (``tests/test_criterion.py::test_ne_allow_depth_at_a_contact_line``).
    * ``"occluded"``: the paper's rule (anywhere in B_a), but only for an object whose amodal
      box bitmask has a mask cell outside its visible box bitmask (more than ``margin`` cells
      away from it), i.e. an object the training boxes prove to be hidden somewhere; every
      other object gets no outward pull. An occlusion flag per object, read from boxes
      training already has, not a pairwise depth order: an unoccluded object that has an R
      (67 % of FG-0 objects on the 300 validation scenes) is left to the projection and
      pairwise terms, as in Table 2 row 3, and so is an unoccluded object in front at a
      contact line; an object hidden by one neighbour and in front of another is pulled
      towards both. Unlike ``"hidden"`` it keeps the pull inside B_v for the objects it pulls,
      so their band is the paper's. What it gives up: objects whose amodal box does not reach
      beyond their visible box by a cell (hidden only inside it) are not pulled at all; on
      the synthetic training scenes at the ``cpu`` input size 72 % of FG-1, 50 % of FG-2 and
      17 % of FG-3 objects (``cpu512``: 68 / 46 / 13 %). On real annotations, where the two
      boxes of an unoccluded object can differ by rounding, ``margin`` (``ne_margin``, e.g. 1)
      keeps such a sliver from flagging it; the flag also depends on the input scale.
    """
    if ne_allow == "box":
        return None
    region = targets["region_masks"]
    if ne_allow == "region":
        return region
    if ne_allow == "depth":
        if m_v is None or "gt_index" not in targets or "gt_image" not in targets:
            raise ValueError("ne_allow='depth' needs m_v and the targets gt_index, gt_image "
                             "(BladeModel.forward provides them)")
        return region * others_visible(m_v, targets["gt_index"], targets["gt_image"], t)
    if ne_allow == "occluded":
        b_a = targets["amodal_box_masks"]  # [N,1,H,W]
        b_v = targets["visible_box_masks"]
        if margin > 0:  # B_v grown by ``margin`` cells: a thinner sliver of B_a does not count
            b_v = torch.nn.functional.max_pool2d(b_v, 2 * margin + 1, stride=1, padding=margin)
        beyond = (b_a > 0.5) & (b_v < 0.5)
        pulled = beyond.flatten(1).any(1).to(b_a.dtype).view(-1, 1, 1, 1)  # [N,1,1,1], no sync
        return b_a * pulled
    if ne_allow == "hidden":
        return region * (1 - targets["visible_box_masks"])
    raise ValueError(f"ne_allow must be one of {NE_ALLOW}, got {ne_allow!r}")


def blade_criterion(outputs: dict, targets: dict, cfg: LossConfig, iteration: int = 0):
    """Returns ``(terms, weights)``: dicts of scalar tensors and floats with the same keys.

    Keys (present when switched on): vis_proj, vis_pair (or vis_mil, vis_smooth, or vis_dice
    for the baselines), amo_proj, amo_pair, amo_neighbor, amo_uniform, region. With
    ``vis_loss="dice"`` the targets also hold ``visible_masks``/``amodal_masks`` [N,1,H,W].
    """
    terms, weights = {}, {}
    w = warmup_factor(iteration, cfg.pairwise_warmup)
    sim = targets["color_similarity"]
    if cfg.use_visible:
        v = outputs["visible_logits"]
        box = targets[f"{cfg.vis_target}_box_masks"]
        if cfg.vis_loss == "boxinst":
            terms["vis_proj"] = projection_loss(v, box)
            terms["vis_pair"] = pairwise_loss(v, sim, box, cfg.color_threshold)
            weights["vis_proj"], weights["vis_pair"] = 1.0, w
        elif cfg.vis_loss == "mil":
            terms["vis_mil"] = mil_loss(v, box, cfg.mil_alpha)
            terms["vis_smooth"] = smoothness_loss(v)
            weights["vis_mil"], weights["vis_smooth"] = 1.0, cfg.smooth_weight * w
        else:  # dice: the fully supervised upper bound, the only reader of masks
            terms["vis_dice"] = mask_dice_loss(v, targets[f"{cfg.vis_target}_masks"])
            weights["vis_dice"] = 1.0
    if cfg.use_amodal:
        a = outputs["amodal_logits"]
        terms["amo_proj"] = projection_loss(a, targets["amodal_box_masks"])
        terms["amo_pair"] = pairwise_loss(a, sim, targets["amodal_box_masks"], cfg.color_threshold)
        weights["amo_proj"], weights["amo_pair"] = cfg.alpha_proj, cfg.alpha_pair * w
        if cfg.use_neighbor or cfg.use_uniform:
            m_a = (outputs["amodal_logits_iso"] if cfg.con_isolate else a).sigmoid()
            m_v = outputs["visible_logits"].sigmoid()
            if cfg.detach_visible or cfg.con_isolate:
                m_v = m_v.detach()
            region = targets["region_masks"]
            w_con = cfg.alpha_con * (w if cfg.con_warmup else 1.0)
            if cfg.use_neighbor:
                terms["amo_neighbor"] = neighbor_loss(
                    m_a, m_v, region, targets["amodal_box_masks"], cfg.t, cfg.ne_dilation,
                    expansion_area(cfg.ne_allow, targets, m_v, cfg.t, cfg.ne_margin))
                weights["amo_neighbor"] = w_con
            if cfg.use_uniform:
                terms["amo_uniform"] = uniform_loss(m_a, m_v, region, cfg.K)
                weights["amo_uniform"] = w_con
    if cfg.use_fusion:
        terms["region"] = region_loss(outputs["region_logits"], targets["region_masks"])
        weights["region"] = cfg.alpha_region
    return terms, weights


def total_loss(terms: dict, weights: dict) -> torch.Tensor:
    """sum_k weights[k] * terms[k], in float32 (terms may be float16 under autocast)."""
    return sum(weights[k] * terms[k].float() for k in terms)
