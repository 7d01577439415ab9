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
