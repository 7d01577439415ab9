"""Toy optimisations behind notebooks 02 and 03: one occluded instance, one free logit map.

Instead of a network, the amodal mask m_a is a free [1,1,h,w] logit map optimised with Adam
under any mix of the amodal-branch terms (projection, pairwise, neighbour, uniform), with m_v
*fixed* from the ground-truth visible mask. This isolates what each loss does to a mask, in
seconds on a CPU:

* notebook 02: projection + pairwise only (BoxInst) on B_v or B_a;
* notebook 03: the active band of the connectivity loss (paper Fig. 4) forming at the visible
  boundary inside R, and the expansion settling between encouragement (neighbour, uniform) and
  inhibition (projection, pairwise).

Work happens at a mask stride (default 2) with BoxInst's conventions: colour similarity on the
average-pooled image, boxes and regions rasterized with :func:`blade.boxes.box_bitmasks`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .boxes import box_bitmasks, mask_to_box
from .criterion import NE_ALLOW, expansion_area
from .losses import neighbor_loss, pairwise_loss, projection_loss, uniform_loss
from .overlap import overlap_regions
from .pairwise import color_similarity

if TYPE_CHECKING:  # the annotations only; pandas is imported where a table is made
    import pandas as pd

# LossConfig.ne_allow values the free map can play: "depth" needs the other objects' visible
# masks, which the toy does not model
NE_ALLOWS = tuple(a for a in NE_ALLOW if a != "depth")


@dataclass
class BandConfig:
    steps: int = 300  # Adam iterations on the free logit map
    lr: float = 0.1  # Adam learning rate
    init: str = "visible"  # start of m_a: "visible" (m_v), "box" (the box filled), "constant"
    init_logit: float = 2.0  # start logits are +init_logit where "on", -init_logit elsewhere
    alpha_proj: float = 2.0  # a1^a (paper)
    alpha_pair: float = 1.0  # a2^a (paper)
    alpha_con: float = 1.0  # a3^a (paper)
    K: float = 1.0  # uniform loss severity
    t: float = 0.5  # V_pov threshold on m_v
    color_threshold: float = 0.3  # BoxInst code default
    use_projection: bool = True
    use_pairwise: bool = True
    use_neighbor: bool = True  # NE
    use_uniform: bool = True  # UN
    box: str = "amodal"  # which box supervises the map: "amodal" (B_a) or "visible" (B_v)
    ne_allow: str = "box"  # where l_ne may expand: box (paper), region, hidden, occluded
    ne_dilation: int = 2  # l_ne neighbour distance in cells (paper: one-pixel gap = 2)
    snapshots: int = 4  # m_a snapshots kept, evenly spaced over the run

    def __post_init__(self):
        if self.ne_allow not in NE_ALLOWS:
            extra = (" (the depth cue needs the other objects' visible masks, which the toy "
                     "does not model)" if self.ne_allow == "depth" else "")
            raise ValueError(f"BandConfig.ne_allow must be one of {NE_ALLOWS}, got "
                             f"{self.ne_allow!r}{extra}")


def toy_instance(seed: int = 0, image_size: int = 256, stride: int = 2,
                 min_occlusion: float = 0.3, max_occlusion: float = 0.75,
                 min_v_pov: int = 5, classes: tuple = ("car", "bus")) -> dict:
    """Draw synthetic scenes (no clutter) until an instance is occluded by an annotated
    neighbour within the given range, has an overlap region and at least ``min_v_pov`` visible
    pixels inside it (V_pov of Eq. 10; with none, the connectivity loss has no edge and cannot
    act at all: set ``min_v_pov=0`` to see such cases). Returns a dict of tensors at
    the mask stride, in a window around the instance: ``image`` [1,3,h,w] (average-pooled),
    ``amodal``/``visible`` [1,1,h,w] bool ground truth, ``B_a``/``B_v``/``R`` [1,1,h,w] float
    bitmasks, ``m_v`` [1,1,h,w] (the fixed visible prediction: 0.95 on the true visible mask,
    0.05 elsewhere), ``color_similarity`` [1,8,h,w], plus the full-resolution crop
    ``image_full`` and its ``window`` (x1, y1, x2, y2) in the scene."""
    from .data.synthetic import SceneGenerator, SyntheticConfig

    gen = SceneGenerator(SyntheticConfig(image_size=image_size, bg_mix=(1.0, 0, 0, 0)), seed=seed)
    wanted = set(classes or ())
    for _ in range(200):
        scene = gen()
        if len(scene.instances) < 2:
            continue
        boxes = torch.tensor(np.array([mask_to_box(i.amodal) for i in scene.instances]))
        regions, has = overlap_regions(boxes)
        for k, inst in enumerate(scene.instances):
            if wanted and inst.category not in wanted:
                continue
            if has[k] and min_occlusion <= inst.occlude_rate <= max_occlusion:
                toy = _prepare(scene, k, boxes, regions, stride)
                if int(((toy["R"] > 0.5) & toy["visible"]).sum()) >= min_v_pov:
                    return toy
    raise RuntimeError(f"no suitable occluded instance in 200 scenes (seed {seed})")


def _prepare(scene, k, boxes, regions, stride, margin: float = 0.5) -> dict:
    """Crop a window around instance k (its amodal box plus ``margin`` of its size on each
    side, aligned to the stride) and sample everything at the mask stride inside it."""
    inst = scene.instances[k]
    size = scene.image.shape[0]
    x1, y1, x2, y2 = boxes[k].tolist()
    mx, my = margin * (x2 - x1), margin * (y2 - y1)
    cx1 = max(0, int(x1 - mx) // stride * stride)
    cy1 = max(0, int(y1 - my) // stride * stride)
    cx2 = min(size, -(-int(x2 + mx) // stride) * stride)
    cy2 = min(size, -(-int(y2 + my) // stride) * stride)
    h, w = cy2 - cy1, cx2 - cx1
    shift = torch.tensor([cx1, cy1, cx1, cy1], dtype=torch.float32)
    img = torch.from_numpy(scene.image[cy1:cy2, cx1:cx2].copy()).permute(2, 0, 1)[None] / 255.0
    pooled = F.avg_pool2d(img, stride, stride) if stride > 1 else img
    s = stride // 2

    def sample(mask):  # BoxInst sampling of a full-resolution mask, inside the window
        return torch.from_numpy(mask[cy1:cy2, cx1:cx2][s::stride, s::stride].copy())[None, None]

    def raster(box):
        return box_bitmasks((torch.as_tensor(box, dtype=torch.float32) - shift)[None], h, w,
                            stride)

    visible = sample(inst.visible)
    return {
        "image": pooled, "image_full": img, "stride": stride, "index": k, "window": (cx1, cy1,
                                                                                      cx2, cy2),
        "occlusion": inst.occlude_rate, "category": inst.category,
        "amodal": sample(inst.amodal), "visible": visible,
        "B_a": raster(boxes[k]), "B_v": raster(mask_to_box(inst.visible)), "R": raster(regions[k]),
        "m_v": torch.where(visible, 0.95, 0.05).float(),
        "color_similarity": color_similarity(pooled),
    }


def initial_logits(toy: dict, cfg: BandConfig) -> torch.Tensor:
    """[1,1,h,w] start of the free map. A free map has no network prior: started at background
    everywhere, projection alone is met by a one-pixel-wide cross and pairwise keeps the rest at
    0. Starting from the filled box lets pairwise carve the background away along colour edges
    (BoxInst's mechanism); starting from m_v shows the expansion from the visible mask."""
    if cfg.init == "visible":
        on = toy["m_v"] > 0.5
    elif cfg.init == "box":
        on = (toy["B_a"] if cfg.box == "amodal" else toy["B_v"]) > 0.5
    elif cfg.init == "constant":
        return torch.full_like(toy["m_v"], -cfg.init_logit)
    else:
        raise ValueError(f"init must be 'visible', 'box' or 'constant', got {cfg.init!r}")
    return torch.where(on, cfg.init_logit, -cfg.init_logit).float()


def band_terms(logits: torch.Tensor, toy: dict, cfg: BandConfig) -> dict:
    """The enabled, weighted amodal-branch terms for the map ``logits`` (a dict of scalars)."""
    box = toy["B_a"] if cfg.box == "amodal" else toy["B_v"]
    m_a = logits.sigmoid()
    terms = {}
    if cfg.use_projection:
        terms["projection"] = cfg.alpha_proj * projection_loss(logits, box)
    if cfg.use_pairwise:
        terms["pairwise"] = cfg.alpha_pair * pairwise_loss(logits, toy["color_similarity"], box,
                                                           cfg.color_threshold)
    if cfg.use_neighbor:
        area = expansion_area(cfg.ne_allow, {"region_masks": toy["R"],
                                             "visible_box_masks": toy["B_v"],
                                             "amodal_box_masks": toy["B_a"]})
        terms["neighbor"] = cfg.alpha_con * neighbor_loss(m_a, toy["m_v"], toy["R"], box, cfg.t,
                                                          cfg.ne_dilation, area)
    if cfg.use_uniform:
        terms["uniform"] = cfg.alpha_con * uniform_loss(m_a, toy["m_v"], toy["R"], cfg.K)
    return terms


def optimize_mask(toy: dict, cfg: BandConfig | None = None, seed: int = 0) -> dict:
    """Optimise a free logit map under the enabled terms. Returns ``m_a`` [h,w] (final
    probabilities), ``snapshots`` [(iteration, m_a [h,w])], ``history`` (a pandas DataFrame,
    one row per iteration, one column per weighted term plus ``total``) and ``scores``."""
    import pandas as pd

    cfg = cfg or BandConfig()
    torch.manual_seed(seed)
    logits = initial_logits(toy, cfg).requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=cfg.lr)
    keep = set(np.linspace(0, cfg.steps, max(cfg.snapshots, 2)).round().astype(int).tolist())
    snapshots, rows = [], []
    for it in range(cfg.steps + 1):
        if it in keep:
            snapshots.append((it, logits.detach().sigmoid()[0, 0].clone()))
        if it == cfg.steps:
            break
        terms = band_terms(logits, toy, cfg)
        total = sum(terms.values()) if terms else logits.sum() * 0
        rows.append({"iteration": it, **{k: v.item() for k, v in terms.items()},
                     "total": total.item()})
        opt.zero_grad()
        total.backward()
        opt.step()
    m_a = logits.detach().sigmoid()[0, 0]
    names = [n for n, on in (("projection", cfg.use_projection), ("pairwise", cfg.use_pairwise),
                             ("neighbor", cfg.use_neighbor), ("uniform", cfg.use_uniform)) if on]
    history = pd.DataFrame(rows, columns=["iteration", *names, "total"])
    return {"m_a": m_a, "snapshots": snapshots, "history": history,
            "scores": mask_scores(m_a > 0.5, toy), "config": asdict(cfg)}


def mask_scores(pred: torch.Tensor, toy: dict) -> dict:
    """IoU of a binary [h,w] mask with the visible and amodal ground truth, and the share of
    the occluded part it recovers."""
    a, v = toy["amodal"][0, 0], toy["visible"][0, 0]
    occ = a & ~v

    def iou(x, y):
        union = (x | y).sum().item()
        return (x & y).sum().item() / union if union else float("nan")

    return {"iou_visible": iou(pred, v), "iou_amodal": iou(pred, a),
            "occluded_recovered": (pred & occ).sum().item() / max(occ.sum().item(), 1),
            "outside_amodal": (pred & ~a).sum().item() / max(a.sum().item(), 1)}


M_V_MODES = ("truth", "dilated", "shrunk", "noisy")


def perturb_visible(toy: dict, mode: str = "truth", seed: int = 0) -> dict:
    """A copy of ``toy`` whose fixed visible prediction m_v is imperfect, as a trained visible
    branch is: ``"dilated"`` / ``"shrunk"`` by one cell (3x3 max / min filter of the true
    visible mask), ``"noisy"``: 10 % of the cells flipped at random (``seed``), ``"truth"``:
    unchanged. m_v stays 0.95 on and 0.05 off."""
    v = toy["visible"].float()
    if mode == "truth":
        on = v > 0.5
    elif mode == "dilated":
        on = F.max_pool2d(v, 3, 1, 1) > 0.5
    elif mode == "shrunk":
        on = -F.max_pool2d(-v, 3, 1, 1) > 0.5
    elif mode == "noisy":
        g = torch.Generator().manual_seed(seed)
        on = (v > 0.5) ^ (torch.rand(v.shape, generator=g) < 0.1)
    else:
        raise ValueError(f"m_v mode must be one of {M_V_MODES}, got {mode!r}")
    return dict(toy, m_v=torch.where(on, 0.95, 0.05).float(), m_v_mode=mode)


def variant_study(seeds=(0, 1, 2), allows=NE_ALLOWS, modes=M_V_MODES,
                  steps: int = 300) -> pd.DataFrame:
    """The free-map study of the connectivity variants (issue 13): for each seed an occluded
    instance (occlusion 0.3-0.75) and an unoccluded one that still has an overlap region
    (FG-0), each m_v mode and each ``ne_allow``, the map optimised under the paper's amodal
    terms. One row per run: case, seed, m_v, ne_allow and the ``mask_scores``."""
    import pandas as pd

    rows = []
    for seed in seeds:
        cases = {"occluded": toy_instance(seed=seed),
                 "FG-0 with R": toy_instance(seed=seed, min_occlusion=0.0, max_occlusion=0.0)}
        for case, toy in cases.items():
            for mode in modes:
                t = perturb_visible(toy, mode, seed)
                for allow in allows:
                    res = optimize_mask(t, BandConfig(steps=steps, ne_allow=allow), seed=seed)
                    rows.append({"case": case, "seed": seed, "m_v": mode, "ne_allow": allow,
                                 "occlusion": toy["occlusion"], **res["scores"]})
    return pd.DataFrame(rows)


def variants_view(cases: dict, m_v: str = "truth", ne_dilation: int = 2, alpha_con: float = 1.0,
                  steps: int = 300, seed: int = 0):
    """Notebook 03's variant explorer (issue 13): for each toy of ``cases`` (name -> toy
    instance, e.g. an occluded one and an unoccluded one that has an R), the free amodal map
    optimised under the paper's terms with each ``ne_allow`` of ``NE_ALLOWS``, side by side;
    m_v perturbed as ``perturb_visible(mode=m_v)``. Titles give the IoU, the share of the hidden
    part recovered and the area outside the true mask. Returns the Figure."""
    import matplotlib.pyplot as plt

    if m_v not in M_V_MODES:
        raise ValueError(f"m_v must be one of {M_V_MODES}, got {m_v!r}")
    fig, axes = plt.subplots(len(cases), len(NE_ALLOWS), figsize=(3.6 * len(NE_ALLOWS),
                                                                   3.2 * len(cases)),
                             squeeze=False)
    for r, (name, toy) in enumerate(cases.items()):
        t = perturb_visible(toy, m_v, seed)
        for c, allow in enumerate(NE_ALLOWS):
            cfg = BandConfig(steps=steps, ne_allow=allow, ne_dilation=ne_dilation,
                             alpha_con=alpha_con, snapshots=1)
            res = optimize_mask(t, cfg, seed=seed)
            draw_state(axes[r, c], t, res["m_a"], cfg.t)
            s = res["scores"]
            axes[r, c].set_title(f"{name}, ne_allow={allow}\nIoU {s['iou_amodal']:.2f}, hidden "
                                 f"recovered {s['occluded_recovered']:.0%}, outside "
                                 f"{s['outside_amodal']:.0%}", fontsize=8)
    fig.tight_layout()
    return fig


def active_band(m_a: torch.Tensor, toy: dict, t: float = 0.5) -> torch.Tensor:
    """[h,w] bool: pixels of R where m_a > t but the visible prediction is not, i.e. where the
    amodal mask has grown beyond what the visible branch sees."""
    return (m_a > t) & (toy["R"][0, 0] > 0.5) & ~(toy["m_v"][0, 0] > t)


def band_view(toy: dict, **knobs):
    """Notebook 03's widget callback: optimise with ``BandConfig(**knobs)`` and draw the
    snapshots, the final band and the loss curves. Returns the Figure."""
    import matplotlib.pyplot as plt


    cfg = BandConfig(**knobs)
    res = optimize_mask(toy, cfg)
    snaps = res["snapshots"]
    cols = max(len(snaps), 3)
    fig, axes = plt.subplots(2, cols, figsize=(3.4 * cols, 6.0), squeeze=False)
    for ax, (it, m) in zip(axes[0], snaps):
        draw_state(ax, toy, m, cfg.t)
        ax.set_title(f"m_a at iteration {it}", fontsize=9)
    for ax in list(axes[0, len(snaps):]) + list(axes[1, 3:]):
        ax.remove()
    draw_state(axes[1, 0], toy, res["m_a"], cfg.t, band=True)
    s = res["scores"]
    axes[1, 0].set_title(f"final m_a > 0.5, band in red: IoU amodal {s['iou_amodal']:.2f},\n"
                         f"{s['occluded_recovered']:.0%} of the occluded part recovered",
                         fontsize=8)
    draw_graph(axes[1, 1], toy, cfg.t)
    axes[1, 1].set_title("V_pov (cyan), E_pov: c=1 green, c=0 red", fontsize=8)
    ax = axes[1, 2]
    hist = res["history"].set_index("iteration")
    if len(hist) and len(hist.columns) > 1:
        hist.drop(columns="total").plot(ax=ax, fontsize=7)
        ax.legend(fontsize=7)
    ax.set_title("weighted terms over iterations", fontsize=9)
    fig.tight_layout()
    return fig


def draw_state(ax, toy: dict, m_a: torch.Tensor, t: float = 0.5, band: bool = False):
    """The image at mask resolution with m_a (heat), the true amodal outline, R and B_a."""
    from . import viz

    viz.show_image(ax, toy["image"][0])
    if not band:
        viz.show_mask(ax, m_a, "yellow", alpha=0.65)  # soft: opacity follows m_a
    viz.show_mask(ax, toy["amodal"][0, 0], viz.AMODAL, outline=True)
    viz.show_mask(ax, toy["visible"][0, 0], "white", outline=True)
    viz.show_mask(ax, toy["R"][0, 0], viz.REGION, outline=True)
    if band:
        viz.show_mask(ax, m_a > 0.5, "yellow", alpha=0.5)
        viz.show_mask(ax, active_band(m_a, toy, t), "red", alpha=0.7)
    return ax


def draw_graph(ax, toy: dict, t: float = 0.5):
    """The neighbour-loss graph of Eq. 10-11 on the toy: V_pov (cyan), pixels reached by an
    edge of E_pov whose ends lie on the same side of B_a (c = 1, green) or on both sides
    (c = 0, red), the region R and the true amodal outline."""
    from . import viz
    from .losses import neighbor_edges

    edges, c, v_pov = neighbor_edges(toy["m_v"], toy["R"], toy["B_a"], t)
    # E_pov and c are symmetric (p->q is selected iff q->p is), so the pixels an edge touches
    # are exactly the pixels with a selected outgoing edge
    same = (edges & (c > 0.5)).any(1)[0]
    cross = (edges & (c < 0.5)).any(1)[0]
    viz.show_image(ax, toy["image"][0])
    viz.show_mask(ax, same, "lime", alpha=0.5)
    viz.show_mask(ax, cross, "red", alpha=0.7)
    viz.show_mask(ax, v_pov[0, 0], "cyan", alpha=0.8)
    viz.show_mask(ax, toy["R"][0, 0], viz.REGION, outline=True)
    viz.show_mask(ax, toy["amodal"][0, 0], viz.AMODAL, outline=True)
    viz.show_mask(ax, toy["B_a"][0, 0], "white", outline=True)
    return ax
