"""The tables and figures of a setting, written from its collected results.

``write_tables_and_figures`` writes, per protocol, ``table1[_<prompt>].csv``,
``table2[...].csv``, ``seeds[...].csv`` and ``variants[...].csv`` (tidy tables from
:mod:`blade.collect`) into the results folder and their figures (``table1*.png`` per-level
bars, ``table2*.png`` heat map, ``seeds*.png`` one point per run) into the figures folder;
``write_qualitative`` draws the Figure 5 style grid from the runs' saved masks. Plot helpers
are :mod:`blade.viz`'s; this module only lays them out and saves them.
"""

from __future__ import annotations

import json
import os

from .collect import collect, collect_seeds, collect_variants, data_paths, suffix, wide
from .model import PROMPTS
from .runs import VARIANTS, method


def write_tables_and_figures(results_dir: str, figures_dir: str, data: str | None = None,
                             preset_name: str = "") -> list:
    """results_dir/table{1,2}[_<prompt>].csv, seeds[...].csv and variants[...].csv (tidy, one
    set per protocol: no suffix for detections, ``_box``, ``_box_match``) and their figures;
    returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")

    written = []
    os.makedirs(figures_dir, exist_ok=True)
    for prompt in PROMPTS:
        written += _tables_and_figures(results_dir, figures_dir, preset_name, prompt)
    if data is not None:
        out = write_qualitative(results_dir, figures_dir, data)
        if out:
            written.append(out)
    return written


def _tables_and_figures(results_dir: str, figures_dir: str, preset_name: str,
                        prompt: str) -> list:
    """The tables and figures of ``write_tables_and_figures`` for one protocol."""
    import matplotlib.pyplot as plt

    from . import viz

    written, tag = [], suffix(prompt)
    where = f"{preset_name} preset, " if preset_name else ""
    for table, key in (("table1", "method"), ("table2", "row")):
        tidy, missing = collect(results_dir, table, prompt)
        if tidy.empty:
            continue
        path = os.path.join(results_dir, f"{table}{tag}.csv")
        tidy.to_csv(path, index=False)
        written.append(path)
        if table == "table1":
            fig, ax = plt.subplots(figsize=(9, 4))
            viz.plot_levels(ax, tidy, hue="method")
            ax.set_title(f"Amodal IoU per occlusion level (synthetic benchmark, {where}"
                         f"{prompt} prompt)")
        else:
            fig, ax = plt.subplots(figsize=(6, 5))
            viz.plot_table_heatmap(ax, wide(tidy, "row"))
            ax.set_title(f"Table 2 ablations: amodal IoU (%), {prompt} prompt")
        if missing:
            ax.text(0.0, -0.18, "not run yet: " + ", ".join(missing), transform=ax.transAxes,
                    fontsize=8, color="gray")
        out = os.path.join(figures_dir, f"{table}{tag}.png")
        viz.savefig(fig, out)
        plt.close(fig)
        written.append(out)
    variants = collect_variants(results_dir, prompt)
    if not variants.empty and variants["run"].isin(list(VARIANTS)).any():
        path = os.path.join(results_dir, f"variants{tag}.csv")
        variants.to_csv(path, index=False)
        written.append(path)
    seeds = collect_seeds(results_dir, prompt)
    if not seeds.empty:
        path = os.path.join(results_dir, f"seeds{tag}.csv")
        seeds.to_csv(path, index=False)
        written.append(path)
        fig, ax = plt.subplots(figsize=(8, 3.5))
        viz.plot_seeds(ax, seeds)
        ax.set_title(f"Seed study: one point per training run ({prompt} prompt)")
        out = os.path.join(figures_dir, f"seeds{tag}.png")
        viz.savefig(fig, out)
        plt.close(fig)
        written.append(out)
    return written


def write_qualitative(results_dir: str, figures_dir: str, data: str,
                      runs=("box_ba", "boxinst_bv", "boxinst_ba", "bbtp", "blade", "full")):
    """The Figure 5 style grid from the runs' saved qualitative masks (needs the val data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import viz
    from .data import AmodalDataset

    saved = {}
    for run in runs:
        path = os.path.join(results_dir, run, "qualitative.json")
        if os.path.exists(path):
            saved[run] = json.load(open(path))
    if not saved:
        return None
    val = AmodalDataset(*data_paths(data)["val"], mode="eval", protocol="synthetic")
    first = next(iter(saved.values()))
    for run, picks in saved.items():
        if [p["ann_id"] for p in picks] != [p["ann_id"] for p in first]:
            raise ValueError(f"{results_dir}/{run}/qualitative.json shows other objects than "
                             f"the other runs (different validation data?)")
    cols = ["ground truth"] + [method(r).label for r in saved]
    fig, axes = plt.subplots(len(first), len(cols), figsize=(2.4 * len(cols), 1.6 * len(first)),
                             squeeze=False)
    for r, pick in enumerate(first):
        item = val[pick["index"]]
        k = pick["instance"]
        preds = [saved[run][r]["amodal"] for run in saved]
        viz.show_qualitative_row(axes[r], item, k, preds)
    for c, title in enumerate(cols):
        axes[0, c].set_title(title, fontsize=9)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color=viz.VISIBLE, alpha=0.45, label="true visible mask"),
                        Line2D([], [], color=viz.AMODAL, label="true amodal outline"),
                        Patch(color=viz.OCCLUDED, alpha=0.5, label="predicted amodal mask "
                              "(m > 0.5), IoU in the corner")],
               loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    out = os.path.join(figures_dir, "qualitative.png")
    viz.savefig(fig, out)
    plt.close(fig)
    return out
