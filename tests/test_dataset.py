"""AmodalDataset on fixtures in every real schema: pixel-exact masks, box-only training, errors."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

import make_fixtures as F
from blade.data import AmodalDataset, AnnotationError, detect_schema
from blade.data import masks as M

SCHEMAS = ("kins2019", "kins2020", "cocoa_cls", "cocoa")
COCOA_IDS = {"1:0": 1, "1:1": 2, "1:2": 3, "2:0": 4}


def _ds(fixtures_dir, schema, **kw):
    return AmodalDataset(os.path.join(fixtures_dir, f"{schema}.json"), fixtures_dir, **kw)


def test_committed_fixtures_are_what_the_script_builds(fixtures_dir):
    for schema, data in F.build().items():
        assert json.load(open(os.path.join(fixtures_dir, f"{schema}.json"))) == data


@pytest.mark.parametrize("schema", SCHEMAS)
def test_schema_detected(fixtures_dir, schema):
    data = json.load(open(os.path.join(fixtures_dir, f"{schema}.json")))
    assert detect_schema(data) == schema


@pytest.mark.filterwarnings("ignore:.*stuff_region_dropped")
@pytest.mark.parametrize("schema", SCHEMAS)
def test_eval_masks_pixel_exact(fixtures_dir, schema):
    ds = _ds(fixtures_dir, schema, mode="eval")
    expected = F.expected_masks()
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, F.H, F.W) and item["image"].dtype == torch.float32
        for k, ann_id in enumerate(item["ann_ids"]):
            key = COCOA_IDS[ann_id] if schema == "cocoa" else ann_id
            seen.add(key)
            a, v = expected[key]
            assert np.array_equal(item["amodal_masks"][k].numpy(), a), (schema, key)
            assert np.array_equal(item["visible_masks"][k].numpy(), v), (schema, key)
            box = F.INSTANCES[key][2]
            assert item["amodal_boxes"][k].tolist() == list(map(float, box))
            ys, xs = np.nonzero(v)
            assert item["visible_boxes"][k].tolist() == [xs.min(), ys.min(), xs.max() + 1,
                                                         ys.max() + 1]
            assert item["occlusion"][k].item() == pytest.approx(1 - v.sum() / a.sum(), abs=1e-4)
    assert seen == {1, 2, 3, 4}


@pytest.mark.filterwarnings("ignore:.*stuff_region_dropped")
@pytest.mark.parametrize("schema", SCHEMAS)
def test_train_mode_never_touches_masks(fixtures_dir, schema, monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("a mask was decoded in train mode")

    monkeypatch.setattr(M.mask_utils, "decode", forbidden)
    ds = _ds(fixtures_dir, schema, mode="train")
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == {"image", "image_id", "file_name", "amodal_boxes", "visible_boxes",
                             "labels", "category_ids", "ann_ids"}
        assert not any("mask" in k for k in item)
        assert item["amodal_boxes"].shape == item["visible_boxes"].shape == (len(item["labels"]), 4)


def test_labels_are_contiguous_class_indices(fixtures_dir):
    ds = _ds(fixtures_dir, "kins2020")
    item = ds[0]
    names = [ds.classes[k] for k in item["labels"].tolist()]
    assert names == ["car", "truck", "pedestrian"]
    assert item["category_ids"] == [4, 6, 2]


def test_kins_protocol_filters(fixtures_dir):
    ds = _ds(fixtures_dir, "kins2019", mode="eval", protocol="kins")
    assert ds.classes == ["cyclist", "car", "tram", "truck", "van"]
    item = ds[0]
    assert item["ann_ids"] == [1, 2]  # the pedestrian is dropped
    assert not item["evaluated"].any()  # all fixture boxes are under 50 px tall
    ds = _ds(fixtures_dir, "kins2019", mode="eval", protocol="kins", min_amodal_height=20)
    item = ds[0]
    assert item["levels"].tolist() == [0, 1]  # 24 % occluded: KINS FG-1 (0, 30 %]
    ds = _ds(fixtures_dir, "cocoa_cls", mode="eval", level_bounds=(0.0, 0.2, 0.4, 0.7))
    assert ds[0]["levels"].tolist() == [0, 2, 0]  # COCOA-cls bins: 24 % is FG-2 (20, 40 %]


def test_synthetic_schema_round_trip(synthetic_dir):
    ds = AmodalDataset(os.path.join(synthetic_dir, "val.json"), os.path.join(synthetic_dir, "val"),
                       mode="eval", protocol="synthetic")
    assert ds.schema == "synthetic" and len(ds) == 6
    data = json.load(open(os.path.join(synthetic_dir, "val.json")))
    levels = {a["id"]: a["fg_level"] for a in data["annotations"]}
    for i in range(len(ds)):
        item = ds[i]
        assert item["levels"].tolist() == [levels[a] for a in item["ann_ids"]]


# -- bad input ---------------------------------------------------------------------------------
def _write(tmp_path, fixtures_dir, schema, edit):
    data = json.load(open(os.path.join(fixtures_dir, f"{schema}.json")))
    edit(data)
    path = tmp_path / f"{schema}.json"
    path.write_text(json.dumps(data))
    for name in ("img1.png", "img2.png"):
        shutil.copy(os.path.join(fixtures_dir, name), tmp_path / name)
    return str(path)


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [],\n "annotations": [}')
    with pytest.raises(AnnotationError, match=r"broken.json: not valid JSON .*line 2"):
        AmodalDataset(str(path), str(tmp_path))


def test_missing_key_names_annotation(tmp_path, fixtures_dir):
    path = _write(tmp_path, fixtures_dir, "kins2020",
                  lambda d: d["annotations"][1].pop("i_bbox"))
    with pytest.raises(AnnotationError, match=r"kins2020.json: annotation id 2: missing key 'i_bbox'"):
        AmodalDataset(path, str(tmp_path))


def test_missing_image_file(tmp_path, fixtures_dir):
    path = _write(tmp_path, fixtures_dir, "kins2019", lambda d: None)
    os.remove(tmp_path / "img2.png")
    with pytest.raises(AnnotationError, match=r"1 image file\(s\).*missing.*img2.png"):
        AmodalDataset(path, str(tmp_path))


def test_rle_size_disagrees_with_image(tmp_path, fixtures_dir):
    def edit(d):
        d["annotations"][0]["visible_mask"]["size"] = [41, 48]

    path = _write(tmp_path, fixtures_dir, "cocoa_cls", edit)
    with pytest.raises(AnnotationError, match=r"annotation id 1, key 'visible mask'.*"
                                              r"\[41, 48\] disagrees.*\[40, 48\]"):
        AmodalDataset(path, str(tmp_path))


def test_polygon_outside_image(tmp_path, fixtures_dir):
    def edit(d):
        d["annotations"][2]["a_segm"] = [[2, 2, 80, 2, 80, 12, 2, 12]]

    path = _write(tmp_path, fixtures_dir, "kins2020", edit)
    with pytest.raises(AnnotationError, match=r"annotation id 3.*polygon reaches outside"):
        AmodalDataset(path, str(tmp_path))


def test_unknown_category_and_image(tmp_path, fixtures_dir):
    path = _write(tmp_path, fixtures_dir, "kins2019",
                  lambda d: d["annotations"][0].update(category_id=99))
    with pytest.raises(AnnotationError, match=r"annotation id 1, key 'category_id': 99"):
        AmodalDataset(path, str(tmp_path))
    path = _write(tmp_path, fixtures_dir, "kins2019",
                  lambda d: d["annotations"][0].update(image_id=7))
    with pytest.raises(AnnotationError, match=r"annotation id 1: image_id 7 is not in 'images'"):
        AmodalDataset(path, str(tmp_path))


def test_box_policies_clip_skip_count_or_raise(tmp_path, fixtures_dir):
    def edit(d):
        d["annotations"][0]["i_bbox"] = [24, 10, 30, 20]  # x2 = 54 > 48: clipped
        d["annotations"][0]["a_bbox"] = [24, 10, 30, 20]
        d["annotations"][2]["a_bbox"] = [2, 2, 0, 10]  # zero width: skipped

    path = _write(tmp_path, fixtures_dir, "kins2020", edit)
    with pytest.warns(UserWarning, match="amodal_box_zero_area_skipped"):
        ds = AmodalDataset(path, str(tmp_path))
    assert ds.report["amodal_box_clipped"] == [1] and ds.report["visible_box_clipped"] == [1]
    assert ds.report["amodal_box_zero_area_skipped"] == [3]
    item = ds[0]
    assert item["ann_ids"] == [1, 2]
    assert item["amodal_boxes"][0].tolist() == [24.0, 10.0, 48.0, 30.0]
    with pytest.raises(AnnotationError, match=r"annotation id 1, key 'amodal_box'.*outside"):
        AmodalDataset(path, str(tmp_path), strict=True)


def test_image_size_mismatch_is_reported(tmp_path, fixtures_dir):
    path = _write(tmp_path, fixtures_dir, "kins2019",
                  lambda d: d["images"][0].update(width=47) or None)
    with pytest.raises(AnnotationError):  # the RLE size check fires first (48 vs 47) ...
        AmodalDataset(path, str(tmp_path))
    # ... and for a schema with polygons only, the image file itself is checked when loaded
    path = _write(tmp_path, fixtures_dir, "kins2020",
                  lambda d: d["images"][1].update(height=41) or None)
    ds = AmodalDataset(path, str(tmp_path))
    with pytest.raises(AnnotationError, match=r"img2.png .* is 48x40, the annotations say 48x41"):
        ds[1]


def test_encode_many_equals_one_encode_per_mask():
    """encode_many (COCO AP's one call per image) gives each mask's RLE as encode does, in
    order, for empty, full, random and non-square masks, and nothing for no masks."""
    rng = np.random.default_rng(0)
    masks = rng.random((5, 7, 11)) > 0.5
    masks[0] = False
    masks[1] = True
    assert M.encode_many(masks) == [M.encode(m) for m in masks]
    assert M.encode_many(masks.astype(np.uint8)[2:3]) == [M.encode(masks[2])]
    assert M.encode_many(np.zeros((0, 7, 11), dtype=bool)) == []
