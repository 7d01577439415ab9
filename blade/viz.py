"""Plot helpers. Each draws on a given matplotlib ``ax`` and returns it; none calls plt.show().

Colours are fixed so every figure in the kit reads the same way: amodal = orange outline,
visible = blue fill, occluded part = red hatch-like fill, amodal box B_a = orange solid,
visible box B_v = blue dashed, overlap region R = magenta.
"""

from __future__ import annotations

import numpy as np
import torch

AMODAL, VISIBLE, OCCLUDED, REGION = "#ff8c00", "#1f77b4", "#d62728", "#e377c2"


def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def show_image(ax, image):
    """image: float [3,H,W] in [0,1] (tensor or array) or uint8 [H,W,3]."""
    img = _np(image)
    if img.ndim == 3 and img.shape[0] == 3:
        img = img.transpose(1, 2, 0)
    ax.imshow(np.clip(img, 0, 1) if img.dtype != np.uint8 else img)
    ax.set_axis_off()
    return ax


def show_mask(ax, mask, color=VISIBLE, alpha=0.45, outline=False, extent=None):
    """Overlay a boolean/probability [H,W] mask (filled, or only its outline)."""
    from matplotlib.colors import to_rgb

    m = _np(mask).astype(np.float32)
    kw = {} if extent is None else {"extent": extent}
    if outline:
        if m.max() > 0 and m.min() < 1:
            ax.contour(m, levels=[0.5], colors=[color], linewidths=1.5, **kw)
        return ax
    rgba = np.zeros(m.shape + (4,), np.float32)
    rgba[..., :3] = to_rgb(color)
    rgba[..., 3] = alpha * m
    ax.imshow(rgba, interpolation="nearest", **kw)
    return ax


def show_box(ax, box, color=AMODAL, ls="-", lw=1.5, label=None):
    """Draw an xyxy box (pixel-edge coordinates: a pixel centre is at +0.5; imshow centres
    pixel (r, c) at (c, r), hence the -0.5 shift)."""
    from matplotlib.patches import Rectangle

    x1, y1, x2, y2 = (float(v) for v in _np(box))
    ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=color,
                           linestyle=ls, linewidth=lw, label=label))
    return ax


def show_scene(ax, item: dict, masks: str = "both", boxes: bool = True, regions: bool = False):
    """A dataset item (eval mode for masks) with every instance drawn.

    masks: 'amodal' (outlines), 'visible' (fills), 'both' or 'none'.
    """
    from .overlap import overlap_regions

    show_image(ax, item["image"])
    n = len(item["labels"])
    for k in range(n):
        if masks in ("visible", "both") and "visible_masks" in item:
            show_mask(ax, item["visible_masks"][k], color=f"C{k % 10}", alpha=0.4)
        if masks in ("amodal", "both") and "amodal_masks" in item:
            show_mask(ax, item["amodal_masks"][k], color=f"C{k % 10}", outline=True)
        if boxes:
            show_box(ax, item["amodal_boxes"][k], color=f"C{k % 10}", lw=1)
    if regions and n:
        reg, has = overlap_regions(item["amodal_boxes"])
        for k in range(n):
            if has[k]:
                show_box(ax, reg[k], color=REGION, lw=2, ls=":")
    return ax


def show_instance_overlap(ax, item: dict, index: int, show_pairs: bool = True,
                          show_bitmask: bool = True, stride: int = 1):
    """Eq. 1-6 for one instance: its masks, both boxes, each R^(i,j) and the envelope R^i."""
    from .boxes import grid_size
    from .overlap import overlap_regions, pairwise_intersections, region_bitmasks

    boxes = item["amodal_boxes"]
    n = len(boxes)
    if not 0 <= index < n:
        raise IndexError(f"instance index {index} out of range for a scene with {n} instances")
    show_image(ax, item["image"])
    H, W = item["image"].shape[-2:]
    if "amodal_masks" in item:
        a, v = _np(item["amodal_masks"][index]), _np(item["visible_masks"][index])
        show_mask(ax, v, VISIBLE, alpha=0.5)
        show_mask(ax, a & ~v, OCCLUDED, alpha=0.5)
        show_mask(ax, a, AMODAL, outline=True)
    for j in range(n):
        if j != index:
            show_box(ax, boxes[j], color="white", lw=0.8, ls="-")
    show_box(ax, boxes[index], AMODAL, lw=2, label="$B_a$")
    show_box(ax, item["visible_boxes"][index], VISIBLE, ls="--", lw=2, label="$B_v$")
    inter, valid = pairwise_intersections(boxes)
    if show_pairs:
        for j in np.flatnonzero(_np(valid[index])):
            show_box(ax, inter[index, j], color="yellow", lw=1, ls="--")
    if show_bitmask:
        bm = region_bitmasks(boxes, H, W, stride)[index, 0]
        h, w = grid_size(H, stride), grid_size(W, stride)
        extent = (-0.5, w * stride - 0.5, h * stride - 0.5, -0.5)  # cell j covers [j*s, (j+1)*s)
        show_mask(ax, bm, REGION, alpha=0.25, extent=extent)
    reg, has = overlap_regions(boxes)
    if has[index]:
        show_box(ax, reg[index], REGION, lw=2.5, label="$R$")
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    return ax


def plot_coverage(ax, table, x="level", y="coverage"):
    """Seaborn box plot of how much of the occluded mask the region R covers, per level."""
    import seaborn as sns

    data = table[table[y].notna()]
    sns.boxplot(data=data, x=x, y=y, ax=ax, color="#e377c2", fliersize=2)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("share of occluded pixels inside R")
    return ax


def savefig(fig, path: str, dpi: int = 110):
    """Save a figure, creating its folder."""
    import os

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def overlap_view(dataset, scene: int = 0, instance: int = 0, show_pairs: bool = True,
                 stride: int = 1):
    """Figure for notebook 01's explorer: the whole scene with every R, and one instance's
    masks, boxes, pairwise intersections and region bitmask. Returns the Figure."""
    import matplotlib.pyplot as plt

    item = dataset[scene]
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    show_scene(axes[0], item, masks="amodal", boxes=True, regions=True)
    axes[0].set_title(f"scene {scene}: amodal outlines, boxes, regions R (dotted)", fontsize=9)
    show_instance_overlap(axes[1], item, instance, show_pairs=show_pairs, stride=stride)
    occ = float(item["occlusion"][instance]) if "occlusion" in item else float("nan")
    axes[1].set_title(f"instance {instance}: {occ:.0%} occluded; bitmask at stride {stride}",
                      fontsize=9)
    axes[1].legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def show_edge_survival(ax, color_sim, threshold: float = 0.3, image=None):
    """Share of each pixel's 8 pairwise edges that pass BoxInst's colour test (S >= threshold).

    color_sim: [8,H,W] (one image). Dark pixels sit on colour edges: the pairwise term does not
    ask them to agree with their neighbours."""
    share = (_np(color_sim) >= threshold).mean(axis=0)
    if image is not None:
        show_image(ax, image)
        ax.imshow(share, cmap="magma", vmin=0, vmax=1, alpha=0.75)
    else:
        ax.imshow(share, cmap="magma", vmin=0, vmax=1)
        ax.set_axis_off()
    return ax


def show_prediction(ax, image, result: dict, classes=None, threshold: float = 0.5,
                    max_objects: int = 30):
    """A ``BladeModel.predict`` result: visible masks filled, final amodal masks outlined,
    boxes and class labels (one colour per object)."""
    show_image(ax, image)
    n = min(len(result["boxes"]), max_objects)
    for k in range(n):
        color = f"C{k % 10}"
        show_mask(ax, _np(result["visible"][k]) > threshold, color, alpha=0.45)
        show_mask(ax, _np(result["masks"][k]) > threshold, color, outline=True)
        show_box(ax, result["boxes"][k], color, lw=1, ls="--")
        if classes is not None:
            x1, y1 = (float(v) for v in _np(result["boxes"][k])[:2])
            ax.text(x1, y1 - 2, f"{classes[int(result['labels'][k])]} "
                    f"{float(result['scores'][k]):.2f}", color="white", fontsize=7,
                    bbox={"facecolor": color, "alpha": 0.7, "pad": 1, "edgecolor": "none"})
    return ax


def plot_losses(ax, log, terms=None, smooth: int = 1):
    """Loss terms from a run's ``log.csv`` (a DataFrame) against the iteration."""
    skip = {"iteration", "lr", "sec_per_it"}
    terms = terms or [c for c in log.columns if c not in skip]
    for name in terms:
        y = log[name].rolling(smooth, min_periods=1).mean() if smooth > 1 else log[name]
        ax.plot(log["iteration"], y, label=name, lw=2 if name == "total" else 1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7, ncol=2)
    return ax


# -- results ---------------------------------------------------------------------------------
def plot_levels(ax, tidy, hue: str = "method", value: str = "iou_amodal",
                levels=("FG-0", "FG-1", "FG-2", "FG-3", "mean")):
    """Grouped bars: IoU (%) per occlusion level, one bar per ``hue`` (tidy rows with a
    ``level`` column, as ``blade.collect.collect`` or ``evaluate.summarize`` give)."""
    import seaborn as sns

    df = tidy[tidy["level"].isin(levels)].assign(**{value: lambda d: d[value] * 100})
    sns.barplot(data=df, x="level", y=value, hue=hue, order=list(levels), ax=ax)
    ax.set_xlabel("occlusion level")
    ax.set_ylabel("amodal IoU (%)" if value.startswith("iou_amodal") else f"{value} (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="upper right")
    return ax


def plot_seeds(ax, tidy, value: str = "iou_amodal",
               levels=("FG-0", "FG-1", "FG-2", "FG-3", "mean")):
    """One point per seed and level, a colour per configuration (``base``), dodged side by
    side, from ``blade.collect.collect_seeds``: where two configurations' points overlap,
    one run each cannot order them."""
    import seaborn as sns

    df = tidy[tidy["level"].isin(levels)].assign(**{value: lambda d: d[value] * 100})
    sns.stripplot(data=df, x="level", y=value, hue="base", order=list(levels), dodge=True,
                  size=7, jitter=False, ax=ax)
    ax.set_xlabel("occlusion level")
    ax.set_ylabel("amodal IoU (%)" if value.startswith("iou_amodal") else f"{value} (%)")
    ax.legend(fontsize=8, loc="lower left")
    return ax


def plot_table_heatmap(ax, table, vmin=None, vmax=None, cmap="viridis"):
    """A rows x levels table of IoU (%) as an annotated heatmap (Table 2 grid)."""
    import seaborn as sns

    sns.heatmap(table, annot=True, fmt=".1f", cmap=cmap, vmin=vmin, vmax=vmax, ax=ax,
                cbar_kws={"label": "amodal IoU (%)"})
    ax.set_xlabel("")
    ax.set_ylabel("")
    return ax


def show_qualitative_row(axes, item: dict, k: int, predictions, pad: int = 12):
    """One row of a Figure 5 style grid, cropped around object ``k`` of an eval item: the
    ground truth (amodal outline, visible fill) and then each predicted amodal mask (COCO RLE
    or [H,W] array) over the image, with the ground-truth amodal outline for reference."""
    from .data.masks import decode

    gt_a = _np(item["amodal_masks"][k])
    gt_v = _np(item["visible_masks"][k])
    x1, y1, x2, y2 = (int(v) for v in _np(item["amodal_boxes"][k]))
    h, w = gt_a.shape
    ys, xs = slice(max(y1 - pad, 0), min(y2 + pad, h)), slice(max(x1 - pad, 0), min(x2 + pad, w))
    image = _np(item["image"])[:, ys, xs]
    show_image(axes[0], image)
    show_mask(axes[0], gt_v[ys, xs], VISIBLE)
    show_mask(axes[0], gt_a[ys, xs], AMODAL, outline=True)
    for ax, pred in zip(axes[1:], predictions):
        m = decode(pred) if isinstance(pred, dict) else _np(pred)
        show_image(ax, image)
        show_mask(ax, m[ys, xs].astype(bool), OCCLUDED, alpha=0.5)
        show_mask(ax, gt_a[ys, xs], AMODAL, outline=True)
        inter = np.logical_and(m > 0, gt_a).sum()
        union = np.logical_or(m > 0, gt_a).sum()
        ax.text(2, 2, f"IoU {inter / max(union, 1):.2f}", color="white", fontsize=8, va="top",
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})
    return axes


def failure_view(model, dataset, rows, rank: int = 0, sort_by: str = "iou_amodal",
                 threshold: float = 0.5):
    """Notebook 06's failure browser: the object with the ``rank``-th lowest ``sort_by`` among
    the evaluated ``rows`` (a DataFrame from ``blade.evaluate.evaluate``), with its image and
    the model's m_v, m_a, m_r and fused mask for its test box. Returns a Figure."""
    import matplotlib.pyplot as plt

    ranked = rows.dropna(subset=[sort_by]).sort_values(sort_by, kind="stable")
    if len(ranked) == 0:
        raise ValueError(f"no object has a value in column {sort_by!r}")
    rank = min(max(int(rank), 0), len(ranked) - 1)
    row = ranked.iloc[rank]
    index = next(i for i, img in enumerate(dataset.images) if img["id"] == row["image_id"])
    item = dataset[index]
    k = list(item["ann_ids"]).index(row["ann_id"])
    box = item[f"{row.get('test_box', 'visible')}_boxes"][k:k + 1]
    from .evaluate import predict_one

    out = predict_one(model, item["image"], box)
    fig, axes = plt.subplots(1, 5, figsize=(15, 3.4))
    show_image(axes[0], item["image"])
    show_mask(axes[0], item["visible_masks"][k], VISIBLE)
    show_mask(axes[0], item["amodal_masks"][k], AMODAL, outline=True)
    show_box(axes[0], box[0], VISIBLE, ls="--")
    axes[0].set_title(f"rank {rank} of {len(ranked)}: image {row['image_id']}, "
                      f"FG-{int(row['level'])}", fontsize=9)
    titles = {"visible": "$m_v$", "amodal": "$m_a$", "region": "$m_r$", "masks": "fused $m$"}
    for ax, key in zip(axes[1:], titles):
        show_image(ax, item["image"])
        ax.imshow(_np(out[key][0]), cmap="magma", vmin=0, vmax=1, alpha=0.65)
        show_mask(ax, item["amodal_masks"][k], AMODAL, outline=True)
        ax.set_title(titles[key], fontsize=9)
    fig.text(0.5, 0.01, f"amodal IoU {row['iou_amodal']:.2f} · visible IoU "
             f"{row['iou_visible']:.2f} · occlusion {row['occlusion']:.2f} · "
             f"{'matched a detection' if row['matched'] else 'fallback location'}",
             ha="center", fontsize=9)
    return fig


# the blocks of the paper's Fig. 2: name -> (x, y centre, text, colour); arrows between them
_DIAGRAM_BLOCKS = {
    "image": (0.06, 0.55, "image\n+ B_v, B_a, c\n(training)", "#dddddd"),
    "fpn": (0.22, 0.55, "backbone\n+ FPN\nP3-P7", "#c7dcef"),
    "fcos": (0.40, 0.82, "FCOS head\ncls, box, ctr\n+ controller", "#c7dcef"),
    "branch": (0.40, 0.28, "mask branch\nF (16 ch, stride 8)\n+ rel. coords", "#c7dcef"),
    "vis": (0.62, 0.80, "visible head\n$\\theta_v$", VISIBLE),
    "amo": (0.62, 0.52, "amodal head\n$\\theta_a$, input + $m_v$", AMODAL),
    "reg": (0.62, 0.22, "region head\n$\\theta_r$", REGION),
    "fuse": (0.88, 0.52, "fusion (Eq. 2)\n$m = m_a m_r$\n$+ m_v (1 - m_r)$", "#f2f2f2"),
}
_DIAGRAM_ARROWS = [("image", "fpn", ""), ("fpn", "fcos", ""), ("fpn", "branch", "P3-P5"),
                   ("fcos", "vis", "$\\theta$ per object"), ("fcos", "amo", ""),
                   ("fcos", "reg", ""), ("branch", "vis", ""), ("branch", "amo", ""),
                   ("branch", "reg", ""), ("vis", "amo", "$m_v$"), ("vis", "fuse", "$m_v$"),
                   ("amo", "fuse", "$m_a$"), ("reg", "fuse", "$m_r$")]
_DIAGRAM_LOSSES = {"vis": "projection + pairwise on $B_v$", "amo":
                   "projection + pairwise on $B_a$\n+ connectivity $l_{ne} + l_{un}$ in R",
                   "reg": "BCE on the bitmask of R (Eq. 7)", "fcos": "FCOS losses on the boxes"}


def draw_blade_diagram(ax, losses: bool = True):
    """The paper's Fig. 2 as a block diagram: backbone and FPN, the FCOS head whose controller
    gives every object the parameters of three dynamic heads (visible, amodal with m_v as an
    extra input, region) over the shared mask features, and the fusion of Eq. 2; with
    ``losses``, the supervision of each head in grey."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_axis_off()
    w, h = 0.13, 0.16
    for x, y, text, color in _DIAGRAM_BLOCKS.values():
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.01",
                                    facecolor=color, alpha=0.35, edgecolor="black", lw=0.8))
        ax.text(x, y, text, ha="center", va="center", fontsize=7.5)
    for a, b, label in _DIAGRAM_ARROWS:
        (xa, ya), (xb, yb) = _DIAGRAM_BLOCKS[a][:2], _DIAGRAM_BLOCKS[b][:2]
        start = (xa + w / 2, ya) if xb > xa + 0.05 else (xa, ya - h / 2 if yb < ya else ya + h / 2)
        end = (xb - w / 2, yb) if xb > xa + 0.05 else (xb, yb + h / 2 if yb < ya else yb - h / 2)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=9, lw=0.8,
                                     color="#444444", shrinkA=0, shrinkB=0))
        if label:
            vertical = abs(end[0] - start[0]) < 0.01  # label beside it, not across the text
            ax.text((start[0] + end[0]) / 2 + (0.012 if vertical else 0),
                    (start[1] + end[1]) / 2 + (0 if vertical else 0.02), label, fontsize=7,
                    ha="left" if vertical else "center", color="#444444")
    if losses:
        for name, text in _DIAGRAM_LOSSES.items():
            x, y = _DIAGRAM_BLOCKS[name][:2]
            ax.text(x, y - h / 2 - 0.015, text, ha="center", va="top", fontsize=6.5,
                    color="#666666", style="italic")
    return ax
