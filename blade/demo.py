"""`make demo`: the kit's main job end to end, step by step with progress.

    python -m blade.demo                      # cpu preset: ~15-20 min on a 2-core CPU
    python -m blade.demo --preset smoke --train 8 --val 4 --out /tmp/demo   # seconds

1. generate the synthetic benchmark (``data/synthetic``, 2000 + 300 scenes) if it is absent;
2. draw a few validation scenes with masks, boxes and overlap regions (``OUT/scenes.png``);
3. train BLADE with the preset (``OUT/run``; a finished run is reused, a stopped one resumed);
4. evaluate it with the paper's protocol on the validation scenes and print the per-level
   table (``OUT/eval``: objects.csv, levels.csv, cells.csv, metrics.json);
5. draw the qualitative figure: the most occluded objects, ground truth vs BLADE
   (``OUT/qualitative.png``).
"""

from __future__ import annotations

import argparse
import os
import time


def main(argv=None):
    from .config import PRESETS

    p = argparse.ArgumentParser(prog="python -m blade.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/demo", help="demo folder (run, evaluation, figures)")
    p.add_argument("--data", default="data/synthetic", help="benchmark folder (made if absent)")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--train", type=int, default=2000, help="training scenes to generate")
    p.add_argument("--val", type=int, default=300, help="validation scenes to generate")
    p.add_argument("--seed", type=int, default=0, help="benchmark seed")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import viz
    from .config import preset
    from .data import AmodalDataset
    from .data.synthetic import write_split
    from .engine import load_checkpoint, train
    from .evaluate import format_levels, run
    from .experiments import qualitative_picks

    t0 = time.perf_counter()
    progress = not args.no_progress

    def step(k, text):
        print(f"[{k}/5] {text}  ({time.perf_counter() - t0:.0f} s)", flush=True)

    step(1, f"synthetic benchmark in {args.data}")
    for split, n in (("train", args.train), ("val", args.val)):
        if os.path.exists(os.path.join(args.data, f"{split}.json")):
            print(f"      {split}.json exists, kept (delete the folder to regenerate)")
        else:
            write_split(args.data, split, n, seed=args.seed, progress=progress)
    val = AmodalDataset(os.path.join(args.data, "val.json"), os.path.join(args.data, "val"),
                        mode="eval", protocol="synthetic")

    step(2, "drawing validation scenes: masks, boxes, overlap regions")
    n_show = min(4, len(val))
    fig, axes = plt.subplots(3, n_show, figsize=(3.2 * n_show, 9.6), squeeze=False)
    for c in range(n_show):
        item = val[c]
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

    cfg = preset(args.preset)
    run_dir = os.path.join(args.out, "run")
    last = os.path.join(run_dir, "checkpoints", "last.pt")
    done = os.path.exists(last) and load_checkpoint(last)["iteration"] >= cfg.iterations
    step(3, f"training BLADE, {args.preset} preset ({cfg.iterations} iterations) in {run_dir}"
         + (": finished earlier, reused" if done else ""))
    if not done:
        train(cfg, os.path.join(args.data, "train.json"), os.path.join(args.data, "train"),
              run_dir, resume=os.path.exists(last), progress=progress)

    step(4, "evaluating on the validation scenes (given visible boxes, per occlusion level)")
    res = run(last, os.path.join(args.data, "val.json"), os.path.join(args.data, "val"),
              os.path.join(args.out, "eval"), protocol="synthetic", class_agnostic=True,
              progress=progress)
    print(format_levels(res["levels"], class_agnostic=True))
    m = res["metrics"]
    print(f"class-aware mean {100 * m['mean_iou_amodal_cls']:.1f}; COCO mask AP amodal "
          f"{100 * m['amodal_AP']:.1f}, visible {100 * m['visible_AP']:.1f}")

    step(5, "qualitative figure: the most occluded objects, ground truth vs BLADE")
    from .engine import load_model

    model, _ = load_model(last)
    picks = qualitative_picks(val, n=6)
    fig, axes = plt.subplots(max(len(picks), 1), 2, figsize=(6, 2.2 * max(len(picks), 1)),
                             squeeze=False)
    for r, (i, k) in enumerate(picks):
        item = val[i]
        out = model.predict([item["image"]], boxes=[item["visible_boxes"][k:k + 1]])[0]
        viz.show_qualitative_row(axes[r], item, k, [(out["masks"][0] > 0.5).numpy()])
    axes[0, 0].set_title("ground truth", fontsize=9)
    axes[0, 1].set_title("BLADE (amodal, from the visible box)", fontsize=9)
    fig.tight_layout()
    qual_png = viz.savefig(fig, os.path.join(args.out, "qualitative.png"))
    plt.close(fig)
    print(f"wrote {scenes_png}, {qual_png} and {os.path.join(args.out, 'eval')} "
          f"in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
