"""Which branch carries the score? Per run, seed and occlusion level: the amodal IoU of the fused
output (Eq. 2, what the protocol scores) and of each branch's own mask scored as if it were the
answer: m_v (the visible branch), m_a (the amodal branch), and the fusion restricted to outside
the given box (m_r zeroed inside B_test: an inference-only variant that never lets m_a replace
m_v where the input box says the object is visible).

    python results/branches.py blade blade_seed1 blade_seed2 table2_3 table2_3_seed1 \
        table2_3_seed2 > results/cpu/branches.txt

One forward pass per image and run (``predict_prompts``, the box prompt), every output scored
with the evaluation's own rows (``blade.evaluate``); reads RUNS/<run>/checkpoints/last.pt (not
committed) and the validation split of the synthetic benchmark. Also writes the tidy table
(run, seed, output, level, iou_amodal in %) as CSV with ``--csv``.
"""

import argparse
import os

import pandas as pd
import torch

from blade.boxes import box_bitmasks
from blade.data import AmodalDataset
from blade.engine import load_model
from blade.evaluate import _object_rows, predict_prompts_on_device, summarize, test_box_kind
from blade.runs import split_seed

OUTPUTS = ("fused", "m_v", "m_a", "fused_outside_box")


def answer(out: dict, kind: str, given: torch.Tensor) -> dict:
    """The answer dict with ``masks`` replaced by the output ``kind`` (probabilities);
    ``given`` [k,4]: the boxes the answers are for (image pixels)."""
    if kind == "fused":
        return out
    if kind == "m_v":
        return dict(out, masks=out["visible"])
    if kind == "m_a":
        return dict(out, masks=out["amodal"])
    h, w = out["masks"].shape[-2:]
    inside = box_bitmasks(given, h, w)[:, 0].to(out["masks"].device)  # [k,H,W]
    r = out["region"] * (1 - inside)
    return dict(out, masks=out["amodal"] * r + out["visible"] * (1 - r))


@torch.no_grad()
def branch_rows(model, val, scenes=None) -> pd.DataFrame:
    kind = test_box_kind(model)
    rows = {k: [] for k in OUTPUTS}
    for i in range(len(val) if scenes is None else min(scenes, len(val))):
        item = val[i]
        keep = item["evaluated"].nonzero().flatten()
        if not len(keep):
            continue
        given = item[f"{kind}_boxes"][keep]
        out = predict_prompts_on_device(model, [item["image"]], [given], ("box",))["box"][0]
        gt = {k: item[k].to(out["masks"].device) for k in ("amodal_masks", "visible_masks")}
        for k in OUTPUTS:
            rows[k] += _object_rows(item, gt, keep, answer(out, k, given), 0.5, kind, "box")
    parts = []
    for k, r in rows.items():
        table = summarize(r)["iou_amodal"].rename_axis("level").reset_index()
        parts.append(table.assign(output=k))
    return pd.concat(parts, ignore_index=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run names with a region branch, e.g. blade table2_3")
    p.add_argument("--runs-dir", default="runs/experiments/cpu")
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--scenes", type=int, default=None, help="first N validation scenes (all)")
    p.add_argument("--csv", default=None, help="also write the tidy table here")
    args = p.parse_args()
    val = AmodalDataset(os.path.join(args.data, "val.json"), os.path.join(args.data, "val"),
                        mode="eval", protocol="synthetic")
    frames = []
    for run in args.runs:
        model, _ = load_model(os.path.join(args.runs_dir, run, "checkpoints", "last.pt"))
        base, seed = split_seed(run)
        frames.append(branch_rows(model, val, args.scenes).assign(run=base, seed=seed))
    tidy = pd.concat(frames, ignore_index=True)
    tidy["iou_amodal"] = (tidy["iou_amodal"] * 100).round(2)  # per run: 0.01 points
    if args.csv:
        tidy[["run", "seed", "output", "level", "iou_amodal"]].to_csv(args.csv, index=False)
    print(f"# python results/branches.py {' '.join(args.runs)} (runs in {args.runs_dir}; "
          f"{'all' if args.scenes is None else args.scenes} validation scenes of {args.data}; "
          f"box prompt; amodal IoU %)")
    wide = tidy.pivot_table(index=["run", "output"], columns="level", values="iou_amodal",
                            aggfunc="mean", sort=False)
    print("## mean over seeds")
    print(wide.round(1).to_string())
    spread = tidy.pivot_table(index=["run", "output"], columns="level", values="iou_amodal",
                              aggfunc=lambda x: x.max() - x.min(), sort=False)
    print("## range over seeds (max - min)")
    print(spread.round(1).to_string())


if __name__ == "__main__":
    main()
