"""The GPU path (issue 15): the GPU benchmark script, run here on the CPU, and tests that need
CUDA (marked ``cuda``), skipped with their reason where there is none (CI, this machine); they
run on a lent GPU machine with ``tools/gpu_bench.sh`` (results/README.md, "GPU speed")."""

import json
import os
import socket
import subprocess
import sys

import pandas as pd
import pytest
import torch

from blade.config import preset
from blade.engine import load_checkpoint, load_model, train

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def needs_cuda(test):
    """Marked ``cuda`` (tools/gpu_bench.sh runs ``-m cuda``), skipped without a CUDA GPU."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(),
                              reason="needs a CUDA GPU (none here; CI never has one)")
    return pytest.mark.cuda(skip(test))


def _data(synthetic_dir):
    return os.path.join(synthetic_dir, "train.json"), os.path.join(synthetic_dir, "train")


def test_gpu_benchmark_runs_on_the_cpu_and_reports_its_parts(synthetic_dir, tmp_path):
    """bench_gpu.py on the CPU with the smoke preset: the report names the device and the
    setting, data wait and compute are measured, the JSON line holds every number."""
    out = tmp_path / "bench.jsonl"
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "bench_gpu.py"), "--data",
           synthetic_dir, "--device", "cpu", "--preset", "smoke", "--steps", "2", "--warmup", "1",
           "--eval-images", "2", "--eval-batch", "2", "--json", str(out),
           "--profile", str(tmp_path / "prof.txt"), "--profile-steps", "2",
           "--count-ops", str(tmp_path / "ops.txt")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "training, preset smoke (efficientnet_lite0, 128 px, batch 2" in res.stdout
    assert "box prompt" in res.stdout and "COCO AP" in res.stdout
    row = json.loads(out.read_text().splitlines()[-1])
    assert row["steps"] == 2 and row["amp"] == "off"  # autocast is for CUDA only
    assert 0 <= row["data_s"] < row["step_s"] and 0 < row["compute_s"] <= row["step_s"]
    assert row["eval_images"] == 2 and row["eval_box_images_per_s"] > 0
    assert row["peak_rss_mib"] > 0
    # the profiled steps come after the timed ones; on the CPU nothing waits for a device, but
    # the masks' data-dependent shapes (nonzero) are counted per step
    prof = (tmp_path / "prof.txt").read_text()
    assert prof.startswith("torch.profiler over 1 training step (") and "aten::" in prof
    assert "== by self device time" not in prof  # CPU: no device table
    # the spied step names the kit's own lines: the pairwise term's edge selection (a nonzero
    # per call, kept: on a CPU it makes the cost proportional to the kept edges) is one of them
    assert "== called from" in prof and "nonzero  " in prof and "blade/pairwise.py:" in prof
    assert row["profile_calls_per_step"].get("aten::nonzero", 0) > 0
    # one more step under OpCounter: every operator by the part that called it, forward and
    # backward; the edge selection's nonzero is a sync of its part
    ops = pd.read_fwf(tmp_path / "ops.txt", skiprows=3, index_col=0)
    assert {"backbone", "FCOS head", "mask branch", "pairwise.py:gather_edges", "total"} \
        <= set(ops.index)
    assert ops.loc["pairwise.py:gather_edges", "syncs"] > 0
    # every backward operator found the part whose forward made its node, and each of the
    # network's parts has backward operators of its own
    assert "(untagged)" not in ops.index
    assert (ops.loc[["backbone", "fpn", "FCOS head", "mask branch"], "backward"] > 0).all()
    assert row["ops_per_step"] == {k: int(v) for k, v in ops.loc["total"].items()}
    assert f"operators per step: {row['ops_per_step']['all']} (" in res.stdout
    # the same step under float16 autocast on the CPU (--cpu-amp): the casts a GPU step has
    amp = subprocess.run(cmd[:cmd.index("--steps")] + [
        "--steps", "1", "--warmup", "0", "--eval-images", "0", "--cpu-amp", "--amp", "fp16",
        "--json", str(out),
        "--count-ops", str(tmp_path / "ops_amp.txt")], capture_output=True, text=True,
        timeout=300, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert amp.returncode == 0, amp.stderr[-3000:]
    row_amp = json.loads(out.read_text().splitlines()[-1])
    assert row_amp["amp"] == "fp16" and "amp fp16" in (tmp_path / "ops_amp.txt").read_text()
    assert row_amp["ops_per_step"]["casts"] > row["ops_per_step"]["casts"]
    bad = subprocess.run(cmd[:2] + ["--data", str(tmp_path / "none")], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert bad.returncode != 0 and "none/train.json does not exist" in bad.stderr
    # --compile (run by the check mode of tools/gpu_bench.sh, below): a misspelt part and a
    # compiled step's operator count are refused before any work
    typo = subprocess.run(cmd[:4] + ["--compile", "backbone,fpn"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert typo.returncode != 0 and "unknown part(s) ['fpn']" in typo.stderr
    both = subprocess.run(cmd[:4] + ["--compile", "head", "--count-ops", "x.txt"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert both.returncode != 0 and "counts the eager step's operators" in both.stderr


def test_gpu_bench_script_runs_every_setting_in_check_mode(synthetic_dir, tmp_path):
    """tools/gpu_bench.sh (meant for a lent GPU machine) in its CPU check mode, from a folder
    of its own: one report per setting with its command line, one JSON line per setting; an
    unknown mode is refused."""
    script = os.path.join(ROOT, "tools", "gpu_bench.sh")
    env = dict(os.environ, PY=sys.executable, DATA=synthetic_dir, OUT=str(tmp_path / "out"),
               OMP_NUM_THREADS="1")
    r = subprocess.run(["bash", script, "check"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr + (tmp_path / "out" / "log.txt").read_text()[-3000:]
    txt = (tmp_path / "out" / "bench_gpu.txt").read_text()
    assert txt.count("$ python benchmarks/bench_gpu.py") == txt.count("device: ") == 7
    assert txt.count(", compiled backbone,head,mask_branch (") == 2
    assert "(failed" not in txt and txt.count("evaluation, ") == 1
    assert txt.count("profiled, calls per step") == 2
    for name in ("profile_paper.txt", "profile_cpu512.txt"):
        assert "== by self host time" in (tmp_path / "out" / name).read_text()
    assert "operators of one training step by part" in (tmp_path / "out" / "ops_paper.txt"
                                                         ).read_text()
    assert txt.count("operators per step: ") == 1
    rows = [json.loads(x) for x in (tmp_path / "out" / "bench_gpu.jsonl").read_text().splitlines()]
    assert [r.get("compile_mode") for r in rows] == ["off", "off", "off", None, "off",
                                                     "default", "reduce-overhead"]
    assert [r.get("workers") for r in rows[1:3]] == [8, 8]
    assert rows[3]["eval_batch"] == 8 and rows[3]["eval_workers"] == 4
    r = subprocess.run(["bash", script, "fast"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "unknown mode 'fast'" in r.stderr


# -- CUDA only -----------------------------------------------------------------------------------
@needs_cuda
def test_paper_steps_with_amp_are_finite_and_resume(synthetic_dir, tmp_path):
    """The paper's network at a reduced size with fp16 AMP and its grad scaler (without
    ImageNet weights, which the GPU machines cannot download, so the variant whose stem and
    batch norm train, not the frozen one of a pretrained run): finite losses, and a run cut after 2 iterations and resumed ends where the
    uninterrupted one does. Bit-exactness is not promised on a GPU (cuDNN and cuBLAS may sum
    in another order): weights within 1e-3 absolute, logged terms within 1e-2 relative."""
    cfg = preset("paper", pretrained=False, iterations=4, checkpoint_every=100, batch_size=2,
                 min_size=256, max_size=256, workers=0, device="cuda", lr_warmup=2,
                 log_every=1)
    assert cfg.amp
    full = train(cfg, *_data(synthetic_dir), str(tmp_path / "full"), progress=False)
    train(cfg, *_data(synthetic_dir), str(tmp_path / "part"), progress=False, max_steps=2)
    resumed = train(cfg, *_data(synthetic_dir), str(tmp_path / "part"), resume=True,
                    progress=False)
    a, b = load_checkpoint(full), load_checkpoint(resumed)
    assert a["iteration"] == b["iteration"] == 4 and b["scaler"]  # the scaler's state is saved
    for k, v in a["model"].items():
        assert torch.allclose(v.float(), b["model"][k].float(), atol=1e-3), k
    log_a = pd.read_csv(tmp_path / "full" / "log.csv").set_index("iteration")
    log_b = pd.read_csv(tmp_path / "part" / "log.csv").set_index("iteration")
    terms = [c for c in log_a.columns if c not in ("lr", "sec_per_it")]
    assert log_a[terms].notna().all().all() and list(log_b.index) == [1, 2, 3, 4]
    assert ((log_a[terms] - log_b[terms]).abs() <= 1e-2 * log_a[terms].abs() + 1e-4).all().all()


@needs_cuda
def test_torchrun_one_process_with_nccl_leaves_a_checkpoint(synthetic_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=1",
           "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "blade.train",
           "--preset", "smoke", "--data", synthetic_dir, "--out", str(tmp_path),
           "--device", "cuda", "--iterations", "3", "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert load_checkpoint(str(tmp_path / "checkpoints" / "last.pt"))["iteration"] == 3
    assert json.load(open(tmp_path / "replicas.json"))["identical"]


@needs_cuda
def test_gpu_and_cpu_predictions_of_one_checkpoint_agree(synthetic_dir):
    """The committed checkpoint's answers to given boxes on CUDA and on the CPU: the same
    locations (matched flags, labels), mask probabilities within 1e-3 (float32 both: cuDNN's
    TF32 convolutions are switched off here; it may still sum in another order), and the
    evaluation's IoUs within 1e-2, the GPU batching 3 images per forward pass."""
    from blade.data import AmodalDataset
    from blade.engine import COMMITTED_CHECKPOINT
    from blade.evaluate import LEVEL_COLUMNS, evaluate_prompts

    path = os.path.join(ROOT, COMMITTED_CHECKPOINT)
    cpu, _ = load_model(path, device="cpu")
    gpu, _ = load_model(path, device="cuda")
    val = AmodalDataset(os.path.join(synthetic_dir, "val.json"),
                        os.path.join(synthetic_dir, "val"), mode="eval", protocol="synthetic")
    item = val[0]
    given = [item["visible_boxes"][item["evaluated"]]]
    a = cpu.predict_prompts([item["image"]], boxes=given)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        b = gpu.predict_prompts([item["image"].cuda()], boxes=[g.cuda() for g in given])
        rows_gpu = evaluate_prompts(gpu, val, progress=False, batch_size=3)
    for prompt in a:
        x, y = a[prompt][0], b[prompt][0]
        assert torch.equal(x["matched"], y["matched"].cpu()), prompt
        assert torch.equal(x["labels"], y["labels"].cpu()), prompt
        assert (x["masks"] - y["masks"].cpu()).abs().max() < 1e-3, prompt
    rows_cpu = evaluate_prompts(cpu, val, progress=False)
    for prompt, rows in rows_cpu.items():
        other = rows_gpu[prompt]
        assert len(rows) > 0 and rows["matched"].equals(other["matched"]), prompt
        for col in LEVEL_COLUMNS:
            diff = (rows[col] - other[col]).abs().max()
            assert diff < 1e-2, (prompt, col, diff)
