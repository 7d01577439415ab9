"""Predict visible and amodal masks on your own photo.

    python -m blade.predict --checkpoint runs/cpu/checkpoints/last.pt --image photo.jpg \\
        --out overlay.png [--box X1 Y1 X2 Y2 [--box ...]] [--json masks.json]

Without ``--box`` every detection above the model's score threshold is drawn. With ``--box``
(the paper's B_test: boxes around the *visible* part of each object, pixel coordinates
x1 y1 x2 y2) each box is an input: its masks come from the location that training would
make positive for that box (``--prompt box``, the default), or from the detection that
matches it best (``--prompt detections``; see ``BladeModel.predict``). The overlay shows the visible mask (filled) and the final amodal mask
m (Eq. 2, outlined); ``--json`` also writes every mask as COCO RLE.

Refused with one line ``error: ...``: an ``--out`` or ``--json`` that is a folder or one of the
inputs, a ``--threshold`` outside [0, 1], boxes that are inverted, empty, non-finite or reach
outside the image, an unreadable image or checkpoint (``--debug`` shows the traceback). 16-bit,
greyscale, palette and RGBA images are converted (:mod:`blade.data.images`).
"""

from __future__ import annotations

import json
import math
import os
import sys

import torch


def get_args_parser():
    from .model import PROMPTS
    from .utils import CLIParser, finite_float

    p = CLIParser(prog="python -m blade.predict",
                  description="BLADE: visible and amodal masks for one image.")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by blade.train")
    p.add_argument("--image", required=True, help="an RGB image (png, jpg, ...)")
    p.add_argument("--box", nargs=4, type=float, action="append", metavar=("X1", "Y1", "X2", "Y2"),
                   help="visible box of an object (repeat for several)")
    p.add_argument("--out", required=True, help="overlay PNG to write")
    p.add_argument("--json", help="also write the masks as COCO RLE to this JSON file")
    p.add_argument("--prompt", default="box", choices=PROMPTS,
                   help="how a --box picks its masks (see BladeModel.predict; default box)")
    p.add_argument("--threshold", type=finite_float(0.0, 1.0), default=0.5,
                   help="mask threshold in [0, 1] (default 0.5)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    return p


def check_boxes(boxes, width: int, height: int, image: str):
    """Boxes must be finite, have positive area and lie inside the image."""
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            raise ValueError(f"--box #{k + 1} {[x1, y1, x2, y2]} has a non-finite number")
        if not (x2 > x1 and y2 > y1):
            raise ValueError(f"--box #{k + 1} {[x1, y1, x2, y2]} has no area (need x2 > x1 and "
                             f"y2 > y1)")
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise ValueError(f"--box #{k + 1} {[x1, y1, x2, y2]} reaches outside {image} "
                             f"({width}x{height} pixels)")


def _same_file(a: str, b: str) -> bool:
    """Two paths naming one file (also through links), whether or not it exists yet."""
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def check_outputs(args) -> None:
    """--out and --json are new files: never a folder, never one of the inputs."""
    outputs = [("--out", args.out)] + ([("--json", args.json)] if args.json else [])
    for flag, path in outputs:
        if os.path.isdir(path) or path.endswith(("/", os.sep)):
            raise ValueError(f"{path}: {flag} is a folder; give a file name "
                             f"(e.g. {os.path.join(path, 'overlay.png')})")
        for other_flag, other in (("--image", args.image), ("--checkpoint", args.checkpoint)):
            if _same_file(path, other):
                raise ValueError(f"{path}: {flag} is the {other_flag} file; writing it would "
                                 f"destroy the input. Give another {flag}")
    if args.json and _same_file(args.json, args.out):
        raise ValueError(f"{args.json}: --json and --out name the same file")


def _main(argv):
    from .data.images import read_rgb

    args = get_args_parser().parse_args(argv)
    for path, what in ((args.checkpoint, "checkpoint"), (args.image, "image")):
        if not os.path.exists(path):
            sys.exit(f"error: {what} {path} does not exist")
    check_outputs(args)
    rgb = read_rgb(args.image)  # ImageReadError names the file
    height, width = rgb.shape[:2]
    check_boxes(args.box or [], width, height, args.image)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from . import viz
    from .data.masks import encode
    from .engine import load_model
    from .utils import pick_device

    device = pick_device(args.device)
    model, ckpt = load_model(args.checkpoint, device)
    image = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255).to(device)
    boxes = [torch.tensor(args.box, dtype=torch.float32)] if args.box else None
    res = model.predict([image], boxes=boxes, prompt=args.prompt)[0]
    classes = ckpt["classes"]

    fig, ax = plt.subplots(figsize=(8, 8 * height / width))
    viz.show_prediction(ax, image, res, classes, threshold=args.threshold)
    viz.savefig(fig, args.out)
    plt.close(fig)
    print(f"{len(res['boxes'])} objects -> {args.out}")

    if args.json:
        def rle(m):
            return encode((m > args.threshold).cpu().numpy())

        records = []
        for k in range(len(res["boxes"])):
            rec = {"box": [round(float(v), 2) for v in res["boxes"][k]],
                   "score": round(float(res["scores"][k]), 4),
                   "label": classes[int(res["labels"][k])],
                   "visible_mask": rle(res["visible"][k]), "amodal_mask": rle(res["masks"][k])}
            if "matched" in res:
                rec["given_box"] = args.box[k]
                rec["prompt"] = args.prompt
                rec["matched"] = bool(res["matched"][k])  # False: answered by the fallback
            records.append(rec)
        with open(args.json, "w") as f:
            json.dump({"image": args.image, "width": width, "height": height,
                       "checkpoint": args.checkpoint, "objects": records}, f)
        print(f"masks as COCO RLE -> {args.json}")


def main(argv=None):
    """``python -m blade.predict``; errors about the input are one line (``--debug``: the
    traceback)."""
    from .utils import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    main()
