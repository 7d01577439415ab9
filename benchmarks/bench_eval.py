"""Evaluation throughput: the three protocols one pass each vs all in one pass.

    python benchmarks/bench_eval.py --images 40 --repeats 3 [--checkpoint PATH] [--size 512]
        [--device cpu|cuda]

Evaluates a checkpoint (default: the committed ``checkpoints/blade_cpu_seed0.pt``) on the first
``--images`` validation scenes of ``data/synthetic`` (without it, the same scenes drawn into a
temporary folder) with
``blade.evaluate.evaluate`` once per protocol, and with ``evaluate_prompts`` (every protocol
from one forward pass per image), interleaved ``--repeats`` times so that load changes on a
shared machine hit both alike. Prints the median wall time of each and their ratio, and
images/s (protocol-images per second: an image evaluated under three protocols counts three
times). ``--size 512`` runs the same weights at the ``cpu512`` input size.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--size", type=int, default=None, help="input size (min = max), e.g. 512")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    import torch

    from blade.data import AmodalDataset
    from blade.engine import COMMITTED_CHECKPOINT, load_model
    from blade.evaluate import evaluate, evaluate_prompts
    from blade.model import PROMPTS

    if not os.path.exists(os.path.join(args.data, "val.json")):  # the study's first val scenes
        import tempfile

        from blade.data.synthetic import write_split

        args.data = tempfile.mkdtemp(prefix="bench_eval_")
        write_split(args.data, "val", args.images, seed=0, progress=False)
    path = args.checkpoint or COMMITTED_CHECKPOINT
    model, ckpt = load_model(path, device=args.device)
    if args.size:
        model.transform.min_size, model.transform.max_size = (args.size,), args.size
    val = AmodalDataset(os.path.join(args.data, "val.json"), os.path.join(args.data, "val"),
                        mode="eval", protocol="synthetic")

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    separate, together = [], []
    for _ in range(args.repeats):
        sync()
        t = time.perf_counter()
        for prompt in PROMPTS:
            evaluate(model, val, limit=args.images, progress=False, prompt=prompt)
        sync()
        separate.append(time.perf_counter() - t)
        t = time.perf_counter()
        evaluate_prompts(model, val, limit=args.images, progress=False)
        sync()
        together.append(time.perf_counter() - t)
    dev = (torch.cuda.get_device_name(0) if args.device.startswith("cuda")
           else f"{os.cpu_count()}-core {platform.machine()} CPU, {torch.get_num_threads()} threads")
    size = args.size or ckpt["config"]["min_size"]
    print(f"device: {dev}; torch {torch.__version__}")
    print(f"checkpoint: {path} ({ckpt['iteration']} iterations), input {size} px, "
          f"{args.images} scenes x {len(PROMPTS)} protocols, median of {args.repeats}")
    a, b = statistics.median(separate), statistics.median(together)
    n = args.images * len(PROMPTS)
    print(f"one pass per protocol : {a:7.2f} s  ({n / a:6.1f} protocol-images/s)")
    print(f"all in one pass       : {b:7.2f} s  ({n / b:6.1f} protocol-images/s)")
    print(f"speed-up              : {a / b:.2f}x")


if __name__ == "__main__":
    main()
