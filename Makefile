# The two commands of the Quick start: `make lab` and `make test`. Both build .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is pinned in the install path: 2.13.0 is the CPU wheel; an unpinned torch pulls GBs of CUDA.
TORCH_PIN := torch==2.13.0

# One numeric path on every x86-64 CPU, so the lessons' committed outputs (checked by nbval) are the numbers a learner
# gets: torch's own kernels, MKL and oneDNN all use their AVX2 code, as on a CPU without AVX-512. Without these, an
# AVX-512 machine rounds a few matrix products differently (e.g. FP8 vs BF16 0.071% instead of 0.078% in lesson 9) and
# short training runs drift in the 3rd decimal. Measured (make bench, mfu): an fp32 training step is no slower pinned;
# bf16 is (the pin turns off AVX-512 BF16 / AMX matrix code; the trainer warns, dsv3_mini.devices.cpu_bf16_capped).
export ATEN_CPU_CAPABILITY := avx2
export MKL_CBWR := AVX2
export ONEDNN_MAX_CPU_ISA := AVX2

# The exact flags of the shipped mini run (checkpoints/mini/README.md quotes them)
MINI_RUN := --preset mini --steps 900 --batch-size 12 --seq-len 256 --eval-every 100 --threads 2

.PHONY: lab test lint book slides train bench notebooks clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)" -e ".[lab,dev]"
	touch $(STAMP)

# JupyterLab as the course ships it (jupyter_config/README.md): the tour first, lessons listed once and in order, no
# news prompt. The shipped settings are copied once into .venv, so your own later changes stay out of the repository.
LAB_SETTINGS := $(VENV)/jupyterlab-settings
LAB_FLAGS := --ServerApp.root_dir=notebooks --LabApp.default_url=/lab/tree/00_tour.ipynb --LabApp.news_url=None \
	--ContentsManager.hide_globs='["__pycache__", "*.pyc", "*.pyo", ".DS_Store", "*~", "*.py"]'
lab: $(STAMP)
	mkdir -p $(LAB_SETTINGS) && cp -rn jupyter_config/lab/user-settings/. $(LAB_SETTINGS)/
	JUPYTERLAB_SETTINGS_DIR=$(LAB_SETTINGS) $(VENV)/bin/jupyter lab $(LAB_FLAGS)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest --nbval tests notebooks

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The Jupyter Book into book/_build/html; offline: scripts/fetch_book_assets.sh vendors every script it loads
book: $(STAMP)
	PY=$(PY) bash scripts/fetch_book_assets.sh
	$(VENV)/bin/jupyter-book build book -W --keep-going

# Every lesson as an offline reveal.js deck in book/_build/slides/ (open index.html there); NB="notebooks/03_*.ipynb"
slides: $(STAMP)
	PY=$(PY) $(if $(filter command line,$(origin NB)),NB="$(NB)") bash scripts/build_slides.sh

# Re-run notebooks after editing their .py source: `make notebooks` (all) or `make notebooks NB=notebooks/03_*.py`
NB ?= notebooks/[0-9]*.py
notebooks: $(STAMP)
	$(VENV)/bin/jupytext --sync $(NB)
	for nb in $(NB); do \
	  $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.store_widget_state=False --ExecutePreprocessor.timeout=600 $${nb%.py}.ipynb || exit 1; \
	done

# Benchmarks and reproductions (~80 min on a 2-core machine): benchmarks/results/bench.json and BENCH.md; ARGS="--only mfu"
bench: $(STAMP)
	$(PY) -m benchmarks.run_all $(ARGS)

# The course's end-to-end run (about 11 minutes on an idle 2-core machine); writes the shipped checkpoints/mini/
train: $(STAMP)
	$(PY) -m dsv3_mini.train $(MINI_RUN) --out checkpoints/mini

clean:
	rm -rf $(VENV) .pytest_cache
