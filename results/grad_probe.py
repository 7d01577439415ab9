"""The first iterations of a run, watched closely: per step, the mean visible and amodal
probabilities (m_v, m_a over every mask cell of every instance), the raw projection and
pairwise terms of both branches, and the norm of the gradient each amodal loss term sends into
the controller rows (weights and biases) that make the amodal head's parameters, the only
parameters ``con_isolate`` lets l_ne and l_un train. Made to diagnose why the first
``var_isolate`` run failed (``results/README.md``).

    python results/grad_probe.py var_isolate --window 20:32 \\
        --log runs/experiments/cpu/var_isolate/log.csv
    python results/grad_probe.py var_isolate --zero amo_neighbor@24 --window 20:40
    python results/grad_probe.py blade var_isolate_warmup var_isolate_seed1 --window 20:32

(``results/cpu/isolate_probe.txt`` holds four such calls, each after its command line.)

Each run starts from the preset's own initial weights and batches (``Config.seed``,
``blade.engine.PlannedBatches``) and takes the engine's own steps (``forward_step``,
``backward_step``), so its first iterations are those of the real training run (``--log
RUN/log.csv`` checks that against the run's log, whose row ``k`` holds step ``k - 1``);
``--zero TERM@ITER`` is the counterfactual: the same run with one term's weight set to 0 from
iteration ITER on. One thread, as the kit's CPU runs were trained (``OMP_NUM_THREADS=1``).
Nothing is written to disk.
"""

import argparse
import math
import os

import pandas as pd
import torch

from blade.config import preset
from blade.criterion import total_loss
from blade.data import AmodalDataset
from blade.engine import PlannedBatches, backward_step, dataset_mode, forward_step
from blade.model import BladeModel
from blade.runs import REFERENCES, run_overrides, split_seed

TERMS = ("amo_proj", "amo_pair", "amo_neighbor", "amo_uniform")
LOGGED = ("vis_proj", "vis_pair", "amo_proj", "amo_pair")  # raw terms printed per step
ALL_ONES = 0.9  # mean m_a over all cells above this: the amodal masks are (nearly) all ones


def probe(cfg, dataset, steps: int, zero: dict | None = None) -> list:
    """Rows (one per step) of: iteration, p_v and p_a (mean m_v, m_a), the raw ``LOGGED``
    terms, g_<term> (gradient norm of weight * term on the amodal controller rows, weights
    and biases) for each of ``TERMS``. ``zero``: term -> first iteration of weight 0."""
    zero = zero or {}
    torch.manual_seed(cfg.seed)
    model = BladeModel(cfg, load_weights=True).train()  # as a new training run
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    seen = {}
    masks = model._masks

    def keep(*args, **kwargs):  # the step's mask logits, for the means of m_v and m_a
        out = masks(*args, **kwargs)
        seen.update(out)
        return out

    model._masks = keep
    ctrl = model.head.regression_head.controller
    rows = slice(model.n_vis, model.n_vis + model.n_amo)
    batches = PlannedBatches(dataset, cfg, 0, 0, 1)
    out = []
    for it in range(steps):
        seen.clear()
        terms, weights, values = forward_step(model, batches[it], it, cfg, optimizer,
                                              torch.device("cpu"), False)
        for k, start in zero.items():
            if k in weights and it >= start:
                weights[k] = 0.0
        row = {"iteration": it, **{k: values.get(k, math.nan) for k in LOGGED}}
        for name, key in (("p_v", "visible_logits"), ("p_a", "amodal_logits")):
            row[name] = seen[key].detach().sigmoid().mean().item() if key in seen else math.nan
        for k in TERMS:
            g = (None, None)
            if k in terms and weights[k] != 0:
                g = torch.autograd.grad(weights[k] * terms[k], (ctrl.weight, ctrl.bias),
                                        retain_graph=True, allow_unused=True)
            row[f"g_{k}"] = math.sqrt(sum(x[rows].pow(2).sum().item() for x in g
                                          if x is not None))
        backward_step(total_loss(terms, weights), optimizer, None, params, cfg)
        out.append(row)
    return out


def check_log(rows: list, log_path: str) -> float:
    """Largest absolute difference between the probe's ``LOGGED`` terms and those a training
    run logged at the same steps (log row ``iteration = k`` is step ``k - 1``)."""
    log = pd.read_csv(log_path).set_index("iteration")
    diffs = [abs(r[k] - log.loc[r["iteration"] + 1, k]) for r in rows
             if r["iteration"] + 1 in log.index for k in LOGGED if k in log.columns]
    if not diffs:
        raise ValueError(f"{log_path}: no logged step among the probe's {len(rows)} steps")
    return max(diffs)


def _zero_arg(text: str) -> tuple:
    term, _, it = text.partition("@")
    if term not in TERMS or not it.isdigit():
        raise argparse.ArgumentTypeError(f"--zero {text!r}: expected TERM@ITERATION with TERM "
                                         f"one of {', '.join(TERMS)}")
    return term, int(it)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return int(text)


def has_term(cfg, term: str) -> bool:
    """Whether a configuration's criterion has the amodal ``term`` (``blade.criterion``)."""
    if not cfg.use_amodal:
        return False
    return {"amo_neighbor": cfg.use_neighbor, "amo_uniform": cfg.use_uniform}.get(term, True)


def _window_arg(text: str) -> tuple:
    lo, _, hi = text.partition(":")
    if not (lo.isdigit() and hi.isdigit() and int(lo) <= int(hi)):
        raise argparse.ArgumentTypeError(f"--window {text!r}: expected A:B, two iterations "
                                         f"with A <= B, e.g. 20:32")
    return int(lo), int(hi)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run names, e.g. blade var_isolate var_isolate_seed1")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--steps", type=_positive, default=40)
    p.add_argument("--every", type=_positive, default=4, help="print every N-th step")
    p.add_argument("--window", type=_window_arg, default=(0, 0),
                   help="A:B: also print every step A <= it < B")
    p.add_argument("--zero", type=_zero_arg, action="append", default=[],
                   help="TERM@ITER: that term's weight 0 from iteration ITER on (repeatable)")
    p.add_argument("--log", default=None, help="a training run's log.csv to check the probe "
                                               "against (one run only)")
    args = p.parse_args()
    if args.log and len(args.runs) != 1:
        p.error("--log checks one run: give one run name")
    if args.log and args.zero:
        p.error("--log checks a replay of the run as trained; --zero changes it")
    if args.log and not os.path.isfile(args.log):
        p.error(f"--log {args.log}: no such file")
    terms = [k for k, _ in args.zero]
    if len(set(terms)) < len(terms):
        p.error(f"--zero names a term twice: {terms}")
    for k, i in args.zero:
        if i >= args.steps:
            p.error(f"--zero {k}@{i}: iteration {i} is not among the {args.steps} steps")
    lo, hi = args.window
    for run in args.runs:
        if split_seed(run)[0] in REFERENCES:
            p.error(f"{run!r} is a reference row (the given box, no training): nothing to replay")
        try:
            overrides = run_overrides(run)
        except ValueError as e:
            p.error(str(e))
        for k, _ in args.zero:
            if not has_term(preset(args.preset, **overrides), k):
                p.error(f"--zero {k}: run {run!r} has no such term")
    torch.set_num_threads(1)
    summary = []
    dataset = None
    for run in args.runs:
        cfg = preset(args.preset, **run_overrides(run), workers=0)
        if dataset is None or dataset.mode != dataset_mode(cfg):
            dataset = AmodalDataset(f"{args.data}/train.json", f"{args.data}/train",
                                    mode=dataset_mode(cfg))
        cfg = preset(args.preset, **run_overrides(run), workers=0,
                     num_classes=len(dataset.classes))
        rows = probe(cfg, dataset, args.steps, dict(args.zero))
        zeroed = "".join(f", {k} weight 0 from iteration {i}" for k, i in args.zero)
        print(f"== {run} (preset {args.preset}, first {args.steps} iterations{zeroed})")
        print("iter   p_v  vis_proj  vis_pair   p_a  amo_proj  amo_pair  "
              + "  ".join(f"{'g_' + k[4:]:>10}" for k in TERMS))
        for r in rows:
            it = r["iteration"]
            if it % args.every == 0 or lo <= it < hi or it == len(rows) - 1:
                print(f"{it:4d} {r['p_v']:5.3f}  {r['vis_proj']:8.2f}  {r['vis_pair']:8.3f} "
                      f"{r['p_a']:5.3f}  {r['amo_proj']:8.2f}  {r['amo_pair']:8.3f}  "
                      + "  ".join(f"{r[f'g_{k}']:10.3g}" for k in TERMS))
        if args.log:
            try:
                print(f"largest difference to {args.log} at its logged steps: "
                      f"{check_log(rows, args.log):.2e}")
            except (ValueError, KeyError) as e:
                p.error(f"--log {args.log}: {e}")
        ne = max(rows, key=lambda r: r["g_amo_neighbor"])
        pr = max(rows, key=lambda r: r["g_amo_proj"])
        ones = [r["iteration"] for r in rows if r["p_a"] > ALL_ONES]
        label = run + "".join(f" -{k[4:]}@{i}" for k, i in args.zero)
        summary.append((label, ne["g_amo_neighbor"], ne["iteration"],
                        pr["g_amo_proj"], pr["iteration"], ones[0] if ones else None, len(ones)))
        print(flush=True)
    print(f"== summary: largest gradients on the amodal controller rows, and steps with mean "
          f"m_a > {ALL_ONES} (all ones){'; -TERM@I: TERM off from I' if args.zero else ''}")
    print("run                            max g_ne (iter)  max g_proj (iter)  first all-ones  "
          "all-ones steps")
    for run, g, at, gp, atp, first, n in summary:
        print(f"{run:29s}  {g:8.3g} ({at:3d})  {gp:10.3g} ({atp:3d})  {str(first):>14}  "
              f"{n:14d}")


if __name__ == "__main__":
    main()
