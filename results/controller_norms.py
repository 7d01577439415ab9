"""How large did each branch's share of the controller grow? Per trained run: the Frobenius norm
of the controller's weights and biases, split into the rows that make the visible, the amodal
and the region head's parameters (``BladeModel.n_vis``, ``n_amo``, ``n_reg``; CondInst's
controller is one 3x3 convolution on the regression tower whose output rows are the dynamic
heads' parameters).

    python results/controller_norms.py blade blade_seed1 blade_seed2 table2_3 table2_3_seed1 \\
        var_warmup var_hidden var_isolate var_isolate_warmup boxinst_ba \\
        > results/cpu/controller_norms.txt

Reads RUNS/<run>/checkpoints/last.pt (not committed); builds each run's model from its saved
configuration without loading pretrained weights. Rows of heads a configuration does not train
keep their initial values but for weight decay (BoxInst runs: the amodal and region rows; at
initialisation the amodal rows' weight norm is 3.73 in the ``cpu`` network).
"""

import argparse
import os

from blade.engine import CheckpointError, load_checkpoint, model_from_checkpoint


def row_norms(path: str) -> dict:
    """{"vis"|"amo"|"reg": (|W|, |b|)} of a checkpoint's controller (every configuration
    builds all three groups of rows, trained or not)."""
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, path)  # the checkpoint's own weights, no download
    ctrl = model.head.regression_head.controller
    w, b = ctrl.weight.detach().flatten(1), ctrl.bias.detach()
    out, start = {}, 0
    for name, n in (("vis", model.n_vis), ("amo", model.n_amo), ("reg", model.n_reg)):
        out[name] = (w[start:start + n].norm().item(), b[start:start + n].norm().item())
        start += n
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run names, e.g. blade var_isolate")
    p.add_argument("--runs-dir", default="runs/experiments/cpu")
    args = p.parse_args()
    paths = [os.path.join(args.runs_dir, run, "checkpoints", "last.pt") for run in args.runs]
    for path in paths:  # all checked before a line is printed (output is often redirected)
        if not os.path.isfile(path):
            p.error(f"{path}: no checkpoint (train the run first)")
    rows = []
    for run, path in zip(args.runs, paths):
        try:
            rows.append((run, row_norms(path)))
        except CheckpointError as e:
            p.error(str(e))
    print("run                   " + "  ".join(f"{k + ' |W|':>8} {k + ' |b|':>8}"
                                               for k in ("vis", "amo", "reg")))
    for run, norms in rows:
        print(f"{run:20s}  " + "  ".join(f"{norms[k][0]:8.2f} {norms[k][1]:8.2f}"
                                         for k in ("vis", "amo", "reg")))


if __name__ == "__main__":
    main()
