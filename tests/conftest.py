"""Shared test set-up: headless matplotlib, the schema fixtures, a tiny synthetic benchmark."""

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
