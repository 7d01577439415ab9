"""`make demo`: the kit's main job, step by step with progress.

Now: generate a small synthetic benchmark (if absent) and draw a few scenes with their amodal
and visible masks, boxes and overlap regions, plus how much of each occluded mask the region
covers per occlusion level. (Training and evaluation join this job with the model.)

    python -m blade.demo --out runs/demo
"""

from __future__ import annotations

import argparse
import os
import time


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/demo", help="run folder (figures, data)")
    p.add_argument("--data", default=None, help="benchmark folder (default: OUT/data)")
    p.add_argument("--train", type=int, default=200, help="training scenes to generate")
    p.add_argument("--val", type=int, default=50, help="validation scenes to generate")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from . import viz
    from .data import AmodalDataset
    from .data.synthetic import write_split
    from .overlap import coverage_records

    t0 = time.perf_counter()
    data_dir = args.data or os.path.join(args.out, "data")
    print(f"[1/3] synthetic benchmark in {data_dir}")
    for split, n in (("train", args.train), ("val", args.val)):
        if os.path.exists(os.path.join(data_dir, f"{split}.json")):
            print(f"      {split}.json exists, kept (delete it to regenerate)")
        else:
            write_split(data_dir, split, n, seed=args.seed)
    ds = AmodalDataset(os.path.join(data_dir, "val.json"), os.path.join(data_dir, "val"),
                       mode="eval")

    print("[2/3] drawing scenes: masks, boxes, overlap regions")
    n_show = min(4, len(ds))
    fig, axes = plt.subplots(3, n_show, figsize=(3.2 * n_show, 9.6), squeeze=False)
    for c in range(n_show):
        item = ds[c]
        viz.show_image(axes[0, c], item["image"])
        axes[0, c].set_title(f"scene {item['image_id']}", fontsize=9)
        viz.show_scene(axes[1, c], item, masks="both", boxes=True)
        levels = ", ".join(f"FG-{lv}" if lv >= 0 else "n/e" for lv in item["levels"].tolist())
        axes[1, c].set_title(f"amodal (outline), visible (fill)\n{levels}", fontsize=8)
        k = int(item["occlusion"].argmax())
        viz.show_instance_overlap(axes[2, c], item, k)
        axes[2, c].set_title(f"instance {k}: $B_a$, $B_v$, $R$ (magenta)", fontsize=8)
    fig.tight_layout()
    scenes_png = viz.savefig(fig, os.path.join(args.out, "scenes.png"), dpi=72)
    plt.close(fig)

    print("[3/3] coverage of the occluded masks by the overlap regions")
    rows = [r for i in range(len(ds)) for r in coverage_records(ds[i])]
    table = pd.DataFrame(rows)
    table = table[table.level >= 0].assign(level=lambda t: "FG-" + t.level.astype(str))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    viz.plot_coverage(ax, table.sort_values("level"))
    ax.set_title("overlap region R vs the true occluded mask (val)")
    cov_png = viz.savefig(fig, os.path.join(args.out, "coverage.png"))
    plt.close(fig)
    summary = table.groupby("level").agg(instances=("coverage", "size"),
                                         with_region=("has_region", "mean"),
                                         mean_coverage=("coverage", "mean"))
    print(summary.round(3).to_string())
    print(f"wrote {scenes_png} and {cov_png} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
