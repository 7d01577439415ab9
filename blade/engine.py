"""Training engine: one loop for a laptop CPU and for several GPUs (``torchrun`` + DDP).

    from blade.engine import train
    train(cfg, "data/synthetic/train.json", "data/synthetic/train", "runs/cpu")

What it guarantees:

* **Reproducible and resumable.** The data order and the flips are a pure function of
  (seed, sample counter): sample g is image ``perm_{g // N}[g % N]`` of a per-epoch permutation,
  flipped when a generator seeded with (seed, g) says so. A resumed run therefore sees exactly
  the batches the uninterrupted run would have seen; with the model, optimizer, scaler,
  iteration and RNG states restored (the learning rate is a function of the iteration) it ends
  with the same weights: bit for bit with ``deterministic=True`` (tested), otherwise within
  float rounding, since some CPU/GPU kernels accumulate in a varying order (two identical
  uninterrupted CPU runs already differ by ~1e-7 then).
* **Honest failures.** A non-finite loss term stops the run with a message naming the term,
  the iteration and the images of the batch; the last good checkpoint is left as it was. A
  checkpoint that cannot be written (a full disk) is an ``OSError`` saying so, the previous one
  intact; a checkpoint that cannot be read (missing, empty, truncated, not the kit's, weights
  that do not fit their configuration) is a :class:`CheckpointError` naming the file. A
  resumed run's ``log.csv`` is cut back to the checkpoint's iteration (no duplicate rows), and
  ``*.pt.tmp`` files left by an interrupted save are removed.
* **Collapse warning.** A BoxInst-style branch whose masks saturate (the sigmoid constant over
  the image: pairwise term ~0 while the projection term stays above its starting value) gets
  no gradient and never recovers; the loop warns once, naming the branch and the iteration
  (``saturated_branches``). Seen here after a gradient-norm spike early in the warm-up (Table 2
  row 4 of ``results/README.md``); ``grad_clip`` prevents it. A second, softer rule catches
  masks that are nearly but not exactly constant (the pairwise term not ~0, so the first rule
  is silent): the running mean of a projection term still above 0.9 (it starts near 1.05)
  once the learning-rate warm-up is over (``stuck_branches``; the first ``var_isolate`` run,
  whose amodal masks were nearly all ones from iteration 27 and whose amo_proj was logged
  above 0.9 at 55 of 56 logged steps up to iteration 580).
* **Logs.** ``RUN_DIR/log.csv`` (one row per ``log_every`` iterations: iteration, lr, total,
  every raw loss term, seconds per iteration), a tqdm bar with the running losses,
  ``RUN_DIR/config.json``, checkpoints in ``RUN_DIR/checkpoints/`` (every
  ``checkpoint_every`` iterations and at the end, ``last.pt`` pointing at the newest).
* **Scale.** AMP (fp16 autocast + GradScaler) on CUDA; under ``torchrun`` each process takes
  ``batch_size / world_size`` images and DistributedDataParallel averages the gradients; at the
  end the processes compare parameter checksums (``RUN_DIR/replicas.json``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import pickle
import random
import shutil
import time
import warnings

import numpy as np
import torch
import torch.distributed as dist

from .config import Config
from .criterion import total_loss
from .data import AmodalDataset, AnnotationError
from .model import BladeModel
from .utils import KitError, item_or_error, pick_device

CHECKPOINT_VERSION = 1
COMMITTED_CHECKPOINT = "checkpoints/blade_cpu_seed0.pt"  # fp16 weights, see checkpoints/README.md
RUN_FILES = ("config.json", "log.csv", "replicas.json")  # what a run folder holds besides checkpoints/
_clock = time.perf_counter  # the training log's clock (a test replaces it with a fake one)


class NonFiniteLoss(KitError, RuntimeError):
    """A loss term became NaN or infinite."""


class CheckpointError(KitError, ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


# -- data ---------------------------------------------------------------------------------------
def sample_plan(n_images: int, seed: int, start: int, count: int):
    """Image indices and flip flags of global samples start .. start+count-1."""
    out, perms = [], {}
    for g in range(start, start + count):
        epoch = g // n_images
        if epoch not in perms:
            perms[epoch] = torch.randperm(n_images, generator=torch.Generator().manual_seed(
                seed * 100003 + epoch)).tolist()
        flip = torch.rand((), generator=torch.Generator().manual_seed(seed * 1000003 + g)) < 0.5
        out.append((perms[epoch][g % n_images], bool(flip)))
    return out


def hflip(item: dict) -> dict:
    """Mirror an item left-right (image, boxes and any masks)."""
    w = item["image"].shape[-1]
    item = dict(item, image=item["image"].flip(-1))
    for key in ("amodal_masks", "visible_masks"):
        if key in item:
            item[key] = item[key].flip(-1)
    for key in ("amodal_boxes", "visible_boxes"):
        b = item[key]
        item[key] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)
    return item


class PlannedBatches(torch.utils.data.Dataset):
    """Dataset over iterations: element i is this process's share of iteration i's batch."""

    def __init__(self, dataset, cfg: Config, start_iteration: int, rank: int, world: int):
        self.ds, self.cfg, self.start, self.rank, self.world = dataset, cfg, start_iteration, rank, world
        self.per_rank = cfg.batch_size // world

    def __len__(self):
        return self.cfg.iterations - self.start

    def __getitem__(self, i):
        it = self.start + i
        first = it * self.cfg.batch_size + self.rank * self.per_rank
        items = []
        for idx, flip in sample_plan(len(self.ds), self.cfg.seed, first, self.per_rank):
            item = item_or_error(self.ds, idx)
            if isinstance(item, BaseException):  # a bad image read by a worker: hand it over
                return item
            items.append(hflip(item) if (flip and self.cfg.hflip) else item)
        return items


# -- schedule, checkpoints ----------------------------------------------------------------------
# A healthy BoxInst mask leaves the projection term below ~0.9 within a few dozen iterations
# (it starts near 1.05 with p = 0.5). A saturated one keeps it at 2 (all zeros) or, all ones, at
# the dice loss of the box's projections against full image lines (1.2 in the collapsed run,
# whose boxes are small against the 256 px image; the rule misses all-ones masks of boxes
# spanning most of the image), while the pairwise term, -log(p_i p_j + (1-p_i)(1-p_j)) over
# similar-colour edges, is ~0 (below 1e-17 in the collapsed run, 0.07-0.7 in healthy ones).
SATURATED_PAIR, SATURATED_PROJ, SATURATED_STEPS = 1e-4, 0.9, 5
STUCK_AFTER = 100  # iterations before stuck_branches judges (and never inside the lr warm-up)
# steps of this call of train before the running means are judged: they start from one batch's
# values (also after a resume); 0.9^20 = 0.12 of that start is left after 20 steps
STUCK_MIN_STEPS = 20


def saturated_branches(values: dict) -> list:
    """Branches (``"vis"``, ``"amo"``) whose raw loss terms of one step look saturated:
    ``<b>_pair < SATURATED_PAIR`` and ``<b>_proj > SATURATED_PROJ``."""
    return [b for b in ("vis", "amo") if f"{b}_pair" in values and f"{b}_proj" in values
            and values[f"{b}_pair"] < SATURATED_PAIR and values[f"{b}_proj"] > SATURATED_PROJ]


def stuck_branches(running: dict, iteration: int, cfg: Config) -> list:
    """Branches (``"vis"``, ``"amo"``) whose projection term's running mean ``running`` (the
    loop's exponential average) is still above ``SATURATED_PROJ`` at ``iteration``, once the
    learning-rate warm-up is over (and not before iteration ``STUCK_AFTER``). In the kit's
    logs (``runs/experiments/cpu*/*/log.csv``) no healthy run logs a projection term above 0.35
    after iteration 100; the stuck one logged above 0.9 at 55 of its 56 logged steps from
    iteration 30 to 580."""
    if iteration < max(cfg.lr_warmup, STUCK_AFTER):
        return []
    return [b for b in ("vis", "amo") if running.get(f"{b}_proj", 0.0) > SATURATED_PROJ]


def dataset_mode(cfg: Config) -> str:
    """The :class:`AmodalDataset` mode training ``cfg`` reads: box supervision never decodes a
    mask (``"train"``); only the fully supervised baseline reads them (``"masks"``)."""
    return "masks" if cfg.use_visible and cfg.vis_loss == "dice" else "train"


def lr_factor(iteration: int, cfg: Config) -> float:
    """Linear warm-up, then x0.1 at each of ``lr_steps`` (detectron2's WarmupMultiStepLR)."""
    warm = min(1.0, (iteration + 1) / cfg.lr_warmup) if cfg.lr_warmup > 0 else 1.0
    return warm * 0.1 ** sum(iteration >= s for s in cfg.lr_steps)


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
             "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
             "numpy_pos": int(np_state[2]), "numpy_has_gauss": int(np_state[3]),
             "numpy_gauss": float(np_state[4])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32),
                         state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_to_dict(cfg: Config) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


def config_from_dict(d: dict) -> Config:
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"checkpoint config has fields this kit does not know: {unknown}")
    return Config(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


def save_checkpoint(path, model, optimizer, scaler, iteration, cfg, classes):
    """Write a checkpoint atomically (temporary file, then rename); an ``OSError`` naming the
    file and the free space if it cannot be written, the previous file left intact."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    try:
        torch.save({"version": CHECKPOINT_VERSION, "kit": "blade", "iteration": iteration,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else {},
                    "config": config_to_dict(cfg), "classes": list(classes),
                    "rng": _rng_state()}, tmp)
        os.replace(tmp, path)  # a crash while writing never leaves a broken checkpoint
    except (OSError, RuntimeError) as e:  # torch reports a full disk as 'unexpected pos ...'
        if os.path.exists(tmp):
            os.remove(tmp)
        free = shutil.disk_usage(os.path.dirname(path)).free
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise OSError(f"{path}: cannot write the checkpoint ({reason}); {free / 1e6:.0f} MB free "
                      f"on that disk (full?). The previous checkpoint is unchanged") from e
    return path


def remove_partial_checkpoints(ckpt_dir: str) -> list:
    """Delete ``*.pt.tmp`` files that an interrupted save left in ``ckpt_dir``."""
    if not os.path.isdir(ckpt_dir):
        return []
    stale = [os.path.join(ckpt_dir, n) for n in sorted(os.listdir(ckpt_dir)) if n.endswith(".pt.tmp")]
    for p in stale:
        os.remove(p)
    return stale


def _read_checkpoint_file(path: str, map_location):
    """``torch.load(weights_only=True)`` with one clear error per way a file can be wrong."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04" and head[:1] != b"\x80":  # torch's zip format / a raw pickle
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (it starts with {head!r}); "
                              f"checkpoints are written by python -m blade.train")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused: it holds objects other than tensors and plain containers, which "
            f"the safe loader does not run; this kit never writes such files, so it was not "
            f"written by blade.train (or was altered)") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(f"{path}: cannot read the checkpoint: the file is truncated or "
                              f"corrupt ({reason})") from e


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Read a kit checkpoint safely (``weights_only=True``) and check its version and fields;
    :class:`CheckpointError` naming the file otherwise."""
    ckpt = _read_checkpoint_file(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("kit") != "blade":
        raise CheckpointError(f"{path} is not a BLADE kit checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} was written by checkpoint format version "
                              f"{ckpt.get('version')}; this kit reads version "
                              f"{CHECKPOINT_VERSION}")
    for key, kind in (("model", dict), ("config", dict), ("classes", list), ("iteration", int)):
        if not isinstance(ckpt.get(key), kind):
            raise CheckpointError(f"{path}: kit checkpoint without a valid '{key}' (the file is "
                                  f"incomplete or was edited)")
    return ckpt


def _weights_mismatch(model: torch.nn.Module, state: dict) -> str:
    """What differs between a model's parameters and a state dict, in a few words."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and torch.is_tensor(state[k])
             and tuple(state[k].shape) != tuple(own[k].shape)]
    first = (missing + unexpected + shape)[:1]
    return (f"{len(missing)} missing, {len(unexpected)} unexpected, {len(shape)} of another "
            f"shape" + (f", e.g. '{first[0]}'" if first else ""))


def model_from_checkpoint(ckpt: dict, path: str, load_weights: bool = False) -> BladeModel:
    """Build the network a checkpoint's configuration describes and load its weights."""
    try:
        cfg = config_from_dict(ckpt["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its saved configuration is not valid: {e}") from e
    model = BladeModel(cfg, load_weights=load_weights)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: the weights do not fit the configuration saved with "
                              f"them ({_weights_mismatch(model, ckpt['model'])})") from e
    return model


def load_model(path: str, device="cpu") -> tuple[BladeModel, dict]:
    """A trained model from a checkpoint (weights only, no ImageNet download)."""
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, path)
    return model.to(device).eval(), ckpt


def export_weights(src: str, dst: str, half: bool = True, note: str | None = None) -> dict:
    """A small copy of a checkpoint for sharing or committing: the weights (float16 with
    ``half``; floating-point tensors only, integer buffers kept), configuration, classes and
    iteration, without optimizer state or RNG (it cannot be resumed, only loaded with
    :func:`load_model`, which casts the weights back to float32). ``note`` (e.g. the command
    that made the run) is stored as ``note``. Refuses to write over ``src``. Returns the
    written checkpoint's summary: path, bytes, tensors."""
    ckpt = load_checkpoint(src)
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise ValueError(f"{dst}: the output is the input checkpoint; give another file")
    weights = {k: (v.half() if half and v.is_floating_point() else v).contiguous()
               for k, v in ckpt["model"].items()}
    small = {"version": CHECKPOINT_VERSION, "kit": "blade", "iteration": ckpt["iteration"],
             "model": weights, "config": ckpt["config"], "classes": ckpt["classes"],
             "exported_from": os.path.basename(src), "note": note or ""}
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tmp = dst + ".tmp"
    torch.save(small, tmp)
    os.replace(tmp, dst)
    return {"path": dst, "bytes": os.path.getsize(dst), "tensors": len(weights)}


def find_checkpoint(root: str = ".", candidates=None) -> str | None:
    """The first checkpoint that exists among the runs a user makes first (``make demo``,
    notebook 05, ``blade.train --out runs/cpu``, the experiments' BLADE run) and, last, the
    small committed one (``checkpoints/blade_cpu_seed0.pt``); paths relative to ``root`` (the
    repository). ``None`` if there is none."""
    candidates = candidates or ("runs/demo/run/checkpoints/last.pt", "runs/nb05_cpu/checkpoints/last.pt",
                                "runs/cpu/checkpoints/last.pt",
                                "runs/experiments/cpu/blade/checkpoints/last.pt",
                                COMMITTED_CHECKPOINT)
    for rel in candidates:
        path = os.path.join(root, rel)
        if os.path.isfile(path):
            return path
    return None


def run_files(out_dir: str) -> list:
    """The files of a training run in ``out_dir`` (empty: no run there)."""
    found = [os.path.join(out_dir, n) for n in RUN_FILES if os.path.isfile(os.path.join(out_dir, n))]
    ckpt_dir = os.path.join(out_dir, "checkpoints")
    if os.path.isdir(ckpt_dir):
        found += [os.path.join(ckpt_dir, n) for n in sorted(os.listdir(ckpt_dir))
                  if n.endswith((".pt", ".pt.tmp"))]
    return found


def prepare_run_dir(out_dir: str, resume: bool = False, overwrite: bool = False) -> list:
    """Check a run folder before training into it (the CLI's guard against losing a run).

    A folder holding a run is refused unless ``resume`` (continue it: its ``last.pt`` must
    exist) or ``overwrite`` (its run files, listed by ``run_files``, are deleted first; other
    files are left alone). Returns the deleted files."""
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out, --overwrite replaces it: give "
                         "one of them")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"{out_dir}: --out is a file; give a folder for the run")
    last = os.path.join(out_dir, "checkpoints", "last.pt")
    if resume:
        if not os.path.isfile(last):
            raise CheckpointError(f"{last}: --resume, but there is no checkpoint to continue "
                                  f"from; start the run without --resume")
        return []
    found = run_files(out_dir)
    if found and not overwrite:
        raise ValueError(f"{out_dir}: already holds a training run ({', '.join(found[:3])}"
                         f"{', ...' if len(found) > 3 else ''}); continue it with --resume, "
                         f"replace it with --overwrite, or give another --out")
    for p in found:
        os.remove(p)
    return found


def truncate_log(path: str, iteration: int) -> int:
    """Keep the header and the rows up to ``iteration`` of a run's ``log.csv`` (the rows a
    resumed run will write again, and a row cut off by an interruption, go); returns the
    number of rows removed."""
    if not os.path.isfile(path):
        return 0
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return 0
    header, body = rows[0], rows[1:]

    def keep(row):
        return (len(row) == len(header) and row[0].isdigit() and int(row[0]) <= iteration)

    kept = [r for r in body if keep(r)]
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows([header] + kept)
    os.replace(tmp, path)
    return len(body) - len(kept)


# -- the loop ------------------------------------------------------------------------------------
def _dist_info():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def _distributed(world: int) -> bool:
    """Train with a process group and DDP: several processes, or one started by ``torchrun``
    (which sets ``MASTER_ADDR`` and ``RANK``), so that ``torchrun --nproc_per_node=1`` runs
    the distributed path (NCCL on a GPU) as a larger run would."""
    return world > 1 or ("MASTER_ADDR" in os.environ and "RANK" in os.environ)


def train(cfg: Config, train_ann: str, train_images: str, out_dir: str, resume: bool = False,
          schema: str = "auto", progress: bool = True, max_steps: int | None = None) -> str:
    """Train BLADE; returns the path of the last checkpoint written.

    ``max_steps`` stops this call after that many iterations (with a checkpoint), so a long run
    can be done in chunks with ``resume=True``; the schedule always follows ``cfg.iterations``.
    """
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int)
                                  or max_steps < 1):
        raise ValueError(f"max_steps (--max-steps) must be an integer >= 1, got {max_steps!r}")
    world, rank, local = _dist_info()
    own_group = _distributed(world) and not dist.is_initialized()
    if own_group:
        backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
        dist.init_process_group(backend)
    try:
        result = _train(cfg, train_ann, train_images, out_dir, resume, schema, progress,
                        max_steps, world, rank, local)
    except BaseException:
        if own_group:  # no barrier here: the other processes may never reach it
            dist.destroy_process_group()
        raise
    if own_group:  # exiting with a live gloo/NCCL group aborts the process at teardown
        dist.barrier()
        dist.destroy_process_group()
    return result


def _train(cfg, train_ann, train_images, out_dir, resume, schema, progress, max_steps,
           world, rank, local):
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {world} processes")
    device = pick_device(cfg.device)
    previous_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)

    dataset = AmodalDataset(train_ann, train_images, mode=dataset_mode(cfg), schema=schema)
    if len(dataset) == 0:
        skipped = {k: len(v) for k, v in dataset.report.items()}
        raise AnnotationError(f"{train_ann}: no image has an instance to train on (skipped: "
                              f"{skipped or 'none'}; {len(dataset.classes)} classes)")
    if cfg.num_classes != len(dataset.classes):
        if rank == 0:
            print(f"num_classes set to {len(dataset.classes)} from {train_ann} "
                  f"({dataset.classes})")
        cfg = dataclasses.replace(cfg, num_classes=len(dataset.classes))

    ckpt_dir = os.path.join(out_dir, "checkpoints")
    last = os.path.join(ckpt_dir, "last.pt")
    torch.manual_seed(cfg.seed)
    start = 0
    state = None
    if rank == 0:
        remove_partial_checkpoints(ckpt_dir)  # left by a save that was interrupted
    if resume:
        if not os.path.isfile(last):
            raise CheckpointError(f"{last}: resume asked for, but there is no checkpoint to "
                                  f"continue from")
        state = load_checkpoint(last)
        try:
            saved = config_from_dict(state["config"])
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{last}: its saved configuration is not valid: {e}") from e
        if saved != cfg:
            diff = {f.name: (getattr(saved, f.name), getattr(cfg, f.name))
                    for f in dataclasses.fields(Config)
                    if getattr(saved, f.name) != getattr(cfg, f.name)}
            raise ValueError(f"--resume with a different configuration than the run in "
                             f"{out_dir}: {diff} (saved, now)")
        start = state["iteration"]
    model = BladeModel(cfg, load_weights=state is None)  # resuming: weights come from the checkpoint
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{last}: the saved weights or optimizer state do not fit the "
                                  f"configuration ({_weights_mismatch(model, state['model'])})"
                                  ) from e
        if scaler is not None and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
    net = model
    if _distributed(world):
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local] if device.type == "cuda" else None,
            find_unused_parameters=True)  # images without positives leave the mask heads unused

    if rank == 0:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump(config_to_dict(cfg), f, indent=1)
    loader = torch.utils.data.DataLoader(
        PlannedBatches(dataset, cfg, start, rank, world), batch_size=None, shuffle=False,
        num_workers=cfg.workers, persistent_workers=False,
        pin_memory=device.type == "cuda")  # page-locked batches: copies overlap the compute

    log_path = os.path.join(out_dir, "log.csv")
    if resume and rank == 0:  # rows after the checkpoint would be written twice
        truncate_log(log_path, start)
    log_file, writer = None, None
    from tqdm import tqdm

    bar = tqdm(total=cfg.iterations, initial=start, disable=not progress or rank != 0,
               desc="train", unit="it", dynamic_ncols=True)
    running, streak, stuck = {}, {}, set()
    t_last, logged_at = _clock(), start  # the last row's time and iteration (sec_per_it)
    final = last
    try:
        for i, batch in enumerate(loader):
            if isinstance(batch, BaseException):  # a worker could not load an item
                raise batch
            it = start + i
            terms, weights, values = forward_step(net, batch, it, cfg, optimizer, device, use_amp)
            bad = [k for k, v in values.items() if not math.isfinite(v)]
            if bad:
                raise NonFiniteLoss(
                    f"loss term '{bad[0]}' is {values[bad[0]]} at iteration {it} "
                    f"(also non-finite: {bad[1:]}; images of the batch: {_batch_names(batch)}); "
                    f"stopped. The last good checkpoint is "
                    f"{last if os.path.exists(last) else 'none (no checkpoint written yet)'}")
            sat = saturated_branches(values)
            for b in ("vis", "amo"):
                streak[b] = streak.get(b, 0) + 1 if b in sat else 0
                if streak[b] == SATURATED_STEPS:  # once per collapse
                    name = {"vis": "visible", "amo": "amodal"}[b]
                    warnings.warn(
                        f"{out_dir}: the {name} branch's masks look saturated since iteration "
                        f"{it + 1 - SATURATED_STEPS} ({b}_pair {values[f'{b}_pair']:.1e}, "
                        f"{b}_proj {values[f'{b}_proj']:.2f} for {SATURATED_STEPS} steps): its "
                        f"gradients vanish and it will not recover. Restart with gradient "
                        f"clipping (grad_clip, e.g. --grad-clip 10) or another seed.",
                        RuntimeWarning, stacklevel=2)
            backward_step(total_loss(terms, weights), optimizer, scaler, params, cfg)

            for k, v in values.items():
                running[k] = 0.9 * running.get(k, v) + 0.1 * v
            judged = rank == 0 and i + 1 >= STUCK_MIN_STEPS  # rank 0 logs the running means
            for b in stuck_branches(running, it, cfg) if judged else []:
                if b not in stuck:  # once per call of train
                    stuck.add(b)
                    name = {"vis": "visible", "amo": "amodal"}[b]
                    warnings.warn(
                        f"{out_dir}: the {name} branch's projection term is still "
                        f"{running[f'{b}_proj']:.2f} (running mean) at iteration {it}, after "
                        f"the warm-up; healthy runs are near 0.3 by then. Its masks are likely "
                        f"(nearly) constant over the image and the rest of the network trains "
                        f"on their gradients. Check the run (results/grad_probe.py replays its "
                        f"first iterations); gradient clipping (--grad-clip 10) or another seed "
                        f"may avoid it.", RuntimeWarning, stacklevel=2)
            done = it + 1
            if rank == 0 and (done % cfg.log_every == 0 or done == cfg.iterations):
                now = _clock()
                # per iteration of this interval: fewer than log_every for the last row of an
                # off-grid schedule and the first after an off-grid resume
                row = {"iteration": done, "lr": optimizer.param_groups[0]["lr"],
                       "total": sum(weights[k] * values[k] for k in values), **values,
                       "sec_per_it": (now - t_last) / max(done - logged_at, 1)}
                t_last, logged_at = now, done
                if writer is None:
                    new = not (resume and os.path.isfile(log_path)
                               and os.path.getsize(log_path) > 0)
                    log_file = open(log_path, "w" if new else "a", newline="")
                    writer = csv.DictWriter(log_file, fieldnames=list(row))
                    if new:
                        writer.writeheader()
                writer.writerow(row)
                log_file.flush()
            if rank == 0 and (done % cfg.checkpoint_every == 0 or done == cfg.iterations):
                path = os.path.join(ckpt_dir, f"iter_{done:07d}.pt")
                save_checkpoint(path, model, optimizer, scaler, done, cfg, dataset.classes)
                save_checkpoint(last, model, optimizer, scaler, done, cfg, dataset.classes)
                final = path
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in list(running.items())[:4]})
            if max_steps is not None and i + 1 >= max_steps and done < cfg.iterations:
                if rank == 0:
                    path = os.path.join(ckpt_dir, f"iter_{done:07d}.pt")
                    save_checkpoint(path, model, optimizer, scaler, done, cfg, dataset.classes)
                    save_checkpoint(last, model, optimizer, scaler, done, cfg, dataset.classes)
                    final = path
                break
        if _distributed(world):
            _check_replicas(model, out_dir, rank)
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
        torch.use_deterministic_algorithms(previous_det)
    return final


def forward_step(net, batch: list, it: int, cfg: Config, optimizer, device, use_amp: bool,
                 amp_dtype=torch.float16):
    """The first half of iteration ``it``: set its learning rate, move ``batch`` (a list of
    items) to ``device`` and run the network's training forward, in autocast with
    ``amp_dtype`` where ``use_amp``. Returns the loss ``terms`` and their ``weights`` (dicts of
    name -> tensor / float) and ``values``, the terms as floats: the one device->host transfer
    of a step, which serves both the finite check and the log."""
    for g in optimizer.param_groups:
        g["lr"] = cfg.lr * lr_factor(it, cfg)
    copy = device.type == "cuda"  # non_blocking: from pinned memory, asynchronous on CUDA
    images = [b["image"].to(device, non_blocking=copy) for b in batch]
    targets = [{k: (v.to(device, non_blocking=copy) if torch.is_tensor(v) else v)
                for k, v in b.items()} for b in batch]
    with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
        terms, weights = net(images, targets, iteration=it)
    values = dict(zip(terms, torch.stack([v.detach().float() for v in terms.values()]).tolist()))
    return terms, weights, values


def backward_step(loss: torch.Tensor, optimizer, scaler, params: list, cfg: Config) -> None:
    """The second half of an iteration: gradients of ``loss`` (through the ``scaler`` of
    float16 AMP where there is one), clipped to ``cfg.grad_clip`` when it is > 0, and the
    optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()


def _batch_names(batch: list) -> str:
    """'000001.png (image id 2), ...' for the items of a batch."""
    return ", ".join(f"{b.get('file_name')} (image id {b.get('image_id')})" for b in batch)


def _check_replicas(model, out_dir, rank):
    """All processes must hold the same weights after DDP training."""
    device = next(model.parameters()).device
    checksum = torch.tensor([sum(float(p.detach().double().sum()) for p in model.parameters())],
                            dtype=torch.float64, device=device)
    sums = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(sums, checksum)
    values = [float(s) for s in sums]
    if rank == 0:
        with open(os.path.join(out_dir, "replicas.json"), "w") as f:
            json.dump({"checksums": values, "identical": len(set(values)) == 1}, f)
    if len(set(values)) != 1:
        raise RuntimeError(f"DDP replicas diverged: parameter checksums {values}")
