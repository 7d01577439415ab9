"""Straightforward reference versions of the losses in :mod:`blade.losses`.

One instance at a time and one neighbour offset at a time, written to be read against the
paper's equations, not to be fast. Tests check the vectorized losses against these on random
inputs, and ``benchmarks/bench_losses.py`` measures the speed-up. Not used in training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .pairwise import NEIGHBOURS


def _pairs(h: int, w: int, dy: int, dx: int):
    """Slices (centre, neighbour) of the pixels whose neighbour at (dy, dx) is in the image."""
    ys, yn = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h + min(0, dy))
    xs, xn = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w + min(0, dx))
    return (ys, xs), (yn, xn)


def projection_loss_ref(mask_logits, box_masks):
    losses = []
    for i in range(mask_logits.shape[0]):
        p, b = mask_logits[i, 0].sigmoid(), box_masks[i, 0]
        total = 0.0
        for dim in (0, 1):
            x, t = p.amax(dim), b.amax(dim)
            total = total + 1 - 2 * (x * t).sum() / ((x * x).sum() + (t * t).sum() + 1e-5)
        losses.append(total)
    return torch.stack(losses).mean() if losses else mask_logits.sum() * 0


def pairwise_loss_ref(mask_logits, color_similarity, box_masks, threshold=0.3):
    h, w = mask_logits.shape[-2:]
    total, count = mask_logits.sum() * 0, 0.0
    for i in range(mask_logits.shape[0]):
        p = mask_logits[i, 0].sigmoid()
        for k, (dy, dx) in enumerate(NEIGHBOURS):
            c, n = _pairs(h, w, dy, dx)
            same = p[c] * p[n] + (1 - p[c]) * (1 - p[n])
            weight = (color_similarity[i, k][c] >= threshold).to(p.dtype) * box_masks[i, 0][c]
            total = total - (same.log() * weight).sum()
            count += float(weight.sum())
    return total / max(count, 1.0)


def neighbor_loss_ref(m_a, m_v, region_masks, amodal_box_masks, t=0.5):
    h, w = m_a.shape[-2:]
    total, count = m_a.sum() * 0, 0
    for i in range(m_a.shape[0]):
        a, b = m_a[i, 0], amodal_box_masks[i, 0] > 0.5
        v = (region_masks[i, 0] > 0.5) & (m_v[i, 0] > t)
        for dy, dx in NEIGHBOURS:
            c, n = _pairs(h, w, dy, dx)
            edge = v[c] | v[n]
            target = (b[c] == b[n]).to(a.dtype)
            same = a[c] * a[n] + (1 - a[c]) * (1 - a[n])
            bce = -(target * same.clamp(min=1e-6).log()
                    + (1 - target) * (1 - same).clamp(min=1e-6).log())
            total = total + (bce * edge).sum()
            count += int(edge.sum())
    return total / count if count else total


def uniform_loss_ref(m_a, m_v, region_masks, K=1.0):
    total, count = m_a.sum() * 0, 0
    for i in range(m_a.shape[0]):
        r = region_masks[i, 0] > 0.5
        total = total + F.relu(m_v[i, 0][r] - m_a[i, 0][r]).sum()
        count += int(r.sum())
    return K * total / count if count else total
