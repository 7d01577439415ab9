"""The synthetic benchmark: determinism, exact ground truth, the controlled level mix."""

import hashlib
import json
import os

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from blade.data.synthetic import (SceneGenerator, SyntheticConfig, bg_level, fg_level,
                                  level_summary, main)


def _digest(folder):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            with open(os.path.join(root, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


def _decode(rle):
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def test_level_bins():
    assert [fg_level(r) for r in (0.0, 1e-9, 0.3, 0.300001, 0.6, 0.61, 0.9, 0.91)] == \
        [0, 1, 1, 2, 2, 3, 3, -1]
    assert [bg_level(r) for r in (0.0, 0.2, 0.21, 0.4, 0.9)] == [0, 1, 2, 2, 3]


def test_same_seed_same_files_different_seed_different(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        main(["--out", str(tmp_path / name), "--train", "4", "--val", "2", "--seed", str(seed),
              "--quiet"])
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_val_split_does_not_depend_on_train_size(tmp_path):
    main(["--out", str(tmp_path / "a"), "--train", "2", "--val", "3", "--quiet"])
    main(["--out", str(tmp_path / "b"), "--train", "5", "--val", "3", "--quiet"])
    assert _digest(tmp_path / "a" / "val") == _digest(tmp_path / "b" / "val")
    assert (tmp_path / "a" / "val.json").read_bytes() == (tmp_path / "b" / "val.json").read_bytes()


def test_records_are_exact_and_in_cocoa_cls_schema(synthetic_dir):
    data = json.load(open(os.path.join(synthetic_dir, "train.json")))
    assert data["info"]["generator"] == "blade.data.synthetic"
    assert {c["name"] for c in data["categories"]} >= {"car", "bus", "bicycle"}
    assert len(data["categories"]) >= 5
    by_image = {}
    for a in data["annotations"]:
        for key in ("image_id", "category_id", "bbox", "segmentation", "visible_mask",
                    "invisible_mask", "occlude_rate", "visible_bbox", "depth_order", "fg_level"):
            assert key in a, key
        amodal, visible, invisible = (_decode(a[k]) for k in
                                      ("segmentation", "visible_mask", "invisible_mask"))
        assert visible.any() and not (visible & ~amodal).any()
        assert np.array_equal(invisible, amodal & ~visible)
        rate = 1 - visible.sum() / amodal.sum()
        assert a["occlude_rate"] == pytest.approx(rate, abs=1e-6)
        assert a["fg_level"] == fg_level(rate) and a["evaluated"] == (a["fg_level"] >= 0)
        ys, xs = np.nonzero(amodal)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        ys, xs = np.nonzero(visible)
        assert a["visible_bbox"][:2] == [xs.min(), ys.min()]
        by_image.setdefault(a["image_id"], []).append((a["depth_order"], amodal, visible))
    # depth order: an instance is hidden exactly by the instances in front of it (and clutter)
    for insts in by_image.values():
        insts.sort(key=lambda t: t[0])
        front = np.zeros_like(insts[0][1])
        for _, amodal, visible in insts:
            assert not (visible & front).any()
            front |= amodal


def test_default_config_balances_levels():
    gen = SceneGenerator(SyntheticConfig(), seed=11)
    anns = []
    for _ in range(120):
        scene = gen()
        anns += [{"fg_level": fg_level(inst.occlude_rate)} for inst in scene.instances]
        assert 0.0 <= scene.bg_rate <= 1.0
    s = level_summary(anns)
    assert s["instances"] > 300
    assert min(s["shares"].values()) >= 0.15, s


def test_scene_images_use_photo_backgrounds():
    scene = SceneGenerator(SyntheticConfig(image_size=64, min_instances=1, max_instances=1))()
    assert scene.image.shape == (64, 64, 3) and scene.image.dtype == np.uint8
    assert scene.image.std() > 5  # a real photo crop, not a flat colour


def test_config_validation():
    with pytest.raises(ValueError, match="level_mix"):
        SyntheticConfig(level_mix=(0.5, 0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="classes"):
        SyntheticConfig(classes=("tank",))
    with pytest.raises(ValueError, match="min_instances"):
        SyntheticConfig(min_instances=4, max_instances=2)


def test_cli_overrides_config_fields(tmp_path):
    main(["--out", str(tmp_path), "--train", "2", "--val", "1", "--image-size", "96",
          "--classes", "car", "bus", "--quiet"])
    data = json.load(open(tmp_path / "train.json"))
    assert data["images"][0]["width"] == 96
    assert data["info"]["config"]["classes"] == ["car", "bus"]
    assert {a["category_id"] for a in data["annotations"]} <= {3, 6}


def test_assets_folder_replaces_the_wheels_and_gives_the_same_benchmark(tmp_path):
    """``BLADE_ASSETS_DIR`` (a folder from ``python -m blade.data.assets --export``) makes the
    benchmark without scikit-image or scikit-learn importable, and byte-identical."""
    import subprocess
    import sys

    from blade.data.assets import main as assets_main

    assets_main(["--export", str(tmp_path / "assets")])
    assert len(os.listdir(tmp_path / "assets")) == 12
    main(["--out", str(tmp_path / "wheels"), "--train", "2", "--val", "1", "--quiet"])
    blocked = ("import sys; sys.modules['skimage'] = None; sys.modules['sklearn'] = None; "
               "from blade.data.synthetic import main; "
               f"main(['--out', {str(tmp_path / 'folder')!r}, '--train', '2', '--val', '1', "
               "'--quiet'])")
    env = dict(os.environ, BLADE_ASSETS_DIR=str(tmp_path / "assets"))
    subprocess.run([sys.executable, "-c", blocked], env=env, check=True)
    assert _digest(tmp_path / "wheels") == _digest(tmp_path / "folder")
    os.remove(tmp_path / "assets" / "horse.png")  # an incomplete folder names what is missing
    r = subprocess.run([sys.executable, "-c", blocked.replace("folder", "other")], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "asset 'horse'" in r.stderr and "BLADE_ASSETS_DIR" in r.stderr


def test_content_digest_sees_pixels_and_annotations_not_png_encoding(tmp_path):
    """--digest compares what two machines drew: a scene re-encoded with another zlib setting
    keeps its ``pixels`` digest (its ``png`` one changes); one changed pixel or one changed
    byte of the JSON changes ``pixels`` or ``json``; a folder with no split is refused."""
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    from blade.data.synthetic import content_digest, write_split

    write_split(str(tmp_path), "val", 2, seed=3, progress=False)
    before = content_digest(str(tmp_path))
    assert list(before) == ["val"] and set(before["val"]) == {"json", "pixels", "png"}
    scene = tmp_path / "val" / "000001.png"
    arr = np.asarray(Image.open(scene)).copy()
    Image.fromarray(arr).save(scene, compress_level=9)  # same pixels, other bytes
    after = content_digest(str(tmp_path))["val"]
    assert after["pixels"] == before["val"]["pixels"] and after["json"] == before["val"]["json"]
    assert after["png"] != before["val"]["png"]
    arr[0, 0, 0] ^= 1
    Image.fromarray(arr).save(scene)
    assert content_digest(str(tmp_path))["val"]["pixels"] != before["val"]["pixels"]
    js = tmp_path / "val.json"
    js.write_text(js.read_text().replace('"seed":3', '"seed":4'))
    assert content_digest(str(tmp_path))["val"]["json"] != before["val"]["json"]
    cli = [sys.executable, "-m", "blade.data.synthetic", "--digest", "--out"]
    r = subprocess.run(cli + [str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("val: json ")
    r = subprocess.run(cli + [str(tmp_path / "none")], capture_output=True, text=True)
    assert r.returncode == 2 and "holds no generated split" in r.stderr
