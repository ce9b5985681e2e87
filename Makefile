# The two commands of the Quick start: `make lab` and `make test`. Both build .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is pinned in the install path: 2.13.0 is the CPU wheel; an unpinned torch pulls GBs of CUDA.
TORCH_PIN := torch==2.13.0

.PHONY: lab test lint book train bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)" -e ".[lab,dev]"
	touch $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest --nbval tests notebooks

lint: $(STAMP)
	$(VENV)/bin/ruff check .

book train bench:
	@echo "make $@: not yet (see the open issues)"; exit 1

clean:
	rm -rf $(VENV) .pytest_cache
