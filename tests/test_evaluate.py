"""Evaluation core: IoU agrees with pycocotools; protocol rows; mean over levels."""

import os

import numpy as np
import pandas as pd
import pytest
import torch
from pycocotools import mask as mask_utils

from blade.data import AmodalDataset
from blade.evaluate import coco_ap, evaluate_item, main, mask_iou, summarize, wrong_instance


def test_mask_iou_agrees_with_pycocotools():
    rng = np.random.default_rng(0)
    pred = rng.random((6, 20, 30)) > 0.6
    gt = rng.random((6, 20, 30)) > 0.5
    ours = mask_iou(torch.from_numpy(pred), torch.from_numpy(gt)).numpy()
    enc = lambda m: mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))  # noqa: E731
    ref = np.array([mask_utils.iou([enc(p)], [enc(g)], [0])[0, 0] for p, g in zip(pred, gt)])
    assert np.abs(ours - ref).max() < 1e-6
    empty = torch.zeros(1, 4, 4, dtype=torch.bool)
    assert torch.isnan(mask_iou(empty, empty)).all()


class Oracle:
    """A 'model' answering each given box with the ground truth (to test the protocol);
    without boxes it 'detects' every ground-truth instance (to test COCO AP)."""

    def __init__(self, item, wrong_class=False):
        self.item, self.wrong = item, wrong_class

    def predict(self, images, boxes=None, prompt="box"):
        if boxes is None:
            n = len(self.item["labels"])
            return [{"masks": self.item["amodal_masks"].float(),
                     "visible": self.item["visible_masks"].float(),
                     "labels": self.item["labels"] + (1 if self.wrong else 0),
                     "scores": torch.linspace(1.0, 0.5, n)}]
        keep = self.item["evaluated"].nonzero().flatten()
        labels = self.item["labels"][keep] + (1 if self.wrong else 0)
        return [{"masks": self.item["amodal_masks"][keep].float(),
                 "visible": self.item["visible_masks"][keep].float(), "labels": labels,
                 "matched": torch.ones(len(keep), dtype=torch.bool)}]


def test_oracle_scores_one_and_class_penalty(synthetic_dir):
    ds = AmodalDataset(os.path.join(synthetic_dir, "val.json"), os.path.join(synthetic_dir, "val"),
                       mode="eval")
    rows = []
    for i in range(len(ds)):
        rows += evaluate_item(Oracle(ds[i]), ds[i])
    assert rows and all(r["iou_amodal"] == 1.0 and r["iou_visible"] == 1.0 for r in rows)
    assert all(r["wrong_instance"] == 0.0 and r["fallback"] == 0.0 for r in rows)
    for r in rows:  # the occluded part is undefined exactly when nothing is occluded
        assert np.isnan(r["iou_occluded"]) == (r["level"] == 0)
    wrong = evaluate_item(Oracle(ds[0], wrong_class=True), ds[0])
    assert all(r["iou_amodal_cls"] == 0.0 and r["iou_amodal"] == 1.0 for r in wrong)


def test_wrong_instance_by_hand():
    """Prediction 0 covers most of instance 1 (IoU 4/6 with it, 2/4 with its own instance 0):
    wrong. Prediction 1 is exactly instance 1: right. A lone instance is never wrong."""
    gt = torch.zeros(3, 1, 8, dtype=torch.bool)
    gt[0, 0, 0:2] = True  # instance 0: pixels 0-1
    gt[1, 0, 2:6] = True  # instance 1: pixels 2-5
    gt[2, 0, 7] = True  # instance 2 (not evaluated): pixel 7
    pred = torch.zeros(2, 1, 8, dtype=torch.bool)
    pred[0, 0, 1:6] = True  # own (0): inter 1, union 6; instance 1: inter 4, union 5
    pred[1, 0, 2:6] = True
    assert wrong_instance(pred, gt, torch.tensor([0, 1])).tolist() == [True, False]
    assert wrong_instance(pred[:1], gt[:1], torch.tensor([0])).tolist() == [False]
    assert wrong_instance(pred[:0], gt, torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_expansion_scores_by_hand():
    """On a 1x10 row, truth = pixels 2-5 (4 px). Prediction 0 = pixels 1-8 (8 px, all 4 true
    ones inside): area ratio 2, precision 0.5, recall 1 (overshoot). Prediction 1 = pixels 2-3:
    ratio 0.5, precision 1, recall 0.5 (too small). Prediction 2 empty: 0, 0, 0."""
    from blade.evaluate import expansion_scores

    gt = torch.zeros(3, 1, 10, dtype=torch.bool)
    gt[:, 0, 2:6] = True
    pred = torch.zeros(3, 1, 10, dtype=torch.bool)
    pred[0, 0, 1:9] = True
    pred[1, 0, 2:4] = True
    s = expansion_scores(pred, gt)
    assert s["area_ratio"].tolist() == [2.0, 0.5, 0.0]
    assert s["precision"].tolist() == [0.5, 1.0, 0.0]
    assert s["recall"].tolist() == [1.0, 0.5, 0.0]


def test_summary_is_the_mean_of_level_means():
    rows = [{"level": 0, "iou_amodal": 1.0}, {"level": 0, "iou_amodal": 0.0},
            {"level": 0, "iou_amodal": 0.5}, {"level": 2, "iou_amodal": 0.2}]
    table = summarize(rows, columns=("iou_amodal",))
    assert table.loc["FG-0", "iou_amodal"] == pytest.approx(0.5)
    assert table.loc["FG-2", "iou_amodal"] == pytest.approx(0.2)
    assert table.loc["mean", "iou_amodal"] == pytest.approx(0.35)  # not the object mean 0.425
    assert table.loc["mean", "objects"] == 4


def test_runs_on_the_real_model_interface(synthetic_dir):
    from blade.config import preset
    from blade.model import BladeModel

    ds = AmodalDataset(os.path.join(synthetic_dir, "val.json"), os.path.join(synthetic_dir, "val"),
                       mode="eval")
    torch.manual_seed(0)
    model = BladeModel(preset("smoke")).eval()
    rows = evaluate_item(model, ds[0])
    assert len(rows) == int(ds[0]["evaluated"].sum())
    assert all(0.0 <= r["iou_amodal"] <= 1.0 for r in rows)


class OracleModel:
    """Oracle over a whole dataset (predict looks the image up)."""

    def __init__(self, ds, wrong_class=False, detect_box="visible"):
        self.items = [ds[i] for i in range(len(ds))]
        self.wrong = wrong_class
        self.cfg = type("Cfg", (), {"detect_box": detect_box, "num_classes": len(ds.classes)})
        self.seen_boxes = []

    def predict(self, images, boxes=None, prompt="box"):
        item = next(it for it in self.items if it["image"] is images[0] or
                    torch.equal(it["image"], images[0]))
        if boxes is not None:
            self.seen_boxes.append(boxes[0])
        return Oracle(item, self.wrong).predict(images, boxes)


def _val(synthetic_dir):
    return AmodalDataset(os.path.join(synthetic_dir, "val.json"),
                         os.path.join(synthetic_dir, "val"), mode="eval")


def test_coco_ap_of_an_oracle_is_one_and_class_aware(synthetic_dir):
    ds = _val(synthetic_dir)
    ap = coco_ap(OracleModel(ds), ds, progress=False)
    assert ap["amodal_AP"] == pytest.approx(1.0) and ap["amodal_AP50"] == pytest.approx(1.0)
    assert ap["visible_AP"] > 0.9  # fully hidden objects: an empty predicted mask is a miss
    wrong = OracleModel(ds, wrong_class=True)
    assert coco_ap(wrong, ds, progress=False)["amodal_AP"] < 0.05
    assert coco_ap(wrong, ds, class_agnostic=True, progress=False)["amodal_AP"] == pytest.approx(1.0)


def test_test_box_follows_the_detector_kind(synthetic_dir):
    ds = _val(synthetic_dir)
    model = OracleModel(ds, detect_box="amodal")
    rows = evaluate_item(model, ds[0])
    keep = ds[0]["evaluated"].nonzero().flatten()
    assert torch.equal(model.seen_boxes[0], ds[0]["amodal_boxes"][keep])
    assert {r["test_box"] for r in rows} == {"amodal"}
    model = OracleModel(ds)
    evaluate_item(model, ds[0])
    assert torch.equal(model.seen_boxes[0], ds[0]["visible_boxes"][keep])


def test_cells_pool_fg0_and_average_cells():
    rows = [{"level": 0, "bg_level": 0, "iou_amodal": 1.0},
            {"level": 0, "bg_level": 2, "iou_amodal": 0.0},
            {"level": 1, "bg_level": 0, "iou_amodal": 0.4},
            {"level": 1, "bg_level": 1, "iou_amodal": 0.8},
            {"level": 1, "bg_level": 1, "iou_amodal": 0.6}]
    t = summarize(rows, columns=("iou_amodal",), by="cell")
    assert list(t.index) == ["FG-0", "FG-1/BG-0", "FG-1/BG-1", "mean"]
    assert t.loc["FG-0", "iou_amodal"] == pytest.approx(0.5)
    assert t.loc["FG-1/BG-1", "iou_amodal"] == pytest.approx(0.7)
    assert t.loc["mean", "iou_amodal"] == pytest.approx((0.5 + 0.4 + 0.7) / 3)
    with pytest.raises(ValueError, match="bg_level"):
        summarize([{"level": 1, "iou_amodal": 0.3}], columns=("iou_amodal",), by="cell")


@pytest.fixture(scope="module")
def smoke_checkpoint(synthetic_dir, tmp_path_factory):
    from blade.config import preset
    from blade.engine import train

    out = tmp_path_factory.mktemp("run")
    return train(preset("smoke", iterations=2), os.path.join(synthetic_dir, "train.json"),
                 os.path.join(synthetic_dir, "train"), str(out), progress=False)


def test_cli_writes_tidy_tables(synthetic_dir, smoke_checkpoint, tmp_path, capsys):
    import json

    import pandas as pd

    out = tmp_path / "eval"
    main(["--checkpoint", smoke_checkpoint, "--ann", os.path.join(synthetic_dir, "val.json"),
          "--images", os.path.join(synthetic_dir, "val"), "--out", str(out), "--limit", "3",
          "--no-progress"])
    printed = capsys.readouterr().out
    assert "FG-" in printed and "mean" in printed and "COCO mask AP" in printed
    objects = pd.read_csv(out / "objects.csv")
    levels = pd.read_csv(out / "levels.csv", index_col=0)
    cells = pd.read_csv(out / "cells.csv", index_col=0)
    assert len(objects) == levels.loc["mean", "objects"] == cells.loc["mean", "objects"]
    assert {"iou_amodal", "iou_amodal_cls", "level", "bg_level", "matched", "fallback",
            "wrong_instance", "prompt"} <= set(objects)
    assert {"fallback", "wrong_instance"} <= set(levels)
    metrics = json.load(open(out / "metrics.json"))
    assert metrics["test_box"] == "visible" and 0 <= metrics["amodal_AP"] <= 1
    assert metrics["mean_iou_amodal"] == pytest.approx(levels.loc["mean", "iou_amodal"])
    assert metrics["prompt"] == "box" and set(objects["prompt"]) == {"box"}
    det = tmp_path / "eval_det"
    main(["--checkpoint", smoke_checkpoint, "--ann", os.path.join(synthetic_dir, "val.json"),
          "--images", os.path.join(synthetic_dir, "val"), "--out", str(det), "--limit", "3",
          "--no-progress", "--no-coco", "--prompt", "detections"])
    det_objects = pd.read_csv(det / "objects.csv")
    assert set(det_objects["prompt"]) == {"detections"}
    # two iterations of training detect nothing: every box falls back under 'detections'
    assert det_objects["fallback"].mean() == 1.0 > objects["fallback"].mean()


def test_cli_refuses_class_aware_scoring_on_foreign_classes(fixtures_dir, smoke_checkpoint,
                                                            tmp_path, capsys):
    ann = os.path.join(fixtures_dir, "cocoa_cls.json")
    args = ["--checkpoint", smoke_checkpoint, "--ann", ann, "--images", fixtures_dir,
            "--no-coco", "--no-progress"]
    with pytest.raises(SystemExit, match="class-aware scoring is impossible.*--class-agnostic"):
        main(args + ["--out", str(tmp_path / "a")])
    res = main(args + ["--out", str(tmp_path / "b"), "--class-agnostic"])
    assert res["metrics"]["class_agnostic"] and len(res["rows"]) > 0
    with pytest.raises(SystemExit, match="does not exist"):
        main(["--checkpoint", str(tmp_path / "none.pt"), "--ann", ann, "--images", fixtures_dir,
              "--out", str(tmp_path / "c")])


def test_bootstrap_levels_by_hand():
    """A level whose objects all score 0.5 has no uncertainty; a level of 0s and 1s (half each)
    has mean 0.5 and a 95 % interval that contains it and is about +-1.96 * 0.5 / sqrt(n) wide;
    the headline is the mean of the level means. Seeded: the same rows give the same table."""
    from blade.evaluate import bootstrap_levels

    n = 400
    rows = ([{"level": 0, "iou_amodal": 0.5}] * 50
            + [{"level": 3, "iou_amodal": float(i % 2)} for i in range(n)])
    t = bootstrap_levels(rows, n=2000)
    assert t.loc["FG-0", ["iou_amodal", "low", "high"]].tolist() == [0.5, 0.5, 0.5]
    half = 1.96 * 0.5 / n ** 0.5  # 0.049
    assert t.loc["FG-3", "iou_amodal"] == 0.5
    assert 0.5 - 1.3 * half < t.loc["FG-3", "low"] < 0.5 - 0.7 * half
    assert 0.5 + 0.7 * half < t.loc["FG-3", "high"] < 0.5 + 1.3 * half
    assert t.loc["mean", "iou_amodal"] == 0.5 and t.loc["mean", "objects"] == n + 50
    assert t.loc["mean", "high"] - t.loc["mean", "low"] < t.loc["FG-3", "high"] - t.loc["FG-3", "low"]
    assert t.equals(bootstrap_levels(rows, n=2000))


def test_checkpoint_curve_orders_checkpoints_by_iteration(synthetic_dir, tmp_path):
    """Two checkpoints of one smoke run, given out of order: one block per checkpoint, in
    iteration order, each equal to that checkpoint's own summarize(evaluate(...))."""
    from blade.config import preset
    from blade.data import AmodalDataset
    from blade.engine import load_model, train
    from blade.evaluate import checkpoint_curve, evaluate

    train(preset("smoke", iterations=4, checkpoint_every=2),
          os.path.join(synthetic_dir, "train.json"), os.path.join(synthetic_dir, "train"),
          str(tmp_path), progress=False)
    paths = [str(tmp_path / "checkpoints" / f"iter_{i:07d}.pt") for i in (4, 2)]
    val = AmodalDataset(os.path.join(synthetic_dir, "val.json"),
                        os.path.join(synthetic_dir, "val"), mode="eval")
    curve = checkpoint_curve(paths, val, limit=2)
    assert list(dict.fromkeys(curve["iteration"])) == [2, 4]
    model, _ = load_model(paths[1])
    own = summarize(evaluate(model, val, limit=2, progress=False))
    block = curve[curve["iteration"] == 2].set_index("level")
    assert block.loc["mean", "iou_amodal"] == pytest.approx(own.loc["mean", "iou_amodal"])
    assert list(block.index) == list(own.index)


def test_all_protocols_in_one_pass_give_the_rows_of_separate_passes(synthetic_dir):
    """evaluate_prompts / predict_prompts share the features across prompts: every mask and
    every row must be exactly what one call per prompt gives (the committed checkpoint, so that
    detections, matches and fallbacks all occur)."""
    from blade.engine import COMMITTED_CHECKPOINT, load_model
    from blade.evaluate import evaluate, evaluate_prompts
    from blade.model import PROMPTS

    model, _ = load_model(os.path.join(os.path.dirname(__file__), "..", COMMITTED_CHECKPOINT))
    val = AmodalDataset(os.path.join(synthetic_dir, "val.json"),
                        os.path.join(synthetic_dir, "val"), mode="eval", protocol="synthetic")
    item = val[0]
    given = [item["visible_boxes"][item["evaluated"]]]
    together = model.predict_prompts([item["image"]], boxes=given)
    assert set(together) == set(PROMPTS)
    for prompt in PROMPTS:
        alone = model.predict([item["image"]], boxes=given, prompt=prompt)[0]
        assert alone.keys() == together[prompt][0].keys()
        for key, value in alone.items():
            assert torch.equal(value, together[prompt][0][key]), (prompt, key)
    rows = evaluate_prompts(model, val, progress=False)
    for prompt in PROMPTS:
        one = evaluate(model, val, progress=False, prompt=prompt)
        assert len(one) > 0
        assert one.equals(rows[prompt]), prompt
    assert rows["detections"]["matched"].nunique() == 2  # both matched and fallback rows ran
    with pytest.raises(ValueError, match="prompt must be one of"):
        evaluate_prompts(model, val, prompts=("box", "oracle"))


def test_batched_evaluation_with_loader_workers_gives_the_rows_of_one_image_at_a_time(
        synthetic_dir):
    """Images batched through the network (the GPU path) and read by a worker process: the
    same objects, matches and labels, IoUs equal within float rounding (identical here);
    an image without evaluated objects inside a batch is skipped, as alone."""
    from blade.engine import COMMITTED_CHECKPOINT, load_model
    from blade.evaluate import LEVEL_COLUMNS, evaluate_items_prompts, evaluate_prompts

    model, _ = load_model(os.path.join(os.path.dirname(__file__), "..", COMMITTED_CHECKPOINT))
    val = AmodalDataset(os.path.join(synthetic_dir, "val.json"),
                        os.path.join(synthetic_dir, "val"), mode="eval", protocol="synthetic")
    one = evaluate_prompts(model, val, limit=5, progress=False)
    many = evaluate_prompts(model, val, limit=5, progress=False, batch_size=3, workers=1)
    for prompt, rows in one.items():
        assert len(rows) > 0
        other = many[prompt]
        assert rows.drop(columns=list(LEVEL_COLUMNS)).equals(other.drop(columns=list(LEVEL_COLUMNS)))
        for col in LEVEL_COLUMNS:
            assert np.allclose(rows[col], other[col], atol=1e-3, equal_nan=True), (prompt, col)
    empty = dict(val[1], evaluated=torch.zeros_like(val[1]["evaluated"]))
    batch = evaluate_items_prompts(model, [val[0], empty, val[2]], prompts=("box",))
    assert batch[1] == {"box": []}
    alone = evaluate_items_prompts(model, [val[2]], prompts=("box",))[0]["box"]
    assert pd.DataFrame(batch[2]["box"]).equals(pd.DataFrame(alone))  # NaN == NaN there
    for bad in ({"batch_size": 0}, {"batch_size": 2.5}, {"workers": -1}, {"workers": True}):
        with pytest.raises(ValueError, match="must be an integer"):
            evaluate_prompts(model, val, limit=1, progress=False, **bad)


def test_batches_hold_images_of_one_size_and_evaluation_leaves_the_rng_alone(synthetic_dir,
                                                                           monkeypatch):
    """A larger image among smaller ones goes through the network in a batch of its own (a
    padded batch would change the group-normalised heads' input) and answers as alone; an
    evaluation with a loader draws nothing from torch's global random generator."""
    import torch.nn.functional as F

    import blade.evaluate as ev
    from blade.engine import COMMITTED_CHECKPOINT, load_model

    model, _ = load_model(os.path.join(os.path.dirname(__file__), "..", COMMITTED_CHECKPOINT))
    val = AmodalDataset(os.path.join(synthetic_dir, "val.json"),
                        os.path.join(synthetic_dir, "val"), mode="eval", protocol="synthetic")
    big = dict(val[1])  # 32 more pixel rows at the bottom: same boxes, same masks above
    big["image"] = F.pad(big["image"], (0, 0, 0, 32))
    for key in ("amodal_masks", "visible_masks"):
        big[key] = F.pad(big[key], (0, 0, 0, 32))
    sizes, real = [], ev.predict_prompts_on_device

    def spy(model, images, boxes=None, prompts=ev.PROMPTS):
        sizes.append([tuple(img.shape[-2:]) for img in images])
        return real(model, images, boxes, prompts)

    monkeypatch.setattr(ev, "predict_prompts_on_device", spy)
    batch = ev.evaluate_items_prompts(model, [val[0], big, val[2]], prompts=("box",))
    h, w = val[0]["image"].shape[-2:]
    assert sizes == [[(h, w), (h, w)], [(h + 32, w)]]
    alone = ev.evaluate_items_prompts(model, [big], prompts=("box",))[0]["box"]
    assert pd.DataFrame(batch[1]["box"]).equals(pd.DataFrame(alone))
    state = torch.get_rng_state()
    ev.evaluate_prompts(model, val, limit=2, progress=False, batch_size=2)
    assert torch.equal(torch.get_rng_state(), state)


def test_a_bad_image_read_by_an_evaluation_worker_keeps_its_message(synthetic_dir, tmp_path):
    import shutil

    from blade.engine import COMMITTED_CHECKPOINT, load_model
    from blade.evaluate import evaluate_prompts

    model, _ = load_model(os.path.join(os.path.dirname(__file__), "..", COMMITTED_CHECKPOINT))
    shutil.copytree(os.path.join(synthetic_dir, "val"), tmp_path / "val")
    name = sorted(os.listdir(tmp_path / "val"))[1]
    (tmp_path / "val" / name).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    val = AmodalDataset(os.path.join(synthetic_dir, "val.json"), str(tmp_path / "val"),
                        mode="eval", protocol="synthetic")
    messages = []
    for workers in (0, 1):
        with pytest.raises(Exception) as err:
            evaluate_prompts(model, val, limit=3, progress=False, workers=workers)
        messages.append((type(err.value), str(err.value)))
    assert messages[0] == messages[1] and name in messages[0][1], messages


def test_detections_prompt_answers_a_detection_box_with_that_detection(synthetic_dir):
    """Given the model's own detection boxes, the detections prompt matches each with IoU 1
    and returns that detection's box, score and label; a box where nothing was detected
    takes the fallback (matched False, IoU 0)."""
    from blade.engine import COMMITTED_CHECKPOINT, load_model

    model, _ = load_model(os.path.join(os.path.dirname(__file__), "..", COMMITTED_CHECKPOINT))
    val = AmodalDataset(os.path.join(synthetic_dir, "val.json"),
                        os.path.join(synthetic_dir, "val"), mode="eval", protocol="synthetic")
    image = val[0]["image"]
    det = model.predict([image])[0]
    assert len(det["boxes"]) > 0
    empty = torch.tensor([[0.0, 0.0, 3.0, 3.0]])  # a corner box no detection overlaps
    given = torch.cat([det["boxes"], empty])
    out = model.predict([image], boxes=[given], prompt="detections")[0]
    n = len(det["boxes"])
    assert out["matched"][:n].all() and not out["matched"][n]
    assert torch.allclose(out["matched_iou"][:n], torch.ones(n), atol=1e-5)
    assert out["matched_iou"][n] == 0
    assert torch.allclose(out["boxes"][:n], det["boxes"], atol=1e-3)
    # class-wise NMS can keep one box twice (two classes): a box is answered by the first,
    # best-scoring, detection with that box
    first = [min(j for j in range(n) if torch.equal(det["boxes"][j], det["boxes"][i]))
             for i in range(n)]
    assert torch.equal(out["scores"][:n], det["scores"][first])
    assert torch.equal(out["labels"][:n], det["labels"][first])
    assert torch.equal(out["boxes"][n], empty[0])  # the fallback row keeps the given box


def test_given_boxes_are_answered_as_before_the_one_pass_rewrite(synthetic_dir, fixtures_dir):
    """Golden answers (matched, label, score, mask area per given box and prompt) written by the
    kit before predict_prompts and the vectorized location choice existed (commit 3b64372),
    for the committed checkpoint on the test session's six validation scenes."""
    import json

    from blade.engine import COMMITTED_CHECKPOINT, load_model

    with open(os.path.join(fixtures_dir, "golden_locations.json")) as f:
        gold = json.load(f)
    model, _ = load_model(os.path.join(os.path.dirname(__file__), "..", COMMITTED_CHECKPOINT))
    val = AmodalDataset(os.path.join(synthetic_dir, "val.json"),
                        os.path.join(synthetic_dir, "val"), mode="eval", protocol="synthetic")
    assert len(val) == len(gold["box"]) == 6
    for i in range(len(val)):
        item = val[i]
        given = [item["visible_boxes"][item["evaluated"]]]
        outs = model.predict_prompts([item["image"]], boxes=given)
        for prompt, rows in gold.items():
            r, g = outs[prompt][0], rows[i]
            assert r["matched"].tolist() == g["matched"], (prompt, i)
            assert r["labels"].tolist() == g["labels"], (prompt, i)
            assert np.allclose(r["scores"].numpy(), g["scores"], atol=1e-4), (prompt, i)
            area = (r["masks"] > 0.5).flatten(1).sum(1).tolist()
            assert all(abs(a - b) <= 2 for a, b in zip(area, g["area"])), (prompt, i)


def test_zero_float64_and_misnamed_prompts(synthetic_dir):
    """No given box: empty answers under every prompt; float64 boxes answer as float32 ones;
    a prompt given as a bare string or an empty list is refused with a clear message."""
    from blade.engine import COMMITTED_CHECKPOINT, load_model
    from blade.evaluate import evaluate_prompts

    model, _ = load_model(os.path.join(os.path.dirname(__file__), "..", COMMITTED_CHECKPOINT))
    val = AmodalDataset(os.path.join(synthetic_dir, "val.json"),
                        os.path.join(synthetic_dir, "val"), mode="eval", protocol="synthetic")
    item = val[0]
    none = model.predict_prompts([item["image"]], boxes=[torch.zeros(0, 4)])
    for prompt, out in none.items():
        assert out[0]["masks"].shape == (0, *item["image"].shape[-2:]), prompt
        assert len(out[0]["matched"]) == 0
    given = item["visible_boxes"][item["evaluated"]]
    f32 = model.predict_prompts([item["image"]], boxes=[given.float()])
    f64 = model.predict_prompts([item["image"]], boxes=[given.double()])
    for prompt in f32:
        assert torch.equal(f32[prompt][0]["matched"], f64[prompt][0]["matched"]), prompt
        assert torch.allclose(f32[prompt][0]["masks"], f64[prompt][0]["masks"].float(), atol=1e-4)
    with pytest.raises(ValueError, match="not the string 'box'"):
        model.predict_prompts([item["image"]], prompts="box")
    with pytest.raises(ValueError, match="prompts is empty"):
        evaluate_prompts(model, val, prompts=())


def test_batched_coco_ap_with_loader_workers_equals_one_image_at_a_time(synthetic_dir):
    """COCO AP with images batched through the network and read by a worker process: the
    same AP as one image at a time (detections listed in image order either way); a bad
    batch size is refused."""
    from blade.engine import COMMITTED_CHECKPOINT, load_model

    model, _ = load_model(os.path.join(os.path.dirname(__file__), "..", COMMITTED_CHECKPOINT))
    val = AmodalDataset(os.path.join(synthetic_dir, "val.json"),
                        os.path.join(synthetic_dir, "val"), mode="eval", protocol="synthetic")
    one = coco_ap(model, val, limit=5, class_agnostic=True, progress=False)
    many = coco_ap(model, val, limit=5, class_agnostic=True, progress=False, batch_size=3,
                   workers=1)
    assert one.keys() == many.keys() and one["amodal_AP50"] > 0
    for k, v in one.items():
        assert many[k] == pytest.approx(v, abs=1e-3), k
    with pytest.raises(ValueError, match="batch_size must be an integer"):
        coco_ap(model, val, limit=2, progress=False, batch_size=0)
    # images of two sizes in one batch: grouped by size through the network, the detections
    # still listed in image order
    mixed = _Cropped(val)
    one = coco_ap(model, mixed, limit=5, class_agnostic=True, progress=False)
    many = coco_ap(model, mixed, limit=5, class_agnostic=True, progress=False, batch_size=5)
    assert one["amodal_AP50"] > 0
    for k, v in one.items():
        assert many[k] == pytest.approx(v, abs=1e-3), k


class _Cropped:
    """The odd items of a dataset cropped to their top 192 rows (image and masks)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = dict(self.dataset[i])
        if i % 2:
            for k in ("image", "amodal_masks", "visible_masks"):
                item[k] = item[k][..., :192, :].contiguous()
        return item
