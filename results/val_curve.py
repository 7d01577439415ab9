"""Would longer training help? Validation amodal IoU at every saved checkpoint of a run.

    python results/val_curve.py blade table2_3 > results/cpu/val_curve.csv

For each run, its ``RUNS/<run>/checkpoints/iter_*.pt`` (not committed) evaluated with the box
prompt on the validation split of the synthetic benchmark (``blade.evaluate.checkpoint_curve``);
one CSV on stdout: run, iteration, level, iou_amodal, iou_visible, objects. The command and the
date are the first comment lines.
"""

import argparse
import glob
import os
import sys
import time

import pandas as pd

from blade.data import AmodalDataset
from blade.evaluate import checkpoint_curve


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run names, e.g. blade table2_3")
    p.add_argument("--runs-dir", default="runs/experiments/cpu")
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--limit", type=int, default=None, help="first N validation scenes")
    args = p.parse_args()
    val = AmodalDataset(os.path.join(args.data, "val.json"), os.path.join(args.data, "val"),
                        mode="eval", protocol="synthetic")
    t0 = time.perf_counter()
    frames = []
    for run in args.runs:
        paths = sorted(glob.glob(os.path.join(args.runs_dir, run, "checkpoints", "iter_*.pt")))
        frames.append(checkpoint_curve(paths, val, limit=args.limit).assign(run=run))
    df = pd.concat(frames, ignore_index=True)
    print(f"# python results/val_curve.py {' '.join(sys.argv[1:])}")
    print(f"# {time.strftime('%Y-%m-%d', time.gmtime())}, box prompt, {len(val)} validation "
          f"scenes, {time.perf_counter() - t0:.0f} s")
    print(df[["run", "iteration", "level", "iou_amodal", "iou_visible", "objects"]]
          .round(4).to_csv(index=False), end="")


if __name__ == "__main__":
    main()
