"""What a student sees: every notebook opened in JupyterLab in headless Chromium, run, its
widgets rendered and responding to a keyboard or mouse action.

The server runs on 127.0.0.1 with a free port and a random token, on a temporary copy of
notebooks/ (so JupyterLab's autosave never writes outputs into the committed notebooks), with
BLADE_SMOKE=1 in the kernel's environment. Screenshots go to tests/_artifacts/browser/
(git-ignored). Debian's Chromium (/usr/bin/chromium) is driven by Playwright for Python; no
browser is downloaded. Without Chromium or Playwright the test is skipped, except under CI
(CI=true), where that is a failure.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(NB_DIR, "[0-9][0-9]_*.ipynb")))
ARTIFACTS = os.path.join(ROOT, "tests", "_artifacts", "browser")
CHROMIUM = os.environ.get("BLADE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
RUN_TIMEOUT_S = 240  # a notebook's cells must all finish within this (smoke mode)
WIDGET_TIMEOUT_S = 90  # a control's effect must show within this


def _interaction_01(page):
    """Notebook 01: move the 'scene' slider one step with the keyboard."""
    handle = page.locator(".widget-slider", has_text="scene").locator(".noUi-handle").first
    handle.focus()
    page.keyboard.press("ArrowRight")


def _interaction_03(page):
    """Notebook 03: untick the neighbour loss (the NE ablation) with the mouse."""
    page.locator(".widget-checkbox", has_text="neighbour (NE)").locator("input").first.click()


def _interaction_06(page):
    """Notebook 06: step the failure browser to the next-worst object with the keyboard."""
    handle = page.locator(".widget-slider", has_text="worst #").locator(".noUi-handle").first
    handle.focus()
    page.keyboard.press("ArrowRight")


# How a person changes the first explorer of each notebook that has widgets. A notebook with
# widgets but no entry here fails, so the table grows with the notebooks.
INTERACTIONS = {"01_overlap_regions.ipynb": _interaction_01,
                "03_active_band.ipynb": _interaction_03,
                "06_evaluation.ipynb": _interaction_06}


def _need_browser():
    reason = None
    if not os.path.exists(CHROMIUM):
        reason = (f"Chromium not found at {CHROMIUM}: install Debian's package (apt-get install "
                  f"chromium, needs root; `make test` does it when it can)")
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "Playwright for Python is not installed (pip install -e '.[dev]')"
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser test cannot run under CI: {reason}")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def jupyter_lab(tmp_path):
    root = tmp_path / "notebooks"
    shutil.copytree(NB_DIR, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, BLADE_SMOKE="1", JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"))
    env.pop("MPLBACKEND", None)
    log = open(tmp_path / "jupyterlab.log", "w")
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
           "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI and these machines run as root
        cmd.append("--allow-root")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    raise RuntimeError("JupyterLab did not start:\n"
                                       + (tmp_path / "jupyterlab.log").read_text()[-3000:])
                time.sleep(0.5)
        yield url, token
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


@pytest.fixture(scope="module")
def lab_page(tmp_path_factory):
    _need_browser()
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("lab")
    with jupyter_lab(tmp) as (url, token), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            yield page, url, token
        finally:
            browser.close()


def _prompts(page):
    return page.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt").all_inner_texts()


def _run_all(page):
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def _kernel_started(url, token, name) -> bool:
    """The server has a session for notebook ``name`` whose kernel is up (idle or busy)."""
    import json

    with urllib.request.urlopen(f"{url}/api/sessions?token={token}", timeout=5) as r:
        sessions = json.load(r)
    return any(s.get("path", "").endswith(name) and (s.get("kernel") or {}).get(
        "execution_state") in ("idle", "busy") for s in sessions)


def _accept_kernel_dialog(page, url, token, name):
    """JupyterLab may ask which kernel to start; take the preselected one (Python 3), as a
    person would. Usually it starts the notebook's kernel on its own: then this returns as soon
    as the server reports that kernel up, instead of waiting out the dialog's 15 s."""
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if dialog.count():
            dialog.locator("button", has_text="Select").first.click()
            dialog.wait_for(state="detached", timeout=15_000)
            return
        if _kernel_started(url, token, name):
            return
        time.sleep(0.25)


def _fail_on_dialog(page):
    dialog = page.locator(".jp-Dialog")
    if dialog.count():
        raise AssertionError("unexpected JupyterLab dialog: " + dialog.first.inner_text()[:500])


def _wait_until_done(page, n_code):
    """All code cells show an execution count and none a '*'."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        _fail_on_dialog(page)
        prompts = [p.strip() for p in _prompts(page)]
        done = len(prompts) == n_code and all(p[1:-2].strip().isdigit() for p in prompts
                                               if p.startswith("["))
        if done and not any("*" in p for p in prompts):
            return prompts
        time.sleep(1)
    raise AssertionError(f"cells still running after {RUN_TIMEOUT_S} s: {_prompts(page)}")


def _image_src(page):
    img = page.locator(".widget-image").first
    return img.get_attribute("src") if img.count() else None


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_in_jupyterlab(lab_page, name):
    import nbformat

    page, url, token = lab_page
    n_code = sum(c.cell_type == "code" for c in nbformat.read(os.path.join(NB_DIR, name), 4).cells)
    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, name.replace(".ipynb", ".png"))
    page.goto(f"{url}/lab/tree/{name}?token={token}&reset")
    try:
        page.locator(".jp-Notebook .jp-CodeCell").first.wait_for(timeout=60_000)
        _accept_kernel_dialog(page, url, token, name)
        _run_all(page)
        _wait_until_done(page, n_code)
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']"
                              ", .jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
        assert errors.count() == 0, f"{name}: error output:\n" + "\n".join(
            errors.all_inner_texts())[:3000]
        body = page.locator(".jp-Notebook").inner_text()
        assert "Error in widget callback" not in body, f"{name}: a widget callback raised"

        has_widgets = page.locator(".jp-OutputArea-output .jupyter-widgets").count() > 0
        if has_widgets or name in INTERACTIONS:
            assert name in INTERACTIONS, f"{name} has widgets: add its interaction to INTERACTIONS"
            assert "Loading widget" not in body and "VBox(children=" not in body, \
                f"{name}: widgets did not render (front-end extension missing?)"
            page.locator(".widget-image").first.scroll_into_view_if_needed()
            page.locator(".widget-image").first.wait_for(timeout=30_000)
            before = _image_src(page)
            assert before, f"{name}: the explorer shows no picture"
            INTERACTIONS[name](page)
            deadline = time.monotonic() + WIDGET_TIMEOUT_S
            while _image_src(page) == before:
                body = page.locator(".jp-Notebook").inner_text()
                assert "Error in widget callback" not in body, \
                    f"{name}: the widget callback raised:\n" + body[body.find("Error in widget"):][:2000]
                assert time.monotonic() < deadline, f"{name}: the picture did not change after " \
                                                    f"{WIDGET_TIMEOUT_S} s"
                time.sleep(0.5)
            body = page.locator(".jp-Notebook").inner_text()
            assert "Error in widget callback" not in body, f"{name}: a widget callback raised"
    finally:
        page.screenshot(path=shot)
