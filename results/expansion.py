"""Do the amodal masks expand too little or too much? Per run and occlusion level: the median
ratio of predicted to ground-truth amodal area, and the mean precision and recall of the
predicted amodal mask (threshold 0.5, the protocol's B_test boxes). IoU alone cannot tell a
mask that is too small from one that is too large or misplaced; these three can.

    python results/expansion.py --scenes 80 blade table2_3 table2_5 table2_7 > results/cpu/expansion.txt

Reads the checkpoints in RUNS/<run>/checkpoints/last.pt (not committed) and the validation
split of the synthetic benchmark.
"""

import argparse
import os

import pandas as pd
import torch

from blade.data import AmodalDataset
from blade.engine import load_model
from blade.evaluate import expansion
from blade.model import PROMPTS


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run names, e.g. blade table2_3")
    p.add_argument("--runs-dir", default="runs/experiments/cpu")
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--scenes", type=int, default=80, help="first N validation scenes")
    p.add_argument("--prompt", default="box", choices=PROMPTS,
                   help="how each box picks its masks (the committed expansion.txt predates the "
                        "box prompt: it used the detections rule)")
    args = p.parse_args()
    val = AmodalDataset(os.path.join(args.data, "val.json"), os.path.join(args.data, "val"),
                        mode="eval", protocol="synthetic")
    rows = []
    with torch.no_grad():
        for run in args.runs:
            model, _ = load_model(os.path.join(args.runs_dir, run, "checkpoints", "last.pt"))
            rows.append(expansion(model, val, args.scenes, prompt=args.prompt).assign(run=run))
    df = pd.concat(rows, ignore_index=True)
    print(f"# python results/expansion.py --scenes {args.scenes} --prompt {args.prompt} "
          f"{' '.join(args.runs)}")
    print(f"# first {args.scenes} validation scenes of {args.data}; area_ratio: median of "
          f"predicted / true amodal area; precision, recall: means over objects")
    table = df.groupby(["run", "level"], sort=False).agg(
        objects=("recall", "size"), area_ratio=("area_ratio", "median"),
        precision=("precision", "mean"), recall=("recall", "mean"))
    print(table.round(2).to_string())


if __name__ == "__main__":
    main()
