"""Command line training: ``python -m blade.train --preset cpu --data data/synthetic --out runs/cpu``.

Data: ``--data DIR`` (a folder written by ``blade.data.synthetic``: DIR/train.json + DIR/train/)
or ``--train-ann FILE --train-images DIR`` for any supported schema (``--schema``). Every field
of :class:`blade.config.Config` can be overridden (``--iterations 200 --K 2 --use-fusion false``).
Several GPUs or nodes: ``torchrun --nproc_per_node=N -m blade.train --preset paper ...``
(``--batch-size`` is the total over all processes, as in the paper's batch of 6).

A folder that already holds a run is never overwritten silently: ``--resume`` continues it,
``--overwrite`` replaces it (its checkpoints, log and config are deleted first). Errors about the
input are one line ``error: ...`` (exit status 1); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import os

from .config import PRESETS, Config, preset
from .data.dataset import SCHEMAS
from .utils import CLIParser, add_dataclass_args, dataclass_from_args, int_at_least, run_cli


def get_args_parser() -> CLIParser:
    p = CLIParser(prog="python -m blade.train", description="Train BLADE (box-level supervised "
                                                             "amodal segmentation).")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                   help="named configuration to start from (default: cpu)")
    p.add_argument("--data", help="folder written by blade.data.synthetic")
    p.add_argument("--train-ann", help="annotation file (any supported schema)")
    p.add_argument("--train-images", help="image folder of --train-ann")
    p.add_argument("--schema", default="auto", choices=("auto",) + tuple(SCHEMAS),
                   help="annotation schema (default: auto-detect)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, log.csv, config.json")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (its checkpoints, log and config are deleted)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--max-steps", type=int_at_least(1), default=None,
                   help="stop this call after N iterations (continue later with --resume)")
    add_dataclass_args(p, Config)
    return p


def data_paths(args, parser) -> tuple[str, str]:
    """(annotation file, image folder) from --data or --train-ann/--train-images, checked."""
    if args.data:
        ann, images = os.path.join(args.data, "train.json"), os.path.join(args.data, "train")
    elif args.train_ann and args.train_images:
        ann, images = args.train_ann, args.train_images
    else:
        parser.error("give --data DIR, or --train-ann FILE and --train-images DIR")
    for path in (ann, images):
        if not os.path.exists(path):
            raise SystemExit(f"error: {path} does not exist (generate a benchmark with "
                             f"`python -m blade.data.synthetic --out DIR`)")
    if not os.path.isfile(ann):
        raise SystemExit(f"error: {ann}: is a folder, not an annotation file")
    if not os.path.isdir(images):
        raise SystemExit(f"error: {images}: is a file, not an image folder")
    return ann, images


def _main(argv):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    ann, images = data_paths(args, parser)
    cfg = dataclass_from_args(Config, args, base=preset(args.preset))  # checks every field
    from .engine import prepare_run_dir, train

    if int(os.environ.get("RANK", "0")) == 0:  # one process guards (and clears) the folder
        removed = prepare_run_dir(args.out, resume=args.resume, overwrite=args.overwrite)
        if removed:
            print(f"--overwrite: removed the previous run's {len(removed)} files in {args.out}")
    final = train(cfg, ann, images, args.out, resume=args.resume, schema=args.schema,
                  progress=not args.no_progress, max_steps=args.max_steps)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: {final}")


def main(argv=None):
    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
