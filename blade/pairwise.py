"""The 8-neighbour, one-pixel-gap edge geometry shared by BoxInst's pairwise loss and BLADE's
neighbour loss, and the colour similarity that gates BoxInst's edges.

Geometry (BoxInst code: ``unfold_wo_center(x, kernel_size=3, dilation=2)``; BLADE paper:
"neighbors with a one-pixel gap"): each pixel p is joined to the 8 pixels q = p + (dy, dx) with
dy, dx in {-2, 0, 2}, not both 0. ``NEIGHBOURS[k]`` is the (dy, dx) of channel k, in the
row-major order of the 3x3 dilated kernel without its centre:

    k:   0         1        2        3        4       5        6       7
    (-2, -2)  (-2, 0)  (-2, 2)  (0, -2)  (0, 2)  (2, -2)  (2, 0)  (2, 2)

Neighbours outside the image are zero-padded by ``unfold_neighbours``; ``neighbour_valid``
says which edges exist. Every undirected edge appears twice (p->q and q->p), so a mean over
the directed edges equals the mean over undirected ones.

Colour (BoxInst code): similarity S = exp(-||LAB(p) - LAB(q)|| / 2). AdelaiDet converts each
(average-pooled, uint8) image with ``skimage.color.rgb2lab`` on the CPU; here the conversion is
torch, batched, on the images' device, and matches ``rgb2lab`` (sRGB, D65, 2 deg observer) to
1e-3 on float input (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEIGHBOURS = ((-2, -2), (-2, 0), (-2, 2), (0, -2), (0, 2), (2, -2), (2, 0), (2, 2))

# sRGB (linear) -> XYZ, and the D65 / 2 degree white point (skimage.color constants)
_XYZ_FROM_RGB = ((0.412453, 0.357580, 0.180423),
                 (0.212671, 0.715160, 0.072169),
                 (0.019334, 0.119193, 0.950227))
_D65 = (0.95047, 1.0, 1.08883)


def unfold_neighbours(x: torch.Tensor, dilation: int = 2) -> torch.Tensor:
    """[N,C,H,W] -> [N,C,8,H,W]: the value at each pixel's 8 neighbours (0 outside the image).

    Same values as ``F.unfold(x, 3, dilation=d, padding=d)`` without the centre (AdelaiDet's
    ``unfold_wo_center``), built from 8 shifted views of the zero-padded input (faster than im2col).
    """
    h, w = x.shape[-2:]
    d = dilation
    padded = F.pad(x, (d, d, d, d))
    return torch.stack([padded[..., d + dy * d // 2:d + dy * d // 2 + h,
                               d + dx * d // 2:d + dx * d // 2 + w] for dy, dx in NEIGHBOURS], dim=2)


def gather_edges(x: torch.Tensor, keep: torch.Tensor, dilation: int = 2):
    """Values of ``x`` [N,1,H,W] at both ends of the edges selected by ``keep`` [N,8,H,W] bool.

    Returns 1-D ``(x_centre, x_neighbour)``, one entry per selected edge. Selected edges must
    lie inside the image (``keep`` implies ``neighbour_valid``). Gathering by flat index keeps
    forward and backward proportional to the selected edges, not to all 8 H W N of them.
    """
    n, _, h, w = x.shape
    i, k, y, xx = keep.nonzero(as_tuple=True)
    offsets = torch.tensor([dy * dilation // 2 * w + dx * dilation // 2 for dy, dx in NEIGHBOURS],
                           device=x.device)
    centre = (i * h + y) * w + xx
    flat = x.reshape(-1)
    return flat[centre], flat[centre + offsets[k]]


def neighbour_valid(height: int, width: int, dilation: int = 2, device=None,
                    dtype=torch.float32) -> torch.Tensor:
    """[1,8,H,W] 1 where the neighbour lies inside the image, 0 where it would be padding."""
    ones = torch.ones(1, 1, height, width, device=device, dtype=dtype)
    return unfold_neighbours(ones, dilation)[:, 0]


def rgb_to_lab(images: torch.Tensor) -> torch.Tensor:
    """[N,3,H,W] sRGB in [0,1] -> [N,3,H,W] CIE-LAB (L in [0,100]), as skimage's rgb2lab."""
    x = images.clamp(0, 1)
    linear = torch.where(x > 0.04045, ((x + 0.055) / 1.055) ** 2.4, x / 12.92)
    m = torch.tensor(_XYZ_FROM_RGB, device=x.device, dtype=x.dtype)
    xyz = torch.einsum("ij,njhw->nihw", m, linear)
    xyz = xyz / torch.tensor(_D65, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp(min=1e-12) ** (1.0 / 3.0),
                    7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def color_similarity(images_rgb: torch.Tensor, dilation: int = 2) -> torch.Tensor:
    """[N,3,H,W] RGB in [0,1] -> [N,8,H,W] S = exp(-||dLAB|| / 2) to each neighbour (order:
    ``NEIGHBOURS``); 0 for neighbours outside the image. No gradient is needed or kept."""
    with torch.no_grad():
        lab = rgb_to_lab(images_rgb)
        diff = lab[:, :, None] - unfold_neighbours(lab, dilation)  # [N,3,8,H,W]
        sim = torch.exp(-torch.linalg.vector_norm(diff, dim=1) * 0.5)  # [N,8,H,W]
        h, w = images_rgb.shape[-2:]
        return sim * neighbour_valid(h, w, dilation, images_rgb.device, sim.dtype)
