"""The paper's Table 1 (methods) and Table 2 (ablations) on the synthetic benchmark.

    python -m blade.experiments table1 --preset cpu --data data/synthetic
    python -m blade.experiments table2 --preset cpu --data data/synthetic
    python -m blade.experiments seeds --preset cpu --data data/synthetic   # run-to-run spread
    python -m blade.experiments figures --preset cpu

Every method is a configuration of the same network, engine, data and budget (``METHODS``,
``TABLE2_RUNS``). A run trains into ``RUNS/<preset>/<name>`` (resuming a partial run from its
last checkpoint), is evaluated on the validation split with :mod:`blade.evaluate`, and leaves
its results in ``RESULTS/<name>/`` (``objects.csv``, ``levels.csv``, ``cells.csv``,
``metrics.json``, ``qualitative.json``, ``meta.json`` with the command, date, machine and wall
time). A run whose ``levels.csv`` exists is skipped, so a long series can be stopped (Ctrl-C,
or ``--max-steps`` per call) and continued later. ``RESULTS`` defaults to ``results/<preset>``
and figures to ``figures/<preset>``: a smoke run never touches the committed ``cpu`` results.

Methods (Table 1). The paper's BoxInst and BBTP rows use the amodal box as input ("known c");
here that is the configuration trained on B_a with an amodal-box detector, evaluated with the
amodal box as B_test. BLADE and the BoxInst-on-B_v row get the visible box ("unknown c").
Two reference rows need no training (``REFERENCES``): the given box itself, filled, scored
as the amodal mask, to show what the input box alone is worth. Bayesian-Amodal and SAM are not
reproduced (their rows in the notebooks carry the paper's numbers only).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field

from .criterion import TABLE2_ROWS


@dataclass(frozen=True)
class Method:
    label: str  # name in tables and figures
    overrides: dict = field(default_factory=dict)  # Config fields that make this method
    note: str = ""  # what it stands for


METHODS = {
    "blade": Method("BLADE", {}, "three branches, connectivity loss, fusion; input B_v"),
    "boxinst_bv": Method("BoxInst (B_v)", dict(use_amodal=False, use_fusion=False),
                         "visible branch only, its mask is the prediction; input B_v"),
    "boxinst_ba": Method("BoxInst (B_a, known c)",
                         dict(use_amodal=False, use_fusion=False, vis_target="amodal",
                              detect_box="amodal"),
                         "one branch, projection + pairwise on B_a; input B_a"),
    "bbtp": Method("BBTP-style MIL (B_a, known c)",
                   dict(use_amodal=False, use_fusion=False, vis_target="amodal",
                        vis_loss="mil", detect_box="amodal"),
                   "one branch, box tightness MIL + smoothness on B_a; input B_a"),
    "full": Method("Full supervision (masks)",
                   dict(use_amodal=False, use_fusion=False, vis_target="amodal",
                        vis_loss="dice"),
                   "one branch, dice on ground-truth amodal masks (upper bound); input B_v"),
}
# Reference rows without training: the given box itself, filled, as the amodal mask. They show
# what the input box alone is worth, i.e. how much the known-c setting gives away.
REFERENCES = {"box_ba": Method("Filled B_a (known c, no training)", {"detect_box": "amodal"}),
              "box_bv": Method("Filled B_v (no training)", {"detect_box": "visible"})}
TABLE1 = ["blade", "boxinst_bv", "boxinst_ba", "bbtp", "full", "box_ba", "box_bv"]

# Table 2: row -> run name. Rows 1 and b are the full model, i.e. the "blade" run.
TABLE2_RUNS = {row: ("blade" if row in ("1", "b") else f"table2_{row}") for row in TABLE2_ROWS}
TABLE2_ORDER = ["1", "3", "5", "2", "4", "6", "7", "8", "a", "c", "d", "b"]  # run order
LEVELS = ["FG-0", "FG-1", "FG-2", "FG-3"]
# Seed study: the same configuration trained again with another ``Config.seed`` (weights, data
# order, augmentation; the data stay the same). A run name ``<run>_seed<N>`` is run ``<run>``
# with seed N; the plain name is seed 0. Rows 1 and 3 first: their gap is the NE claim.
SEEDS = ["blade_seed1", "table2_3_seed1", "blade_seed2", "table2_3_seed2"]
# The reproduction study (issue 12): the five core runs and seeds 1-2 of BLADE and row 3, the
# configurations whose comparisons the paper's main claims rest on, run at each scale.
STUDY = ["blade", "table2_3", "blade_seed1", "table2_3_seed1", "blade_seed2", "table2_3_seed2",
         "boxinst_ba", "boxinst_bv", "full", "box_ba", "box_bv"]
# Kit variants of the connectivity loss (issue 13; ``blade.criterion.expansion_area``): the
# paper's BLADE with one change each, compared on the same footing as the study's runs.
VARIANTS = {
    "var_region": Method("BLADE, l_ne expands only inside R", {"ne_allow": "region"}),
    "var_hidden": Method("BLADE, l_ne expands only into R minus B_v", {"ne_allow": "hidden"}),
    "var_warmup": Method("BLADE, connectivity warmed up with pairwise", {"con_warmup": True}),
    "var_hidden_warmup": Method("BLADE, hidden + warm-up",
                                {"ne_allow": "hidden", "con_warmup": True}),
}
# The variants table: the paper's recipe, the variants and the references they must beat.
VARIANT_TABLE = ["blade", "var_hidden", "var_region", "var_warmup", "var_hidden_warmup",
                 "table2_3", "boxinst_ba", "boxinst_bv", "full"]
# Protocols (``BladeModel.predict(prompt=...)``): every trained run is evaluated with both.
# A run's folder holds the "detections" results at its top (the kit's first protocol, kept
# where the committed results always were) and the "box" results, the headline, in ``box/``.
PROMPTS = ("box", "detections")
PROMPT_DIRS = {"detections": "", "box": "box"}


def prompt_dir(res: str, prompt: str) -> str:
    """The folder of a run's results under one protocol."""
    if prompt not in PROMPT_DIRS:
        raise ValueError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
    return os.path.join(res, PROMPT_DIRS[prompt]) if PROMPT_DIRS[prompt] else res


def finished(res: str, prompt: str) -> bool:
    return os.path.exists(os.path.join(prompt_dir(res, prompt), "levels.csv"))


def method(name: str) -> Method:
    """The Method of a Table 1 run (trained method or no-training reference) or variant."""
    for table in (METHODS, REFERENCES, VARIANTS):
        if name in table:
            return table[name]
    raise KeyError(name)


def split_seed(name: str) -> tuple:
    """``"table2_3_seed1"`` -> ``("table2_3", 1)``; a name without the suffix -> ``(name, 0)``."""
    m = re.fullmatch(r"(.+)_seed(\d+)", name)
    return (m.group(1), int(m.group(2))) if m else (name, 0)


def run_overrides(name: str) -> dict:
    """Config overrides of a run name (a method of Table 1, a row of Table 2, either with a
    ``_seed<N>`` suffix)."""
    base, seed = split_seed(name)
    if seed:
        if base in REFERENCES:
            raise ValueError(f"run {name!r}: a reference row has no training, hence no seed")
        return dict(run_overrides(base), seed=seed)
    if name in METHODS or name in REFERENCES or name in VARIANTS:
        return dict(method(name).overrides)
    if name.startswith("table2_") and name[7:] in TABLE2_ROWS:
        return dict(TABLE2_ROWS[name[7:]])
    raise ValueError(f"unknown run {name!r}; runs are {sorted(METHODS) + sorted(REFERENCES)}, "
                     f"{sorted(n for n in TABLE2_RUNS.values() if n != 'blade')} and "
                     f"{sorted(VARIANTS)}, each optionally with a _seed<N> suffix")


def run_label(name: str) -> str:
    base, seed = split_seed(name)
    if seed:
        return f"{run_label(base)}, seed {seed}"
    if name in METHODS or name in REFERENCES or name in VARIANTS:
        return method(name).label
    row = name[7:]
    o = TABLE2_ROWS[row]
    if row.isdigit():
        on = [k for k, key in (("UN", "use_uniform"), ("NE", "use_neighbor"),
                               ("FS", "use_fusion")) if o[key]]
        return f"{row}: " + ("+".join(on) if on else "none")
    return f"{row}: a=({o['alpha_proj']:g}, {o['alpha_pair']:g}, {o['alpha_con']:g})"


def table_runs(table: str) -> list:
    if table == "table1":
        return list(TABLE1)
    if table == "table2":  # the rows behind the paper's main claims first (NE, FS, UN)
        return list(dict.fromkeys(TABLE2_RUNS[r] for r in TABLE2_ORDER))
    if table == "seeds":
        return list(SEEDS)
    if table == "study":
        return list(STUDY)
    if table == "variants":
        return list(VARIANT_TABLE)
    raise ValueError(f"unknown table {table!r}")


# -- qualitative picks ---------------------------------------------------------------------------
def qualitative_picks(dataset, n: int = 6) -> list:
    """Deterministic examples for the qualitative grid: the first ``n`` images (in file order)
    with an evaluated object at the last level (FG-3), and in each the most occluded one.
    Returns ``[(dataset index, instance index), ...]``."""
    picks = []
    top = dataset.level_bounds[-2]  # above this rate an object can only be at the last level
    for i in range(len(dataset)):
        rates = [inst.get("occlusion") for inst in dataset.instances[i]]
        if all(r is not None for r in rates) and max(rates, default=0.0) <= top:
            continue  # cheap pre-filter on the annotated occlusion rates
        item = dataset[i]
        last = (item["levels"] == len(dataset.level_bounds) - 1).nonzero().flatten()
        if len(last):
            k = int(last[item["occlusion"][last].argmax()])
            picks.append((i, k))
        if len(picks) == n:
            break
    return picks


def qualitative_masks(model, dataset, picks, test_box: str, prompt: str = "box") -> list:
    """The model's amodal mask (thresholded, COCO RLE) for each pick."""
    from .data.masks import encode
    from .evaluate import predict_one

    out = []
    for i, k in picks:
        item = dataset[i]
        res = predict_one(model, item["image"], item[f"{test_box}_boxes"][k:k + 1], prompt)
        out.append({"index": i, "instance": k, "image_id": item["image_id"],
                    "ann_id": item["ann_ids"][k], "amodal": encode((res["masks"][0] > 0.5).numpy())})
    return out


# -- one run -------------------------------------------------------------------------------------
def _data_paths(data: str):
    paths = {s: (os.path.join(data, f"{s}.json"), os.path.join(data, s)) for s in ("train", "val")}
    for ann, images in paths.values():
        for p in (ann, images):
            if not os.path.exists(p):
                raise SystemExit(f"error: {p} does not exist: --data must be a folder written "
                                 f"by `python -m blade.data.synthetic --out {data}`")
    return paths


def machine() -> str:
    return f"{os.cpu_count()}-core {platform.machine()} {platform.system()}"


def run_one(name: str, preset_name: str, data: str, runs_dir: str, results_dir: str,
            progress: bool = True, max_steps: int | None = None, limit: int | None = None,
            coco: bool = True, command: str = "") -> str:
    """Train (or resume) and evaluate one run under both protocols. Returns 'skipped',
    'partial' or 'done'.

    A run is finished when both protocols have results. One with results under one protocol
    only (results written before the box prompt existed) is evaluated under the other from
    its checkpoint; without the checkpoint it is trained again and *both* are rewritten, so
    that every file of a run folder comes from one checkpoint (``meta.json`` says so)."""
    import torch

    from .config import preset
    from .data import AmodalDataset
    from .engine import load_checkpoint, load_model, train
    from .evaluate import coco_ap, evaluate, test_box_kind

    res = os.path.join(results_dir, name)
    todo = [p for p in PROMPTS if not finished(res, p)]
    if not todo:
        return "skipped"
    paths = _data_paths(data)
    if name in REFERENCES:
        return _run_reference(name, paths, res, limit, progress, command)
    cfg = preset(preset_name, **run_overrides(name))
    run_dir = os.path.join(runs_dir, name)
    last = os.path.join(run_dir, "checkpoints", "last.pt")
    if not os.path.exists(last):
        todo = list(PROMPTS)  # trained (again): every protocol from this checkpoint
    timing_file = os.path.join(run_dir, "timing.json")
    timing = json.load(open(timing_file)) if os.path.exists(timing_file) else {"train_s": 0.0,
                                                                              "calls": 0}
    done_iters = load_checkpoint(last)["iteration"] if os.path.exists(last) else 0
    if done_iters < cfg.iterations:
        t0 = time.perf_counter()
        train(cfg, *paths["train"], run_dir, resume=os.path.exists(last), progress=progress,
              max_steps=max_steps)
        timing["train_s"] += time.perf_counter() - t0
        timing["calls"] += 1
        with open(timing_file, "w") as f:
            json.dump(timing, f)
        if load_checkpoint(last)["iteration"] < cfg.iterations:
            return "partial"
    model, ckpt = load_model(last)
    val = AmodalDataset(*paths["val"], mode="eval", protocol="synthetic")
    meta = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "train_wall_s": round(timing["train_s"], 1), "train_calls": timing["calls"],
            "iterations": ckpt["iteration"], "overrides": run_overrides(name),
            "config": dataclasses.asdict(cfg), "val_images": len(val) if limit is None else limit}
    picks = qualitative_picks(val)
    for prompt in todo:
        t0 = time.perf_counter()
        rows = evaluate(model, val, limit=limit, progress=progress, prompt=prompt)
        metrics = {"run": name, "label": run_label(name), "preset": preset_name,
                   "test_box": test_box_kind(model), "prompt": prompt,
                   "objects": int(len(rows)), "fallback_rate": float(rows["fallback"].mean()),
                   "wrong_instance_rate": float(rows["wrong_instance"].mean())}
        if coco and prompt == "detections":  # COCO AP runs without boxes: one per checkpoint
            metrics.update(coco_ap(model, val, limit=limit, class_agnostic=True,
                                   progress=progress))
        _write_results(prompt_dir(res, prompt), rows, metrics, dict(meta, prompt=prompt),
                       qualitative_masks(model, val, picks, test_box_kind(model), prompt), t0)
    return "done"


def _write_results(res, rows, metrics, meta, qualitative, t0) -> None:
    """One run's results folder; ``levels.csv`` last, its presence marks the run complete."""
    from .evaluate import summarize

    os.makedirs(res, exist_ok=True)
    with open(os.path.join(res, "qualitative.json"), "w") as f:
        json.dump(qualitative, f)
    rows.to_csv(os.path.join(res, "objects.csv"), index=False)
    summarize(rows, by="cell").to_csv(os.path.join(res, "cells.csv"), index_label="cell")
    with open(os.path.join(res, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    meta = dict(meta, eval_wall_s=round(time.perf_counter() - t0, 1))
    with open(os.path.join(res, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1, default=list)
    summarize(rows).to_csv(os.path.join(res, "levels.csv"), index_label="level")


def _run_reference(name, paths, res, limit, progress, command) -> str:
    """A no-training reference row: the filled given box scored with the same protocol (the
    prompt does not matter to a filled box: both protocol folders get the same rows)."""
    from .data import AmodalDataset
    from .evaluate import BoxFill, evaluate

    t0 = time.perf_counter()
    kind = REFERENCES[name].overrides["detect_box"]
    model = BoxFill(kind)
    val = AmodalDataset(*paths["val"], mode="eval", protocol="synthetic")
    rows = evaluate(model, val, limit=limit, progress=progress)
    meta = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine(), "train_wall_s": 0.0, "train_calls": 0, "iterations": 0,
            "reference": f"filled {kind} box, no model",
            "val_images": len(val) if limit is None else limit}
    qualitative = qualitative_masks(model, val, qualitative_picks(val), kind)
    for prompt in PROMPTS:
        metrics = {"run": name, "label": run_label(name), "test_box": kind, "prompt": prompt,
                   "objects": int(len(rows)), "fallback_rate": 0.0,
                   "wrong_instance_rate": float(rows["wrong_instance"].mean())}
        _write_results(prompt_dir(res, prompt), rows.assign(prompt=prompt), metrics,
                       dict(meta, prompt=prompt), qualitative, t0)
    return "done"


# -- claim checks ------------------------------------------------------------------------------
def _check(claim, needed, table, test, evidence):
    """One claim: holds True/False, or None when a run it needs has no results yet."""
    if any(r not in table.index for r in needed):
        missing = [r for r in needed if r not in table.index]
        return {"claim": claim, "holds": None, "evidence": f"not run yet: {', '.join(missing)}"}
    return {"claim": claim, "holds": bool(test(table)), "evidence": evidence(table)}


def claims_table1(table) -> list:
    """The paper's Table 1 claims against a wide table (rows: run names, columns FG-0..3 and
    mean, IoU in %)."""
    def beats(a, others, levels):
        return lambda t: all(t.loc[a, lv] > t.loc[o, lv] for o in others for lv in levels)

    def show(runs, levels):
        return lambda t: "; ".join(f"{lv}: " + ", ".join(f"{r} {t.loc[r, lv]:.1f}" for r in runs)
                                   for lv in levels)

    out = [
        _check("BLADE beats both BoxInst baselines at FG-2 and FG-3",
               ["blade", "boxinst_bv", "boxinst_ba"], table,
               beats("blade", ["boxinst_bv", "boxinst_ba"], ["FG-2", "FG-3"]),
               show(["blade", "boxinst_bv", "boxinst_ba"], ["FG-2", "FG-3"])),
        _check("BLADE beats the BBTP-style baseline at every level", ["blade", "bbtp"], table,
               beats("blade", ["bbtp"], LEVELS), show(["blade", "bbtp"], LEVELS + ["mean"])),
        _check("BLADE has the best mean of the box-supervised methods",
               ["blade", "boxinst_bv", "boxinst_ba", "bbtp"], table,
               beats("blade", ["boxinst_bv", "boxinst_ba", "bbtp"], ["mean"]),
               show(["blade", "boxinst_bv", "boxinst_ba", "bbtp"], ["mean"])),
    ]
    gap = _check("Gap to full supervision (mean IoU points; a measurement, not a claim)",
                 ["blade", "full"], table, lambda t: True,
                 lambda t: f"full {t.loc['full', 'mean']:.1f} - BLADE {t.loc['blade', 'mean']:.1f}"
                           f" = {t.loc['full', 'mean'] - t.loc['blade', 'mean']:.1f}")
    gap["holds"] = None if gap["holds"] is None else "n/a"  # a number to report, not a claim
    out.append(gap)
    box = _check("What the input box alone scores (filled box, no training; a measurement)",
                 ["box_ba", "box_bv", "blade"], table, lambda t: True,
                 lambda t: "; ".join(f"{lv}: filled B_a {t.loc['box_ba', lv]:.1f}, filled B_v "
                                     f"{t.loc['box_bv', lv]:.1f}, BLADE {t.loc['blade', lv]:.1f}"
                                     for lv in ["FG-0", "FG-3", "mean"]))
    box["holds"] = None if box["holds"] is None else "n/a"
    out.append(box)
    return out


def claims_table2(table) -> list:
    """The paper's Table 2 claims against a wide table (rows '1'-'8', 'a'-'d')."""
    def drop(t, full, ablated, lv):
        return t.loc[full, lv] - t.loc[ablated, lv]

    pairs_fs = [("1", "5"), ("2", "6"), ("3", "7"), ("4", "8")]
    pairs_un = [("1", "2"), ("3", "4"), ("5", "6"), ("7", "8")]

    def pairs_text(pairs):
        return lambda t: ", ".join(f"{a} {t.loc[a, 'mean']:.1f} vs {b} {t.loc[b, 'mean']:.1f}"
                                   for a, b in pairs)

    rows = [str(k) for k in range(1, 9)]
    return [
        _check("The full model (row 1) has the best mean of rows 1-8", rows, table,
               lambda t: t.loc[rows, "mean"].idxmax() == "1",
               lambda t: f"best: row {t.loc[rows, 'mean'].idxmax()} "
                         f"({t.loc[rows, 'mean'].max():.1f}); row 1 {t.loc['1', 'mean']:.1f}"),
        _check("Dropping the neighbour loss (row 3 vs 1) hurts FG-3 most", ["1", "3"], table,
               lambda t: (max(LEVELS, key=lambda lv: drop(t, "1", "3", lv)) == "FG-3"
                          and drop(t, "1", "3", "FG-3") > 0),  # it must hurt at all
               lambda t: "row 1 minus row 3: " + ", ".join(
                   f"{lv} {drop(t, '1', '3', lv):+.1f}" for lv in LEVELS)),
        _check("Dropping fusion hurts (rows 1-4 beat rows 5-8 pairwise, mean)",
               [r for p in pairs_fs for r in p], table,
               lambda t: all(t.loc[a, "mean"] > t.loc[b, "mean"] for a, b in pairs_fs),
               pairs_text(pairs_fs)),
        _check("Dropping the uniform loss hurts (pairwise, mean)",
               [r for p in pairs_un for r in p], table,
               lambda t: all(t.loc[a, "mean"] > t.loc[b, "mean"] for a, b in pairs_un),
               pairs_text(pairs_un)),
        _check("The paper's weights (row b) have the best mean of rows a-d",
               ["a", "b", "c", "d"], table,
               lambda t: t.loc[["a", "b", "c", "d"], "mean"].idxmax() == "b",
               lambda t: ", ".join(f"{r} {t.loc[r, 'mean']:.1f}" for r in "abcd")),
    ]


def format_claims(claims) -> str:
    mark = {True: "holds", False: "DOES NOT HOLD", None: "open", "n/a": "measured"}
    return "\n".join(f"- [{mark[c['holds']]}] {c['claim']}: {c['evidence']}" for c in claims)


# -- tables and figures --------------------------------------------------------------------------
def suffix(prompt: str) -> str:
    """File-name suffix of a protocol's tables and figures ('' for detections, '_box')."""
    return "" if prompt == "detections" else f"_{prompt}"


def collect(results_dir: str, table: str, prompt: str = "detections"):
    """Tidy results of a table's finished runs under one protocol: one row per (run, level)
    with the IoU columns; runs without results are left out (``missing`` lists them)."""
    import pandas as pd

    frames, missing = [], []
    names = TABLE1 if table == "table1" else list(TABLE2_RUNS)
    for key in names:
        run = key if table == "table1" else TABLE2_RUNS[key]
        path = os.path.join(prompt_dir(os.path.join(results_dir, run), prompt), "levels.csv")
        if not os.path.exists(path):
            missing.append(key)
            continue
        df = pd.read_csv(path)
        df.insert(0, "run", run)
        df.insert(0, "method" if table == "table1" else "row",
                  method(key).label if table == "table1" else key)
        frames.append(df)
    tidy = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return tidy, missing


def collect_seeds(results_dir: str, prompt: str = "detections"):
    """Tidy results of the seed study: for every run with a finished ``<run>_seed<N>`` in
    ``results_dir``, its seed-0 run and every finished seed, one row per (run, level); columns
    ``base``, ``seed`` added."""
    import pandas as pd

    found = sorted(os.listdir(results_dir)) if os.path.isdir(results_dir) else []
    seeded = [n for n in found if split_seed(n)[1] > 0
              and finished(os.path.join(results_dir, n), prompt)]
    frames = []
    for base in dict.fromkeys(split_seed(n)[0] for n in SEEDS + seeded):
        runs = [base] + sorted((n for n in seeded if split_seed(n)[0] == base),
                               key=lambda n: split_seed(n)[1])
        for run in runs:
            path = os.path.join(prompt_dir(os.path.join(results_dir, run), prompt), "levels.csv")
            if os.path.exists(path):
                df = pd.read_csv(path)
                df.insert(0, "seed", split_seed(run)[1])
                df.insert(0, "base", run_label(base))
                df.insert(0, "run", run)
                frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def collect_variants(results_dir: str, prompt: str = "box"):
    """Tidy results of the variants table (``VARIANT_TABLE``, every finished seed of each):
    one row per (run, level) with ``variant`` (label), ``run``, ``seed`` and the IoU columns."""
    import pandas as pd

    found = sorted(os.listdir(results_dir)) if os.path.isdir(results_dir) else []
    frames = []
    for base in VARIANT_TABLE:
        runs = [base] + sorted((n for n in found if split_seed(n)[0] == base
                                and split_seed(n)[1] > 0), key=lambda n: split_seed(n)[1])
        for run in runs:
            path = os.path.join(prompt_dir(os.path.join(results_dir, run), prompt), "levels.csv")
            if os.path.exists(path):
                df = pd.read_csv(path)
                df.insert(0, "seed", split_seed(run)[1])
                df.insert(0, "run", run)
                df.insert(0, "variant", run_label(base))
                frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def seed_spread(tidy, value: str = "iou_amodal"):
    """Per configuration (rows ``(base, stat)``) and level (columns FG-0..FG-3, mean), in %:
    the mean over seeds, the sample standard deviation and max - min; ``seeds`` counts them."""
    import pandas as pd

    t = tidy.pivot_table(index=["base", "seed"], columns="level", values=value) * 100
    t = t[[c for c in LEVELS + ["mean"] if c in t.columns]]
    parts = []
    for base in dict.fromkeys(tidy["base"]):
        runs = t.loc[base]
        stats = pd.DataFrame({"mean": runs.mean(), "sd": runs.std(ddof=1),
                              "range": runs.max() - runs.min()}).T
        stats.index = pd.MultiIndex.from_product([[base], stats.index], names=["base", "stat"])
        stats["seeds"] = len(runs)
        parts.append(stats)
    return pd.concat(parts).round(2)


def wide(tidy, key: str, value: str = "iou_amodal"):
    """Rows x (FG-0..FG-3, mean) in percent, like the paper's tables."""
    t = tidy.pivot(index=key, columns="level", values=value) * 100
    t = t[[c for c in LEVELS + ["mean"] if c in t.columns]]
    order = list(dict.fromkeys(tidy[key]))
    return t.loc[order].round(1)


def write_tables_and_figures(results_dir: str, figures_dir: str, data: str | None = None,
                             preset_name: str = "") -> list:
    """results_dir/table{1,2}[_box].csv and seeds[_box].csv (tidy, one set per protocol: no
    suffix for detections, ``_box`` for the box prompt) and their figures; returns the paths
    written."""
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
    """table{1,2}[_box].csv, seeds[_box].csv and their figures for one protocol."""
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
    val = AmodalDataset(*_data_paths(data)["val"], mode="eval", protocol="synthetic")
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
    fig.tight_layout()
    out = os.path.join(figures_dir, "qualitative.png")
    viz.savefig(fig, out)
    plt.close(fig)
    return out


def main(argv=None):
    from .config import PRESETS

    p = argparse.ArgumentParser(prog="python -m blade.experiments", description=(
        "Train and evaluate every configuration of the paper's Table 1 or Table 2 on the "
        "synthetic benchmark; finished runs are skipped, partial ones resumed."))
    p.add_argument("what", choices=("table1", "table2", "all", "seeds", "study", "variants",
                                     "figures"),
                   help="'seeds': rows 1 and 3 again with seeds 1, 2 (run-to-run spread); "
                        "'study': the reproduction study's runs (five core runs, seeds 1-2 of "
                        "BLADE and row 3, the filled-box references); 'variants': the kit's "
                        "connectivity variants with the runs they are compared with")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--data", default="data/synthetic", help="folder from blade.data.synthetic")
    p.add_argument("--runs", default="runs/experiments", help="training runs (checkpoints)")
    p.add_argument("--results", default=None, help="default: results/<preset>")
    p.add_argument("--figures", default=None, help="default: figures/<preset>")
    p.add_argument("--only", default=None, help="comma-separated run names")
    p.add_argument("--max-steps", type=int, default=None,
                   help="train at most N iterations per run in this call (continue later)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only N val images")
    p.add_argument("--no-coco", action="store_true")
    p.add_argument("--prompt", default="box", choices=PROMPTS,
                   help="protocol of the printed tables (both are always evaluated and written)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    results = args.results or os.path.join("results", args.preset)
    figures = args.figures or os.path.join("figures", args.preset)
    runs_dir = os.path.join(args.runs, args.preset)
    command = "python -m blade.experiments " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.what != "figures":
        names = (table_runs("table1") + table_runs("table2") if args.what == "all"
                 else table_runs(args.what))
        names = list(dict.fromkeys(names))
        if args.only:
            wanted = args.only.split(",")
            for w in wanted:
                run_overrides(w)  # unknown names fail here, before any training
                if args.what == "seeds" and not split_seed(w)[1]:
                    raise SystemExit(f"error: {w!r} is not a seed run; seed runs are named "
                                     f"<run>_seed<N> with N > 0, e.g. table2_5_seed1")
            # the seed study takes any <run>_seed<N>; the tables only their own runs
            names = (wanted if args.what in ("seeds", "study", "variants")
                     else [n for n in names if n in wanted])
        for name in names:
            print(f"== {name} ({run_label(name)})", flush=True)
            status = run_one(name, args.preset, args.data, runs_dir, results,
                             progress=not args.no_progress, max_steps=args.max_steps,
                             limit=args.limit, coco=not args.no_coco, command=command)
            print(f"   {status}", flush=True)
            if status == "partial":
                print("   (continue with the same command)")
                break
    for path in write_tables_and_figures(results, figures, args.data if os.path.isdir(
            args.data) else None, preset_name=args.preset):
        print("wrote", path)
    for table, key in (("table1", "method"), ("table2", "row")):
        tidy, missing = collect(results, table, args.prompt)
        if not tidy.empty:
            print(f"\n{table} (amodal IoU %, class-agnostic, mean = mean of levels, "
                  f"{args.prompt} prompt)")
            print(wide(tidy, key).to_string())
            if missing:
                print("not run yet:", ", ".join(missing))
            checks = (claims_table1(wide(tidy, "run")) if table == "table1"
                      else claims_table2(wide(tidy, "row")))
            print("claims:\n" + format_claims(checks))
    seeds = collect_seeds(results, args.prompt)
    if not seeds.empty:
        print(f"\nseed study (amodal IoU %, class-agnostic, {args.prompt} prompt)")
        print(seed_spread(seeds).to_string())


if __name__ == "__main__":
    main()
