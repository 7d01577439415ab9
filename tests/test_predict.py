"""python -m blade.predict: overlay, COCO RLE output, clear errors."""

import json
import os

import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from blade.engine import load_checkpoint
from blade.predict import main


@pytest.fixture(scope="module")
def image(synthetic_dir):
    return os.path.join(synthetic_dir, "val", "000000.png")


def test_overlay_and_json_for_given_boxes(checkpoint, image, tmp_path):
    out, js = tmp_path / "o.png", tmp_path / "m.json"
    main(["--checkpoint", checkpoint, "--image", image, "--box", "10", "20", "90", "80",
          "--box", "100", "100", "200", "150", "--out", str(out), "--json", str(js)])
    assert Image.open(out).size[0] > 100
    data = json.load(open(js))
    assert len(data["objects"]) == 2 and data["width"] == 256
    for obj in data["objects"]:
        for key in ("visible_mask", "amodal_mask"):
            rle = dict(obj[key], counts=obj[key]["counts"].encode())
            assert mask_utils.decode(rle).shape == (256, 256)
        assert obj["given_box"] in ([10, 20, 90, 80], [100, 100, 200, 150])
        assert obj["label"] in load_checkpoint(checkpoint)["classes"]


def test_detections_without_boxes(checkpoint, image, tmp_path):
    main(["--checkpoint", checkpoint, "--image", image, "--out", str(tmp_path / "o.png")])
    assert (tmp_path / "o.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--box", "10", "20", "300", "80"], r"reaches outside .*256x256"),
    (["--box", "10", "20", "5", "80"], r"has no area"),
])
def test_bad_boxes(checkpoint, image, tmp_path, args, message):
    with pytest.raises(SystemExit, match=message):
        main(["--checkpoint", checkpoint, "--image", image, "--out", str(tmp_path / "o.png"),
              *args])


def test_missing_files_and_foreign_checkpoints(checkpoint, image, tmp_path):
    with pytest.raises(SystemExit, match=r"image .*nope.png does not exist"):
        main(["--checkpoint", checkpoint, "--image", str(tmp_path / "nope.png"),
              "--out", str(tmp_path / "o.png")])
    with pytest.raises(SystemExit, match=r"checkpoint .* does not exist"):
        main(["--checkpoint", str(tmp_path / "none.pt"), "--image", image,
              "--out", str(tmp_path / "o.png")])
    old = dict(load_checkpoint(checkpoint), version=0)
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(SystemExit, match=r"format version 0"):
        main(["--checkpoint", str(tmp_path / "old.pt"), "--image", image,
              "--out", str(tmp_path / "o.png")])
