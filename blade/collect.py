"""Reading a setting's results back: tidy tables, the seed spread and the verdicts.

A setting is a folder ``results/<setting>/`` (e.g. ``results/cpu``) with one folder per run
(:mod:`blade.experiments` writes them). Each run folder holds its results under every protocol
(``PROMPT_DIRS``): ``levels.csv`` (one row per occlusion level and the mean), ``objects.csv``,
``cells.csv``, ``metrics.json``, ``meta.json``. This module reads the ``levels.csv`` files into
tidy pandas tables (one row per run and level), the paper-style wide tables, the seed spread
(``seed_spread``) and the verdicts of :mod:`blade.claims` for every setting
(``verdict_rows``, ``write_verdicts`` -> ``results/verdicts.csv``). It trains nothing and
draws nothing (figures: :mod:`blade.report`).
"""

from __future__ import annotations

import os

from .model import PROMPTS
from .runs import (LEVELS, SEEDS, TABLE1, TABLE2_RUNS, VARIANT_TABLE, VARIANTS, method,
                   run_label, split_seed)


# Protocols (``BladeModel.predict(prompt=...)``): every trained run is evaluated with each.
# A run's folder holds the "detections" results at its top (the kit's first protocol, kept
# where the committed results always were), the "box" results, the headline, in ``box/``, and
# the "box_match" results (added after the box prompt's wrong-instance rate was measured) in
# ``box_match/``.
PROMPT_DIRS = {"detections": "", "box": "box", "box_match": "box_match"}


def prompt_dir(res: str, prompt: str) -> str:
    """The folder of a run's results under one protocol."""
    if prompt not in PROMPT_DIRS:
        raise ValueError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
    return os.path.join(res, PROMPT_DIRS[prompt]) if PROMPT_DIRS[prompt] else res


def finished(res: str, prompt: str) -> bool:
    """Whether a run's results folder ``res`` is complete under ``prompt`` (its levels.csv)."""
    return os.path.exists(os.path.join(prompt_dir(res, prompt), "levels.csv"))


def data_paths(data: str):
    """(annotation file, image folder) of the train and val splits of a synthetic dataset
    folder; a missing one is an error naming it."""
    paths = {s: (os.path.join(data, f"{s}.json"), os.path.join(data, s)) for s in ("train", "val")}
    for ann, images in paths.values():
        for p in (ann, images):
            if not os.path.exists(p):
                raise SystemExit(f"error: {p} does not exist: --data must be a folder written "
                                 f"by `python -m blade.data.synthetic --out {data}`")
    return paths


def suffix(prompt: str) -> str:
    """File-name suffix of a protocol's tables and figures ('' for detections, else _<prompt>)."""
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


def collect_runs(results_dir: str, prompt: str = "box"):
    """Every finished run of a setting under one protocol: one row per (run, level), columns
    ``run``, ``base`` (the name without seed suffix), ``seed`` and the IoU columns."""
    import pandas as pd

    found = sorted(os.listdir(results_dir)) if os.path.isdir(results_dir) else []
    frames = []
    for run in found:
        path = os.path.join(prompt_dir(os.path.join(results_dir, run), prompt), "levels.csv")
        if os.path.exists(path):
            df = pd.read_csv(path)
            base, seed = split_seed(run)
            df.insert(0, "seed", seed)
            df.insert(0, "base", base)
            df.insert(0, "run", run)
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _runs_of(tidy, bases: list):
    """The rows of ``collect_runs`` whose base is in ``bases``, in that order, seeds ascending."""
    if tidy.empty:
        return tidy
    order = {b: k for k, b in enumerate(bases)}
    keep = tidy[tidy["base"].isin(order)]
    key = keep["base"].map(order) * 10_000 + keep["seed"]
    return keep.iloc[key.argsort(kind="stable")].reset_index(drop=True)


def collect_seeds(results_dir: str, prompt: str = "detections"):
    """Tidy results of the seed study: the runs of ``SEEDS`` and every run with a finished
    ``<run>_seed<N>`` in ``results_dir``, each with its seed-0 run and every finished seed, one
    row per (run, level); ``base`` holds the configuration's label, ``seed`` the seed."""
    tidy = collect_runs(results_dir, prompt)
    if tidy.empty:
        return tidy
    bases = list(dict.fromkeys([split_seed(n)[0] for n in SEEDS]
                               + list(tidy.loc[tidy["seed"] > 0, "base"])))
    out = _runs_of(tidy, bases)
    return out.assign(base=out["base"].map(run_label))


def collect_variants(results_dir: str, prompt: str = "box"):
    """Tidy results of the variants table (``VARIANT_TABLE``, every finished seed of each):
    one row per (run, level) with ``variant`` (label), ``run``, ``seed`` and the IoU columns."""
    out = _runs_of(collect_runs(results_dir, prompt), list(VARIANT_TABLE))
    if out.empty:
        return out
    return out.drop(columns="base").assign(
        variant=out["base"].map(run_label))[["variant"] + [c for c in out if c != "base"]]


def settings(results_root: str = "results") -> list:
    """The settings under ``results_root``: its folders (``cpu``, ``cpu512``, ...), sorted,
    ``smoke`` (never committed) left out."""
    if not os.path.isdir(results_root):
        return []
    return [s for s in sorted(os.listdir(results_root))
            if s != "smoke" and os.path.isdir(os.path.join(results_root, s))]


def settings_table(results_root: str, bases: list, prompt: str = "box",
                   value: str = "iou_amodal"):
    """The same configurations across settings (scales): one row per (setting, base, level)
    with the mean over seeds (%), the seed range (NaN with one seed) and the number of seeds,
    for the runs of ``bases`` (names without seed suffix) under one protocol."""
    import pandas as pd

    from .claims import run_stats

    frames = []
    for setting in settings(results_root):
        tidy = _runs_of(collect_runs(os.path.join(results_root, setting), prompt), bases)
        if tidy.empty:
            continue
        stats = run_stats(tidy, value).reset_index()  # sorted by base name: back to bases' order
        stats = stats.iloc[stats["base"].map(bases.index).argsort(kind="stable")]
        frames.append(stats.assign(setting=setting))
    if not frames:
        return pd.DataFrame(columns=["setting", "base", "level", "mean", "range", "seeds"])
    out = pd.concat(frames, ignore_index=True)
    return out[["setting", "base", "level", "mean", "range", "seeds"]]


def verdict_rows(results_root: str = "results") -> list:
    """Every claim of ``blade.claims.STUDY_CLAIMS`` for every setting (a folder of
    ``results_root`` holding run results, ``smoke`` excepted) and protocol, and issue 13's goal
    (``blade.claims.variant_goal``) for every connectivity variant that has results there, and
    per claim and setting the verdict across the protocols (``blade.claims.across_protocols``,
    protocol "all"): rows of claim, setting, protocol, verdict, evidence."""
    from .claims import across_protocols, study_verdicts, variant_goal

    rows = []
    for setting in settings(results_root):
        for prompt in PROMPTS:
            tidy = collect_runs(os.path.join(results_root, setting), prompt)
            if not tidy.empty:
                rows += study_verdicts(tidy, setting, prompt)
                for variant in VARIANTS:  # issue 13's goal, for each variant that has run
                    if variant in set(tidy["base"]):
                        rows += variant_goal(tidy, variant, setting, prompt)
    return rows + across_protocols(rows)


def write_verdicts(results_root: str = "results") -> str | None:
    """``results_root/verdicts.csv`` with the ``verdict_rows``; None when there is nothing."""
    import pandas as pd

    rows = verdict_rows(results_root)
    if not rows:
        return None
    path = os.path.join(results_root, "verdicts.csv")
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def seed_spread(tidy, value: str = "iou_amodal"):
    """Per configuration (rows ``(base, stat)``) and level (columns FG-0..FG-3, mean), in %:
    the mean over seeds, the sample standard deviation and max - min (both NaN with one seed:
    no spread was measured); ``seeds`` counts them."""
    import pandas as pd

    t = tidy.pivot_table(index=["base", "seed"], columns="level", values=value) * 100
    t = t[[c for c in LEVELS + ["mean"] if c in t.columns]]
    parts = []
    for base in dict.fromkeys(tidy["base"]):
        runs = t.loc[base]
        spread = runs.max() - runs.min()
        stats = pd.DataFrame({"mean": runs.mean(), "sd": runs.std(ddof=1),
                              "range": spread if len(runs) > 1 else spread * float("nan")}).T
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
