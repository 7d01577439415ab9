"""Command line training: ``python -m blade.train --preset cpu --data data/synthetic --out runs/cpu``.

Data: ``--data DIR`` (a folder written by ``blade.data.synthetic``: DIR/train.json + DIR/train/)
or ``--train-ann FILE --train-images DIR`` for any supported schema (``--schema``). Every field
of :class:`blade.config.Config` can be overridden (``--iterations 200 --K 2 --use-fusion false``).
Several GPUs or nodes: ``torchrun --nproc_per_node=N -m blade.train --preset paper ...``
(``--batch-size`` is the total over all processes, as in the paper's batch of 6).
"""

from __future__ import annotations

import argparse
import os
import sys

from .config import PRESETS, Config, preset
from .utils import add_dataclass_args, dataclass_from_args


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train BLADE (box-level supervised amodal "
                                            "segmentation).")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                   help="named configuration to start from (default: cpu)")
    p.add_argument("--data", help="folder written by blade.data.synthetic")
    p.add_argument("--train-ann", help="annotation file (any supported schema)")
    p.add_argument("--train-images", help="image folder of --train-ann")
    p.add_argument("--schema", default="auto", help="annotation schema (default: auto-detect)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, log.csv, config.json")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop this call after N iterations (continue later with --resume)")
    add_dataclass_args(p, Config)
    return p


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if args.data:
        ann, images = os.path.join(args.data, "train.json"), os.path.join(args.data, "train")
    elif args.train_ann and args.train_images:
        ann, images = args.train_ann, args.train_images
    else:
        sys.exit("error: give --data DIR, or --train-ann FILE and --train-images DIR")
    for path in (ann, images):
        if not os.path.exists(path):
            sys.exit(f"error: {path} does not exist (generate a benchmark with "
                     f"`python -m blade.data.synthetic --out DIR`)")
    cfg = dataclass_from_args(Config, args, base=preset(args.preset))
    from .engine import train

    final = train(cfg, ann, images, args.out, resume=args.resume, schema=args.schema,
                  progress=not args.no_progress, max_steps=args.max_steps)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: {final}")


if __name__ == "__main__":
    main()
