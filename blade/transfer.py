"""Moving trained runs between machines: train on a GPU, evaluate on any CPU.

A GPU machine trains many runs side by side in minutes, but what comes back from it is small
(on the kit's lent machines: a few files of at most 16 MiB each) and its evaluation path is
not the one the committed results were made with. So the study's runs travel as weights only:

    # on the GPU machine, after `python -m blade.experiments study --preset P --train-only`
    python -m blade.experiments export --preset P --only blade,table2_3 --out OUT
    # back here: put them where the runner looks, then evaluate as usual
    python -m blade.experiments adopt --preset P --weights OUT
    python -m blade.experiments study --preset P --data data/synthetic --only blade,table2_3

``export_runs`` writes ``OUT/<run>.pt`` for each finished run: float16 weights without
optimizer state (:func:`blade.engine.export_weights`; float16 rounding moves a per-object IoU
by at most 0.22 points on the committed checkpoint, ``checkpoints/README.md``), with a note
(JSON) saying where and how long it trained. ``adopt_runs`` checks each file (a known run
name, the configuration that name has under the preset, the full schedule) and installs it as
``RUNS/<preset>/<run>/checkpoints/last.pt`` with a ``timing.json`` that carries the training
machine and wall time into the results' ``meta.json``, and the training log (``log.csv``,
carried inside the note). An adopted run cannot be resumed or trained further: only evaluated.
``tools/gpu_study.sh`` is the GPU side for the kit's lent machines (results/README.md).
"""

from __future__ import annotations

import json
import os
import shutil

TIMING = "timing.json"  # in a run folder: training wall time, calls, and where it trained


def machine() -> str:
    """This machine in a few words: CPU cores and architecture, and the GPU if there is one."""
    import platform

    import torch

    text = f"{os.cpu_count()}-core {platform.machine()} {platform.system()}"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return text


def read_timing(run_dir: str) -> dict:
    """A run folder's ``timing.json`` (zero time, no calls when there is none)."""
    path = os.path.join(run_dir, TIMING)
    if not os.path.exists(path):
        return {"train_s": 0.0, "calls": 0}
    with open(path) as f:
        return json.load(f)


def write_timing(run_dir: str, timing: dict) -> None:
    """Write a run folder's ``timing.json`` (see ``read_timing``)."""
    with open(os.path.join(run_dir, TIMING), "w") as f:
        json.dump(timing, f)


def logged_train_seconds(run_dir: str) -> float | None:
    """Training wall time of the iterations a run kept, summed from its ``log.csv``: each row's
    ``sec_per_it`` times the iterations since the row before, over every sitting, the stopped
    ones too (``timing.json`` counts only the calls that returned). Not counted: each sitting's
    setup before its first iteration, and the iterations a stopped sitting trained past its last
    checkpoint (the resumed run's log is cut back to the checkpoint and trains them again, then
    they count once). A resume from a checkpoint between two rows counts the iterations from the
    last kept row to the checkpoint at the next row's rate. None without a log or with a log of
    another layout (e.g. written before ``sec_per_it`` existed)."""
    import csv

    path = os.path.join(run_dir, "log.csv")
    if not os.path.isfile(path):
        return None
    total, before = 0.0, 0
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                it, sec = int(row["iteration"]), float(row["sec_per_it"])
            except (KeyError, TypeError, ValueError):
                return None
            total += sec * (it - before)
            before = it
    return total


def trained_iterations(run_dir: str) -> int:
    """Iterations in a run folder's last checkpoint (0 when it has none)."""
    from .engine import load_checkpoint

    last = os.path.join(run_dir, "checkpoints", "last.pt")
    return load_checkpoint(last)["iteration"] if os.path.exists(last) else 0


def finished_runs(preset_name: str, runs_dir: str) -> tuple[list, list]:
    """The kit's run folders in ``runs_dir`` split into those whose schedule under
    ``preset_name`` is complete and those that are not (folders of no known run are left out)."""
    from .config import preset
    from .runs import run_overrides

    done, partial = [], []
    for name in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        try:
            cfg = preset(preset_name, **run_overrides(name))
        except ValueError:
            continue  # not a run of the kit
        (done if trained_iterations(os.path.join(runs_dir, name)) >= cfg.iterations
         else partial).append(name)
    return done, partial


def export_runs(names: list, preset_name: str, runs_dir: str, out: str) -> list:
    """``out/<name>.pt`` for each finished run of ``runs_dir`` (its last checkpoint at the
    preset's full schedule), float16, with the training machine and time as its note. Returns
    the written paths; a run that is missing or not finished is an error naming it."""
    import torch

    from .config import preset
    from .engine import export_weights
    from .runs import run_overrides

    written = []
    for name in names:
        run_dir = os.path.join(runs_dir, name)
        last = os.path.join(run_dir, "checkpoints", "last.pt")
        cfg = preset(preset_name, **run_overrides(name))
        if not os.path.exists(last):
            raise ValueError(f"{run_dir}: no checkpoint (train it first: python -m "
                             f"blade.experiments study --preset {preset_name} --only {name} "
                             f"--train-only)")
        done = trained_iterations(run_dir)
        if done < cfg.iterations:
            raise ValueError(f"{last}: trained {done} of {cfg.iterations} iterations; finish "
                             f"it before exporting")
        timing = read_timing(run_dir)
        note = {"run": name, "preset": preset_name, "train_s": round(timing["train_s"], 1),
                "train_calls": timing["calls"],
                "train_machine": timing.get("train_machine", "unknown (trained before the "
                                                              "kit recorded it)"),
                "torch": torch.__version__}
        log = os.path.join(run_dir, "log.csv")
        if os.path.exists(log):  # the training log travels inside the note (a few tens of kB)
            with open(log) as f:
                note["log_csv"] = f.read()
        written.append(export_weights(last, os.path.join(out, f"{name}.pt"),
                                      note=json.dumps(note))["path"])
    return written


def adopt_runs(weights: str, preset_name: str, runs_dir: str, overwrite: bool = False,
               only: list | None = None, results_dir: str | None = None) -> list:
    """Install every ``weights/<run>.pt`` written by ``export_runs`` (or those of the runs in
    ``only``) as the last checkpoint of ``runs_dir/<run>``. Each is checked first (all of them
    before any is installed): the name is a known run, the file's configuration is the one that
    run has under ``preset_name`` and it has the full schedule. A run folder that already holds
    a checkpoint is refused unless ``overwrite``; a run that already has results in
    ``results_dir/<run>`` is always refused (they would belong to another checkpoint, and the
    runner would skip the adopted one). Returns the installed run names."""
    from .config import preset
    from .engine import config_from_dict, config_to_dict, load_checkpoint
    from .runs import run_overrides

    if not os.path.isdir(weights):
        raise ValueError(f"{weights}: not a folder (give the folder export wrote)")
    files = sorted(n for n in os.listdir(weights) if n.endswith(".pt"))
    if only is not None:
        missing = [n for n in only if f"{n}.pt" not in files]
        if missing:
            raise ValueError(f"{weights}: no {', '.join(m + '.pt' for m in missing)}")
        files = [f"{n}.pt" for n in only]
    if not files:
        raise ValueError(f"{weights}: no .pt files (export writes <run>.pt)")
    plan = []
    for file in files:
        path, name = os.path.join(weights, file), file[:-3]
        try:
            cfg = preset(preset_name, **run_overrides(name))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        ckpt, want = load_checkpoint(path), config_to_dict(cfg)
        try:  # fields added to Config after the export take their defaults, as on resume
            have = config_to_dict(config_from_dict(ckpt["config"]))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: its saved configuration is not valid: {e}") from None
        if have != want:
            diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            raise ValueError(f"{path}: its configuration is not run {name!r} of the "
                             f"{preset_name!r} preset (differs in {', '.join(diff[:5])})")
        if ckpt["iteration"] < cfg.iterations:
            raise ValueError(f"{path}: trained {ckpt['iteration']} of {cfg.iterations} "
                             f"iterations; only finished runs can be adopted")
        last = os.path.join(runs_dir, name, "checkpoints", "last.pt")
        if os.path.exists(last) and not overwrite:
            raise ValueError(f"{last} exists: run {name!r} is already here; move it away or "
                             f"give --overwrite")
        res = None if results_dir is None else os.path.join(results_dir, name)
        if res is not None and os.path.isdir(res) and os.listdir(res):
            raise ValueError(f"{res} holds results of run {name!r} from another checkpoint; "
                             f"move them away before adopting {path}")
        try:
            note = json.loads(ckpt.get("note") or "{}")
        except json.JSONDecodeError:
            note = {}
        plan.append((path, name, last, note))
    for path, name, last, note in plan:
        os.makedirs(os.path.dirname(last), exist_ok=True)
        shutil.copyfile(path, last)
        if note.get("log_csv"):
            with open(os.path.join(runs_dir, name, "log.csv"), "w") as f:
                f.write(note["log_csv"])
        write_timing(os.path.join(runs_dir, name), {
            "train_s": float(note.get("train_s", 0.0)), "calls": int(note.get("train_calls", 0)),
            "train_machine": note.get("train_machine", "unknown"),
            "weights": f"float16 export ({os.path.basename(path)}), adopted"})
    return [name for _, name, _, _ in plan]
