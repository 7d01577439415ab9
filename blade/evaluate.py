"""Evaluation with the paper's protocol (Bayesian-Amodal's, method-notes section 3), COCO AP,
and the CLI ``python -m blade.evaluate``.

For every ground-truth instance the input is a given box B_test; the model answers with an
amodal mask at image resolution (``BladeModel.predict(images, boxes=...)``), thresholded at
0.5. Per object: IoU of the amodal mask with the ground-truth amodal mask over the whole image,
plus the visible-mask IoU and the occluded-part IoU (predicted amodal minus predicted visible vs
ground-truth amodal minus visible; undefined, NaN, when nothing is occluded, as Bayesian-Amodal
drops it at FG-0). Means per occlusion level (and per FG x BG cell where images carry a
background level, as OccludedVehicles and the synthetic benchmark do), and the headline: the
mean of the level means (paper, Implementation Details).

Choices the paper leaves open, documented here:

* B_test is the ground-truth box itself, not a detector's box. How the box reaches the
  model is the ``prompt`` (``BladeModel.predict``). ``"box"``, the headline: the dynamic heads'
  parameters come from the location that training would make positive for that box (same
  level-by-size rule and centre sampling), the best of those by cls x ctr, with no detection
  threshold involved: the paper takes B_test as an *input*, so a detector miss must not be
  scored as a segmentation failure. ``"detections"`` (the kit's first protocol, reported
  too): the detection with the highest IoU with the box answers it, as Bayesian-Amodal feeds
  its RPN's best box, with a fallback location when none overlaps enough. ``"box_match"``
  (added after measuring ``"box"``): among the same candidate locations as ``"box"``, the one
  whose own regressed box overlaps the given box most; where boxes overlap, the best-scoring
  location at a box's centre often describes another object. Per level the
  tables report the ``fallback`` rate (boxes answered by the fallback) and the
  ``wrong_instance`` rate (the predicted amodal mask overlaps another ground-truth instance
  more than its own). Which box: the kind the model's detector was trained on (``cfg.detect_box``):
  visible boxes for BLADE ("unknown c", the paper's setting for BLADE), amodal boxes for the
  baselines trained on B_a ("known c", the paper's setting for BoxInst and BBTP).
* Misclassified objects: Bayesian-Amodal multiplies IoU by class correctness. Both are
  reported: ``iou_amodal`` (class-agnostic: the mask of the given box whatever class the model
  predicts; the transfer setting, and the kit's headline since B_test is given) and
  ``iou_amodal_cls`` (0 when the predicted class is wrong).
* Every detection that answers a box counts, matched or fallback; nothing is dropped, so a miss
  costs what its mask is worth. ``matched`` in the per-object rows tells them apart.
* Instances that are not evaluated (level -1: over the last occlusion bound, empty visible
  mask, too small or filtered by the protocol) are skipped, as Bayesian-Amodal skips them.
* COCO AP (``coco_ap``) runs the model without boxes and scores its detections' amodal (fused)
  and visible masks against every ground-truth instance of the evaluated images with
  pycocotools' COCOeval (segm), class-aware or class-agnostic (``useCats=0``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys

import numpy as np
import torch

from .model import PROMPTS, check_prompts  # PROMPTS: how a given box picks its location

LEVEL_COLUMNS = ("iou_amodal", "iou_amodal_cls", "iou_visible", "iou_occluded")
# protocol diagnostics, summarised per level next to the IoUs where the rows have them
RATE_COLUMNS = ("fallback", "wrong_instance")


def mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-object IoU of [n,H,W] boolean masks over the whole image; NaN where both are empty."""
    pred, gt = pred.flatten(1).bool(), gt.flatten(1).bool()
    inter = (pred & gt).sum(1).double()
    union = (pred | gt).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(union, float("nan")))


def test_box_kind(model) -> str:
    """'visible' or 'amodal': the kind of box B_test the model answers (its detector's boxes)."""
    return getattr(getattr(model, "cfg", None), "detect_box", "visible")


def predict_one(model, image, boxes=None, prompt: str = "box") -> dict:
    """``model.predict`` for one image on the model's device; results back on the CPU."""
    return predict_one_prompts(model, image, boxes, (prompt,))[prompt]


def predict_one_prompts(model, image, boxes=None, prompts=PROMPTS) -> dict:
    """``{prompt: predict_one(model, image, boxes, prompt)}`` with the image's features
    computed once (``BladeModel.predict_prompts``; a model without it, e.g. ``BoxFill``, is
    asked once per prompt)."""
    outs = predict_prompts_on_device(model, [image], None if boxes is None else [boxes], prompts)
    return {p: {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in out[0].items()}
            for p, out in outs.items()}


def model_device(model) -> torch.device:
    """The device of a model's parameters (CPU for one without, e.g. ``BoxFill``)."""
    params = model.parameters() if hasattr(model, "parameters") else iter(())
    return next(params, torch.zeros(())).device


def predict_prompts_on_device(model, images: list, boxes=None, prompts=PROMPTS) -> dict:
    """``{prompt: one result dict per image}`` for a batch of images (and given boxes, one
    [k,4] tensor per image), the inputs moved to the model's device and the answers left
    there."""
    prompts = check_prompts(prompts)
    device = model_device(model)
    images = [img.to(device) for img in images]
    given = None if boxes is None else [b.to(device) for b in boxes]
    if hasattr(model, "predict_prompts"):
        return model.predict_prompts(images, boxes=given, prompts=prompts)
    return {p: model.predict(images, boxes=given, prompt=p) for p in prompts}


def wrong_instance(pred: torch.Tensor, gt_all: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """[k] bool: predicted mask j overlaps another ground-truth instance of the image more
    (by IoU) than its own. pred [k,H,W], gt_all [n,H,W] every instance's amodal mask,
    own [k] the index of each prediction's instance in gt_all."""
    if len(pred) == 0 or gt_all.shape[0] < 2:
        return torch.zeros(len(pred), dtype=torch.bool, device=pred.device)
    p = pred.flatten(1).float()
    g = gt_all.flatten(1).float()
    inter = p @ g.t()  # [k,n] pixel counts, exact in float32 below 2^24 pixels (TF32 off)
    union = p.sum(1, keepdim=True) + g.sum(1)[None] - inter
    iou = inter / union.clamp(min=1)
    rows = torch.arange(len(pred), device=pred.device)
    own = own.to(pred.device)
    own_iou = iou[rows, own]
    iou[rows, own] = -1.0
    return iou.amax(1) > own_iou


def expansion_scores(pred: torch.Tensor, gt: torch.Tensor) -> dict:
    """Does a mask expand too little or too much? pred, gt [k,H,W] bool (predicted and true
    amodal masks) -> per object ``area_ratio`` = |pred| / |gt|, ``precision`` =
    |pred & gt| / |pred| (0 for an empty prediction) and ``recall`` = |pred & gt| / |gt|, each a
    [k] tensor. IoU alone cannot tell a mask that is too small from one too large; these can."""
    p, g = pred.flatten(1).float(), gt.flatten(1).float()
    inter, area_p, area_g = (p * g).sum(1), p.sum(1), g.sum(1).clamp(min=1)
    return {"area_ratio": area_p / area_g, "precision": inter / area_p.clamp(min=1),
            "recall": inter / area_g}


@torch.no_grad()
def expansion(model, dataset, scenes: int | None = None, threshold: float = 0.5,
              prompt: str = "box"):
    """``expansion_scores`` of every evaluated object of the first ``scenes`` items of an
    eval-mode dataset, the model given its test box (B_test); a DataFrame with ``level``
    (FG-k), ``area_ratio``, ``precision``, ``recall``. Summarise per level with the median
    area ratio (skewed) and the mean precision and recall, as ``results/expansion.py`` does."""
    import pandas as pd

    kind = test_box_kind(model)
    rows = []
    for i in range(len(dataset) if scenes is None else min(scenes, len(dataset))):
        item = dataset[i]
        keep = item["evaluated"].nonzero().flatten()
        if not len(keep):
            continue
        out = predict_one(model, item["image"], item[f"{kind}_boxes"][keep], prompt=prompt)
        s = expansion_scores(out["masks"] > threshold, item["amodal_masks"][keep])
        for j, k in enumerate(keep.tolist()):
            rows.append({"level": f"FG-{int(item['levels'][k])}",
                         **{name: float(v[j]) for name, v in s.items()}})
    return pd.DataFrame(rows, columns=["level", "area_ratio", "precision", "recall"])


@torch.no_grad()
def evaluate_item(model, item: dict, threshold: float = 0.5, test_box: str | None = None,
                  prompt: str = "box") -> list:
    """One eval-mode dataset item -> one row (dict) per evaluated instance."""
    return evaluate_item_prompts(model, item, threshold, test_box, (prompt,))[prompt]


@torch.no_grad()
def evaluate_item_prompts(model, item: dict, threshold: float = 0.5, test_box: str | None = None,
                          prompts=PROMPTS) -> dict:
    """``{prompt: evaluate_item(..., prompt)}``, the image's features computed once."""
    return evaluate_items_prompts(model, [item], threshold, test_box, prompts)[0]


@torch.no_grad()
def evaluate_items_prompts(model, items: list, threshold: float = 0.5,
                           test_box: str | None = None, prompts=PROMPTS) -> list:
    """``[evaluate_item_prompts(model, item, ...) for item in items]`` with the images that
    have evaluated objects run through the network together, in batches of equal image size
    (padding a smaller image to a larger one's size would change what the group-normalised
    heads see). The masks stay on the model's device until the IoUs are computed; per image
    and prompt a handful of transfers bring the columns back, not one per object."""
    prompts = check_prompts(prompts)
    test_box = test_box or test_box_kind(model)
    keeps = [item["evaluated"].nonzero().flatten() for item in items]
    results = [{p: [] for p in prompts} for _ in items]
    run = [i for i, keep in enumerate(keeps) if len(keep)]  # items with evaluated objects
    answers = predict_by_size(model, [items[i]["image"] for i in run],
                              [items[i][f"{test_box}_boxes"][keeps[i]] for i in run], prompts)
    for i, out in zip(run, answers):
        dev = out[prompts[0]]["masks"].device
        gt = {k: items[i][k].to(dev) for k in ("amodal_masks", "visible_masks")}
        for p in prompts:
            results[i][p] = _object_rows(items[i], gt, keeps[i], out[p], threshold, test_box,
                                         p)
    return results


def predict_by_size(model, images: list, boxes=None, prompts=PROMPTS) -> list:
    """One ``{prompt: answer}`` per image, in order, the images of equal size run through the
    network together (padding a smaller image to a larger one's size would change what the
    group-normalised heads see); ``boxes``: one [k,4] tensor per image, or None."""
    prompts = check_prompts(prompts)
    groups = {}  # image size -> indices, in order
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape[-2:]), []).append(i)
    answers = [None] * len(images)
    for run in groups.values():
        outs = predict_prompts_on_device(model, [images[i] for i in run],
                                         None if boxes is None else [boxes[i] for i in run],
                                         prompts)
        for b, i in enumerate(run):
            answers[i] = {p: outs[p][b] for p in prompts}
    return answers


def _object_rows(item, gt, keep, out, threshold, test_box, prompt) -> list:
    """The per-object rows of one item from the model's answers ``out`` to its given boxes;
    ``gt``: the item's ``amodal_masks`` and ``visible_masks`` on the answers' device."""
    pred_a = out["masks"] > threshold
    pred_v = out["visible"] > threshold
    keep_d = keep.to(pred_a.device)
    gt_a, gt_v = gt["amodal_masks"][keep_d], gt["visible_masks"][keep_d]
    iou_a, iou_v = mask_iou(pred_a, gt_a), mask_iou(pred_v, gt_v)
    gt_o = gt_a & ~gt_v
    iou_o = mask_iou(pred_a & ~pred_v, gt_o)
    iou_o[gt_o.flatten(1).sum(1) == 0] = float("nan")
    wrong = wrong_instance(pred_a, gt["amodal_masks"], keep_d)
    # one host transfer per column, then plain Python numbers
    iou_a, iou_v, iou_o = iou_a.tolist(), iou_v.tolist(), iou_o.tolist()
    wrong, pred_labels = wrong.tolist(), out["labels"].tolist()
    matched = out["matched"].tolist() if "matched" in out else [True] * len(keep)
    labels = item["labels"][keep].tolist()
    rows = []
    for j, k in enumerate(keep.tolist()):
        correct = pred_labels[j] == labels[j]
        row = {
            "image_id": item["image_id"], "ann_id": item["ann_ids"][k],
            "label": labels[j], "pred_label": pred_labels[j],
            "level": int(item["levels"][k]), "occlusion": float(item["occlusion"][k]),
            "test_box": test_box, "prompt": prompt,
            "matched": bool(matched[j]),
            "iou_amodal": iou_a[j], "iou_visible": iou_v[j],
            "iou_occluded": iou_o[j],
            "iou_amodal_cls": iou_a[j] * float(correct), "correct": correct,
            "wrong_instance": float(wrong[j]),
        }
        row["fallback"] = float(not row["matched"])
        if "bg_level" in item:
            row["bg_level"] = int(item["bg_level"])
        rows.append(row)
    return rows


class BoxFill:
    """A reference "model" without learning: the given box itself, filled, is the mask.

    ``BoxFill("amodal")`` answers each amodal box B_a with B_a filled: how much the known-c
    setting gives away before any network is trained. Its labels are -1 (no classes), so only
    the class-agnostic columns mean something; ``matched`` is always True.
    """

    def __init__(self, kind: str = "amodal"):
        self.cfg = type("BoxFillConfig", (), {"detect_box": kind})()

    def predict(self, images, boxes=None, prompt: str = "box"):
        from .boxes import box_bitmasks

        if boxes is None:
            raise ValueError("BoxFill needs the given boxes (it has no detector)")
        out = []
        for img, b in zip(images, boxes):
            h, w = img.shape[-2:]
            m = box_bitmasks(b, h, w)[:, 0]
            out.append({"masks": m, "visible": m, "amodal": m, "region": torch.zeros_like(m),
                        "labels": torch.full((len(b),), -1, dtype=torch.long),
                        "matched": torch.ones(len(b), dtype=torch.bool)})
        return out


def evaluate(model, dataset, limit: int | None = None, progress: bool = True,
             test_box: str | None = None, prompt: str = "box", batch_size: int = 1,
             workers: int = 0):
    """Per-object rows (a pandas DataFrame) for the first ``limit`` items of an eval dataset,
    each given box answered as ``prompt`` says (``BladeModel.predict``); ``batch_size`` and
    ``workers`` as in ``evaluate_prompts``."""
    return evaluate_prompts(model, dataset, limit, progress, test_box, (prompt,), batch_size,
                            workers)[prompt]


class _Reading(torch.utils.data.Dataset):
    """Items 0..n-1 of a dataset for the evaluation's loader. In a worker process a user error
    (a bad image or annotation) is returned, not raised, so that the main process raises it
    with its own message (torch would wrap it in a message about the worker)."""

    def __init__(self, dataset, n: int):
        self.dataset, self.n = dataset, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        from .utils import item_or_error

        return item_or_error(self.dataset, i)


def _chunks(dataset, n: int, batch_size: int, workers: int):
    """Lists of ``batch_size`` consecutive items of the first ``n``, read by ``workers`` loader
    processes (0: here); an item a worker could not read raises its own error here."""
    for name, value, low in (("batch_size", batch_size, 1), ("workers", workers, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    chunks = torch.utils.data.DataLoader(
        _Reading(dataset, n), batch_size=batch_size, shuffle=False, collate_fn=list,
        num_workers=workers, generator=torch.Generator())  # its seed: not from the global RNG
    for items in chunks:
        for item in items:
            if isinstance(item, BaseException):  # a worker could not read an image
                raise item
        yield items


def evaluate_prompts(model, dataset, limit: int | None = None, progress: bool = True,
                     test_box: str | None = None, prompts=PROMPTS, batch_size: int = 1,
                     workers: int = 0) -> dict:
    """``{prompt: evaluate(..., prompt=prompt)}`` in one pass over the data: each image is
    read and run through the network once for all prompts (the same rows as separate calls;
    three prompts in 0.38-0.48 of the time of three calls, ``benchmarks/bench_eval.py``).

    ``batch_size`` images are read together and those of equal size go through the network
    as one batch (for a GPU; the rows equal those of one image at a time within float
    rounding, since convolutions may sum in another order for another batch size; the default
    1 is the protocol's reference), and ``workers`` loader processes read the next images
    meanwhile (0: read in this process; a bad image read by a worker is reported with its own
    message, as without workers). Evaluation leaves torch's global random state untouched."""
    prompts = check_prompts(prompts)
    import pandas as pd
    from tqdm.auto import tqdm

    n = len(dataset) if limit is None else min(limit, len(dataset))
    rows = {p: [] for p in prompts}
    with tqdm(total=n, desc="evaluate", disable=not progress) as bar:
        for items in _chunks(dataset, n, batch_size, workers):
            for answers in evaluate_items_prompts(model, items, test_box=test_box,
                                                  prompts=prompts):
                for p, r in answers.items():
                    rows[p] += r
            bar.update(len(items))
    return {p: pd.DataFrame(r) for p, r in rows.items()}


def summarize(rows, columns=None, by: str = "level"):
    """Per-level means (levels as 'FG-k') plus a 'mean' row: the mean of the level means.
    ``columns`` default: the IoU columns, and the protocol rates (``fallback``: share of
    given boxes answered by the fallback location; ``wrong_instance``) where the rows have them.

    ``by="cell"``: one row per FG x BG cell ('FG-2/BG-1'), FG-0 pooled over BG levels as the
    paper's Table 1 does, and the mean over the cells."""
    import pandas as pd

    df = pd.DataFrame(rows)
    if df.empty:
        raise ValueError("no evaluated objects to summarize")
    if columns is None:
        columns = list(LEVEL_COLUMNS) + [c for c in RATE_COLUMNS if c in df]
    if by == "cell":
        if "bg_level" not in df:
            raise ValueError("FG x BG cells need images with a 'bg_level' (synthetic, "
                             "OccludedVehicles-style data)")
        key = np.where(df["level"] == 0, "FG-0",
                       "FG-" + df["level"].astype(str) + "/BG-" + df["bg_level"].astype(str))
        df = df.assign(group=key)
    else:
        df = df.assign(group="FG-" + df["level"].astype(str))
    table = df.groupby("group")[list(columns)].mean()
    table.insert(0, "objects", df.groupby("group").size())
    table.index.name = None
    mean = table[list(columns)].mean(axis=0)  # every level (cell) weighs the same (paper)
    table.loc["mean"] = [int(table["objects"].sum()), *mean.to_numpy(dtype=np.float64)]
    table["objects"] = table["objects"].astype(int)
    return table


def checkpoint_curve(paths, dataset, limit: int | None = None, prompt: str = "box",
                     progress: bool = False):
    """Validation IoU against training iteration: each checkpoint of ``paths`` (e.g. a run's
    ``iter_*.pt``) evaluated with the paper's protocol on the first ``limit`` items of an
    eval-mode dataset. Returns a tidy DataFrame: ``iteration``, ``level`` (FG-k and ``mean``),
    ``iou_amodal``, ``iou_visible``, ``objects``; one block per checkpoint, in iteration order.
    Answers "would longer training help?" for one run."""
    import pandas as pd

    from .engine import load_model

    frames = []
    for path in paths:
        model, ckpt = load_model(path)
        levels = summarize(evaluate(model, dataset, limit=limit, progress=progress, prompt=prompt))
        frames.append(levels[["objects", "iou_amodal", "iou_visible"]].rename_axis("level")
                      .reset_index().assign(iteration=int(ckpt["iteration"])))
    if not frames:
        return pd.DataFrame(columns=["iteration", "level", "iou_amodal", "iou_visible", "objects"])
    out = pd.concat(frames, ignore_index=True).sort_values("iteration", kind="stable")
    return out[["iteration", "level", "iou_amodal", "iou_visible", "objects"]].reset_index(drop=True)


def bootstrap_levels(rows, value: str = "iou_amodal", n: int = 1000, seed: int = 0,
                     ci: float = 0.95):
    """Uncertainty of the per-level means over the objects: resample each level's objects with
    replacement ``n`` times (a percentile bootstrap, seeded) and report, per level and for the
    mean of the level means, the observed value and the ``ci`` interval, in the units of
    ``value``. It measures how much the numbers would move with other validation objects of the
    same kind, not with another training run (that is the seed spread, notebook 09)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    if df.empty:
        raise ValueError("no evaluated objects to bootstrap")
    rng = np.random.default_rng(seed)
    lo_q, hi_q = (1 - ci) / 2, 1 - (1 - ci) / 2
    out, draws = {}, []
    for level, group in df.groupby("level"):
        x = group[value].to_numpy(dtype=np.float64)
        means = x[rng.integers(0, len(x), size=(n, len(x)))].mean(axis=1)  # [n]
        draws.append(means)
        out[f"FG-{level}"] = (x.mean(), *np.quantile(means, [lo_q, hi_q]), len(x))
    level_means = np.stack(draws).mean(axis=0)  # the headline, recomputed per draw
    observed = np.mean([v[0] for v in out.values()])
    out["mean"] = (observed, *np.quantile(level_means, [lo_q, hi_q]), len(df))
    table = pd.DataFrame.from_dict(out, orient="index", columns=[value, "low", "high", "objects"])
    table["objects"] = table["objects"].astype(int)
    return table


# -- COCO AP -------------------------------------------------------------------------------------
def _coco_records(i, item, out, images, gts, dets):
    """Append image ``i``'s COCO records: its entry, its ground truths (amodal and visible
    masks, RLE) and the model's detections ``out`` (RLE, one pycocotools call per kind)."""
    from .data.masks import encode_many, rle_area, rle_box

    h, w = item["image"].shape[-2:]
    images.append({"id": i + 1, "height": int(h), "width": int(w)})
    for kind in ("amodal", "visible"):
        masks = item[f"{kind}_masks"].numpy()  # [k,H,W]
        kept = np.flatnonzero(masks.reshape(len(masks), -1).any(1))  # empty masks left out
        for k, rle in zip(kept, encode_many(masks[kept])):
            x1, y1, x2, y2 = rle_box(rle).tolist()
            gts[kind].append({
                "id": len(gts[kind]) + 1, "image_id": i + 1, "iscrowd": 0,
                "category_id": int(item["labels"][k]) + 1, "area": float(rle_area(rle)),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "segmentation": rle})
    labels, scores = out["labels"].tolist(), out["scores"].tolist()
    for kind, key in (("amodal", "masks"), ("visible", "visible")):
        binary = (out[key] > 0.5).cpu().numpy()  # thresholded on the device: bools travel
        for j, rle in enumerate(encode_many(binary)):  # one pycocotools call per image
            dets[kind].append({"image_id": i + 1, "category_id": labels[j] + 1,
                               "score": scores[j], "segmentation": rle})


@torch.no_grad()
def coco_ap(model, dataset, limit: int | None = None, class_agnostic: bool = False,
            progress: bool = True, batch_size: int = 1, workers: int = 0) -> dict:
    """COCO mask AP / AP50 / AP75 of the amodal (fused) and visible masks, model run without
    boxes. Returns ``{"amodal_AP": ..., "amodal_AP50": ..., ..., "visible_AP75": ...}``.

    ``batch_size``, ``workers`` as in :func:`evaluate_prompts`: images of equal size go
    through the network together (for a GPU; the default 1 is the reference), the detections
    are listed in image order either way."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from tqdm.auto import tqdm

    n = len(dataset) if limit is None else min(limit, len(dataset))
    images, gts = [], {"amodal": [], "visible": []}
    dets = {"amodal": [], "visible": []}
    i = 0  # the image's index; its COCO id is i + 1
    with tqdm(total=n, desc="COCO AP", disable=not progress) as bar:
        for items in _chunks(dataset, n, batch_size, workers):
            answers = predict_by_size(model, [item["image"] for item in items],
                                      prompts=("box",))
            for item, out in zip(items, answers):
                _coco_records(i, item, out["box"], images, gts, dets)
                i += 1
            bar.update(len(items))
    n_cls = int(getattr(getattr(model, "cfg", None), "num_classes", 0)) or 1
    categories = [{"id": c + 1, "name": str(c)} for c in range(max(n_cls, 1 + max(
        [a["category_id"] for a in gts["amodal"]] + [0])))]
    result = {}
    for kind in ("amodal", "visible"):
        if not gts[kind] or not dets[kind]:
            result.update({f"{kind}_AP": 0.0, f"{kind}_AP50": 0.0, f"{kind}_AP75": 0.0})
            continue
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
            gt = COCO()
            gt.dataset = {"images": images, "annotations": gts[kind], "categories": categories}
            gt.createIndex()
            dt = gt.loadRes(dets[kind])
            ev = COCOeval(gt, dt, "segm")
            ev.params.useCats = 0 if class_agnostic else 1
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        result.update({f"{kind}_AP": float(ev.stats[0]), f"{kind}_AP50": float(ev.stats[1]),
                       f"{kind}_AP75": float(ev.stats[2])})
    return result


# -- CLI -----------------------------------------------------------------------------------------
def check_classes(ckpt_classes, dataset, class_agnostic: bool, ann_file: str):
    """Class-aware scoring needs the checkpoint's classes, in the same order, in the data."""
    if class_agnostic or list(ckpt_classes) == list(dataset.classes):
        return
    raise SystemExit(
        f"error: the checkpoint was trained on classes {list(ckpt_classes)}, {ann_file} has "
        f"{list(dataset.classes)}: class-aware scoring is impossible; pass --class-agnostic "
        f"(the paper's transfer setting) to score the masks whatever class is predicted")


def run(checkpoint: str, ann: str, images: str, out: str, schema: str = "auto",
        protocol: str | None = None, class_agnostic: bool = False, limit: int | None = None,
        coco: bool = True, progress: bool = True, device: str = "cpu",
        prompt: str = "box", batch_size: int = 1, workers: int = 0) -> dict:
    """Evaluate a checkpoint on an annotation file; writes ``objects.csv``, ``levels.csv``
    (and ``cells.csv`` where images have BG levels) and ``metrics.json`` under ``out``."""
    from .data import AmodalDataset
    from .engine import load_model

    if limit is not None and limit < 1:
        raise ValueError(f"limit (--limit) must be >= 1 images, got {limit}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"{out}: --out is a file; give a folder for the results")
    model, ckpt = load_model(checkpoint, device=device)
    dataset = AmodalDataset(ann, images, mode="eval", schema=schema, protocol=protocol)
    check_classes(ckpt["classes"], dataset, class_agnostic, ann)
    rows = evaluate(model, dataset, limit=limit, progress=progress, prompt=prompt,
                    batch_size=batch_size, workers=workers)
    if rows.empty:  # nothing to score: say so, and write nothing
        n = len(dataset) if limit is None else min(limit, len(dataset))
        raise ValueError(f"{ann}: no evaluated objects in {n} image(s) (protocol {protocol}): "
                         f"every instance is filtered, over the last occlusion level or without "
                         f"a visible part; nothing written to {out}")
    os.makedirs(out, exist_ok=True)
    rows.to_csv(os.path.join(out, "objects.csv"), index=False)
    levels = summarize(rows)
    levels.to_csv(os.path.join(out, "levels.csv"), index_label="level")
    cells = None
    if "bg_level" in rows:
        cells = summarize(rows, by="cell")
        cells.to_csv(os.path.join(out, "cells.csv"), index_label="cell")
    metrics = {"checkpoint": os.path.abspath(checkpoint), "ann": os.path.abspath(ann),
               "schema": dataset.schema, "protocol": protocol, "class_agnostic": class_agnostic,
               "test_box": test_box_kind(model), "prompt": prompt, "objects": int(len(rows)),
               "headline": "iou_amodal" if class_agnostic else "iou_amodal_cls",
               "mean_iou_amodal": float(levels.loc["mean", "iou_amodal"]),
               "mean_iou_amodal_cls": float(levels.loc["mean", "iou_amodal_cls"]),
               "fallback_rate": float(1 - rows["matched"].mean()),
               "wrong_instance_rate": float(rows["wrong_instance"].mean())}
    if coco:
        metrics.update(coco_ap(model, dataset, limit=limit, class_agnostic=class_agnostic,
                               progress=progress, batch_size=batch_size, workers=workers))
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    return {"levels": levels, "cells": cells, "metrics": metrics, "rows": rows}


def format_levels(levels, class_agnostic: bool) -> str:
    """The per-level table as text, IoU in percent (as the paper's tables)."""
    head = "iou_amodal" if class_agnostic else "iou_amodal_cls"
    cols = [head, "iou_visible", "iou_occluded"]
    shown = levels[["objects"] + cols].copy()
    shown[cols] = (shown[cols] * 100).round(1)
    shown = shown.rename(columns={head: "amodal IoU" + ("" if class_agnostic else " (class-aware)"),
                                  "iou_visible": "visible IoU", "iou_occluded": "occluded IoU"})
    return shown.to_string()


def main(argv=None):
    """``python -m blade.evaluate``; errors about the input are one line (``--debug``: the
    traceback)."""
    from .utils import run_cli

    return run_cli(_main, argv)


def _main(argv):
    from .data.dataset import SCHEMAS
    from .utils import CLIParser, int_at_least, pick_device

    p = CLIParser(prog="python -m blade.evaluate", description=(
        "Evaluate a checkpoint with the paper's protocol (per-object amodal IoU from the given "
        "boxes, per occlusion level, mean of the level means) and COCO mask AP."))
    p.add_argument("--checkpoint", required=True, help="a .pt written by blade.train")
    p.add_argument("--ann", required=True, help="annotation JSON (any supported schema)")
    p.add_argument("--images", required=True, help="folder the annotations' file_name are in")
    p.add_argument("--out", required=True, help="folder for objects.csv, levels.csv, metrics.json")
    p.add_argument("--schema", default="auto", choices=("auto",) + tuple(SCHEMAS))
    p.add_argument("--protocol", default=None, choices=("kins", "cocoa_cls", "synthetic"),
                   help="the paper's filters and occlusion levels for that dataset")
    p.add_argument("--class-agnostic", action="store_true",
                   help="score each given box's mask whatever class is predicted (transfer)")
    p.add_argument("--prompt", default="box", choices=PROMPTS, help=(
        "how a given box picks the location whose parameters make its masks: 'box' (default, "
        "the headline) takes the location training would make positive for that box, with no "
        "detector threshold involved; 'box_match' takes, among those locations, the one whose "
        "regressed box fits the given box best; 'detections' takes the best-overlapping "
        "detection (Bayesian-Amodal's reading), with a fallback when none overlaps enough"))
    p.add_argument("--limit", type=int_at_least(1), default=None, help="only the first N images")
    p.add_argument("--no-coco", action="store_true", help="skip COCO AP")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int_at_least(1), default=1, help=(
        "images per forward pass (for a GPU; 1, the default, is the reference: another batch "
        "size gives the same rows within float rounding)"))
    p.add_argument("--workers", type=int_at_least(0), default=0,
                   help="loader processes reading the next images (default 0: none)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    for path, what in ((args.checkpoint, "checkpoint"), (args.ann, "annotation file"),
                       (args.images, "image folder")):
        if not os.path.exists(path):
            raise SystemExit(f"error: {what} {path} does not exist")
    if not os.path.isdir(args.images):
        raise SystemExit(f"error: {args.images}: --images is a file; give the image folder")
    pick_device(args.device)  # a device name that is not one, or not here: one line
    res = run(args.checkpoint, args.ann, args.images, args.out, schema=args.schema,
              protocol=args.protocol, class_agnostic=args.class_agnostic, limit=args.limit,
              coco=not args.no_coco, progress=not args.no_progress, device=args.device,
              prompt=args.prompt, batch_size=args.batch_size, workers=args.workers)
    print(format_levels(res["levels"], args.class_agnostic))
    m = res["metrics"]
    if "amodal_AP" in m:
        print(f"COCO mask AP: amodal {100 * m['amodal_AP']:.1f} (AP50 {100 * m['amodal_AP50']:.1f})"
              f", visible {100 * m['visible_AP']:.1f} (AP50 {100 * m['visible_AP50']:.1f})")
    print(f"written to {args.out}")
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
