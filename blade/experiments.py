"""The paper's Table 1 (methods) and Table 2 (ablations) on the synthetic benchmark.

    python -m blade.experiments table1 --preset cpu --data data/synthetic
    python -m blade.experiments table2 --preset cpu --data data/synthetic
    python -m blade.experiments seeds --preset cpu --data data/synthetic   # run-to-run spread
    python -m blade.experiments study --preset cpu512 --data data/synthetic  # issue 12's runs
    python -m blade.experiments variants --preset cpu --data data/synthetic  # issue 13's runs
    python -m blade.experiments figures --preset cpu

Every method is a configuration of the same network, engine, data and budget; run names and
their configurations live in :mod:`blade.runs`, the claim checks and verdicts in
:mod:`blade.claims`, the reading of results back in :mod:`blade.collect` and the tables and
figures in :mod:`blade.report` (their names are re-exported here); this module trains,
evaluates and writes each run's results, and is the CLI. A run trains into
``RUNS/<preset>/<name>`` (resuming a partial run from its last checkpoint), is evaluated on
the validation split with :mod:`blade.evaluate` under every protocol (``PROMPTS``), and leaves
its results in ``RESULTS/<name>/`` (detections prompt), ``RESULTS/<name>/box/`` (box prompt,
the headline) and ``RESULTS/<name>/box_match/``: ``objects.csv``, ``levels.csv``,
``cells.csv``, ``metrics.json``, ``qualitative.json`` (and ``box/train_log.csv``, the training
log), ``meta.json`` with the command, date, machine, where and how long it trained
(``train_machine``, ``train_wall_s``) and the evaluation time (``eval_wall_s``: one pass for
all of ``eval_prompts``; ``coco_wall_s``, under detections, for COCO AP; results written before
2026-11-25 timed each protocol alone). A run whose ``levels.csv`` exist under every protocol
is skipped, so a long series can be stopped (Ctrl-C, or ``--max-steps`` per call) and
continued later. ``RESULTS`` defaults to ``results/<preset>`` and figures to
``figures/<preset>``: a smoke run never touches the committed ``cpu`` results.

Trained on one machine, evaluated on another (``--train-only``, ``export``, ``adopt``):
:mod:`blade.transfer`.

Methods (Table 1). The paper's BoxInst and BBTP rows use the amodal box as input ("known c");
here that is the configuration trained on B_a with an amodal-box detector, evaluated with the
amodal box as B_test. BLADE and the BoxInst-on-B_v row get the visible box ("unknown c").
Two reference rows need no training (``REFERENCES``): the given box itself, filled, scored
as the amodal mask, to show what the input box alone is worth. Bayesian-Amodal and SAM are not
reproduced (their rows in the notebooks carry the paper's numbers only).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time

from .claims import claims_table1, claims_table2, format_claims  # noqa: F401 (re-exported)
from .model import PROMPTS  # noqa: F401 (re-exported)
from .runs import (LEVELS, METHODS, REFERENCES, SEEDS, STUDY, TABLE1,  # noqa: F401
                   TABLE2_ORDER, TABLE2_RUNS, VARIANT_TABLE, VARIANTS, Method, method,
                   run_label, run_overrides, split_seed, table_runs)
# reading results back and drawing them live in their own modules; the names are re-exported
# here so that notebooks and users reach the whole study through ``blade.experiments``
from .collect import (PROMPT_DIRS, collect, collect_runs, collect_seeds,  # noqa: F401
                      collect_variants, data_paths, finished, prompt_dir, seed_spread, settings,
                      settings_table, suffix, verdict_rows, wide, write_verdicts)
from .report import write_qualitative, write_tables_and_figures  # noqa: F401
from .transfer import (adopt_runs, export_runs, finished_runs, logged_train_seconds, machine,
                       read_timing, trained_iterations, write_timing)


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
def run_one(name: str, preset_name: str, data: str, runs_dir: str, results_dir: str,
            progress: bool = True, max_steps: int | None = None, limit: int | None = None,
            coco: bool = True, command: str = "", train_only: bool = False) -> str:
    """Train (or resume) and evaluate one run under every protocol. Returns 'skipped',
    'partial', 'trained' (``train_only``: the schedule is complete, nothing evaluated) or
    'done'.

    A run is finished when every protocol has results. One with results under some protocols
    only (results written before a prompt existed) is evaluated under the others from
    its checkpoint; without the checkpoint it is trained again and *all* are rewritten, so
    that every file of a run folder comes from one checkpoint (``meta.json`` says so)."""
    import torch

    from .config import preset
    from .data import AmodalDataset
    from .engine import load_model, train
    from .evaluate import coco_ap, evaluate_prompts, test_box_kind

    res = os.path.join(results_dir, name)
    todo = [p for p in PROMPTS if not finished(res, p)]
    if not todo:
        return "skipped"
    paths = data_paths(data)
    if name in REFERENCES:
        if train_only:
            return "skipped"  # a reference has nothing to train
        return _run_reference(name, paths, res, limit, progress, command)
    cfg = preset(preset_name, **run_overrides(name))
    run_dir = os.path.join(runs_dir, name)
    last = os.path.join(run_dir, "checkpoints", "last.pt")
    if not os.path.exists(last):
        todo = list(PROMPTS)  # trained (again): every protocol from this checkpoint
    timing = read_timing(run_dir)
    if trained_iterations(run_dir) < cfg.iterations:
        t0 = time.perf_counter()
        train(cfg, *paths["train"], run_dir, resume=os.path.exists(last), progress=progress,
              max_steps=max_steps)
        timing["train_s"] += time.perf_counter() - t0
        timing["calls"] += 1
        here = machine()
        seen = timing.get("train_machine")  # several calls on other machines: all of them
        timing["train_machine"] = (here if seen is None else seen
                                   if here in seen.split("; ") else f"{seen}; {here}")
        write_timing(run_dir, timing)
        if trained_iterations(run_dir) < cfg.iterations:
            return "partial"
    if train_only:
        return "trained"
    model, ckpt = load_model(last)
    val = AmodalDataset(*paths["val"], mode="eval", protocol="synthetic")
    logged = logged_train_seconds(run_dir)
    meta = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "train_wall_s": round(timing["train_s"], 1), "train_calls": timing["calls"],
            # from log.csv: every sitting, the stopped ones too (train_wall_s: calls that returned)
            "train_logged_s": None if logged is None else round(logged, 1),
            "train_machine": timing.get("train_machine", "unknown"),
            "weights": timing.get("weights", "the run's checkpoint (float32)"),
            "iterations": ckpt["iteration"], "overrides": run_overrides(name),
            "config": dataclasses.asdict(cfg), "val_images": len(val) if limit is None else limit}
    picks = qualitative_picks(val)
    t0 = time.perf_counter()
    # every protocol in one pass: each image through the network once (same rows as one
    # evaluation per protocol); eval_wall_s in meta.json is this pass, for all of eval_prompts
    all_rows = evaluate_prompts(model, val, limit=limit, progress=progress, prompts=todo)
    meta.update(eval_wall_s=round(time.perf_counter() - t0, 1), eval_prompts=list(todo))
    for prompt in todo:
        rows = all_rows[prompt]
        metrics = {"run": name, "label": run_label(name), "preset": preset_name,
                   "test_box": test_box_kind(model), "prompt": prompt,
                   "objects": int(len(rows)), "fallback_rate": float(rows["fallback"].mean()),
                   "wrong_instance_rate": float(rows["wrong_instance"].mean())}
        meta_p = dict(meta, prompt=prompt)
        if coco and prompt == "detections":  # COCO AP runs without boxes: one per checkpoint
            t1 = time.perf_counter()
            metrics.update(coco_ap(model, val, limit=limit, class_agnostic=True,
                                   progress=progress))
            meta_p["coco_wall_s"] = round(time.perf_counter() - t1, 1)
        _write_results(prompt_dir(res, prompt), rows, metrics, meta_p,
                       qualitative_masks(model, val, picks, test_box_kind(model), prompt))
    log = os.path.join(run_dir, "log.csv")
    if os.path.exists(log):  # the run's training curve, committed with its results
        shutil.copyfile(log, os.path.join(prompt_dir(res, "box"), "train_log.csv"))
    return "done"


def _write_results(res, rows, metrics, meta, qualitative) -> None:
    """One run's results folder; ``levels.csv`` last, its presence marks the run complete."""
    from .evaluate import summarize

    os.makedirs(res, exist_ok=True)
    with open(os.path.join(res, "qualitative.json"), "w") as f:
        json.dump(qualitative, f)
    rows.to_csv(os.path.join(res, "objects.csv"), index=False)
    summarize(rows, by="cell").to_csv(os.path.join(res, "cells.csv"), index_label="cell")
    with open(os.path.join(res, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
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
            "machine": machine(), "eval_wall_s": round(time.perf_counter() - t0, 1),
            "train_wall_s": 0.0, "train_calls": 0, "iterations": 0,
            "reference": f"filled {kind} box, no model",
            "val_images": len(val) if limit is None else limit}
    qualitative = qualitative_masks(model, val, qualitative_picks(val), kind)
    for prompt in PROMPTS:
        metrics = {"run": name, "label": run_label(name), "test_box": kind, "prompt": prompt,
                   "objects": int(len(rows)), "fallback_rate": 0.0,
                   "wrong_instance_rate": float(rows["wrong_instance"].mean())}
        _write_results(prompt_dir(res, prompt), rows.assign(prompt=prompt), metrics,
                       dict(meta, prompt=prompt), qualitative)
    return "done"



def main(argv=None):
    """``python -m blade.experiments``; errors about the input are one line (``--debug``: the
    traceback)."""
    from .utils import run_cli

    return run_cli(_main, argv)


def _only(text: str, what: str, table: list, parser) -> list:
    """The run names of ``--only``: each known, and for the tables one of the table's runs."""
    wanted = list(dict.fromkeys(w.strip() for w in text.split(",") if w.strip()))
    if not wanted:
        parser.error(f"argument --only: no run names in {text!r}")
    for w in wanted:
        run_overrides(w)  # unknown names fail here, before any training
        if what == "seeds" and not split_seed(w)[1]:
            raise SystemExit(f"error: {w!r} is not a seed run; seed runs are named "
                             f"<run>_seed<N> with N > 0, e.g. table2_5_seed1")
        if what not in ("seeds", "study", "variants") and w not in table:
            parser.error(f"argument --only: {w!r} is not a run of {what}; its runs are "
                         f"{', '.join(table)}")
    return wanted


def _transfer(args, runs_dir: str, results: str, parser) -> None:
    """``export`` (every finished run of ``runs_dir``, or those of ``--only``) and ``adopt``."""
    if args.what == "export":
        if not args.out:
            parser.error("export needs --out FOLDER")
        skipped = []
        if args.only is not None:  # the finished ones among them; the others named at the end
            wanted = _only(args.only, "study", [], parser)
            done = set(finished_runs(args.preset, runs_dir)[0])
            names = [n for n in wanted if n in done]
            skipped = [n for n in wanted if n not in done]
            for name in skipped:
                print(f"not finished, not exported: {name}")
        else:  # every run folder here whose schedule is complete
            names, partial = finished_runs(args.preset, runs_dir)
            for name in partial:
                print(f"not finished, not exported: {name}")
            if not names:  # e.g. a GPU call in the middle of the schedules: not an error
                print(f"{runs_dir}: no finished run yet, nothing exported")
                return
        for path in export_runs(names, args.preset, runs_dir, args.out):
            print("wrote", path)
        if skipped:  # after the finished ones are written: a cut run costs no other run
            raise ValueError(f"not exported, schedule not finished: {', '.join(skipped)} "
                             f"(finish them first: python -m blade.experiments study --preset "
                             f"{args.preset} --only {','.join(skipped)} --train-only)")
        return
    if not args.weights:
        parser.error("adopt needs --weights FOLDER (written by export)")
    only = None if args.only is None else _only(args.only, "study", [], parser)
    adopted = adopt_runs(args.weights, args.preset, runs_dir, overwrite=args.overwrite,
                         only=only, results_dir=results)
    for name in adopted:
        print(f"adopted {name} into {os.path.join(runs_dir, name)}")
    print(f"evaluate them: python -m blade.experiments study --preset {args.preset} "
          f"--data {args.data} --only {','.join(adopted)}")


def _main(argv):
    from .config import PRESETS
    from .utils import CLIParser, int_at_least

    p = CLIParser(prog="python -m blade.experiments", description=(
        "Train and evaluate every configuration of the paper's Table 1 or Table 2 on the "
        "synthetic benchmark; finished runs are skipped, partial ones resumed."))
    p.add_argument("what", choices=("table1", "table2", "all", "seeds", "study", "variants",
                                     "figures", "verdicts", "export", "adopt"),
                   help="'seeds': rows 1 and 3 again with seeds 1, 2 (run-to-run spread); "
                        "'study': the reproduction study's runs (five core runs, seeds 1-2 of "
                        "BLADE and row 3, the filled-box references); 'variants': the kit's "
                        "connectivity variants with the runs they are compared with; "
                        "'export': float16 weights of finished runs into --out (to carry them "
                        "off a GPU machine); 'adopt': install such weights (--weights) as "
                        "finished runs here, to evaluate them")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--data", default="data/synthetic", help="folder from blade.data.synthetic")
    p.add_argument("--runs", default="runs/experiments", help="training runs (checkpoints)")
    p.add_argument("--results", default=None, help="default: results/<preset>")
    p.add_argument("--figures", default=None, help="default: figures/<preset>")
    p.add_argument("--only", default=None, help="comma-separated run names")
    p.add_argument("--max-steps", type=int_at_least(1), default=None,
                   help="train at most N iterations per run in this call (continue later)")
    p.add_argument("--limit", type=int_at_least(1), default=None,
                   help="evaluate only N val images")
    p.add_argument("--no-coco", action="store_true")
    p.add_argument("--prompt", default="box", choices=PROMPTS,
                   help="protocol of the printed tables (all are always evaluated and written)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--train-only", action="store_true",
                   help="train the runs to the end of their schedule, evaluate nothing "
                        "(on a GPU machine, before 'export')")
    p.add_argument("--out", default=None, help="export: the folder to write <run>.pt to")
    p.add_argument("--weights", default=None, help="adopt: a folder written by export")
    p.add_argument("--overwrite", action="store_true",
                   help="adopt: replace a run's checkpoint that is already here")
    args = p.parse_args(argv)
    results = args.results or os.path.join("results", args.preset)
    figures = args.figures or os.path.join("figures", args.preset)
    runs_dir = os.path.join(args.runs, args.preset)
    command = "python -m blade.experiments " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.what == "verdicts":  # every setting under results/, every protocol
        path = write_verdicts(os.path.dirname(results.rstrip("/")) or ".")
        print(f"wrote {path}" if path else "no results to judge")
        return
    if args.what in ("export", "adopt"):
        return _transfer(args, runs_dir, results, p)
    if args.what != "figures":
        names = (table_runs("table1") + table_runs("table2") if args.what == "all"
                 else table_runs(args.what))
        names = list(dict.fromkeys(names))
        if args.only is not None:
            wanted = _only(args.only, args.what, names, p)
            # the seed study takes any <run>_seed<N>; the tables only their own runs
            names = (wanted if args.what in ("seeds", "study", "variants")
                     else [n for n in names if n in wanted])
        for name in names:
            print(f"== {name} ({run_label(name)})", flush=True)
            status = run_one(name, args.preset, args.data, runs_dir, results,
                             progress=not args.no_progress, max_steps=args.max_steps,
                             limit=args.limit, coco=not args.no_coco, command=command,
                             train_only=args.train_only)
            print(f"   {status}", flush=True)
            if status == "partial":
                print("   (continue with the same command)")
                break
        if args.train_only:
            return
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
