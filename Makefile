# The kit's two quick-start commands: `make demo` and `make test`.
# Both create or update the local virtual environment in .venv first (idempotent:
# the install step re-runs only when pyproject.toml changes or the venv is missing).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.blade-installed

.PHONY: setup browser-deps demo test lab bench clean-venv help
ALLOW_ROOT := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root,)

help:
	@echo "make demo   - set up .venv, generate the benchmark, train BLADE (cpu preset), evaluate, figures in runs/demo/"
	@echo "make test   - set up .venv, run the whole test suite (unit, notebook and browser tests)"
	@echo "make bench  - set up .venv, run the speed benchmarks in benchmarks/"
	@echo "make lab    - set up .venv, start JupyterLab on notebooks/"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 10) else "BLADE needs Python >= 3.10, found %d.%d (set PYTHON=...)" % v[:2])'
	@echo ">>> [setup] creating/updating virtual environment in $(VENV) with $(PYTHON)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo ">>> [setup] installing the kit and its dependencies (first run: several minutes, torch is large)"
	$(PY) -m pip install --quiet -e ".[dev,notebooks]"
	@touch $(STAMP)
	@echo ">>> [setup] done"

setup: $(STAMP)

demo: setup
	@echo ">>> [demo] benchmark (if absent), BLADE training (cpu preset), evaluation, figures in runs/demo/"
	$(PY) -m blade.demo --out runs/demo

# The browser test needs Debian's Chromium; installing it needs root. Without it the test is
# skipped with its reason, except under CI (CI=true), where it fails.
browser-deps:
	@if [ -x /usr/bin/chromium ]; then echo ">>> [setup] Chromium found (/usr/bin/chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo ">>> [setup] installing Debian's chromium for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium >/dev/null) \
	  || echo ">>> [setup] could not install chromium: the browser test will be skipped"; \
	else echo ">>> [setup] no Chromium and no root to install it: the browser test will be skipped"; fi

test: setup browser-deps
	@echo ">>> [test] running the test suite (unit, property, notebook and browser tests)"
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/bench_synthetic.py
	$(PY) benchmarks/bench_losses.py
	$(PY) benchmarks/bench_train_step.py
	$(PY) benchmarks/bench_eval.py

lab: setup
	@echo ">>> [lab] starting JupyterLab on notebooks/ (Ctrl-C to stop)"
	$(PY) -m jupyter lab --notebook-dir=notebooks $(ALLOW_ROOT)

clean-venv:
	rm -rf $(VENV)
