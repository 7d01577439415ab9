"""Small helpers: seeding, the smoke switch, device choice, dataclass <-> command line."""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
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


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; anything else is taken literally."""
    if name != "auto":
        return torch.device(name)
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
