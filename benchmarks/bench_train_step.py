"""Training step time and memory of the `cpu` preset, and inference speed.

    python benchmarks/bench_train_step.py [--steps 10] [--batch 4]

Measured in one run on the same images and batch (synthetic 256x256 scenes), the three
models' steps interleaved:
(a) BLADE (three branches), (b) the same network with only the visible branch (BoxInst),
(c) torchvision's FCOS alone with the same backbone and FPN. Issue targets: BLADE <= 1.3x
BoxInst and <= 1.8x FCOS. Then inference images/s at 256x256 (``model.predict``, one image
per call) and the peak resident memory of a training step (a fresh process per measurement).
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from blade.criterion import total_loss


def images_and_targets(batch):
    from blade.data.shapes import CATEGORY_IDS
    from blade.data.synthetic import SceneGenerator, SyntheticConfig, scene_records

    ids = sorted(CATEGORY_IDS.values())  # contiguous labels in category-id order, as the loader

    gen = SceneGenerator(SyntheticConfig(), seed=0)
    items = []
    for i in range(batch):
        scene = gen()
        _, recs = scene_records(scene, i, 1, "x")
        def xyxy(b):
            return [b[0], b[1], b[0] + b[2], b[1] + b[3]]
        items.append({
            "image": torch.from_numpy(scene.image).permute(2, 0, 1).float() / 255,
            "amodal_boxes": torch.tensor([xyxy(r["bbox"]) for r in recs]),
            "visible_boxes": torch.tensor([xyxy(r["visible_bbox"]) for r in recs]),
            "labels": torch.tensor([ids.index(r["category_id"]) for r in recs])})
    return items


def build(kind):
    from blade.config import preset
    from blade.model import BladeModel

    cfg = preset("cpu", pretrained=True)
    if kind == "blade":
        return BladeModel(cfg), cfg
    if kind == "boxinst":
        return BladeModel(preset("cpu", use_amodal=False, use_fusion=False)), cfg
    from torchvision.models.detection import FCOS

    from blade.backbones import build_backbone

    backbone, mean, std = build_backbone(cfg.backbone, True, cfg.fpn_channels)
    return FCOS(backbone, cfg.num_classes, min_size=cfg.min_size, max_size=cfg.max_size,
                image_mean=mean, image_std=std), cfg


def step(model, kind, items, it):
    images = [x["image"] for x in items]
    if kind == "fcos":
        losses = model(images, [{"boxes": x["visible_boxes"], "labels": x["labels"]}
                                for x in items])
        loss = sum(losses.values())
    else:
        terms, weights = model(images, items, iteration=it)
        loss = total_loss(terms, weights)
    loss.backward()


def time_steps(kinds, items, steps):
    """Median step time per kind, the kinds interleaved step by step so that changes in the
    (shared, noisy) machine's load fall on all of them alike."""
    models = {}
    for kind in kinds:
        torch.manual_seed(0)
        models[kind], _ = build(kind)
        models[kind].train()
        step(models[kind], kind, items, 1000)  # warm-up
    times = {kind: [] for kind in kinds}
    for _ in range(steps):
        for kind in kinds:
            models[kind].zero_grad(set_to_none=True)
            t = time.perf_counter()
            step(models[kind], kind, items, 1000)
            times[kind].append(time.perf_counter() - t)
    return {kind: statistics.median(v) for kind, v in times.items()}


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def memory_child(batch):
    """RSS before the training steps and the peak during them (Linux: the peak counter is
    reset through /proc/self/clear_refs after the model and data are built)."""
    items = images_and_targets(batch)
    model, _ = build("blade")
    model.train()
    step(model, "blade", items, 1000)  # first step allocates the optimizer-free graph buffers
    model.zero_grad(set_to_none=True)
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (peak RSS) to the current RSS
    for _ in range(3):
        model.zero_grad(set_to_none=True)
        step(model, "blade", items, 1000)
    print(json.dumps({"before_kib": before, "peak_kib": _status_kib("VmHWM")}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        return memory_child(args.batch)
    items = images_and_targets(args.batch)
    t = time_steps(("fcos", "boxinst", "blade"), items, args.steps)
    print(f"cpu preset (EfficientNet-Lite0, 256x256), batch {args.batch}, torch threads "
          f"{torch.get_num_threads()}, median of {args.steps} forward+backward steps, the three "
          f"models interleaved:")
    for kind, name in (("fcos", "torchvision FCOS alone"), ("boxinst", "BoxInst (visible branch)"),
                       ("blade", "BLADE (3 branches)")):
        print(f"  {name:26s}: {t[kind] * 1e3:7.0f} ms")
    print(f"  BLADE / BoxInst = {t['blade'] / t['boxinst']:.2f} (target <= 1.3), "
          f"BLADE / FCOS = {t['blade'] / t['fcos']:.2f} (target <= 1.8)")

    model, _ = build("blade")
    model.eval()
    imgs = [x["image"] for x in items] * 5
    model.predict(imgs[:1])
    t0 = time.perf_counter()
    for img in imgs:
        model.predict([img])
    dt = time.perf_counter() - t0
    print(f"inference (predict, one 256x256 image per call): {len(imgs) / dt:.1f} images/s")

    out = subprocess.run([sys.executable, __file__, "--memory-child", "--batch", str(args.batch)],
                         capture_output=True, text=True, check=True)
    mem = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"resident memory, training steps of batch {args.batch} (Linux VmRSS/VmHWM): "
          f"{mem['before_kib'] / 1024:.0f} MiB between steps, peak {mem['peak_kib'] / 1024:.0f} "
          f"MiB during a step (+{(mem['peak_kib'] - mem['before_kib']) / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
