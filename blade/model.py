"""The BLADE network (paper Fig. 2): FCOS + a shared mask branch + three dynamic mask heads.

Built on torchvision's FCOS (its heads, anchor generator, transform, focal and GIoU losses,
``batched_nms``), extended where CondInst needs hooks:

* a **controller** conv (3x3, std 0.01, AdelaiDet ``CondInst.controller``) on the regression
  tower, predicting every positive location's dynamic-head parameters;
* the **matched indices** of the positives, captured from ``FCOSHead.compute_loss``;
* a **post-processing** that keeps each detection's anchor index (torchvision's drops it), so a
  detection can fetch its controller parameters;
* fewer operators per training step for a GPU (issue 15), each with torchvision's numbers to
  the bit (tested): the transform batched per image shape (``BatchedTransform``), anchors kept
  per batch shape (``CachedAnchorGenerator``), FCOS's assignment of locations to boxes for
  the whole batch at once (``fcos_match``).

CondInst/BoxInst parts (constants from AdelaiDet's code and BoxInst config):

* mask branch on P3-P5: 3x3 conv "refine" per level, upsampled to stride 8 and summed, then
  ``mask_branch_convs`` 3x3 convs and a 1x1 to ``mask_out_channels`` = 16 (BoxInst);
* dynamic heads: 3 1x1 layers of 8 channels with ReLU between, input = mask features + 2
  relative coordinates ((location - pixel centre) / size of interest of the location's level,
  soi = 64, 128, 256, 512, 1024), run for all instances at once as batched matrix products;
  logits at stride 8 are upsampled x2 ("aligned" bilinear) to stride 4;
* per image, the top ``topk_per_image`` = 64 positives by cls x ctr score train the masks,
  ``max(64 // #GT, 1)`` per ground-truth instance (BoxInst ``TOPK_PROPOSALS_PER_IM``).

BLADE: three heads share the mask features: visible (m_v, trained with B_v), amodal (m_a,
trained with B_a, with sigmoid(m_v) as an extra input channel, detached by default) and region
(m_r, trained with the overlap-region bitmask). Output m = m_a m_r + m_v (1 - m_r) (Eq. 2).
The detector is trained on the visible boxes B_v (``detect_box``), since at test time the
paper's input box B_test is a visible box.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.fcos import FCOS, FCOSHead, FCOSRegressionHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image

from .backbones import build_backbone
from .boxes import box_bitmasks
from .criterion import blade_criterion
from .overlap import region_bitmasks
from .pairwise import color_similarity, unfold_neighbours

PROMPTS = ("box", "detections", "box_match")  # how a given box picks its controller location
MASK_STRIDE = 4  # mask losses and outputs (AdelaiDet MASK_OUT_STRIDE)
FEAT_STRIDE = 8  # mask-branch features (P3)


def check_prompts(prompts) -> tuple:
    """``prompts`` as a tuple of distinct known prompts, in order; a ValueError for a string
    (one prompt is ``(prompt,)``), an empty collection or an unknown name."""
    if isinstance(prompts, str):
        raise ValueError(f"prompts must be a list or tuple of prompts, not the string "
                         f"{prompts!r} (write ({prompts!r},))")
    prompts = tuple(dict.fromkeys(prompts))
    if not prompts:
        raise ValueError(f"prompts is empty; give one or more of {PROMPTS}")
    for prompt in prompts:
        if prompt not in PROMPTS:
            raise ValueError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
    return prompts


def head_param_count(in_channels: int, channels: int = 8, layers: int = 3) -> int:
    """Weights + biases of one dynamic head: 233 for BoxInst (16 + 2 inputs, 8 channels)."""
    dims = [in_channels] + [channels] * (layers - 1) + [1]
    return sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))


def aligned_upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Upsample [N,C,h,w] by ``factor`` keeping cell centres aligned with the stride sampling
    (the idea of AdelaiDet's ``aligned_bilinear``): replicate-pad one cell, bilinear with
    ``align_corners=True`` to factor*h + 1, shift by factor // 2, crop to factor*h."""
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    x = F.pad(x, (0, 1, 0, 1), mode="replicate")
    x = F.interpolate(x, size=(factor * h + 1, factor * w + 1), mode="bilinear",
                      align_corners=True)
    x = F.pad(x, (factor // 2, 0, factor // 2, 0), mode="replicate")
    return x[..., :factor * h, :factor * w]


def stride_sample_masks(masks: torch.Tensor, size, padded, stride: int) -> torch.Tensor:
    """Ground-truth masks [n,H0,W0] (input image) -> {0,1} float [n,1,H/s,W/s] on the mask grid:
    resized like the image (bilinear, > 0.5) to ``size`` (h, w), zero-padded to the batch size
    ``padded`` (H, W), sampled at the stride's cell centres (s//2::s, as ``box_bitmasks``)."""
    h, w = size
    x = F.interpolate(masks[:, None].float(), size=(h, w), mode="bilinear", align_corners=False)
    x = F.pad((x > 0.5).float(), (0, padded[1] - w, 0, padded[0] - h))
    return x[..., stride // 2::stride, stride // 2::stride]


def fcos_candidates(anchors: torch.Tensor, boxes: torch.Tensor, num_per_level,
                    radius: float = 1.5) -> torch.Tensor:
    """[..., k, A] bool: the locations FCOS training would make positive for each box *alone*.

    anchors: [..., A, 4] anchors (P3..P7 concatenated, one per location); boxes: [..., k, 4]
    xyxy in the same (resized) pixels, with the same leading (batch) dimensions or none;
    ``num_per_level``: locations per level. The rule is torchvision's ``FCOS.compute_loss``
    (method-notes 4.1): the location's centre lies inside the box and within ``radius``
    strides of the box centre (centre sampling), and the largest of its four distances to the
    box sides is in the level's size range (4 s, 8 s), open at both ends, 0 below P3 and
    infinity above P7. Each box is taken alone: the training rule's "smallest box wins"
    between overlapping boxes is :func:`fcos_match`'s, so the answer to one box does not
    depend on which other boxes are asked about.
    """
    centres = (anchors[..., :2] + anchors[..., 2:]) / 2  # [...,A,2]
    size = anchors[..., 2] - anchors[..., 0]  # [...,A] = the level's stride
    mid = (boxes[..., :2] + boxes[..., 2:]) / 2  # [...,k,2]
    near = ((centres[..., None, :, :] - mid[..., :, None, :]).abs().amax(-1)
            < radius * size[..., None, :])  # [...,k,A]
    x, y = centres[..., None, :, 0], centres[..., None, :, 1]  # [...,1,A]
    x0, y0, x1, y1 = (boxes[..., :, i, None] for i in range(4))  # [...,k,1] each
    dist = torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=-1)  # [...,k,A,4]
    lower, upper = size * 4, size * 8
    lower[..., :num_per_level[0]] = 0
    upper[..., -num_per_level[-1]:] = float("inf")
    reach = dist.amax(-1)
    return (near & (dist.amin(-1) > 0) & (reach > lower[..., None, :])
            & (reach < upper[..., None, :]))


def fcos_match(anchors: torch.Tensor, boxes: list, num_per_level, radius: float = 1.5
               ) -> torch.Tensor:
    """[B, A] long: FCOS's training assignment for a whole batch, the instance each location
    is matched to (-1: none); the same numbers as torchvision's ``FCOS.compute_loss``, which
    runs it image by image (about 30 operators per image, each a kernel launch on a GPU;
    this is one pass over the padded batch, issue 15).

    anchors: [B, A, 4]; boxes: per image [m_b, 4] xyxy. Each location's candidates are
    :func:`fcos_candidates`; of several, the box with the smallest area wins. Images are
    padded with the empty box (0, 0, 0, 0), which no location lies strictly inside, so
    padding never matches. Memory: a [B, m, A, 4] distance tensor (m the most boxes in one
    image), B times torchvision's per-image peak (about 100 MB for the ``paper`` preset with
    50 boxes in an image).
    """
    B, A = anchors.shape[:2]
    m = max((len(b) for b in boxes), default=0)
    if m == 0:
        return torch.full((B, A), -1, dtype=torch.long, device=anchors.device)
    gt = torch.nn.utils.rnn.pad_sequence(list(boxes), batch_first=True)  # [B, m, 4]
    match = fcos_candidates(anchors, gt, num_per_level, radius)  # [B, m, A]
    area = (gt[..., 2] - gt[..., 0]) * (gt[..., 3] - gt[..., 1])  # [B, m]
    best, idx = (match.to(torch.float32) * (1e8 - area[..., None])).max(dim=1)  # smallest
    return idx.masked_fill(best < 1e-5, -1)  # ties: the first box, as torchvision's


def scale_boxes(boxes: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """[N,4] (x1, y1, x2, y2) scaled by Python numbers: no scale tensor copied from the host."""
    return torch.stack([boxes[:, 0] * sx, boxes[:, 1] * sy, boxes[:, 2] * sx, boxes[:, 3] * sy],
                       dim=1)


def scale_batch_boxes(boxes: list, factors: list) -> torch.Tensor:
    """Per image [m_b,4] boxes scaled by its (sx, sy) -> [sum m_b, 4], in image order; one
    scaling for the batch when every image was resized alike (the usual case), the same
    numbers as image by image."""
    if len(set(factors)) == 1:
        return scale_boxes(torch.cat(boxes), *factors[0])
    return torch.cat([scale_boxes(b, sx, sy) for b, (sx, sy) in zip(boxes, factors)])


def select_positives(matched: torch.Tensor, score: torch.Tensor, topk_per_image: int,
                     first_gt=None, max_gt=None):
    """The positives that train the mask heads, for a whole batch at once (BoxInst
    ``TOPK_PROPOSALS_PER_IM``): per image, ``max(topk_per_image // #GT, 1)`` locations per
    ground-truth instance that has any, the best by ``score``.

    matched [B, A] long: the instance each location is assigned to (< 0: none); score [B, A]
    (cls x ctr). ``max_gt``: more than any instance index of ``matched`` (the model passes its
    largest per-image instance count; default: read from ``matched``, one host sync);
    ``first_gt``: per image, the index of its first instance in the batch's concatenated
    targets, added to the returned ``gt`` (Python ints; default: none added). Returns
    ``img_idx, anchor_idx, gt`` [n] long, ordered by image, then instance, then score
    (descending); ties in score go to the lower location. One data-dependent shape for the
    batch (the final selection) instead of a ``nonzero`` per instance, and no copy from the
    host: on a GPU each would be a host synchronisation (issue 15)."""
    B, A = matched.shape
    if max_gt is None:
        max_gt = int(matched.max()) + 1 if matched.numel() else 0
    stride = max(max_gt, 1)  # key = image * stride + instance: unique, in image order
    none = B * stride  # the key of the locations assigned to no instance: sorts last
    img_of = torch.arange(B, device=matched.device).view(B, 1)
    key = torch.where(matched >= 0, img_of * stride + matched,
                      torch.full_like(matched, none)).flatten()  # [B*A]
    order = torch.sort(score.flatten(), descending=True, stable=True).indices
    order = order[torch.sort(key[order], stable=True).indices]  # by key, within it by score
    k = key[order]
    rank = torch.arange(len(k), device=k.device) - torch.searchsorted(k, k)  # within instance
    img = order // A
    positive = k != none
    n_gt = torch.zeros(B, dtype=torch.long, device=k.device).index_add_(
        0, img, (positive & (rank == 0)).long())  # instances with a positive, per image
    per_gt = (topk_per_image // n_gt.clamp(min=1)).clamp(min=1)  # [B]
    chosen = order[positive & (rank < per_gt[img])]
    img_idx, gt = chosen // A, matched.flatten()[chosen]
    if first_gt is not None:
        offset = torch.zeros(B, dtype=torch.long, device=matched.device)
        for b in range(1, B):
            offset[b] = first_gt[b]  # a fill on the device, not a copy from the host
        gt = gt + offset[img_idx]
    return img_idx, chosen % A, gt


class CachedAnchorGenerator(AnchorGenerator):
    """torchvision's ``AnchorGenerator`` that keeps its answer per padded batch shape: the
    anchors depend only on it (and the feature sizes, dtype and device), so a batch of a shape
    seen before reuses them instead of building them again (about 60 operators per step, each
    a launch on a GPU, issue 15; on data of one image size every batch hits, on data of mixed
    sizes, e.g. KINS, padded shapes vary and the gain is smaller). The returned tensors are
    shared between calls: read them, never write into them (nothing in torchvision's FCOS or
    the kit does)."""

    MAX_SHAPES = 16  # the shapes kept, least recently used dropped first

    def forward(self, image_list, feature_maps):
        f = feature_maps[0]
        key = (tuple(image_list.tensors.shape),
               tuple(tuple(m.shape[-2:]) for m in feature_maps), f.dtype, f.device)
        cache = self.__dict__.setdefault("_anchor_cache", OrderedDict())
        if key in cache:
            cache.move_to_end(key)
        else:
            if len(cache) >= self.MAX_SHAPES:
                cache.popitem(last=False)
            cache[key] = super().forward(image_list, feature_maps)
        return list(cache[key])


class BatchedTransform(GeneralizedRCNNTransform):
    """torchvision's ``GeneralizedRCNNTransform`` (normalise, resize so that the shorter side
    is ``min_size`` and the longer at most ``max_size``, pad to a multiple of 32) with the
    images of one shape and drawn size done as one batch: one normalisation, one
    interpolation, one padding and one box rescaling for the batch instead of each per image
    (about 12 operators and 6 host-to-device copies per image on a GPU; issue 15). The same
    numbers as torchvision's, and the same random draws of the training size, one per image
    in order, so that runs resume exactly. Anything else (other target keys, fixed sizes, a
    non-float image) goes to torchvision's own code."""

    def forward(self, images, targets=None):
        first = images[0] if len(images) else None
        if (first is None or self.fixed_size is not None or self._skip_resize
                or torch.jit.is_scripting() or torch.jit.is_tracing()
                or any(img.dim() != 3 or not img.is_floating_point() or img.dtype != first.dtype
                       or img.device != first.device for img in images)
                or (targets is not None
                    and any(set(t) - {"boxes", "labels"} for t in targets))):
            return super().forward(images, targets)
        # the training size, drawn per image in order exactly as torchvision draws it
        sizes = [self.torch_choice(self.min_size) if self.training else self.min_size[-1]
                 for _ in images]
        groups = {}  # (shape, size) -> indices, in order
        for i, (img, size) in enumerate(zip(images, sizes)):
            groups.setdefault((tuple(img.shape), size), []).append(i)
        out = [None] * len(images)
        new_targets = None if targets is None else [dict(t) for t in targets]
        mean = torch.as_tensor(self.image_mean, dtype=first.dtype, device=first.device)
        std = torch.as_tensor(self.image_std, dtype=first.dtype, device=first.device)
        for (shape, size), idx in groups.items():
            x = torch.stack([images[i] for i in idx])  # [n,C,h,w]
            x = (x - mean[:, None, None]) / std[:, None, None]
            h, w = shape[-2:]
            scale = min(size / min(h, w), self.max_size / max(h, w))
            x = F.interpolate(x, scale_factor=scale, mode="bilinear",
                              recompute_scale_factor=True, align_corners=False)
            for k, i in enumerate(idx):
                out[i] = x[k]
            if new_targets is not None:  # one rescaling for the group's boxes
                boxes = resize_boxes(torch.cat([targets[i]["boxes"] for i in idx]), [h, w],
                                     list(x.shape[-2:]))
                for i, b in zip(idx, boxes.split([len(targets[i]["boxes"]) for i in idx])):
                    new_targets[i]["boxes"] = b
        image_sizes = [tuple(img.shape[-2:]) for img in out]
        if len(groups) == 1:  # one batch already: pad it at once
            stride = float(self.size_divisible)
            h, w = x.shape[-2:]
            batch = F.pad(x, (0, int(math.ceil(w / stride) * stride) - w,
                              0, int(math.ceil(h / stride) * stride) - h))
        else:
            batch = self.batch_images(out, size_divisible=self.size_divisible)
        return ImageList(batch, image_sizes), new_targets


class ControllerRegressionHead(FCOSRegressionHead):
    """torchvision's regression head plus the controller conv on the same tower.

    The controller (a 3x3 conv, ``num_params`` outputs) is evaluated lazily, only at the
    locations that need dynamic-head parameters (the top-k positives in training, the
    detections at inference) by :meth:`controller_at`: the same numbers as running the conv on
    every location of P3-P7 and indexing, without computing ~700 channels at thousands of
    locations that are thrown away (this was about a third of a ``cpu`` training step)."""

    def __init__(self, in_channels: int, num_anchors: int, num_params: int, num_convs: int = 4):
        super().__init__(in_channels, num_anchors, num_convs)
        self.controller = nn.Conv2d(in_channels, num_params, 3, padding=1)
        nn.init.normal_(self.controller.weight, std=0.01)
        nn.init.zeros_(self.controller.bias)

    def forward(self, x):
        regs, ctrs, towers = [], [], []
        for features in x:
            tower = self.conv(features)
            n, _, h, w = tower.shape
            regs.append(F.relu(self.bbox_reg(tower)).permute(0, 2, 3, 1).reshape(n, h * w, 4))
            ctrs.append(self.bbox_ctrness(tower).permute(0, 2, 3, 1).reshape(n, h * w, 1))
            towers.append(tower)
        return torch.cat(regs, 1), torch.cat(ctrs, 1), towers

    def controller_at(self, towers, img_idx, anchor_idx):
        """Controller output [n, P] at n locations: ``img_idx`` [n] images, ``anchor_idx`` [n]
        indices into the concatenated P3..P7 locations (row-major per level, one anchor).

        The 3x3 convolution evaluated only where it is needed: every level's tower, zero-padded
        by one, goes into one table of feature vectors, each location reads its 3x3 patch from
        it by index, and one matrix product with the conv weight gives the parameters. No
        per-level selection and no copy from the host, so a GPU is not made to wait (issue
        15)."""
        c = towers[0].shape[1]
        weight = self.controller.weight.permute(0, 2, 3, 1).reshape(-1, 9 * c)  # [P, 3*3*C]
        tables, rows = [], []  # rows: per level (first location, first table row, h, w)
        start = base = 0
        for tower in towers:
            n, _, h, w = tower.shape
            tables.append(F.pad(tower, (1, 1, 1, 1)).permute(0, 2, 3, 1).reshape(-1, c))
            rows.append((start, base, h, w))
            start, base = start + h * w, base + n * (h + 2) * (w + 2)
        table = torch.cat(tables)  # [sum N (h+2)(w+2), C]
        # each location's level quantities, by comparisons with Python numbers (no copy from
        # the host, which would make a GPU wait): first location, first table row, h, w
        first, base, h, w = (torch.zeros_like(anchor_idx) for _ in range(4))
        for lv_first, lv_base, lv_h, lv_w in rows:
            at_or_after = anchor_idx >= lv_first
            first = torch.where(at_or_after, lv_first, first)
            base = torch.where(at_or_after, lv_base, base)
            h = torch.where(at_or_after, lv_h, h)
            w = torch.where(at_or_after, lv_w, w)
        local = anchor_idx - first
        y, x, w2 = local // w, local % w, w + 2  # [n]; w2: padded row length
        d = torch.arange(3, device=anchor_idx.device)
        at = (base + img_idx * (h + 2) * w2).view(-1, 1, 1) \
            + (y.view(-1, 1, 1) + d.view(1, 3, 1)) * w2.view(-1, 1, 1) \
            + x.view(-1, 1, 1) + d.view(1, 1, 3)  # [n,3,3] rows of the padded 3x3 patch
        patches = table[at]  # [n,3,3,C]
        return patches.reshape(len(anchor_idx), 9 * c) @ weight.t() + self.controller.bias


class BladeFCOSHead(FCOSHead):
    """FCOS head whose outputs include the regression towers (``reg_towers``, one [N,C,h,w]
    per level, for the lazy controller); remembers the matches."""

    def __init__(self, in_channels: int, num_classes: int, num_params: int, num_convs: int = 4):
        super().__init__(in_channels, 1, num_classes, num_convs)
        self.regression_head = ControllerRegressionHead(in_channels, 1, num_params, num_convs)
        self.last_matched_idxs = None

    def forward(self, x):
        reg, ctr, towers = self.regression_head(x)
        return {"cls_logits": self.classification_head(x), "bbox_regression": reg,
                "bbox_ctrness": ctr, "reg_towers": towers}  # towers: the controller's input

    def compute_loss(self, targets, head_outputs, anchors, matched_idxs):
        self.last_matched_idxs = matched_idxs  # the CondInst hook: who is positive, for whom
        return super().compute_loss(targets, head_outputs, anchors, matched_idxs)


class MaskBranch(nn.Module):
    """P3-P5 -> [N, out_channels, H/8, W/8] shared mask features (CondInst MaskBranch)."""

    def __init__(self, in_channels: int, channels: int, out_channels: int, num_convs: int,
                 norm: str = "BN"):
        super().__init__()

        def block(cin, cout):
            layer_norm = nn.BatchNorm2d(cout) if norm == "BN" else nn.GroupNorm(
                min(32, cout // 4), cout)
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), layer_norm,
                                 nn.ReLU(inplace=True))

        self.refine = nn.ModuleList([block(in_channels, channels) for _ in range(3)])
        self.tower = nn.Sequential(*[block(channels, channels) for _ in range(num_convs)],
                                   nn.Conv2d(channels, out_channels, 1))

    def forward(self, feats):  # feats: P3, P4, P5
        x = self.refine[0](feats[0])
        for k in (1, 2):
            y = self.refine[k](feats[k])
            y = aligned_upsample(y, x.shape[-2] // y.shape[-2])[..., :x.shape[-2], :x.shape[-1]]
            x = x + y
        return self.tower(x)


def run_dynamic_head(x: torch.Tensor, params: torch.Tensor, channels: int = 8,
                     layers: int = 3, extra: torch.Tensor | None = None) -> torch.Tensor:
    """x: [n, C, h, w] per-instance inputs; params: [n, P]. Returns [n, 1, h, w] logits.

    Each layer is a 1x1 convolution with the instance's own weights, run for all instances at
    once as a batched matrix product (``baddbmm``; on CPU ~1.5x faster than the equivalent
    grouped convolution). ``extra`` [n, 1, h, w] is one more input channel after the C of
    ``x`` (the amodal head's m_v), applied without concatenating a copy of ``x``.
    Parameter layout (CondInst ``parse_dynamic_params``): all weights layer by layer, each
    [out, in] row-major, then all biases.
    """
    n, c, h, w = x.shape
    c_in = c + (extra is not None)
    if n == 0:
        return x.new_zeros(0, 1, h, w) + params.sum() * 0
    dims = [c_in] + [channels] * (layers - 1) + [1]
    weights, biases, start = [], [], 0
    for a, b in zip(dims[:-1], dims[1:]):
        weights.append(params[:, start:start + a * b].reshape(n, b, a))
        start += a * b
    for b in dims[1:]:
        biases.append(params[:, start:start + b].reshape(n, b, 1))
        start += b
    y = x.reshape(n, c, h * w)
    for k, (wk, bk) in enumerate(zip(weights, biases)):
        if k == 0 and extra is not None:
            y = torch.baddbmm(bk, wk[:, :, :c], y) + wk[:, :, c:] * extra.reshape(n, 1, h * w)
        else:
            y = torch.baddbmm(bk, wk, y)
        if k < len(weights) - 1:
            y = F.relu(y)
    return y.reshape(n, 1, h, w)


class BladeModel(FCOS):
    """FCOS + mask branch + visible/amodal/region dynamic heads. ``cfg`` is a
    :class:`blade.config.Config` (or anything with its model and loss fields)."""

    def __init__(self, cfg, load_weights: bool = True):
        # load_weights=False: the architecture of cfg (frozen BN etc. when cfg.pretrained)
        # without fetching ImageNet weights, for restoring a checkpoint
        backbone, mean, std = build_backbone(cfg.backbone, cfg.pretrained, cfg.fpn_channels,
                                             load_weights=load_weights)
        c_in = cfg.mask_out_channels + 2
        self.n_vis = head_param_count(c_in, cfg.head_channels, cfg.head_layers)
        self.n_amo = head_param_count(c_in + 1, cfg.head_channels, cfg.head_layers)
        self.n_reg = head_param_count(c_in, cfg.head_channels, cfg.head_layers)
        head = BladeFCOSHead(backbone.out_channels, cfg.num_classes,
                             self.n_vis + self.n_amo + self.n_reg)
        super().__init__(backbone, cfg.num_classes, min_size=cfg.min_size, max_size=cfg.max_size,
                         image_mean=mean, image_std=std, head=head,
                         score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh,
                         detections_per_img=cfg.detections_per_img)
        self.cfg = cfg
        gen = self.anchor_generator  # FCOS's default: one anchor per location, 8-128 px
        self.anchor_generator = CachedAnchorGenerator(gen.sizes, gen.aspect_ratios)
        t = self.transform  # the same settings, one batch per image shape
        self.transform = BatchedTransform(t.min_size, t.max_size, t.image_mean, t.image_std,
                                          size_divisible=t.size_divisible)
        self.mask_branch = MaskBranch(backbone.out_channels, cfg.mask_branch_channels,
                                      cfg.mask_out_channels, cfg.mask_branch_convs,
                                      cfg.mask_branch_norm)
        self.register_buffer("soi", torch.tensor(cfg.sizes_of_interest, dtype=torch.float32),
                             persistent=False)
        # on the model's device once, not copied from the host at every step (issue 15)
        for name, value in (("pixel_mean", mean), ("pixel_std", std)):
            self.register_buffer(name, torch.tensor(value, dtype=torch.float32).view(1, 3, 1, 1),
                                 persistent=False)

    # -- shared pieces -----------------------------------------------------------------------
    def _features(self, images_t):
        feats = list(self.backbone(images_t.tensors).values())  # P3..P7
        head_outputs = self.head(feats)
        anchors = self.anchor_generator(images_t, feats)
        levels = torch.cat([torch.full((f.shape[-2] * f.shape[-1],), k, dtype=torch.long,
                                       device=f.device) for k, f in enumerate(feats)])
        return feats, head_outputs, anchors, levels

    def _masks(self, mask_feats, img_idx, params, locations, levels, amodal_params_iso=None):
        """Stride-4 logits of the three heads for n instances. Returns a dict of [n,1,h,w].

        ``amodal_params_iso`` [n, n_amo] (training with ``con_isolate``): the amodal head's
        parameters computed from the detached controller tower; the amodal head is run once
        more on detached inputs with them (``amodal_logits_iso``: the same values as
        ``amodal_logits``, a gradient only into those parameters)."""
        n = len(img_idx)
        h, w = mask_feats.shape[-2:]
        ys = (torch.arange(h, device=mask_feats.device) * FEAT_STRIDE + FEAT_STRIDE // 2).float()
        xs = (torch.arange(w, device=mask_feats.device) * FEAT_STRIDE + FEAT_STRIDE // 2).float()
        soi = self.soi[levels].view(n, 1, 1)
        rel = torch.stack([(locations[:, 0].view(n, 1, 1) - xs.view(1, 1, w)).expand(n, h, w),
                           (locations[:, 1].view(n, 1, 1) - ys.view(1, h, 1)).expand(n, h, w)],
                          dim=1) / soi.unsqueeze(1)  # [n,2,h,w]
        x = torch.cat([mask_feats[img_idx], rel], dim=1)
        p_v, p_a, p_r = params.split([self.n_vis, self.n_amo, self.n_reg], dim=1)
        cfg = self.cfg
        up = FEAT_STRIDE // MASK_STRIDE
        v = run_dynamic_head(x, p_v, cfg.head_channels, cfg.head_layers)
        out = {"visible_logits": aligned_upsample(v, up)}
        if cfg.use_amodal:  # heads a configuration does not use are not run at all
            m_v_in = v.sigmoid().detach() if cfg.detach_visible_input else v.sigmoid()
            a = run_dynamic_head(x, p_a, cfg.head_channels, cfg.head_layers, extra=m_v_in)
            out["amodal_logits"] = aligned_upsample(a, up)
            if amodal_params_iso is not None:
                a_iso = run_dynamic_head(x.detach(), amodal_params_iso, cfg.head_channels,
                                         cfg.head_layers, extra=m_v_in.detach())
                out["amodal_logits_iso"] = aligned_upsample(a_iso, up)
        if cfg.use_fusion:
            r = run_dynamic_head(x, p_r, cfg.head_channels, cfg.head_layers)
            out["region_logits"] = aligned_upsample(r, up)
        return out

    def _pixel_rgb(self, images_t):
        """Un-normalised [B,3,H,W] RGB in [0,1] and a [B,1,H,W] mask of real (unpadded) pixels."""
        rgb = images_t.tensors * self.pixel_std + self.pixel_mean
        valid = torch.zeros_like(rgb[:, :1])
        for b, (h, w) in enumerate(images_t.image_sizes):
            valid[b, :, :h, :w] = 1
        return rgb, valid

    # -- training ----------------------------------------------------------------------------
    def compute_loss(self, targets, head_outputs, anchors, num_anchors_per_level):
        """torchvision's ``FCOS.compute_loss`` with the assignment batched (:func:`fcos_match`):
        the same matches and detection losses, fewer launches on a GPU."""
        matched = fcos_match(torch.stack(anchors), [t["boxes"] for t in targets],
                             num_anchors_per_level, self.center_sampling_radius)
        return self.head.compute_loss(targets, head_outputs, anchors, list(matched.unbind(0)))

    def forward(self, images, targets=None, iteration: int = 0):
        """Training: ``targets`` are dataset items (``visible_boxes``, ``amodal_boxes``,
        ``labels``); returns ``(terms, weights)`` (detection + mask terms). Eval: ``predict``."""
        if not self.training:
            return self.predict(images)
        cfg = self.cfg
        det_key = "visible_boxes" if cfg.detect_box == "visible" else "amodal_boxes"
        det_targets = [{"boxes": t[det_key], "labels": t["labels"]} for t in targets]
        images_t, det_targets_t = self.transform(images, det_targets)
        factors = [(w / img.shape[-1], h / img.shape[-2])  # each image's resize, x and y
                   for img, (h, w) in zip(images, images_t.image_sizes)]
        feats, head_outputs, anchors, levels = self._features(images_t)
        n_per_level = [f.shape[-2] * f.shape[-1] for f in feats]
        det = self.compute_loss(det_targets_t, head_outputs, anchors, n_per_level)
        matched = self.head.last_matched_idxs

        # positives for the mask heads: top-k per image by cls x ctr, spread over the GTs
        score = (head_outputs["cls_logits"].detach().sigmoid().amax(2)
                 * head_outputs["bbox_ctrness"][..., 0].detach().sigmoid())  # [B, A]
        first_gt, n = [], 0  # index of each image's first instance in the batch
        for t in targets:
            first_gt.append(n)
            n += len(t["labels"])
        img_idx, anchor_idx, gt_idx = select_positives(
            torch.stack(matched), score, cfg.topk_per_image, first_gt,
            max_gt=max((len(t["labels"]) for t in targets), default=0))
        device = images_t.tensors.device

        mask_feats = self.mask_branch(feats[:3])
        params = self.head.regression_head.controller_at(head_outputs["reg_towers"], img_idx,
                                                         anchor_idx)
        all_anchors = torch.stack(anchors)  # [B, HWA, 4]
        a = all_anchors[img_idx, anchor_idx]
        locations = (a[:, :2] + a[:, 2:]) / 2
        iso = None
        if cfg.con_isolate and cfg.use_amodal and (cfg.use_neighbor or cfg.use_uniform):
            towers = [t.detach() for t in head_outputs["reg_towers"]]  # the controller conv only
            iso = self.head.regression_head.controller_at(towers, img_idx, anchor_idx)[
                :, self.n_vis:self.n_vis + self.n_amo]
        outputs = self._masks(mask_feats, img_idx, params, locations, levels[anchor_idx], iso)

        H, W = images_t.tensors.shape[-2:]
        vis = scale_batch_boxes([t["visible_boxes"] for t in targets], factors)
        amo = scale_batch_boxes([t["amodal_boxes"] for t in targets], factors)
        ids = torch.cat([torch.full((len(t["amodal_boxes"]),), b, device=device)
                         for b, t in enumerate(targets)])
        rgb, valid = self._pixel_rgb(images_t)
        pooled = F.avg_pool2d(rgb, MASK_STRIDE)
        v4 = valid[..., MASK_STRIDE // 2::MASK_STRIDE, MASK_STRIDE // 2::MASK_STRIDE]
        sim = color_similarity(pooled) * v4 * unfold_neighbours(v4)[:, 0]  # no edge into padding
        mask_targets = {
            "visible_box_masks": box_bitmasks(vis, H, W, MASK_STRIDE)[gt_idx],
            "amodal_box_masks": box_bitmasks(amo, H, W, MASK_STRIDE)[gt_idx],
            "region_masks": region_bitmasks(amo, H, W, MASK_STRIDE, image_ids=ids)[gt_idx],
            "color_similarity": sim[img_idx],
            "gt_index": gt_idx,  # each instance's object and each object's image, for the
            "gt_image": ids,  # depth cue of ne_allow="depth"
        }
        if cfg.use_visible and cfg.vis_loss == "dice":  # full supervision: GT masks at stride 4
            key = f"{cfg.vis_target}_masks"
            mask_targets[key] = torch.cat([
                stride_sample_masks(t[key], size, (H, W), MASK_STRIDE)
                for t, size in zip(targets, images_t.image_sizes)])[gt_idx]
        terms, weights = blade_criterion(outputs, mask_targets, cfg, iteration)
        for k, v in (("det_cls", "classification"), ("det_box", "bbox_regression"),
                     ("det_ctr", "bbox_ctrness")):
            terms[k], weights[k] = det[v], 1.0
        return terms, weights

    # -- inference ---------------------------------------------------------------------------
    def _detect(self, head_outputs, anchors, image_sizes, levels):
        """torchvision's FCOS post-processing (sqrt(cls x ctr) > score_thresh, top-k per
        level, decode, clip, class-wise NMS) keeping each detection's anchor index."""
        out = []
        n_classes = head_outputs["cls_logits"].shape[-1]
        for b, size in enumerate(image_sizes):
            scores = torch.sqrt(head_outputs["cls_logits"][b].sigmoid()
                                * head_outputs["bbox_ctrness"][b].sigmoid())  # [HWA, C]
            boxes, sc, labels, idx = [], [], [], []
            for lv in range(int(levels.max()) + 1):
                where = torch.nonzero(levels == lv).flatten()
                s = scores[where].flatten()
                keep = torch.nonzero(s > self.score_thresh).flatten()
                keep = keep[s[keep].topk(min(self.topk_candidates, len(keep))).indices]
                a_idx = where[keep // n_classes]
                boxes.append(self.box_coder.decode(head_outputs["bbox_regression"][b, a_idx],
                                                   anchors[b][a_idx]))
                sc.append(s[keep])
                labels.append(keep % n_classes)
                idx.append(a_idx)
            boxes = clip_boxes_to_image(torch.cat(boxes), size)
            sc, labels, idx = torch.cat(sc), torch.cat(labels), torch.cat(idx)
            keep = batched_nms(boxes, sc, labels, self.nms_thresh)[:self.detections_per_img]
            out.append({"boxes": boxes[keep], "scores": sc[keep], "labels": labels[keep],
                        "anchor_idx": idx[keep]})
        return out

    @torch.no_grad()
    def predict(self, images, boxes=None, prompt: str = "box", min_iou: float = 0.3):
        """Detections, or answers to given boxes, with visible, amodal, region and fused masks
        at image resolution.

        images: list of [3,H,W] in [0,1]. Returns one dict per image: ``boxes`` [n,4] (input
        image pixels), ``scores``, ``labels``, ``visible``/``amodal``/``region``/``masks``
        (fused, Eq. 2) probabilities [n,H,W]; without a region branch ``masks`` is m_a and
        ``region`` is zeros, without an amodal branch (BoxInst) ``amodal`` is m_v.

        With ``boxes`` (one [k,4] xyxy tensor per image: the paper's B_test), row j answers
        given box j, and ``prompt`` says how the box picks the controller location whose
        parameters make its masks:

        * ``"box"`` (default; the kit's evaluation headline): the box is an input, as in the
          paper. Among the locations that training would make positive for this box
          (:func:`fcos_candidates`: same level-by-size rule, same centre sampling), the one
          with the best cls x ctr score. No detection is involved, so the answer does not
          depend on ``score_thresh`` or NMS. ``matched`` is True when the rule found a
          location; for a box too small for any (rare) the fallback below is used.
        * ``"box_match"`` (added after measuring ``"box"``): the same candidate locations, but
          the one whose *own regressed box* overlaps the given box most (IoU; cls x ctr breaks
          ties). Where boxes overlap, the centre of a box often lies on another object, and
          the location with the best score there describes that object (the wrong-instance
          rate of ``"box"`` is about twice that of ``"detections"``); the regressed box says
          which object a location thinks it is. Still no threshold and no NMS.
        * ``"detections"``: the detection with the highest box IoU with the box
          (class-agnostic) if that IoU >= ``min_iou``, as Bayesian-Amodal feeds its RPN's best
          box. ``matched`` is True for those rows; ``matched_iou`` is their IoU.

        Fallback (either prompt): the location whose centre lies in the box with the best
        cls x ctr score (or, if none lies inside, the nearest location); ``matched`` False.
        """
        return self.predict_prompts(images, boxes, (prompt,), min_iou)[prompt]

    @torch.no_grad()
    def predict_prompts(self, images, boxes=None, prompts=PROMPTS, min_iou: float = 0.3) -> dict:
        """``predict`` under several prompts at once: ``{prompt: results}``, each exactly what
        ``predict(images, boxes, prompt)`` returns, from one pass of the backbone, FPN, heads
        and mask branch (the part that costs; only the choice of locations and the dynamic
        heads run per prompt). Without ``boxes`` every prompt gets the detections."""
        prompts = check_prompts(prompts)
        # eval mode for the call, each module's own mode restored after it (cheaper than
        # eval()/train() on every call, which matters when evaluating one image at a time)
        training = [m for m in self.modules() if m.training]
        for m in training:
            m.training = False
        try:
            images_t, _ = self.transform(images)
            feats, head_outputs, anchors, levels = self._features(images_t)
            dets = None
            if boxes is None or "detections" in prompts:
                dets = self._detect(head_outputs, anchors, images_t.image_sizes, levels)
            mask_feats = self.mask_branch(feats[:3])
            n_per_level = torch.bincount(levels).tolist()
            shared = (images_t, head_outputs, anchors, levels, mask_feats, n_per_level, dets)
            return {prompt: self._answer(images, boxes, prompt, min_iou, *shared)
                    for prompt in prompts}
        finally:
            for m in training:
                m.training = True

    def _answer(self, images, boxes, prompt, min_iou, images_t, head_outputs, anchors, levels,
                mask_feats, n_per_level, dets):
        """The results of ``predict`` for one prompt, from the shared features."""
        results = []
        for b, img in enumerate(images):
            (h, w), (H0, W0) = images_t.image_sizes[b], img.shape[-2:]
            scale = torch.tensor([w / W0, h / H0] * 2, device=img.device)
            if boxes is None:
                det = dets[b]
            elif prompt in ("box", "box_match"):
                det = self._prompt_boxes(boxes[b].to(img.device) * scale, head_outputs,
                                         anchors, b, n_per_level,
                                         match=prompt == "box_match")
            else:
                det = self._match_given(dets[b], boxes[b].to(img.device) * scale,
                                        head_outputs, anchors, b, min_iou)
            a = anchors[b][det["anchor_idx"]]
            n = len(a)
            img_idx = torch.full((n,), b, dtype=torch.long, device=img.device)
            params = self.head.regression_head.controller_at(
                head_outputs["reg_towers"], img_idx, det["anchor_idx"])
            outs = self._masks(mask_feats, img_idx, params,
                               (a[:, :2] + a[:, 2:]) / 2, levels[det["anchor_idx"]])
            probs = {}
            for key, name in (("visible_logits", "visible"), ("amodal_logits", "amodal"),
                              ("region_logits", "region")):
                if key not in outs:
                    continue
                x = aligned_upsample(outs[key], MASK_STRIDE)[..., :h, :w]
                x = F.interpolate(x, size=(H0, W0), mode="bilinear", align_corners=False)
                probs[name] = x[:, 0].sigmoid()
            # without an amodal head (BoxInst) the visible mask is the prediction; without
            # the region branch (no FS) there is no fusion: m = m_a
            probs.setdefault("amodal", probs["visible"])
            if "region" in probs:
                fused = probs["amodal"] * probs["region"] + probs["visible"] * (1 - probs["region"])
            else:
                probs["region"] = torch.zeros_like(probs["visible"])
                fused = probs["amodal"]
            res = {k: v for k, v in det.items() if k != "anchor_idx"}
            res["boxes"] = det["boxes"] / scale
            res.update(probs, masks=fused)
            results.append(res)
        return results

    def _quality(self, head_outputs, b):
        """[A] cls x ctr of image b's locations (best class): how sure the head is there."""
        return (head_outputs["cls_logits"][b].sigmoid().amax(1)
                * head_outputs["bbox_ctrness"][b, :, 0].sigmoid())

    def _fallback_location(self, box, centres, quality):
        """The location for a box no rule answered: the best cls x ctr among the locations
        whose centre lies inside the box, else the nearest location to its centre."""
        x1, y1, x2, y2 = box
        inside = ((centres[:, 0] >= x1) & (centres[:, 0] < x2) & (centres[:, 1] >= y1)
                  & (centres[:, 1] < y2))
        if inside.any():
            cand = torch.nonzero(inside).flatten()
            return cand[quality[cand].argmax()]
        mid = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2])
        return (centres - mid).norm(dim=1).argmin()

    def _location_rows(self, given, locs, matched, head_outputs, quality, b):
        """Rows of answers where given box j is answered by location ``locs[j]`` ([k] long)
        and ``matched`` [k] bool says whether a rule (not the fallback) found it."""
        return {"boxes": given.clone(), "scores": quality[locs].sqrt(),
                "labels": head_outputs["cls_logits"][b, locs].argmax(1),
                "anchor_idx": locs, "matched": matched,
                "matched_iou": given.new_zeros(len(given))}

    def _with_fallback(self, given, locs, ok, centres, quality):
        """``locs`` with the rows that no rule answered (``~ok``) replaced by the fallback
        location; one host round trip for the whole image, a loop only over those rows."""
        locs = locs.clone()
        for j in torch.nonzero(~ok).flatten().tolist():
            locs[j] = self._fallback_location(given[j], centres, quality)
        return locs

    def _prompt_boxes(self, given, head_outputs, anchors, b, n_per_level, match=False):
        """One location per given box among those the training assignment rule makes positive
        for it: the best cls x ctr (``prompt="box"``) or, with ``match``, the best IoU of the
        location's regressed box with the given box, cls x ctr breaking ties (``"box_match"``)."""
        centres = (anchors[b][:, :2] + anchors[b][:, 2:]) / 2
        quality = self._quality(head_outputs, b)  # [A] in [0,1]
        cand = fcos_candidates(anchors[b], given, n_per_level)  # [k,A]
        score = quality[None].expand_as(cand)  # [k,A]
        if match:
            regressed = self.box_coder.decode(head_outputs["bbox_regression"][b], anchors[b])
            score = box_iou(given, regressed) + 1e-3 * score  # [k,A]; IoU first, then quality
        scored = torch.where(cand, score, torch.full_like(score, -1.0))
        best = scored.argmax(1)  # [k]
        ok = cand.gather(1, best[:, None])[:, 0]  # [k] the best is a candidate at all
        locs = self._with_fallback(given, best, ok, centres, quality)
        return self._location_rows(given, locs, ok, head_outputs, quality, b)

    def _match_given(self, det, given, head_outputs, anchors, b, min_iou):
        """One detection per given box (``prompt="detections"``, see ``predict``)."""
        k = len(given)
        centres = (anchors[b][:, :2] + anchors[b][:, 2:]) / 2
        quality = self._quality(head_outputs, b)
        if len(det["boxes"]):
            iou, best = box_iou(given, det["boxes"]).max(1)  # [k] best detection per box
            ok = iou >= min_iou
            locs = self._with_fallback(given, det["anchor_idx"][best], ok, centres, quality)
        else:
            iou = given.new_zeros(k)
            best = torch.zeros(k, dtype=torch.long, device=given.device)
            ok = torch.zeros(k, dtype=torch.bool, device=given.device)
            locs = self._with_fallback(given, best, ok, centres, quality)
        rows = self._location_rows(given, locs, ok, head_outputs, quality, b)
        if len(det["boxes"]):  # a matched row keeps its detection's box, score, label and IoU
            for key in ("boxes", "scores", "labels"):
                rows[key][ok] = det[key][best[ok]].to(rows[key].dtype)  # given may be float64
            rows["matched_iou"][ok] = iou[ok].to(rows["matched_iou"].dtype)
        return rows
