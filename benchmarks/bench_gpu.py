"""GPU speed (issue 15): training step time of a preset, split into waiting for data and
computing, peak memory, and evaluation throughput, with the device and versions.

    python benchmarks/bench_gpu.py --data data/synthetic [--device cuda] [--preset paper]
        [--steps 30] [--warmup 5] [--batch N] [--workers N]
        [--amp fp16|bf16|off] [--cudnn-benchmark] [--channels-last] [--compile PARTS]
        [--eval-images 100] [--eval-batch 8] [--eval-workers 4] [--no-coco] [--json FILE]
        [--profile FILE [--profile-steps 5]] [--count-ops FILE [--cpu-amp]]

Training: the engine's own step (``blade.engine.forward_step`` / ``backward_step``, the
loop's loader of planned batches with pinned memory on CUDA) for ``--warmup`` steps, not
timed, then ``--steps`` timed ones. Per step, *data* is the wait for the next batch from the
loader and *compute* the forward, backward and optimizer step, closed by a device
synchronisation, so that the two add up to the step's wall time. Peak memory: CUDA's
``max_memory_allocated`` after the warm-up (on the CPU: the process's peak resident set).

Evaluation: ``blade.evaluate.evaluate_prompts`` on the first ``--eval-images`` validation scenes
with the box prompt (the headline) and with all three prompts, then ``coco_ap`` (detections
encoded and scored by pycocotools), in images per second, by default with the committed
``cpu``-preset checkpoint (the trained 256 px network; the issue's 50 images/s target is for
it). ``--eval-checkpoint none`` evaluates the network just trained for a few steps instead.

Knobs that only this script sets, to measure before they become configuration: ``--amp bf16``
(bfloat16 autocast without a grad scaler), ``--cudnn-benchmark``, ``--channels-last``,
``--compile backbone,head,mask_branch`` (``torch.compile`` of those modules, in place). The
network is the preset's own architecture (for ``paper``: frozen stem and batch norm, as with
ImageNet weights) with no weights loaded: the lent GPU machines cannot download ResNet-50's,
and the weights' values do not change the cost of a step.

Operators per step (``--count-ops``, ``OpCounter``): one more step with every operator it
dispatches counted by the part of the network that called it, forward and backward apart. On a
GPU each is at least one kernel launch, and a host-bound step's time follows them, so this
count is the measure of issue 15's host work that a CPU can take (``results/bench_ops.txt``);
``--cpu-amp`` trains that step under autocast on the CPU too, to count casts. CPU autocast
keeps some operators in half precision that CUDA's runs in float32 (group_norm among them),
so a GPU step has more casts than this count: a lower bound.

It runs on any device (the tests run it on the CPU with the ``smoke`` preset); only numbers
from a GPU machine answer issue 15, quoted with the device line this script prints.
"""

import argparse
import collections
import contextlib
import json
import os
import platform
import statistics
import sys
import time
import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import blade  # noqa: E402
import torchvision  # noqa: E402
from blade.config import preset  # noqa: E402
from blade.utils import int_at_least, pick_device  # noqa: E402

AMP = {"fp16": torch.float16, "bf16": torch.bfloat16}
COMPILABLE = ("backbone", "head", "mask_branch")  # the model's modules --compile may name


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="benchmark folder (train.json, val.json, ...)")
    p.add_argument("--device", default="auto")
    p.add_argument("--preset", default="paper")
    p.add_argument("--steps", type=int_at_least(0), default=30,
                   help="timed training steps (0: measure only the evaluation)")
    p.add_argument("--warmup", type=int_at_least(0), default=5, help="untimed steps first")
    p.add_argument("--batch", type=int_at_least(1), default=None, help="default: the preset's")
    p.add_argument("--workers", type=int_at_least(0), default=None,
                   help="training loader processes (default: the preset's)")
    p.add_argument("--amp", choices=("fp16", "bf16", "off"), default="fp16",
                   help="autocast on CUDA (the kit trains with fp16 + grad scaler); ignored on "
                        "the CPU")
    p.add_argument("--cudnn-benchmark", action="store_true")
    p.add_argument("--compile", default="", help=(
        "comma-separated parts to torch.compile in place (Module.compile: same state dict), "
        "among " + ", ".join(COMPILABLE) + "; the warm-up steps take the compilation"))
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend (the tests use aot_eager: no code generation)")
    p.add_argument("--compile-mode", default="default",
                   choices=("default", "reduce-overhead", "max-autotune-no-cudagraphs"),
                   help="torch.compile mode (reduce-overhead: CUDA graphs of the compiled parts)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--eval-images", type=int_at_least(0), default=100,
                   help="validation scenes for the evaluation throughput (0: skip it)")
    p.add_argument("--eval-batch", type=int_at_least(1), default=1)
    p.add_argument("--eval-workers", type=int_at_least(0), default=0)
    p.add_argument("--eval-checkpoint", default=None, help=(
        "model to evaluate (default: the committed cpu-preset checkpoint; 'none': the network "
        "trained by the timed steps)"))
    p.add_argument("--no-coco", action="store_true", help="skip the COCO AP timing")
    p.add_argument("--json", default=None, help="append the numbers as one JSON line here")
    p.add_argument("--profile", default=None, help=(
        "after the timed steps, profile --profile-steps more with torch.profiler and write its "
        "tables (by device time, by host time), the host synchronisations per step and the "
        "lines of Python that ask for them here"))
    p.add_argument("--profile-steps", type=int_at_least(2), default=5,
                   help="the last one is run under SyncSpy, not the profiler")
    p.add_argument("--count-ops", default=None, help=(
        "after the other steps, run one more under OpCounter and write its table here: the "
        "operators a step calls (each a kernel launch on a GPU), by part of the network and "
        "forward / backward, with the syncs and casts among them; runs on any device"))
    p.add_argument("--cpu-amp", action="store_true", help=(
        "on the CPU, train under autocast with --amp too (to count casts: a lower bound for a "
        "GPU step, whose autocast keeps more operators in float32; slow on a CPU)"))
    return p.parse_args(argv)


def compiled_parts(text: str) -> list:
    """'backbone,head' -> ['backbone', 'head'], refusing names that are not parts."""
    parts = [p for p in text.split(",") if p]
    bad = [p for p in parts if p not in COMPILABLE]
    if bad:
        raise SystemExit(f"error: --compile {text}: unknown part(s) {bad}; choose from "
                         f"{sorted(COMPILABLE)}")
    return parts


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def versions(device) -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        out.update(device=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    else:
        out.update(device=platform.processor() or platform.machine())
    return out


def peak_rss_mib() -> float:
    """Peak resident set of this process (Linux), MiB; NaN elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def bench_train(args, device) -> tuple:
    from blade.criterion import total_loss
    from blade.data import AmodalDataset
    from blade.engine import PlannedBatches, backward_step, forward_step
    from blade.model import BladeModel

    n_prof = args.profile_steps if args.profile else 0
    over = {"iterations": args.warmup + args.steps + n_prof + bool(args.count_ops)}
    if args.batch is not None:
        over["batch_size"] = args.batch
    if args.workers is not None:
        over["workers"] = args.workers
    ds = AmodalDataset(os.path.join(args.data, "train.json"), os.path.join(args.data, "train"),
                       mode="train")
    cfg = preset(args.preset, **over, num_classes=len(ds.classes))
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    torch.manual_seed(cfg.seed)
    model = BladeModel(cfg, load_weights=False).to(device).train()  # architecture, no download
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    for part in compiled_parts(args.compile):
        model.get_submodule(part).compile(
            backend=args.compile_backend,
            mode=None if args.compile_mode == "default" else args.compile_mode)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay,
                                foreach=True)  # CUDA's default; on a CPU it counts alike
    use_amp = args.amp != "off" and (device.type == "cuda" or args.cpu_amp)
    dtype = AMP.get(args.amp, torch.float16)
    scaler = torch.amp.GradScaler(device.type) if use_amp and args.amp == "fp16" else None
    loader = torch.utils.data.DataLoader(
        PlannedBatches(ds, cfg, 0, 0, 1), batch_size=None, shuffle=False,
        num_workers=cfg.workers, pin_memory=device.type == "cuda")
    data_s, compute_s = [], []
    batches = iter(loader)

    def step(it, watch=None):  # one training step; returns (data wait, compute) in seconds
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        with watch or contextlib.nullcontext():  # the compute only: not the loader's work
            terms, weights, _ = forward_step(model, batch, it, cfg, optimizer, device, use_amp,
                                             dtype)
            backward_step(total_loss(terms, weights), optimizer, scaler, params, cfg)
        sync(device)
        return t1 - t0, time.perf_counter() - t1

    for it in range(args.warmup + args.steps):
        if it == args.warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        d, c = step(it)
        if it >= args.warmup:
            data_s.append(d)
            compute_s.append(c)
    prof = None
    if n_prof:  # after the timed steps: the profiler's overhead stays out of the timings
        acts = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            acts.append(torch.profiler.ProfilerActivity.CUDA)
        first = args.warmup + args.steps
        with torch.profiler.profile(activities=acts) as prof:
            for it in range(first, first + n_prof - 1):
                step(it)
        spy = SyncSpy()  # the last profiled step: which lines of Python ask for syncs
        step(first + n_prof - 1, spy)
    counts = None
    if args.count_ops:  # one more step, every operator counted by the part that called it
        counts = OpCounter(model)
        step(args.warmup + args.steps + n_prof, counts)
    total = [a + b for a, b in zip(data_s, compute_s)]
    res = {"preset": args.preset, "backbone": cfg.backbone, "size": cfg.min_size,
           "batch": cfg.batch_size, "workers": cfg.workers, "amp": args.amp if use_amp else "off",
           "cudnn_benchmark": args.cudnn_benchmark, "channels_last": args.channels_last,
           "compile": args.compile or "off",
           "compile_mode": args.compile_mode if args.compile else "off",
           "steps": args.steps, "step_s": statistics.median(total),
           "data_s": statistics.median(data_s), "compute_s": statistics.median(compute_s)}
    if device.type == "cuda":
        res["peak_alloc_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        res["peak_reserved_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
    else:
        res["peak_rss_mib"] = peak_rss_mib()
    if prof is not None:
        res.update(write_profile(prof, n_prof - 1, args.profile, device, spy.sources))
    if counts is not None:
        table = counts.table()
        with open(args.count_ops, "w") as f:
            f.write(f"operators of one training step by part, preset {args.preset} on "
                    f"{device.type}, amp {res['amp']}\n{OpCounter.LEGEND}\n\n"
                    f"{table.to_string()}\n")
        res["ops_per_step"] = {k: int(v) for k, v in table.loc["total"].items()}
    return res, model


# Operations that make the host wait for the device (a value read back, a data-dependent
# shape); their count per step is what "host synchronisations" means in issue 15.
SYNC_OPS = ("aten::_local_scalar_dense", "aten::nonzero", "cudaStreamSynchronize",
            "cudaDeviceSynchronize", "cudaMemcpyAsync")


class SyncSpy(TorchDispatchMode):
    """Counts, per line of the kit's or torchvision's Python, the operators called there that
    make the host wait for the device (a value read back, a data-dependent shape). It sees the
    operators Python calls directly; those called inside another operator (a boolean-mask
    index calls ``nonzero`` in C++) are in the profiler's counts only."""

    OPS = ("_local_scalar_dense", "nonzero")
    ROOTS = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep
                  for m in (blade, torchvision))  # the packages' folders

    def __enter__(self):
        self.sources = collections.Counter()
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.OPS:
            frames = [(os.path.abspath(f.filename), f) for f in traceback.extract_stack()]
            frames = [(path, f) for path, f in frames if path.startswith(self.ROOTS)]
            where = "(no kit frame)"
            if frames:
                path, f = frames[-1]
                root = next(r for r in self.ROOTS if path.startswith(r))
                short = os.path.relpath(path, os.path.dirname(root.rstrip(os.sep)))
                where = f"{short}:{f.lineno}  {f.line}"
            self.sources[(name, where)] += 1
        return func(*args, **(kwargs or {}))


class OpCounter:
    """Counts the operators one training step dispatches, by the part of the network that
    called them, forward and backward apart. On a GPU every counted operator is at least one
    kernel launch (views and bare allocations launch none and are not counted), so the counts
    say on any machine where a host-bound step spends its launches.

    Parts: ``transform``, ``backbone``, ``fpn``, ``FCOS head``, ``mask branch`` (the model's
    modules, by forward hooks), else the innermost function of the kit or torchvision that made
    the call (``losses.py:pairwise_loss``). A backward operator counts for the part whose
    forward made its autograd node: a torch-function mode tags each new node with the part of
    the call that made it, and the dispatch mode reads the node being evaluated. Operators of
    neither (optimizer, scaler, clipping) count for the function that called them."""

    MODULES = (("transform", "transform"), ("backbone.body", "backbone"), ("backbone.fpn", "fpn"),
               ("head", "FCOS head"), ("mask_branch", "mask branch"))
    FREE = ("empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided",
            "set_", "resize_", "_reshape_alias")  # allocation or metadata: no launch
    SYNCS = ("nonzero", "_local_scalar_dense")  # the host waits for the device
    CASTS = ("_to_copy",)
    LEGEND = ("columns: operators launched in the forward / backward pass; syncs: nonzero and "
              "reads of a value (the host waits for the device; reads of host tensors, e.g. "
              "the transform's random size, count too but wait for nothing); casts: dtype/"
              "device copies")

    def __init__(self, model):
        self.model = model
        self.rows = collections.defaultdict(collections.Counter)
        self.node_part = {}  # autograd node -> the part whose forward made it
        self.module_parts = []  # stack of the model's parts being run (forward hooks)
        self.roots = SyncSpy.ROOTS

    # -- which part is calling --------------------------------------------------------------
    def part(self) -> str:
        if self.module_parts:
            return self.module_parts[-1]
        f = sys._getframe(1)
        while f is not None:
            path = os.path.abspath(f.f_code.co_filename)
            if path.startswith(self.roots):
                return f"{os.path.basename(path)}:{f.f_code.co_name}"
            f = f.f_back
        return "(outside the kit)"

    def _tag(self, out, part):
        """Tag the autograd nodes ``out`` made (untagged ones, walking back) with ``part``."""
        todo = [t.grad_fn for t in _tensors(out) if t.grad_fn is not None]
        while todo:
            node = todo.pop()
            if node is None or node in self.node_part:
                continue
            self.node_part[node] = part
            todo.extend(n for n, _ in node.next_functions)

    def count(self, func):
        name = func.overloadpacket.__name__
        if func.is_view or name in self.FREE:
            return
        node = torch._C._current_autograd_node()
        if node is not None:
            row, col = self.node_part.get(node, "(untagged)"), "backward"
        else:
            row, col = self.part(), "forward"
        self.rows[row][col] += 1
        self.rows[row]["syncs"] += name in self.SYNCS
        self.rows[row]["casts"] += name in self.CASTS

    def table(self):
        """DataFrame: a row per part (most operators first) and a ``total`` row."""
        import pandas as pd

        cols = ["forward", "backward", "syncs", "casts"]
        df = pd.DataFrame.from_dict(self.rows, orient="index").reindex(columns=cols).fillna(0)
        df = df.astype(int)
        df = df.loc[(df.forward + df.backward).sort_values(ascending=False, kind="stable").index]
        df.loc["total"] = df.sum()
        df["all"] = df.forward + df.backward
        return df

    # -- context ----------------------------------------------------------------------------
    def _leave(self, *_):  # a forward hook: returns None, so the module's output stays
        self.module_parts.pop()

    def __enter__(self):
        self.hooks = []
        for path, label in self.MODULES:
            try:
                mod = self.model.get_submodule(path)
            except AttributeError:
                continue
            self.hooks.append(mod.register_forward_pre_hook(
                lambda *_, label=label: self.module_parts.append(label)))
            self.hooks.append(mod.register_forward_hook(self._leave))
        self.modes = [_TagMode(self), _CountMode(self)]
        for m in self.modes:
            m.__enter__()
        return self

    def __exit__(self, *exc):
        for m in reversed(self.modes):
            m.__exit__(*exc)
        for h in self.hooks:
            h.remove()
        return False


def _tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


class _TagMode(TorchFunctionMode):
    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if torch.is_grad_enabled():
            self.counter._tag(out, self.counter.part())
        return out


class _CountMode(TorchDispatchMode):
    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counter.count(func)
        return func(*args, **(kwargs or {}))


def format_calls(counts: dict) -> str:
    """Sync-like operators per step, one line."""
    return ", ".join(f"{k} {v:g}" for k, v in sorted(counts.items())) or "none of them"


def write_profile(prof, steps: int, path: str, device, sources=None) -> dict:
    """Write the profiler's tables to ``path`` (and, from ``SyncSpy``, where the sync-like
    operators are called); return the sync-like calls per step."""
    ka = prof.key_averages()
    counts = {e.key: e.count / steps for e in ka if e.key in SYNC_OPS}
    with open(path, "w") as f:
        f.write(f"torch.profiler over {steps} training step{'s' * (steps != 1)} (after the timed "
                f"ones)\n")
        f.write(f"calls per step: {format_calls(counts)}\n\n")
        if sources:
            f.write("== called from (one more step, operators Python calls directly)\n")
            for (name, where), n in sources.most_common():
                f.write(f"{n:5d}  {name:20s} {where}\n")
            f.write("\n")
        if device.type == "cuda":
            f.write("== by self device time\n")
            f.write(ka.table(sort_by="self_device_time_total", row_limit=40) + "\n\n")
        f.write("== by self host time\n")
        f.write(ka.table(sort_by="self_cpu_time_total", row_limit=40) + "\n")
    return {"profile_calls_per_step": counts}


def bench_eval(args, device, trained) -> dict:
    from blade.data import AmodalDataset
    from blade.engine import COMMITTED_CHECKPOINT, load_model
    from blade.evaluate import coco_ap, evaluate_prompts

    if args.eval_checkpoint == "none":
        model, which = trained.eval(), "the benchmark's own network"
    else:
        which = args.eval_checkpoint or COMMITTED_CHECKPOINT
        model, _ = load_model(args.eval_checkpoint or os.path.join(ROOT, which), device=device)
    val = AmodalDataset(os.path.join(args.data, "val.json"), os.path.join(args.data, "val"),
                        mode="eval", protocol="synthetic")
    n = min(args.eval_images, len(val))
    res = {"eval_model": which, "eval_images": n, "eval_batch": args.eval_batch,
           "eval_workers": args.eval_workers}
    evaluate_prompts(model, val, limit=min(n, 2), progress=False, prompts=("box",))  # warm-up
    for name, prompts in (("box", ("box",)), ("three_prompts", None)):
        sync(device)
        t = time.perf_counter()
        kw = {} if prompts is None else {"prompts": prompts}
        evaluate_prompts(model, val, limit=n, progress=False, batch_size=args.eval_batch,
                         workers=args.eval_workers, **kw)
        sync(device)
        res[f"eval_{name}_images_per_s"] = n / (time.perf_counter() - t)
    if not args.no_coco:
        t = time.perf_counter()
        coco_ap(model, val, limit=n, class_agnostic=True, progress=False,
                batch_size=args.eval_batch, workers=args.eval_workers)
        sync(device)
        res["coco_ap_images_per_s"] = n / (time.perf_counter() - t)
    return res


def report(ver, train, ev) -> str:
    lines = [f"device: {ver['device']}; torch {ver['torch']}"
             + (f", CUDA {ver['cuda']}, cuDNN {ver['cudnn']}" if "cuda" in ver else "")
             + f"; python {ver['python']}; {ver['cpu_count']} CPU cores, "
               f"{ver['torch_threads']} torch threads"]
    if train:
        lines += [f"training, preset {train['preset']} ({train['backbone']}, {train['size']} px, "
                  f"batch {train['batch']}, {train['workers']} loader workers, amp "
                  f"{train['amp']}, cudnn.benchmark {train['cudnn_benchmark']}, channels_last "
                  f"{train['channels_last']}"
                  + (f", compiled {train['compile']} ({train['compile_mode']})"
                     if train.get("compile", "off") != "off" else "")
                  + f"): median of {train['steps']} steps",
                  f"  step {train['step_s']:.4f} s (data wait {train['data_s']:.4f} s, compute "
                  f"{train['compute_s']:.4f} s; medians); 60k iterations: "
                  f"{60000 * train['step_s'] / 3600:.2f} h"]
        if "peak_alloc_mib" in train:
            lines.append(f"  peak GPU memory: {train['peak_alloc_mib']:.0f} MiB allocated, "
                         f"{train['peak_reserved_mib']:.0f} MiB reserved")
        else:
            lines.append(f"  peak resident memory of the process: {train['peak_rss_mib']:.0f} "
                         f"MiB")
        if "profile_calls_per_step" in train:
            lines.append("  profiled, calls per step: "
                         + format_calls(train["profile_calls_per_step"]))
        if "ops_per_step" in train:
            o = train["ops_per_step"]
            lines.append(f"  operators per step: {o['all']} ({o['forward']} forward, "
                         f"{o['backward']} backward), {o['syncs']} syncs, {o['casts']} casts")
    if ev:
        lines.append(f"evaluation, {ev['eval_model']}, {ev['eval_images']} validation scenes, "
                     f"batch {ev['eval_batch']}, {ev['eval_workers']} loader workers:")
        lines.append(f"  box prompt {ev['eval_box_images_per_s']:.1f} images/s; three prompts "
                     f"{ev['eval_three_prompts_images_per_s']:.1f} images/s"
                     + (f"; COCO AP {ev['coco_ap_images_per_s']:.1f} images/s"
                        if "coco_ap_images_per_s" in ev else ""))
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    compiled_parts(args.compile)  # a misspelt part fails before any work
    if args.compile and args.count_ops:
        raise SystemExit("error: --count-ops counts the eager step's operators; run it without "
                         "--compile (a compiled part is one graph, not its operators)")
    for name in ("train.json", "train", "val.json", "val"):
        if not os.path.exists(os.path.join(args.data, name)):
            raise SystemExit(f"error: {os.path.join(args.data, name)} does not exist; make the "
                             f"benchmark with python -m blade.data.synthetic --out {args.data}")
    if args.steps == 0 and (args.profile or args.count_ops):
        raise SystemExit("error: --profile and --count-ops look at training steps: give "
                         "--steps > 0")
    if args.steps == 0 and (args.eval_images == 0 or args.eval_checkpoint == "none"):
        raise SystemExit("error: --steps 0 measures only the evaluation: give --eval-images > 0 "
                         "and an --eval-checkpoint")
    device = pick_device(args.device)
    ver = versions(device)
    train, model = bench_train(args, device) if args.steps > 0 else ({}, None)
    ev = bench_eval(args, device, model) if args.eval_images > 0 else {}
    print(report(ver, train, ev))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps({**ver, **train, **ev}) + "\n")


if __name__ == "__main__":
    main()
