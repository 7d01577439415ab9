"""Small helpers: seeding, the smoke switch, device choice, dataclass <-> command line, value
checks for configuration fields, and the command lines' error handling (``run_cli``)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import os
import random
import sys
import typing

import numpy as np
import torch


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def smoke() -> bool:
    """True when the environment asks for the tiny smoke mode (``BLADE_SMOKE=1``)."""
    return os.environ.get("BLADE_SMOKE", "0").lower() in ("1", "true", "yes")


def parse_device(name: str) -> torch.device:
    """A device string ('cpu', 'cuda', 'cuda:1', 'mps') -> torch.device; ValueError if it is
    not one (without asking whether that device exists here)."""
    try:
        return torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device {name!r} is not a device name; use auto, cpu, cuda, "
                         f"cuda:N or mps") from None


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; anything else must exist here."""
    if name != "auto":
        device = parse_device(name)
        if device.type == "cuda" and (not torch.cuda.is_available() or (
                device.index is not None and device.index >= torch.cuda.device_count())):
            raise ValueError(f"device {name!r} is not available here ({torch.cuda.device_count()} "
                             f"CUDA device(s)); use --device auto or cpu")
        if device.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                         and torch.backends.mps.is_available()):
            raise ValueError(f"device {name!r} is not available here; use --device auto or cpu")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


def add_dataclass_args(parser: argparse.ArgumentParser, cls, prefix: str = "") -> None:
    """Add one ``--field-name`` option per dataclass field (default: keep the dataclass value).

    Tuples take several values (``--level-mix 0.4 0.2 0.2 0.2``); booleans take true/false.
    """
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} fields")
    for f in dataclasses.fields(cls):
        flag = "--" + prefix + f.name.replace("_", "-")
        typ = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kwargs = {"default": None, "dest": prefix.replace("-", "_") + f.name,
                  "help": f"(default: {default!r})"}
        origin = typing.get_origin(typ)
        if typ is bool:
            kwargs["type"] = _parse_bool
        elif typ in (int, float, str):
            kwargs["type"] = typ
        elif typ is tuple or origin is tuple:
            elem = type(default[0]) if default else str
            kwargs.update(nargs="+", type=elem)
        else:
            kwargs["type"] = str
        group.add_argument(flag, **kwargs)


def dataclass_from_args(cls, args: argparse.Namespace, base=None, prefix: str = ""):
    """Build ``cls`` from ``base`` (or defaults) with every field given on the command line."""
    base = base if base is not None else cls()
    changes = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, prefix.replace("-", "_") + f.name, None)
        if value is not None:
            changes[f.name] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(base, **changes)


# -- value checks for configuration fields (used in the dataclasses' __post_init__) --------------
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_int(obj, name: str, low: int = 0) -> None:
    """Field ``name`` of ``obj`` must be an integer >= ``low`` (ValueError naming the option)."""
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} ({_flag(name)}) must be an integer >= {low}, got {value!r}")


def check_float(obj, name: str, low: float = 0.0, high: float = math.inf,
                low_open: bool = False) -> None:
    """Field ``name`` must be a finite number in [low, high] ((low, high] with ``low_open``)."""
    value = getattr(obj, name)
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real)
          and math.isfinite(value) and (value > low if low_open else value >= low)
          and value <= high)
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high < math.inf
                                                         else "")
        raise ValueError(f"{name} ({_flag(name)}) must be a finite number {bound}, got "
                         f"{value!r}")


def check_choice(obj, name: str, choices) -> None:
    """Field ``name`` must be one of ``choices``."""
    value = getattr(obj, name)
    if value not in choices:
        raise ValueError(f"{name} ({_flag(name)}) must be one of {tuple(choices)}, got {value!r}")


# -- command lines: one line per error, tracebacks on request -------------------------------------
class KitError(Exception):
    """An error about the user's input or environment (not a bug of the kit): the command lines
    print it as one line ``error: ...`` instead of a traceback."""


# what the command lines report as one line; anything else is a bug and keeps its traceback
USER_ERRORS = (KitError, ValueError, OSError)


def item_or_error(dataset, index):
    """``dataset[index]``; inside a DataLoader worker a user error (a bad image or annotation)
    is returned instead of raised, so that the main process raises it with its own message
    (torch would wrap it in one about the worker). Outside a worker it is raised as usual."""
    try:
        return dataset[index]
    except USER_ERRORS as e:
        if torch.utils.data.get_worker_info() is None:
            raise
        return e


def debug_requested(argv) -> bool:
    """``--debug`` on the command line or ``BLADE_DEBUG=1`` in the environment."""
    return "--debug" in (argv or []) or os.environ.get("BLADE_DEBUG", "0").lower() in (
        "1", "true", "yes")


def one_line(error: BaseException) -> str:
    """An exception's message on one line (a DataLoader worker's re-raised error: its own
    message, without the worker's traceback)."""
    text = str(error) or type(error).__name__
    if "Original Traceback" in text:  # torch re-raises worker errors with the traceback inside
        last = [ln for ln in text.splitlines() if ln.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    text = " ".join(ln.strip() for ln in text.splitlines() if ln.strip())
    return text[len("error: "):] if text.startswith("error: ") else text


def int_at_least(low: int):
    """An argparse ``type``: an integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def finite_float(low: float = -math.inf, high: float = math.inf):
    """An argparse ``type``: a finite number in [low, high]."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be a finite number in [{low}, {high}], got "
                                             f"{text}")
        return value

    parse.__name__ = "number"
    return parse


class CLIParser(argparse.ArgumentParser):
    """argparse with the kit's conventions: a ``--debug`` flag, and a bad option is one line
    ``error: <problem> (see --help)`` with exit status 2 (no usage block)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true",
                          help="show the full traceback of an error (or set BLADE_DEBUG=1)")

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def run_cli(body, argv=None):
    """Run a command line's ``body(argv)``: the kit's errors about input (``USER_ERRORS``)
    become one line ``error: <file>: <record>: <problem>`` and exit status 1, an interruption
    exits with status 130; with ``--debug`` (or ``BLADE_DEBUG=1``) the traceback is shown."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if debug_requested(argv):
        return body(argv)
    try:
        return body(argv)
    except USER_ERRORS as e:
        raise SystemExit(f"error: {one_line(e)}") from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
