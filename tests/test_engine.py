"""Training engine: data plan, schedule, exact resume, non-finite stop, checkpoints, DDP, CLI."""

import csv
import dataclasses
import json
import os
import socket
import subprocess
import sys
import warnings

import pandas as pd
import pytest
import torch

import blade.model
from blade.boxes import mask_to_box
from blade.config import preset
from blade.engine import (SATURATED_STEPS, NonFiniteLoss, hflip, load_checkpoint, load_model,
                          lr_factor, sample_plan, saturated_branches, stuck_branches, train)
from blade.train import main as train_main


def test_sample_plan_is_a_permutation_per_epoch_and_deterministic():
    plan = sample_plan(5, seed=1, start=0, count=10)
    assert sorted(i for i, _ in plan[:5]) == list(range(5))
    assert sorted(i for i, _ in plan[5:]) == list(range(5))
    assert plan[3:7] == sample_plan(5, seed=1, start=3, count=4)  # any window, same answer
    assert plan != sample_plan(5, seed=2, start=0, count=10)


def box_of(mask):
    return mask_to_box(mask.numpy()).tolist()


def test_hflip_mirrors_boxes_and_masks():
    item = {"image": torch.arange(12.0).reshape(1, 3, 4).expand(3, 3, 4),
            "amodal_boxes": torch.tensor([[0.0, 1.0, 1.0, 2.0]]),
            "visible_boxes": torch.tensor([[1.0, 0.0, 4.0, 3.0]])}
    f = hflip(item)
    assert f["amodal_boxes"].tolist() == [[3.0, 1.0, 4.0, 2.0]]
    assert f["visible_boxes"].tolist() == [[0.0, 0.0, 3.0, 3.0]]
    assert torch.equal(f["image"][0, 0], item["image"][0, 0].flip(0))
    mask = torch.zeros(1, 3, 4, dtype=torch.bool)
    mask[0, :, 0] = True  # the left column of the image
    f = hflip(dict(item, amodal_masks=mask))
    assert f["amodal_masks"][0, :, 3].all() and not f["amodal_masks"][0, :, :3].any()
    assert box_of(f["amodal_masks"][0]) == [3.0, 0.0, 4.0, 3.0]  # masks and boxes stay together


def test_lr_schedule():
    cfg = preset("paper")
    assert lr_factor(0, cfg) == pytest.approx(1 / 1000)
    assert lr_factor(999, cfg) == 1.0
    assert lr_factor(39999, cfg) == 1.0
    assert lr_factor(40000, cfg) == pytest.approx(0.1)
    assert lr_factor(54000, cfg) == pytest.approx(0.01)


def _data(synthetic_dir):
    return os.path.join(synthetic_dir, "train.json"), os.path.join(synthetic_dir, "train")


@pytest.mark.parametrize("pretrained", [False, True], ids=["scratch", "imagenet"])
def test_resumed_run_ends_with_the_same_weights(synthetic_dir, tmp_path, pretrained):
    # with ImageNet weights the backbone has frozen BN and a frozen stem: a resumed run must
    # rebuild exactly that architecture (and not download the weights again)
    cfg = preset("smoke", iterations=4, checkpoint_every=100, pretrained=pretrained)
    full = train(cfg, *_data(synthetic_dir), str(tmp_path / "full"), progress=False)
    part = train(cfg, *_data(synthetic_dir), str(tmp_path / "part"), progress=False, max_steps=2)
    assert load_checkpoint(part)["iteration"] == 2
    resumed = train(cfg, *_data(synthetic_dir), str(tmp_path / "part"), resume=True,
                    progress=False)
    a, b = load_checkpoint(full), load_checkpoint(resumed)
    assert a["iteration"] == b["iteration"] == 4
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    log = pd.read_csv(tmp_path / "part" / "log.csv")
    assert log.iteration.tolist() == [1, 2, 3, 4]  # the resumed run appends to the same log
    with pytest.raises(ValueError, match="different configuration"):
        train(dataclasses.replace(cfg, K=3.0), *_data(synthetic_dir), str(tmp_path / "part"),
              resume=True, progress=False)


def test_sec_per_it_counts_the_iterations_of_each_interval(synthetic_dir, tmp_path,
                                                           monkeypatch):
    """A clock that ticks once per reading: every logged interval lasts one tick, whatever
    number of iterations it holds. Rows at 2 (two iterations), then, resumed from the
    checkpoint at 3, at 4 (one) and at 5 (one, off the log_every grid)."""
    import itertools

    import blade.engine as engine
    from blade.transfer import logged_train_seconds

    ticks = itertools.count()
    monkeypatch.setattr(engine, "_clock", lambda: float(next(ticks)))
    cfg = preset("smoke", iterations=5, log_every=2, checkpoint_every=100)
    run = str(tmp_path / "run")
    train(cfg, *_data(synthetic_dir), run, progress=False, max_steps=3)
    train(cfg, *_data(synthetic_dir), run, resume=True, progress=False)
    log = pd.read_csv(os.path.join(run, "log.csv"))
    assert log.iteration.tolist() == [2, 4, 5]
    assert log.sec_per_it.tolist() == [0.5, 1.0, 1.0]
    # three ticks were logged; iteration 3 (trained before the stop, kept in the checkpoint,
    # logged by no row) is counted at the next row's rate
    assert logged_train_seconds(run) == 0.5 * 2 + 1.0 * 2 + 1.0 * 1


def test_non_finite_loss_stops_with_a_message(synthetic_dir, tmp_path, monkeypatch):
    real = blade.model.blade_criterion

    def poisoned(outputs, targets, cfg, iteration=0):
        terms, weights = real(outputs, targets, cfg, iteration)
        if iteration >= 3:
            terms["amo_uniform"] = terms["amo_uniform"] * float("nan")
        return terms, weights

    monkeypatch.setattr(blade.model, "blade_criterion", poisoned)
    cfg = preset("smoke", iterations=6, checkpoint_every=2)
    with pytest.raises(NonFiniteLoss, match=r"'amo_uniform' is nan at iteration 3.*last good "
                                            r"checkpoint is .*last.pt"):
        train(cfg, *_data(synthetic_dir), str(tmp_path), progress=False)
    assert load_checkpoint(str(tmp_path / "checkpoints" / "last.pt"))["iteration"] == 2


def test_saturated_branches_on_logged_values():
    # rows of the cpu-preset logs: Table 2 row 4 at iteration 30 (visible masks all ones),
    # row 3 at iteration 30 and the first logged step (p = 0.5): healthy
    collapsed = {"vis_proj": 1.203, "vis_pair": 6.7e-28, "amo_proj": 0.353, "amo_pair": 0.373}
    healthy = {"vis_proj": 0.375, "vis_pair": 0.284, "amo_proj": 0.320, "amo_pair": 0.359}
    start = {"vis_proj": 1.048, "vis_pair": 0.686, "amo_proj": 0.988, "amo_pair": 0.682}
    assert saturated_branches(collapsed) == ["vis"]
    assert saturated_branches(healthy) == [] and saturated_branches(start) == []
    all_zero = {"amo_proj": 2.0, "amo_pair": 0.0}  # the other saturation, no visible terms
    assert saturated_branches(all_zero) == ["amo"]
    assert saturated_branches({"vis_dice": 0.1}) == []  # non-BoxInst losses are not judged


def test_saturated_masks_warn_once_naming_branch_and_iteration(synthetic_dir, tmp_path,
                                                               monkeypatch):
    real = blade.model.blade_criterion

    def saturating(outputs, targets, cfg, iteration=0):
        terms, weights = real(outputs, targets, cfg, iteration)
        if iteration >= 2:  # what a collapsed visible branch logs
            terms["vis_pair"] = terms["vis_pair"] * 0.0
            terms["vis_proj"] = terms["vis_proj"] * 0.0 + 1.2
        return terms, weights

    monkeypatch.setattr(blade.model, "blade_criterion", saturating)
    cfg = preset("smoke", iterations=2 + SATURATED_STEPS + 3)
    with pytest.warns(RuntimeWarning, match="visible branch's masks look saturated since "
                                            "iteration 2 .*grad-clip") as caught:
        train(cfg, *_data(synthetic_dir), str(tmp_path), progress=False)
    assert sum("saturated" in str(w.message) for w in caught) == 1


def test_stuck_branches_on_logged_running_means():
    cpu = preset("cpu")  # lr warm-up 100 iterations
    # logged rows of the first var_isolate run (cpu, seed 0) at iteration 150: m_a nearly all
    # ones, amo_pair 0.19 (the saturation rule is silent), amo_proj 1.17; BLADE's run there
    stuck = {"vis_proj": 0.24, "vis_pair": 0.29, "amo_proj": 1.17, "amo_pair": 0.19}
    healthy = {"vis_proj": 0.23, "vis_pair": 0.24, "amo_proj": 0.20, "amo_pair": 0.27}
    assert saturated_branches(stuck) == []
    assert stuck_branches(stuck, 150, cpu) == ["amo"]
    assert stuck_branches(healthy, 150, cpu) == []
    assert stuck_branches(stuck, 99, cpu) == []  # before STUCK_AFTER
    paper = preset("paper")  # warm-up 1000: a high term at 500 is the warm-up's, not a collapse
    assert stuck_branches(stuck, 999, paper) == [] and stuck_branches(stuck, 1000, paper) == ["amo"]
    assert stuck_branches({"vis_dice": 1.5}, 500, cpu) == []


def _proj_schedule(monkeypatch, amo_proj):
    """Training whose logged amo_proj is ``amo_proj(iteration)`` and vis_proj a healthy 0.3."""
    real = blade.model.blade_criterion

    def scheduled(outputs, targets, cfg, iteration=0):
        terms, weights = real(outputs, targets, cfg, iteration)
        terms["amo_proj"] = terms["amo_proj"] * 0.0 + amo_proj(iteration)
        terms["vis_proj"] = terms["vis_proj"] * 0.0 + 0.3
        return terms, weights

    monkeypatch.setattr(blade.model, "blade_criterion", scheduled)


def _stuck_warnings(caught):
    return [str(w.message) for w in caught if "projection term is still" in str(w.message)]


def test_stuck_masks_warn_once_after_the_warm_up(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(blade.engine, "STUCK_AFTER", 0)
    monkeypatch.setattr(blade.engine, "STUCK_MIN_STEPS", 1)
    _proj_schedule(monkeypatch, lambda it: 1.2)  # nearly constant m_a from the start
    cfg = preset("smoke", iterations=7, lr_warmup=4)
    with pytest.warns(RuntimeWarning, match=r"amodal branch's projection term is still 1.20 "
                                            r"\(running mean\) at iteration 4,") as caught:
        train(cfg, *_data(synthetic_dir), str(tmp_path), progress=False)
    assert len(_stuck_warnings(caught)) == 1
    assert not any("saturated" in str(w.message) for w in caught)


def test_stuck_rule_reads_running_means_not_one_batch(synthetic_dir, tmp_path, monkeypatch):
    # a single high batch is no collapse: running means 0.3 -> 0.42 -> 0.53 stay below 0.9
    monkeypatch.setattr(blade.engine, "STUCK_AFTER", 0)
    monkeypatch.setattr(blade.engine, "STUCK_MIN_STEPS", 1)
    _proj_schedule(monkeypatch, lambda it: 1.5 if it in (3, 4) else 0.3)
    cfg = preset("smoke", iterations=16, lr_warmup=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg, *_data(synthetic_dir), str(tmp_path), progress=False, max_steps=6)
    assert _stuck_warnings(caught) == []
    # after a resume the running means start again from one batch: not judged on it
    monkeypatch.setattr(blade.engine, "STUCK_MIN_STEPS", 8)
    _proj_schedule(monkeypatch, lambda it: 1.5 if it == 6 else 0.3)  # 0.3 + 1.2 * 0.9^8 = 0.82
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg, *_data(synthetic_dir), str(tmp_path), resume=True, progress=False)
    assert _stuck_warnings(caught) == []


def test_checkpoints_are_safe_and_versioned(synthetic_dir, tmp_path):
    cfg = preset("smoke", iterations=2)
    path = train(cfg, *_data(synthetic_dir), str(tmp_path), progress=False)
    model, ckpt = load_model(path)
    assert ckpt["classes"] and not model.training
    bad = dict(ckpt, version=99)
    torch.save(bad, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="format version 99"):
        load_checkpoint(str(tmp_path / "old.pt"))
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a BLADE kit checkpoint"):
        load_checkpoint(str(tmp_path / "other.pt"))


def test_cli_overrides_any_field(synthetic_dir, tmp_path):
    train_main(["--preset", "smoke", "--data", synthetic_dir, "--out", str(tmp_path),
                "--iterations", "2", "--K", "2.5", "--use-fusion", "false",
                "--lr-steps", "1", "--no-progress"])
    saved = json.load(open(tmp_path / "config.json"))
    assert saved["K"] == 2.5 and saved["use_fusion"] is False and saved["lr_steps"] == [1]
    with open(tmp_path / "log.csv") as f:
        header = next(csv.reader(f))
    assert "region" not in header and "amo_neighbor" in header
    with pytest.raises(SystemExit, match="does not exist"):
        train_main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])


@pytest.mark.parametrize("method", ["boxinst_ba", "bbtp", "full"])
def test_baselines_train_with_their_own_terms(synthetic_dir, tmp_path, method, monkeypatch):
    from blade.data import AmodalDataset
    from blade.experiments import METHODS

    modes = []
    real_init = AmodalDataset.__init__

    def spy(self, *args, **kwargs):
        modes.append(kwargs.get("mode"))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(AmodalDataset, "__init__", spy)
    cfg = preset("smoke", iterations=2, **METHODS[method].overrides)
    train(cfg, *_data(synthetic_dir), str(tmp_path), progress=False)
    log = pd.read_csv(tmp_path / "log.csv")
    expected = {"boxinst_ba": {"vis_proj", "vis_pair"}, "bbtp": {"vis_mil", "vis_smooth"},
                "full": {"vis_dice"}}[method]
    mask_terms = {c for c in log.columns if c.startswith(("vis_", "amo_", "region"))}
    assert mask_terms == expected and log[sorted(expected)].notna().all().all()
    assert modes == ["masks" if method == "full" else "train"]  # only full supervision reads masks


@pytest.mark.parametrize("processes", [1, 2])
def test_ddp_on_cpu_keeps_replicas_identical(synthetic_dir, tmp_path, processes):
    """torchrun with gloo: two processes end with identical weights; one process started by
    torchrun also takes the distributed path (process group, DDP, the replica check)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
           f"--nproc_per_node={processes}",
           "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "blade.train",
           "--preset", "smoke", "--data", synthetic_dir, "--out", str(tmp_path),
           "--device", "cpu", "--iterations", "3", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    replicas = json.load(open(tmp_path / "replicas.json"))
    assert len(replicas["checksums"]) == processes and replicas["identical"]


def test_export_weights_is_small_loads_and_predicts_like_the_original(checkpoint, tmp_path):
    import torch

    from blade.engine import export_weights, load_checkpoint, load_model
    from blade.export import main as export_main

    out = str(tmp_path / "small.pt")
    info = export_weights(checkpoint, out, note="how it was made")
    full, small = load_checkpoint(checkpoint), load_checkpoint(out)
    assert "optimizer" not in small and small["note"] == "how it was made"
    assert small["iteration"] == full["iteration"] and small["classes"] == full["classes"]
    for k, v in full["model"].items():  # floats halved, integer buffers (BN counters) kept
        assert small["model"][k].dtype == (torch.float16 if v.is_floating_point() else v.dtype)
    float_bytes = sum(v.numel() * v.element_size() for v in full["model"].values())
    assert info["bytes"] < 0.6 * float_bytes  # the weights in half the bytes, plus a header
    model, _ = load_model(out)
    assert next(model.parameters()).dtype == torch.float32
    ref, _ = load_model(checkpoint)
    image = torch.rand(3, 64, 80)
    boxes = [torch.tensor([[8.0, 10.0, 40.0, 50.0]])]
    a = ref.predict([image], boxes=boxes)[0]
    b = model.predict([image], boxes=boxes)[0]
    assert torch.allclose(a["masks"], b["masks"], atol=2e-2)
    with pytest.raises(ValueError, match="the output is the input"):
        export_weights(checkpoint, checkpoint)
    with pytest.raises(SystemExit, match="exists; give another --out or --overwrite"):
        export_main(["--checkpoint", checkpoint, "--out", out])


def test_find_checkpoint_prefers_the_users_runs(tmp_path):
    from blade.engine import COMMITTED_CHECKPOINT, find_checkpoint

    assert find_checkpoint(str(tmp_path)) is None
    for rel in (COMMITTED_CHECKPOINT, "runs/cpu/checkpoints/last.pt"):
        os.makedirs(os.path.dirname(tmp_path / rel), exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
        assert find_checkpoint(str(tmp_path)) == os.path.join(str(tmp_path), rel)
