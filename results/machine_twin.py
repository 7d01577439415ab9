"""Machine twin: one run trained on two machines, to tell a machine effect from a seed effect.

``var_occluded`` seed 0 at ``cpu512`` trained on a lent GPU (float16 AMP, the GPU's arithmetic,
the benchmark as generated there) and again here (float32, this CPU, this machine's files),
with the same command, configuration and seed; both evaluated here, on this machine's 300
validation scenes, under the three protocols. The machine difference (twin - GPU run) is read
against the seed difference of the GPU runs (seeds 0, 1, 2 of the same configuration), at the
level of the table (amodal IoU per occlusion level) and of each object (the same validation
objects, paired).

    python results/machine_twin.py --csv results/cpu512/machine_twin.csv \
        > results/cpu512/machine_twin.txt

Reads the committed results of the GPU runs (``--results``, default ``results/cpu512``) and of
the twin (``--twin``, default ``results/cpu512/twins/var_occluded``: the result folder that
``blade.experiments study ... --results runs/twin_results/cpu512`` wrote, copied there; its
``box/train_log.csv`` is the training log); ``--csv`` writes the tidy table (protocol, level,
run, machine, iou_amodal in %). Folders under ``twins/`` hold no ``levels.csv`` of their own,
so the study's tables never count a twin as a run of the setting.
"""

import argparse
import json
import os
import sys

import pandas as pd

from blade.collect import prompt_dir
from blade.model import PROMPTS

LEVELS = ["FG-0", "FG-1", "FG-2", "FG-3", "mean"]


def levels(folder: str) -> pd.Series:
    """Amodal IoU (%) per occlusion level and the mean of the level means, of one result folder."""
    table = pd.read_csv(os.path.join(folder, "levels.csv"), index_col="level")
    return table["iou_amodal"].reindex(LEVELS) * 100


def objects(folder: str) -> pd.Series:
    """Amodal IoU (%) per validation object, indexed by (image_id, ann_id)."""
    table = pd.read_csv(os.path.join(folder, "objects.csv"))
    return table.set_index(["image_id", "ann_id"])["iou_amodal"] * 100


def paired(a: pd.Series, b: pd.Series) -> dict:
    """Per-object comparison of two runs on the same objects: mean |difference| (points),
    share of objects more than 10 points apart, Pearson correlation."""
    a, b = a.align(b, join="inner")
    d = (a - b).abs()
    return {"objects": len(d), "mean_abs_diff": d.mean(), "share_over_10": (d > 10).mean(),
            "corr": a.corr(b)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--twin", default="results/cpu512/twins/var_occluded",
                   help="the twin's result folder (trained here)")
    p.add_argument("--twin-log", default=None,
                   help="the twin's training log.csv (default: its box/train_log.csv)")
    p.add_argument("--results", default="results/cpu512", help="the committed GPU runs")
    p.add_argument("--run", default="var_occluded", help="the run trained on both machines")
    p.add_argument("--seeds", nargs="+", default=["var_occluded_seed1", "var_occluded_seed2"],
                   help="other seeds of the same configuration (the seed noise)")
    p.add_argument("--csv", default=None, help="also write the tidy table here")
    args = p.parse_args(argv)

    gpu = os.path.join(args.results, args.run)
    meta = {name: json.load(open(os.path.join(f, "meta.json")))
            for name, f in (("GPU", gpu), ("twin", args.twin))}
    given = argv if argv is not None else sys.argv[1:]
    print(f"# python results/machine_twin.py {' '.join(map(str, given))}")
    for name, m in meta.items():
        print(f"# {name}: trained on {m.get('train_machine', m.get('machine'))}, "
              f"{m.get('weights', 'float32 checkpoint')}, {m.get('iterations')} iterations, "
              f"{m.get('train_wall_s')} s; evaluated {m.get('date')} on {m.get('machine')}")
    differ = {k: (v, meta["twin"]["config"].get(k)) for k, v in meta["GPU"]["config"].items()
              if meta["twin"]["config"].get(k) != v}
    if differ or set(meta["twin"]["config"]) != set(meta["GPU"]["config"]):
        raise SystemExit(f"error: {args.twin}/meta.json is not a twin of {gpu}/meta.json: "
                         f"their configurations differ in {differ or 'their fields'} "
                         f"(GPU run's value, twin's value)")
    print("# the two configurations are identical (meta.json 'config')")

    rows = []
    for protocol in PROMPTS:
        runs = {f"{args.run} (GPU)": gpu, f"{args.run} (here)": args.twin}
        runs.update({f"{s} (GPU)": os.path.join(args.results, s) for s in args.seeds})
        for label, folder in runs.items():
            for level, value in levels(prompt_dir(folder, protocol)).items():
                rows.append({"protocol": protocol, "level": level, "run": label.split(" ")[0],
                             "machine": label.split(" ")[1].strip("()"), "iou_amodal": value})
    tidy = pd.DataFrame(rows)
    if args.csv:
        tidy.to_csv(args.csv, index=False, float_format="%.4f")

    print("\n## amodal IoU (%) per occlusion level: the twin against the GPU run, and the "
          "GPU seeds' spread")
    for protocol in PROMPTS:
        t = tidy[tidy["protocol"] == protocol]
        wide = t.pivot_table(index=["run", "machine"], columns="level", values="iou_amodal",
                             sort=False)[LEVELS]
        gpu_seeds = wide.xs("GPU", level="machine")
        wide.loc[("twin - GPU run", ""), :] = (wide.loc[(args.run, "here")]
                                               - wide.loc[(args.run, "GPU")])
        wide.loc[("GPU seeds: max - min", ""), :] = gpu_seeds.max() - gpu_seeds.min()
        wide.loc[("twin - GPU seeds' mean", ""), :] = (wide.loc[(args.run, "here")]
                                                       - gpu_seeds.mean())
        print(f"\n### protocol {protocol}\n{wide.round(1).to_string()}")

    print("\n## per object (the same validation objects, paired; amodal IoU in points)")
    pairs = [(f"{args.run} here vs GPU (machine)", args.twin, gpu)]
    pairs += [(f"{args.run} vs {s}, both GPU (seed)", gpu, os.path.join(args.results, s))
              for s in args.seeds]
    if len(args.seeds) > 1:
        pairs.append((f"{args.seeds[0]} vs {args.seeds[1]}, both GPU (seed)",
                      os.path.join(args.results, args.seeds[0]),
                      os.path.join(args.results, args.seeds[1])))
    out = []
    for protocol in PROMPTS:
        for name, a, b in pairs:
            out.append({"protocol": protocol, "pair": name,
                        **paired(objects(prompt_dir(a, protocol)),
                                 objects(prompt_dir(b, protocol)))})
    table = pd.DataFrame(out).set_index(["protocol", "pair"])
    print(table.round(3).to_string())

    twin_log = args.twin_log or os.path.join(prompt_dir(args.twin, "box"), "train_log.csv")
    if os.path.exists(twin_log):
        gpu_log = pd.read_csv(os.path.join(prompt_dir(gpu, "box"), "train_log.csv"),
                              index_col="iteration")
        twin_log = pd.read_csv(twin_log, index_col="iteration")
        terms = [c for c in gpu_log.columns if c not in ("lr", "sec_per_it")]
        print("\n## training logs: the first logged row (same initial weights and batches: "
              "close agreement means the same scenes), and the mean of the last 10 rows")
        first = pd.DataFrame({"GPU": gpu_log.iloc[0][terms], "here": twin_log.iloc[0][terms]})
        first["relative difference"] = (first["here"] - first["GPU"]).abs() / first["GPU"].abs()
        print(f"\n### iteration {gpu_log.index[0]}\n{first.T.to_string(float_format='%.4g')}")
        last = pd.DataFrame({"GPU": gpu_log.iloc[-10:][terms].mean(),
                             "here": twin_log.iloc[-10:][terms].mean()})
        print(f"\n### iterations {gpu_log.index[-10]}-{gpu_log.index[-1]}\n"
              f"{last.T.to_string(float_format='%.4g')}")


if __name__ == "__main__":
    main()
