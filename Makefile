# The kit's two quick-start commands: `make demo` and `make test`.
# Both create or update the local virtual environment in .venv first (idempotent:
# the install step re-runs only when pyproject.toml changes or the venv is missing).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.blade-installed

.PHONY: setup demo test lab bench clean-venv help

help:
	@echo "make demo   - set up .venv, generate a small synthetic benchmark, write figures to runs/demo/"
	@echo "make test   - set up .venv, run the whole test suite (unit tests + notebooks in smoke mode)"
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
	@echo ">>> [demo] generating the synthetic benchmark and drawing scenes into runs/demo/"
	$(PY) -m blade.demo --out runs/demo

test: setup
	@echo ">>> [test] running the test suite (unit tests, property tests, notebooks in smoke mode)"
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/bench_synthetic.py

lab: setup
	@echo ">>> [lab] starting JupyterLab on notebooks/ (Ctrl-C to stop)"
	$(PY) -m jupyter lab --notebook-dir=notebooks

clean-venv:
	rm -rf $(VENV)
