"""Predict visible and amodal masks on your own photo.

    python -m blade.predict --checkpoint runs/cpu/checkpoints/last.pt --image photo.jpg \\
        --out overlay.png [--box X1 Y1 X2 Y2 [--box ...]] [--json masks.json]

Without ``--box`` every detection above the model's score threshold is drawn. With ``--box``
(the paper's B_test: boxes around the *visible* part of each object, pixel coordinates
x1 y1 x2 y2) each box is an input: its masks come from the location that training would
make positive for that box (``--prompt box``, the default), or from the detection that
matches it best (``--prompt detections``; see ``BladeModel.predict``). The overlay shows the visible mask (filled) and the final amodal mask
m (Eq. 2, outlined); ``--json`` also writes every mask as COCO RLE.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="BLADE: visible and amodal masks for one image.")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by blade.train")
    p.add_argument("--image", required=True, help="an RGB image (png, jpg, ...)")
    p.add_argument("--box", nargs=4, type=float, action="append", metavar=("X1", "Y1", "X2", "Y2"),
                   help="visible box of an object (repeat for several)")
    p.add_argument("--out", required=True, help="overlay PNG to write")
    p.add_argument("--json", help="also write the masks as COCO RLE to this JSON file")
    p.add_argument("--prompt", default="box", choices=("box", "detections"),
                   help="how a --box picks its masks (see BladeModel.predict; default box)")
    p.add_argument("--threshold", type=float, default=0.5, help="mask threshold (default 0.5)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    return p


def check_boxes(boxes, width: int, height: int, image: str):
    """Boxes must have positive area and lie inside the image."""
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        if not (x2 > x1 and y2 > y1):
            raise ValueError(f"--box #{k + 1} {[x1, y1, x2, y2]} has no area (need x2 > x1 and "
                             f"y2 > y1)")
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise ValueError(f"--box #{k + 1} {[x1, y1, x2, y2]} reaches outside {image} "
                             f"({width}x{height} pixels)")


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    for path, what in ((args.checkpoint, "checkpoint"), (args.image, "image")):
        if not os.path.exists(path):
            sys.exit(f"error: {what} {path} does not exist")
    try:
        pil = Image.open(args.image).convert("RGB")
    except OSError as e:
        sys.exit(f"error: cannot read image {args.image}: {e}")
    width, height = pil.size
    try:
        check_boxes(args.box or [], width, height, args.image)
    except ValueError as e:
        sys.exit(f"error: {e}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from . import viz
    from .data.masks import encode
    from .engine import load_model
    from .utils import pick_device

    device = pick_device(args.device)
    try:
        model, ckpt = load_model(args.checkpoint, device)
    except ValueError as e:
        sys.exit(f"error: {e}")
    image = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).float().div(255).to(device)
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


if __name__ == "__main__":
    main()
