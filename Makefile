# The two commands of the Quick start: `make lab` and `make test`. Both build .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is pinned in the install path: 2.13.0 is the CPU wheel; an unpinned torch pulls GBs of CUDA.
TORCH_PIN := torch==2.13.0

# The exact flags of the shipped mini run (checkpoints/mini/README.md quotes them)
MINI_RUN := --preset mini --steps 1000 --batch-size 16 --seq-len 256 --eval-every 100 --threads 2

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

book bench:
	@echo "make $@: not yet (see the open issues)"; exit 1

# The course's end-to-end run (about 15 minutes on 2 cores); writes the shipped checkpoints/mini/
train: $(STAMP)
	$(PY) -m dsv3_mini.train $(MINI_RUN) --out checkpoints/mini

clean:
	rm -rf $(VENV) .pytest_cache
