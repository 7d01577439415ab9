"""Shared test set-up: headless matplotlib, the schema fixtures, a tiny synthetic benchmark and a
tiny smoke checkpoint trained on it."""

import os
import sys

import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
sys.path.insert(0, FIXTURES)


@pytest.fixture(scope="session")
def fixtures_dir():
    return FIXTURES


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """A small benchmark written once per test session through the public writer."""
    from blade.data.synthetic import write_split

    out = tmp_path_factory.mktemp("synthetic")
    write_split(str(out), "train", 12, seed=3, progress=False)
    write_split(str(out), "val", 6, seed=3, progress=False)
    return str(out)


@pytest.fixture(scope="session")
def checkpoint(synthetic_dir, tmp_path_factory):
    """A smoke-preset checkpoint (2 iterations on ``synthetic_dir``), trained once per session;
    tests read it, never write it."""
    from blade.config import preset
    from blade.engine import train

    out = tmp_path_factory.mktemp("run")
    return train(preset("smoke", iterations=2), os.path.join(synthetic_dir, "train.json"),
                 os.path.join(synthetic_dir, "train"), str(out), progress=False)
