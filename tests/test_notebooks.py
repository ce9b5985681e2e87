"""The course notebooks as files: each jupytext pair agrees, outputs are committed, and the .ipynb stays small.

Whether the outputs are *right* is nbval's job (``pytest --nbval notebooks``); this checks what nbval cannot see.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("*.py"))
IPYNBS = sorted(NOTEBOOKS.glob("*.ipynb"))
MAX_BYTES = 1_000_000
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
SKIP_TAGS = {"nbval-skip", "skip-execution"}  # cells that are not run on purpose


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def test_there_are_notebooks():
    assert SOURCES, f"no notebooks/*.py found in {NOTEBOOKS}"


@pytest.mark.parametrize("source", SOURCES, ids=_ids(SOURCES))
def test_every_source_has_its_ipynb(source):
    assert source.with_suffix(".ipynb").is_file(), (
        f"{source.name} has no .ipynb partner: run `jupytext --sync {source}` and execute it "
        "(jupyter nbconvert --to notebook --execute --inplace ...)"
    )


@pytest.mark.parametrize("ipynb", IPYNBS, ids=_ids(IPYNBS))
def test_every_ipynb_has_its_source(ipynb):
    assert ipynb.with_suffix(".py").is_file(), f"{ipynb.name} has no .py (percent format) source beside it"


def _cells(nb) -> list[tuple[str, str, list[str]]]:
    return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in nb.cells]


@pytest.mark.parametrize("source", SOURCES, ids=_ids(SOURCES))
def test_the_pair_agrees(source):
    """Cell by cell, the .py and the .ipynb hold the same sources, kinds and tags."""
    ipynb = source.with_suffix(".ipynb")
    if not ipynb.is_file():
        pytest.skip("no .ipynb (reported by test_every_source_has_its_ipynb)")
    from_py = _cells(jupytext.read(source, fmt="py:percent"))
    from_ipynb = _cells(jupytext.read(ipynb))
    hint = f"the pair differs: edit {source.name}, then `jupytext --sync {source}` and re-execute the .ipynb"
    assert len(from_py) == len(from_ipynb), f"{len(from_py)} cells in the .py, {len(from_ipynb)} in the .ipynb; {hint}"
    for i, (a, b) in enumerate(zip(from_py, from_ipynb, strict=True)):
        assert a == b, f"cell {i} differs:\n.py:    {a}\n.ipynb: {b}\n{hint}"


@pytest.mark.parametrize("ipynb", IPYNBS, ids=_ids(IPYNBS))
def test_ipynb_is_small_and_stores_no_widget_state(ipynb):
    size = ipynb.stat().st_size
    assert size < MAX_BYTES, f"{ipynb.name} is {size:,} bytes (limit {MAX_BYTES:,}): large outputs belong elsewhere"
    nb = nbformat.read(ipynb, as_version=4)
    state = nb.metadata.get("widgets", {})
    assert WIDGET_STATE not in state, (
        f"{ipynb.name} stores widget state: execute with --ExecutePreprocessor.store_widget_state=False "
        "(or in JupyterLab turn off Settings → Save Widget State Automatically)"
    )


@pytest.mark.parametrize("ipynb", IPYNBS, ids=_ids(IPYNBS))
def test_outputs_are_committed(ipynb):
    """Every code cell was run, top to bottom, in one kernel (the book renders these outputs)."""
    nb = nbformat.read(ipynb, as_version=4)
    counts = [c.execution_count for c in nb.cells
              if c.cell_type == "code" and not SKIP_TAGS & set(c.metadata.get("tags", []))]
    assert None not in counts, f"{ipynb.name} has code cells that were never run: execute the whole notebook"
    assert counts == sorted(counts) and len(set(counts)) == len(counts), (
        f"{ipynb.name} was run out of order ({counts}): restart the kernel and run all cells"
    )
    errors = [o.get("ename") for c in nb.cells if c.cell_type == "code"
              and "raises-exception" not in c.metadata.get("tags", [])  # an error shown on purpose
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{ipynb.name} has error outputs (tag the cell raises-exception if meant): {errors}"
