"""The first iterations of a run, watched closely: per step, the mean amodal probability m_a
over every mask cell of every instance, the projection term of m_a, and the norm of the
gradient each amodal loss term sends into the controller rows that make the amodal head's
parameters (the only parameters ``con_isolate`` lets l_ne and l_un train). Made to diagnose
why the first ``var_isolate`` run failed: an m_a saturated at all ones (mean > 0.9, its
projection term at the all-ones value ~1.2) after a spike of l_ne's gradient there.

    python results/grad_probe.py blade var_isolate var_isolate_warmup \
        var_isolate_seed1 var_isolate_seed2 > results/cpu/isolate_probe.txt

Each run starts from the preset's own initial weights and batches (``Config.seed``,
``blade.engine.PlannedBatches``) and takes the engine's own steps (``forward_step``,
``backward_step``), so its first iterations are those of the real training run; nothing is
written to disk.
"""

import argparse
import math

import torch

from blade.config import preset
from blade.criterion import total_loss
from blade.data import AmodalDataset
from blade.engine import PlannedBatches, backward_step, forward_step
from blade.model import BladeModel
from blade.runs import run_overrides

TERMS = ("amo_proj", "amo_pair", "amo_neighbor", "amo_uniform")
ALL_ONES = 0.9  # mean m_a over all cells above this: the amodal masks are (nearly) all ones


def probe(cfg, dataset, steps: int) -> list:
    """Rows (one per step) of: iteration, p_a (mean m_a), amo_proj, g_<term> (gradient norm of
    weight * term on the amodal controller rows)."""
    torch.manual_seed(cfg.seed)
    model = BladeModel(cfg, load_weights=True).train()  # as a new training run
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    seen = {}
    masks = model._masks

    def keep(*args, **kwargs):  # the step's mask logits, for the mean of m_a
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
        row = {"iteration": it, "p_a": float("nan"), "amo_proj": values.get("amo_proj", math.nan)}
        if "amodal_logits" in seen:
            row["p_a"] = seen["amodal_logits"].detach().sigmoid().mean().item()
        for k in TERMS:
            g = None
            if k in terms and weights[k] != 0:
                g = torch.autograd.grad(weights[k] * terms[k], ctrl.weight, retain_graph=True,
                                        allow_unused=True)[0]
            row[f"g_{k}"] = 0.0 if g is None else g[rows].norm().item()
        backward_step(total_loss(terms, weights), optimizer, None, params, cfg)
        out.append(row)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run names, e.g. blade var_isolate var_isolate_seed1")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--every", type=int, default=4, help="print every N-th step")
    args = p.parse_args()
    torch.set_num_threads(1)
    dataset = AmodalDataset(f"{args.data}/train.json", f"{args.data}/train", mode="train")
    summary = []
    for run in args.runs:
        cfg = preset(args.preset, **run_overrides(run), num_classes=len(dataset.classes),
                     workers=0)
        rows = probe(cfg, dataset, args.steps)
        print(f"== {run} (preset {args.preset}, first {args.steps} iterations)")
        print("iter   p_a  amo_proj  " + "  ".join(f"{'g_' + k[4:]:>10}" for k in TERMS))
        for r in rows:
            if r["iteration"] % args.every == 0 or r["iteration"] == len(rows) - 1:
                print(f"{r['iteration']:4d} {r['p_a']:5.3f}  {r['amo_proj']:8.2f}  "
                      + "  ".join(f"{r[f'g_{k}']:10.3g}" for k in TERMS))
        ne = max(rows, key=lambda r: r["g_amo_neighbor"])
        ones = [r["iteration"] for r in rows if r["p_a"] > ALL_ONES]
        summary.append((run, ne["g_amo_neighbor"], ne["iteration"],
                        max(r["g_amo_proj"] for r in rows), ones[0] if ones else None,
                        len(ones)))
        print(flush=True)
    print(f"== summary: largest l_ne gradient on the amodal controller rows, and steps with "
          f"mean m_a > {ALL_ONES} (all ones)")
    print("run                     max g_ne (iter)  max g_proj  first all-ones  all-ones steps")
    for run, g, at, gp, first, n in summary:
        print(f"{run:22s}  {g:8.3g} ({at:3d})  {gp:10.3g}  {str(first):>14}  {n:14d}")


if __name__ == "__main__":
    main()
