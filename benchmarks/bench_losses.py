"""Forward + backward of all amodal-branch terms (projection, pairwise, neighbour, uniform):
vectorized blade.losses vs the per-instance / per-offset loop reference, in one run.

    python benchmarks/bench_losses.py [--instances 64] [--size 64] [--repeats 5]

Issue target: the vectorized version at least 10x faster than the loop reference on a
2-core CPU. Reports the median over repeats.
"""

import argparse
import statistics
import time

import torch

from blade.boxes import box_bitmasks
from blade.losses import (color_similarity, neighbor_loss, pairwise_loss, pairwise_weights,
                          projection_loss, uniform_loss)
from blade.losses_reference import (neighbor_loss_ref, pairwise_loss_ref, projection_loss_ref,
                                    uniform_loss_ref)


def make_inputs(n, s, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 1, s, s, generator=g)
    m_v = torch.rand(n, 1, s, s, generator=g)
    xy = torch.randint(0, s // 2, (n, 2), generator=g).float()
    wh = torch.randint(s // 4, s // 2, (n, 2), generator=g).float()
    boxes = torch.cat([xy, xy + wh], 1)
    regions = torch.cat([xy + wh / 4, xy + wh * 3 / 4], 1)
    # real-looking images (synthetic scenes on photos): random noise would leave almost no
    # edge above BoxInst's colour threshold and make the pairwise term trivially cheap
    from blade.data.synthetic import SceneGenerator, SyntheticConfig

    scenes = SceneGenerator(SyntheticConfig(image_size=s), seed=seed)
    images = torch.stack([torch.from_numpy(scenes().image).permute(2, 0, 1) for _ in range(n)])
    return (logits, m_v, color_similarity(images.float() / 255),
            box_bitmasks(boxes, s, s), box_bitmasks(regions, s, s))


def step(fns, inputs):
    logits, m_v, sim, box, region = inputs
    x = logits.clone().requires_grad_(True)
    proj, pair, nb, un = fns
    m_a = x.sigmoid()
    loss = 2.0 * proj(x, box) + pair(x, sim, box, 0.3) + nb(m_a, m_v, region, box) \
        + un(m_a, m_v, region, 1.0)
    loss.backward()
    return loss.item()


def timed(fns, inputs, repeats):
    step(fns, inputs)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step(fns, inputs)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--instances", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    inputs = make_inputs(args.instances, args.size)
    vec = (projection_loss, pairwise_loss, neighbor_loss, uniform_loss)
    ref = (projection_loss_ref, pairwise_loss_ref, neighbor_loss_ref, uniform_loss_ref)
    assert abs(step(vec, inputs) - step(ref, inputs)) < 1e-3, "implementations disagree"
    t_vec, t_ref = timed(vec, inputs, args.repeats), timed(ref, inputs, args.repeats)
    kept = (pairwise_weights(inputs[2], inputs[3]) > 0).float().mean().item()
    print(f"{args.instances} instances at {args.size}x{args.size}, torch threads "
          f"{torch.get_num_threads()}, forward+backward of the amodal-branch terms; {kept:.1%} of all directed edges pass the "
          f"pairwise colour/box test")
    print(f"vectorized (blade.losses)   : {t_vec * 1e3:8.1f} ms")
    print(f"loop reference              : {t_ref * 1e3:8.1f} ms")
    print(f"speed-up                    : {t_ref / t_vec:8.1f}x")


if __name__ == "__main__":
    main()
