"""One dataset class for every supported amodal annotation schema.

Schemas (auto-detected from the first annotation record, or named with ``schema=``):

============  ==================================================================================
synthetic     this kit's benchmark (:mod:`blade.data.synthetic`): COCOA-cls records plus
              ``visible_bbox``, ``depth_order``, ``fg_level``, ``evaluated``
cocoa_cls     COCOA-cls (Follmann et al.): one record per instance, ``segmentation`` (amodal
              polygon or RLE), ``bbox`` (amodal XYWH), ``visible_mask`` RLE, optional
              ``invisible_mask`` RLE, ``occlude_rate``, ``category_id``
cocoa         COCOA (Zhu et al.): one record per *image* with ``regions[]``; each region has a flat
              amodal polygon ``segmentation``, ``occlude_rate``, ``order``, ``isStuff`` and, only
              where occluded, ``visible_mask``/``invisible_mask`` RLE. Class-agnostic (one class)
kins2019      KINS ``instances_{train,val}.json``: ``segmentation`` (amodal polygon), ``bbox``
              (amodal XYWH), ``inmodal_seg`` (visible RLE), ``inmodal_bbox`` (visible XYWH)
kins2020      KINS ``update_{train,test}_2020.json``: ``a_segm``/``a_bbox`` (amodal),
              ``i_segm``/``i_bbox`` (visible), polygons, boxes XYWH
============  ==================================================================================

Box-level supervision is the point of the kit: with ``mode="train"`` items carry boxes and
labels only; masks are never decoded or returned. Where a schema has no visible-box field the
visible box is read off the visible-mask RLE with ``pycocotools.mask.toBbox`` when the file is
indexed (the equivalent of an annotator drawing the box), never decoded to pixels.
``mode="eval"`` adds the decoded masks, occlusion rates and occlusion levels. ``mode="masks"``
is training with masks: the eval fields on training data, for the fully supervised upper
bound only (the one configuration of the kit allowed to read masks).

Policies for bad input (every error names the file, the record and what is wrong):

* unreadable JSON, a record of the wrong type, a missing key, an unknown ``image_id`` or
  ``category_id``, a duplicate image, category or annotation id, NaN or infinity in any number
  (box, polygon, ``occlude_rate``, image size), an image size that is not a positive whole
  number, an ``occlude_rate`` outside [0, 1], an RLE whose size disagrees with the image or
  whose counts are not valid run lengths covering it, a polygon reaching outside the image, a
  ``file_name`` that is absolute or climbs out of the image folder with ``..`` (unless
  ``allow_outside_root=True``): ``AnnotationError``, at construction, in every mode;
* a missing image file: ``AnnotationError`` at construction (listing the first few); an image
  that cannot be read (empty, corrupt, truncated, a decompression bomb, 32-bit or float
  pixels) or whose size disagrees with its record: ``AnnotationError`` naming the file and the
  image id when the item is loaded (16-bit, greyscale, palette and RGBA images are converted,
  see :mod:`blade.data.images`);
* a box partly outside the image is clipped to it; a box with zero area (after clipping) is
  skipped; both are counted in ``dataset.report`` and announced with one warning. With
  ``strict=True`` they raise instead;
* a visible box reaching outside its amodal box is clamped into it (as Bayesian-Amodal does),
  counted in ``report``.

Protocol filters (``protocol=`` or the individual options): ``categories`` drops instances of
other classes; ``min_amodal_height`` and ``level_bounds`` only mark instances as not evaluated
(they still exist in the image, for training and for the overlap regions).
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections import defaultdict

import numpy as np
import torch
from PIL import Image

from . import masks as M
from .images import ImageReadError, read_rgb
from .masks import AnnotationError, is_int, is_number, where

SCHEMAS = ("synthetic", "cocoa_cls", "cocoa", "kins2019", "kins2020")

# Level upper bounds: level 0 is rate == 0, level k is bounds[k-1] < rate <= bounds[k];
# above bounds[-1] the instance is not evaluated. Bayesian-Amodal's inclusive bins
# [0.0001, 0.3], [0.3001, 0.6], ... differ from these only for rates within 1e-4 of a bound.
KINS_LEVELS = (0.0, 0.3, 0.6, 0.9)  # paper / Bayesian-Amodal Table 2
COCOA_CLS_LEVELS = (0.0, 0.2, 0.4, 0.7)  # paper / Bayesian-Amodal Table 3
SYNTHETIC_LEVELS = KINS_LEVELS
KINS_VEHICLES = ("cyclist", "car", "tram", "truck", "van")  # Bayesian-Amodal 'kinsv'
COCOA_VEHICLES = ("airplane", "bicycle", "bus", "car", "motorcycle")  # its 'occveh' in COCO names

PROTOCOLS = {
    "kins": {"categories": KINS_VEHICLES, "min_amodal_height": 50.0, "level_bounds": KINS_LEVELS},
    "cocoa_cls": {"categories": COCOA_VEHICLES, "level_bounds": COCOA_CLS_LEVELS},
    "synthetic": {"level_bounds": SYNTHETIC_LEVELS},
}


def occlusion_level(rate: float, bounds=KINS_LEVELS) -> int:
    """Occlusion rate -> level 0..len(bounds)-1, or -1 above the last bound."""
    for k, hi in enumerate(bounds):
        if rate <= hi:
            return k
    return -1


def detect_schema(data: dict, ann_file: str = "<annotations>") -> str:
    """Name the schema of a loaded annotation file from its keys."""
    anns = data.get("annotations") or []
    if not anns:
        raise AnnotationError(f"{ann_file}: no annotations to detect the schema from; "
                              f"pass schema= one of {SCHEMAS}")
    first = anns[0]
    if not isinstance(first, dict):
        raise AnnotationError(f"{ann_file}: annotations must be objects, got "
                              f"{type(first).__name__}")
    info = data.get("info") or {}
    if "regions" in first:
        return "cocoa"
    if "a_segm" in first or "a_bbox" in first:
        return "kins2020"
    if "inmodal_seg" in first or "inmodal_bbox" in first:
        return "kins2019"
    if "visible_mask" in first or "invisible_mask" in first:
        if isinstance(info, dict) and info.get("generator") == "blade.data.synthetic":
            return "synthetic"
        return "cocoa_cls"
    raise AnnotationError(f"{ann_file}: cannot tell the schema from the keys of the first "
                          f"annotation {sorted(first)}; pass schema= one of {SCHEMAS}")


def load_json(ann_file: str) -> dict:
    try:
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise AnnotationError(f"{ann_file}: annotation file not found") from None
    except IsADirectoryError:
        raise AnnotationError(f"{ann_file}: is a folder, not an annotation file") from None
    except UnicodeDecodeError:
        raise AnnotationError(f"{ann_file}: not a text (UTF-8 JSON) file") from None
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{ann_file}: not valid JSON ({e.msg} at line {e.lineno}, "
                              f"column {e.colno})") from None
    except (OSError, ValueError, RecursionError) as e:  # unreadable, or absurdly nested
        raise AnnotationError(f"{ann_file}: cannot read it ({type(e).__name__}: "
                              f"{str(e)[:200]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) \
            or not isinstance(data.get("images"), list):
        raise AnnotationError(f"{ann_file}: expected a COCO-style object with 'images' and "
                              f"'annotations' lists")
    return data


def _need(rec: dict, key: str, ann_file: str, ann_id):
    if key not in rec:
        raise AnnotationError(f"{where(ann_file, ann_id)}: missing key '{key}' (record has "
                              f"{sorted(rec)})")
    return rec[key]


def _object(rec, what: str, ann_file: str) -> dict:
    """A record that must be a JSON object."""
    if not isinstance(rec, dict):
        raise AnnotationError(f"{ann_file}: {what} must be an object, got "
                              f"{type(rec).__name__} {str(rec)[:60]!r}")
    return rec


def _record_id(value, loc: str, key: str, integer: bool = False):
    """An id (image, annotation, category): an integer, or where allowed a string."""
    if is_int(value) or (not integer and isinstance(value, str) and value):
        return value
    kind = "an integer" if integer else "an integer or a string"
    raise AnnotationError(f"{loc}, key '{key}': must be {kind}, got {value!r}")


def _xywh_box(value, ann_file, ann_id, key) -> np.ndarray:
    if not (isinstance(value, (list, tuple)) and len(value) == 4 and all(map(is_number, value))):
        raise AnnotationError(f"{where(ann_file, ann_id, key)}: box must be 4 numbers "
                              f"[x, y, w, h], got {value!r}")
    if not all(map(math.isfinite, value)):
        raise AnnotationError(f"{where(ann_file, ann_id, key)}: box {list(value)} has a "
                              f"non-finite number (NaN or infinity)")
    x, y, w, h = (float(v) for v in value)
    return np.array([x, y, x + w, y + h], dtype=np.float32)


def _occlusion(value, ann_file, ann_id, key="occlude_rate"):
    """``occlude_rate``: absent/null (computed from the masks) or a number in [0, 1]."""
    if value is None:
        return None
    if not is_number(value) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise AnnotationError(f"{where(ann_file, ann_id, key)}: must be a number in [0, 1], "
                              f"got {value!r}")
    return float(value)


def _image_size(img: dict, key: str, loc: str) -> int:
    value = img[key]
    if not (is_number(value) and math.isfinite(value) and float(value).is_integer()
            and value >= 1):
        raise AnnotationError(f"{loc}, key '{key}': must be a positive whole number of pixels, "
                              f"got {value!r}")
    return int(value)


def _check_file_name(name, loc: str, allow_outside_root: bool) -> str:
    """A file name relative to the image folder that stays inside it (unless allowed)."""
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise AnnotationError(f"{loc}, key 'file_name': must be a non-empty path, got {name!r}")
    escapes = os.path.isabs(name) or ".." in re.split(r"[\\/]", name)
    if escapes and not allow_outside_root:
        raise AnnotationError(f"{loc}, key 'file_name': {name!r} points outside the image "
                              f"folder (absolute, or '..'); refused. Pass "
                              f"allow_outside_root=True to AmodalDataset to read it anyway")
    return name


def _check_images(records, ann_file: str, allow_outside_root: bool) -> dict:
    """Image records -> {id: record with int height/width}; every field checked once."""
    images = {}
    limit = Image.MAX_IMAGE_PIXELS
    for k, img in enumerate(records):
        img = _object(img, f"image record #{k}", ann_file)
        for key in ("id", "file_name", "height", "width"):
            if key not in img:
                raise AnnotationError(f"{ann_file}: image record #{k} "
                                      f"(id {img.get('id', '?')}) is missing '{key}'")
        img_id = _record_id(img["id"], f"{ann_file}: image record #{k}", "id")
        loc = f"{ann_file}: image id {img_id}"
        if img_id in images:
            raise AnnotationError(f"{loc}: appears twice in 'images' (file names "
                                  f"{images[img_id]['file_name']!r} and {img['file_name']!r})")
        h, w = _image_size(img, "height", loc), _image_size(img, "width", loc)
        if limit and h * w > 2 * limit:
            raise AnnotationError(f"{loc}: {w}x{h} pixels is over the decompression-bomb limit "
                                  f"of {2 * limit} pixels; refused")
        _check_file_name(img["file_name"], loc, allow_outside_root)
        if img.get("bg_level") is not None and not (is_int(img["bg_level"])
                                                     and img["bg_level"] >= 0):
            raise AnnotationError(f"{loc}, key 'bg_level': must be an integer >= 0, got "
                                  f"{img['bg_level']!r}")
        images[img_id] = dict(img, height=h, width=w)
    return images


def _check_categories(cats, ann_file: str) -> list:
    """Category records: objects with an integer ``id`` (unique) and a string ``name``."""
    if not isinstance(cats, list) or not cats:
        raise AnnotationError(f"{ann_file}: missing 'categories' list")
    seen = {}
    for k, c in enumerate(cats):
        _object(c, f"category record #{k}", ann_file)
        if "id" not in c or "name" not in c:
            raise AnnotationError(f"{ann_file}: category record {c!r} needs 'id' and 'name'")
        cat_id = _record_id(c["id"], f"{ann_file}: category record #{k}", "id", integer=True)
        if not isinstance(c["name"], str) or not c["name"]:
            raise AnnotationError(f"{ann_file}: category id {cat_id}, key 'name': must be a "
                                  f"non-empty string, got {c['name']!r}")
        if cat_id in seen:
            raise AnnotationError(f"{ann_file}: category id {cat_id} appears twice in "
                                  f"'categories' ({seen[cat_id]!r} and {c['name']!r})")
        seen[cat_id] = c["name"]
    return cats


def _flatten(data: dict, schema: str, ann_file: str):
    """Per-schema records -> uniform instance dicts (segmentations kept encoded)."""
    out = []
    if schema == "cocoa":
        for i, rec in enumerate(data["annotations"]):
            rec = _object(rec, f"annotation record #{i}", ann_file)
            rec_id = rec.get("id", f"#{i}")
            image_id = _record_id(_need(rec, "image_id", ann_file, rec_id),
                                  where(ann_file, rec_id), "image_id")
            regions = _need(rec, "regions", ann_file, rec.get("id", image_id))
            if not isinstance(regions, list):
                raise AnnotationError(f"{where(ann_file, rec_id, 'regions')}: must be a list, "
                                      f"got {type(regions).__name__}")
            for k, reg in enumerate(regions):
                ann_id = f"{image_id}:{k}"
                reg = _object(reg, f"annotation id {ann_id} (region {k} of image {image_id})",
                              ann_file)
                out.append({
                    "id": ann_id, "image_id": image_id, "category_id": None,
                    "amodal": _need(reg, "segmentation", ann_file, ann_id),
                    "visible": reg.get("visible_mask"), "invisible": reg.get("invisible_mask"),
                    "amodal_box": None, "visible_box": None,
                    "occlusion": _occlusion(reg.get("occlude_rate"), ann_file, ann_id),
                    "stuff": bool(reg.get("isStuff", 0)),
                })
        return out
    for i, rec in enumerate(data["annotations"]):
        rec = _object(rec, f"annotation record #{i}", ann_file)
        ann_id = (_record_id(rec["id"], f"{ann_file}: annotation record #{i}", "id")
                  if "id" in rec else f"#{i}")
        loc = where(ann_file, ann_id)
        inst = {"id": ann_id,
                "image_id": _record_id(_need(rec, "image_id", ann_file, ann_id), loc,
                                       "image_id"),
                "category_id": _record_id(_need(rec, "category_id", ann_file, ann_id), loc,
                                          "category_id", integer=True), "stuff": False}
        if schema in ("synthetic", "cocoa_cls"):
            inst["amodal"] = _need(rec, "segmentation", ann_file, ann_id)
            inst["visible"] = rec.get("visible_mask")
            inst["invisible"] = rec.get("invisible_mask")
            inst["amodal_box"] = (_xywh_box(rec["bbox"], ann_file, ann_id, "bbox")
                                  if "bbox" in rec else None)
            inst["visible_box"] = (_xywh_box(rec["visible_bbox"], ann_file, ann_id,
                                             "visible_bbox") if "visible_bbox" in rec else None)
            inst["occlusion"] = _occlusion(rec.get("occlude_rate"), ann_file, ann_id)
            if schema == "synthetic":
                _need(rec, "visible_mask", ann_file, ann_id)
        else:
            a_seg, a_box, v_seg, v_box = (("segmentation", "bbox", "inmodal_seg", "inmodal_bbox")
                                          if schema == "kins2019" else
                                          ("a_segm", "a_bbox", "i_segm", "i_bbox"))
            inst["amodal"] = _need(rec, a_seg, ann_file, ann_id)
            inst["visible"] = _need(rec, v_seg, ann_file, ann_id)
            inst["invisible"] = None
            inst["amodal_box"] = _xywh_box(_need(rec, a_box, ann_file, ann_id), ann_file,
                                           ann_id, a_box)
            inst["visible_box"] = _xywh_box(_need(rec, v_box, ann_file, ann_id), ann_file,
                                            ann_id, v_box)
            inst["occlusion"] = None
        out.append(inst)
    return out


class AmodalDataset(torch.utils.data.Dataset):
    """Amodal instance annotations of any supported schema, as box targets or eval targets.

    Args:
        ann_file: the annotation JSON.
        image_root: folder the records' ``file_name`` are relative to.
        mode: ``"train"`` (boxes and labels only), ``"eval"`` (adds masks, occlusion, levels)
            or ``"masks"`` (the same fields as eval: full supervision's training data).
        schema: ``"auto"`` or one of ``SCHEMAS``.
        protocol: ``None``, ``"kins"``, ``"cocoa_cls"`` or ``"synthetic"`` (filters of the
            paper / Bayesian-Amodal); the explicit options below override it.
        categories: class names to keep (others are dropped).
        min_amodal_height: instances with a shorter amodal box are not evaluated.
        level_bounds: occlusion level upper bounds (see ``occlusion_level``).
        include_stuff: COCOA only, keep ``isStuff`` regions (default: drop them).
        skip_empty: drop images left without instances.
        strict: raise on boxes that would otherwise be clipped or skipped.
        check_files: verify at construction that every image file exists.
        allow_outside_root: accept ``file_name`` values that are absolute or contain ``..``
            (refused by default: they read outside ``image_root``).
        transforms: optional callable applied to each item dict.

    Items are dicts: ``image`` float [3,H,W] in [0,1], ``image_id``, ``file_name``,
    ``amodal_boxes`` and ``visible_boxes`` float [N,4] xyxy, ``labels`` long [N] (contiguous
    class indices into ``dataset.classes``), ``category_ids`` [N], ``ann_ids`` (list). In eval
    mode also ``amodal_masks``/``visible_masks`` bool [N,H,W], ``occlusion`` float [N],
    ``levels`` long [N] (-1: not evaluated), ``evaluated`` bool [N] and, where the image
    record has one, ``bg_level`` (int: background occlusion level of the image).
    """

    def __init__(self, ann_file, image_root, mode="train", schema="auto", protocol=None,
                 categories=None, min_amodal_height=None, level_bounds=None,
                 include_stuff=False, skip_empty=True, strict=False, check_files=True,
                 transforms=None, allow_outside_root=False):
        if mode not in ("train", "eval", "masks"):
            raise ValueError(f"mode must be 'train', 'eval' or 'masks', got {mode!r}")
        if protocol and protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOLS)}")
        opts = dict(PROTOCOLS[protocol]) if protocol else {}
        categories = categories if categories is not None else opts.get("categories")
        self.min_amodal_height = (min_amodal_height if min_amodal_height is not None
                                  else opts.get("min_amodal_height"))
        self.level_bounds = tuple(level_bounds if level_bounds is not None
                                  else opts.get("level_bounds", KINS_LEVELS))
        self.ann_file, self.image_root, self.mode = str(ann_file), str(image_root), mode
        self.strict, self.transforms = strict, transforms
        self.report = defaultdict(list)  # reason -> annotation ids

        data = load_json(self.ann_file)
        self.schema = detect_schema(data, self.ann_file) if schema == "auto" else schema
        if self.schema not in SCHEMAS:
            raise ValueError(f"unknown schema {schema!r}; choose from {SCHEMAS}")
        self.info = data.get("info", {})

        # classes -------------------------------------------------------------------------
        if self.schema == "cocoa":
            cats = [{"id": None, "name": "object"}]
        else:
            cats = sorted(_check_categories(data.get("categories"), self.ann_file),
                          key=lambda c: c["id"])
        names = [c["name"] for c in cats]
        if categories is not None:
            unknown = sorted(set(categories) - set(names))
            if unknown:
                raise ValueError(f"{self.ann_file}: categories {unknown} are not in the file; "
                                 f"it has {names}")
            cats = [c for c in cats if c["name"] in set(categories)]
        self.classes = [c["name"] for c in cats]
        self.cat_ids = [c["id"] for c in cats]
        cat_index = {c["id"]: k for k, c in enumerate(cats)}
        all_cat_ids = ({c["id"] for c in data["categories"]} if self.schema != "cocoa"
                       else set())

        # images --------------------------------------------------------------------------
        images = _check_images(data["images"], self.ann_file, allow_outside_root)

        # instances -----------------------------------------------------------------------
        per_image = defaultdict(list)
        seen_ids = set()
        for inst in _flatten(data, self.schema, self.ann_file):
            ann_id = inst["id"]
            if ann_id in seen_ids:
                raise AnnotationError(f"{where(self.ann_file, ann_id)}: the annotation id "
                                      f"appears twice in 'annotations'")
            seen_ids.add(ann_id)
            img = images.get(inst["image_id"])
            if img is None:
                raise AnnotationError(f"{where(self.ann_file, ann_id)}: image_id "
                                      f"{inst['image_id']!r} is not in 'images'")
            if inst["stuff"] and not include_stuff:
                self.report["stuff_region_dropped"].append(ann_id)
                continue
            if self.schema != "cocoa":
                if inst["category_id"] not in all_cat_ids:
                    raise AnnotationError(f"{where(self.ann_file, ann_id, 'category_id')}: "
                                          f"{inst['category_id']!r} is not in 'categories'")
                if inst["category_id"] not in cat_index:
                    continue  # filtered out by ``categories``
            inst = self._prepare(inst, img["height"], img["width"])
            if inst is not None:
                inst["label"] = cat_index[inst["category_id"]]
                per_image[inst["image_id"]].append(inst)
        ids = [i for i in images if per_image.get(i) or not skip_empty]
        self.images = [images[i] for i in ids]
        self.instances = [per_image.get(i, []) for i in ids]

        if check_files:
            missing = [img["file_name"] for img in self.images
                       if not os.path.isfile(os.path.join(self.image_root, img["file_name"]))]
            if missing:
                raise AnnotationError(
                    f"{self.ann_file}: {len(missing)} image file(s) listed in the annotations "
                    f"are missing under {self.image_root}, e.g. {missing[:5]}")
        skipped = {k: len(v) for k, v in self.report.items()}
        if skipped:
            warnings.warn(f"{self.ann_file}: {skipped} (annotation ids in dataset.report)",
                          stacklevel=2)

    # -- parsing helpers ---------------------------------------------------------------------
    def _prepare(self, inst: dict, h: int, w: int):
        """Validate encodings, derive missing boxes, clip boxes; None = skip the instance."""
        ann_id, f = inst["id"], self.ann_file
        inst["amodal_rle"] = M.to_rle(inst["amodal"], h, w, where(f, ann_id, "amodal mask"))
        for key in ("visible", "invisible"):
            inst[key + "_rle"] = (None if inst[key] is None else
                                  M.to_rle(inst[key], h, w, where(f, ann_id, key + " mask")))
        if inst["amodal_box"] is None:
            inst["amodal_box"] = M.rle_box(inst["amodal_rle"])
        if inst["visible_box"] is None:
            inst["visible_box"] = (M.rle_box(inst["visible_rle"]) if inst["visible_rle"]
                                   is not None else inst["amodal_box"].copy())
        limit = np.array([w, h, w, h], np.float32)
        for key in ("amodal_box", "visible_box"):
            box = inst[key]
            clipped = np.clip(box, 0, limit)
            if not np.array_equal(clipped, box):
                if self.strict:
                    raise AnnotationError(f"{where(f, ann_id, key)}: box {box.tolist()} reaches "
                                          f"outside the {w}x{h} image")
                self.report[f"{key}_clipped"].append(ann_id)
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                if self.strict:
                    raise AnnotationError(f"{where(f, ann_id, key)}: box {box.tolist()} has zero "
                                          f"area inside the {w}x{h} image")
                self.report[f"{key}_zero_area_skipped"].append(ann_id)
                return None
            inst[key] = clipped
        a, v = inst["amodal_box"], inst["visible_box"]
        inside = np.concatenate([np.maximum(v[:2], a[:2]), np.minimum(v[2:], a[2:])])
        if not np.array_equal(inside, v):
            self.report["visible_box_clamped_into_amodal_box"].append(ann_id)
            if inside[2] <= inside[0] or inside[3] <= inside[1]:
                self.report["visible_box_outside_amodal_box_skipped"].append(ann_id)
                return None
            inst["visible_box"] = inside
        return inst

    # -- access ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.images)

    def load_image(self, index: int) -> torch.Tensor:
        """Image ``index`` as float [3,H,W] in [0,1] (see :mod:`blade.data.images`)."""
        img = self.images[index]
        path = os.path.join(self.image_root, img["file_name"])
        try:
            rgb = read_rgb(path)
        except FileNotFoundError:
            raise AnnotationError(f"{self.ann_file}: image file {path} (image id {img['id']}) "
                                  f"is missing") from None
        except ImageReadError as e:
            raise AnnotationError(f"{self.ann_file}: image id {img['id']}: {e}") from e
        if rgb.shape[:2] != (img["height"], img["width"]):
            raise AnnotationError(f"{self.ann_file}: image id {img['id']}: {path} on disk is "
                                  f"{rgb.shape[1]}x{rgb.shape[0]}, the annotations say "
                                  f"{img['width']}x{img['height']}")
        return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0

    def __getitem__(self, index: int) -> dict:
        img, insts = self.images[index], self.instances[index]
        item = {
            "image": self.load_image(index),
            "image_id": img["id"], "file_name": img["file_name"],
            "amodal_boxes": torch.tensor(np.array([i["amodal_box"] for i in insts],
                                                  np.float32).reshape(-1, 4)),
            "visible_boxes": torch.tensor(np.array([i["visible_box"] for i in insts],
                                                   np.float32).reshape(-1, 4)),
            "labels": torch.tensor([i["label"] for i in insts], dtype=torch.long),
            "category_ids": [i["category_id"] for i in insts],
            "ann_ids": [i["id"] for i in insts],
        }
        if self.mode in ("eval", "masks"):
            item.update(self._eval_targets(img, insts))
            if img.get("bg_level") is not None:  # synthetic / OccludedVehicles-style images
                item["bg_level"] = int(img["bg_level"])
        if self.transforms is not None:
            item = self.transforms(item)
        return item

    def _eval_targets(self, img: dict, insts: list) -> dict:
        h, w = img["height"], img["width"]
        amodal = np.zeros((len(insts), h, w), bool)
        visible = np.zeros((len(insts), h, w), bool)
        occlusion = np.zeros(len(insts), np.float32)
        levels = np.full(len(insts), -1, np.int64)
        for k, inst in enumerate(insts):
            a = M.decode(inst["amodal_rle"])
            if inst["visible_rle"] is not None:
                v = M.decode(inst["visible_rle"])
            elif inst["invisible_rle"] is not None:  # visible = amodal minus the hidden part
                v = a & ~M.decode(inst["invisible_rle"])
            else:  # COCOA: no visible mask means not occluded
                v = a.copy()
            if inst["invisible_rle"] is not None and self.schema in ("cocoa", "cocoa_cls"):
                a = a | M.decode(inst["invisible_rle"])  # amodal = visible U invisible
            amodal[k], visible[k] = a, v
            rate = inst["occlusion"]
            if rate is None:
                rate = 1.0 - v.sum() / max(a.sum(), 1)
            occlusion[k] = rate
            box_h = inst["amodal_box"][3] - inst["amodal_box"][1]
            tall_enough = self.min_amodal_height is None or box_h >= self.min_amodal_height
            if tall_enough and v.any():
                levels[k] = occlusion_level(float(rate), self.level_bounds)
        return {"amodal_masks": torch.from_numpy(amodal), "visible_masks": torch.from_numpy(visible),
                "occlusion": torch.from_numpy(occlusion), "levels": torch.from_numpy(levels),
                "evaluated": torch.from_numpy(levels >= 0)}


def collate(batch: list) -> list:
    """DataLoader collate for variable-size detection items: keep the list of dicts."""
    return list(batch)
