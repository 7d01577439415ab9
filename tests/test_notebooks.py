"""Every notebook runs top to bottom in smoke mode; committed notebooks carry no outputs."""

import glob
import os
import re

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = sorted(glob.glob(os.path.join(NB_DIR, "[0-9][0-9]_*.ipynb")))


def test_notebooks_exist_and_are_named():
    assert NOTEBOOKS, "no notebooks found"
    for path in glob.glob(os.path.join(NB_DIR, "*.ipynb")):
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", os.path.basename(path)), path


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{os.path.basename(path)} carries outputs: clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_skeleton(path):
    nb = nbformat.read(path, as_version=4)
    number = os.path.basename(path)[:2]
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(f"# {number} ·")
    assert "Runs:" in nb.cells[0].source
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "BLADE_SMOKE" in params[0].source
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "## Summary" in text and "## Exercises" in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_runs_in_smoke_mode(path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("BLADE_SMOKE", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # let the kernel use the inline backend
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": NB_DIR}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
