"""Export a small, load-only copy of a checkpoint (float16 weights, no optimizer state).

    python -m blade.export --checkpoint runs/cpu/checkpoints/last.pt --out checkpoints/mine.pt

A training checkpoint of the ``cpu`` preset is ~33 MB (weights and SGD momentum in float32);
the export is ~8 MB: small enough to commit, mail or bring back from a GPU machine. It loads
with :func:`blade.engine.load_model` (weights cast back to float32) and evaluates or predicts
like the original up to float16 rounding (measured for the committed one in
``checkpoints/README.md``); it cannot be resumed. See :func:`blade.engine.export_weights`.
"""

from __future__ import annotations


def _main(argv):
    from .engine import export_weights
    from .utils import CLIParser

    p = CLIParser(prog="python -m blade.export", description=(
        "Write a small copy of a kit checkpoint: float16 weights, configuration and classes, "
        "no optimizer state (load-only)."))
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by blade.train")
    p.add_argument("--out", required=True, help="the file to write (never the input)")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights")
    p.add_argument("--note", default=None, help="free text stored in the file (e.g. the command)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = p.parse_args(argv)
    import os

    if os.path.isdir(args.out):
        raise ValueError(f"{args.out}: --out is a folder; give a file name")
    if os.path.exists(args.out) and not args.overwrite:
        raise ValueError(f"{args.out}: exists; give another --out or --overwrite")
    info = export_weights(args.checkpoint, args.out, half=not args.fp32, note=args.note)
    print(f"wrote {info['path']}: {info['tensors']} tensors, {info['bytes'] / 1e6:.1f} MB")


def main(argv=None):
    """``python -m blade.export``; errors are one line (``--debug``: the traceback)."""
    from .utils import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
