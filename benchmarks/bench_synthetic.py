"""Speed of the synthetic benchmark generator on one core (issue target: >= 100 scenes/s at 256x256).

    python benchmarks/bench_synthetic.py [--scenes 500] [--size 256]

Measures, in one run: (a) scene generation with exact ground truth in memory
(``SceneGenerator``), (b) the same plus COCOA-cls records (RLE encoding), (c) the full CLI path
``write_split`` (records + PNG files + JSON). Pinned to one core where the OS allows it.
"""

import argparse
import os
import platform
import tempfile
import time

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--scenes", type=int, default=500)
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)

    from blade.data.synthetic import SceneGenerator, SyntheticConfig, scene_records, write_split

    cfg = SyntheticConfig(image_size=args.size)
    gen = SceneGenerator(cfg, seed=0)
    gen()  # warm-up: loads the photo/texture assets
    n = args.scenes
    t = time.perf_counter()
    scenes = [gen() for _ in range(n)]
    t_gen = time.perf_counter() - t
    t = time.perf_counter()
    for i, s in enumerate(scenes):
        scene_records(s, i + 1, 1, "x.png")
    t_rec = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        write_split(d, "train", n, seed=0, cfg=cfg, progress=False)
        t_write = time.perf_counter() - t
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
          f"(pinned to 1), python {platform.python_version()}")
    print(f"{n} scenes of {args.size}x{args.size}, "
          f"{sum(len(s.instances) for s in scenes) / n:.1f} instances per scene")
    print(f"(a) generate in memory        : {n / t_gen:7.1f} scenes/s")
    print(f"(b) + COCOA-cls records (RLE) : {n / (t_gen + t_rec):7.1f} scenes/s")
    print(f"(c) write_split (PNG + JSON)  : {n / t_write:7.1f} scenes/s")


if __name__ == "__main__":
    main()
