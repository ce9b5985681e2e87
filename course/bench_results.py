"""The committed ``make bench`` run, read by the lessons that quote it (never re-run inside a lesson).

``benchmarks/results/bench.json`` holds every row of BENCH.md (item, ours, baseline, goal, met?, notes) and the raw
numbers behind them (per-seed runs, training curves). A lesson quotes a row with ``bench_row(item, prefix)`` and its
raw data with ``bench_data(item)``, so the lesson, BENCH.md and the book say the same thing; ``tests/`` fail when a
lesson's stored verdict disagrees with the committed file. ``DSV3_MINI_BENCH`` points elsewhere (e.g. a run of yours).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from .paths import BENCH_RESULTS


@cache
def load(path: Path = BENCH_RESULTS) -> dict[str, Any]:
    """The whole bench.json of a full (not ``--quick``) run; a clear error when it is missing or a smoke run."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make bench` in the repository (or set DSV3_MINI_BENCH)")
    results = json.loads(path.read_text())
    if results.get("quick"):
        raise ValueError(f"{path} is a --quick smoke run; its numbers mean nothing. Run `make bench`.")
    return results


def bench_item(name: str, path: Path = BENCH_RESULTS) -> dict[str, Any]:
    """One item of the run (e.g. "repro_balance"); an error naming the items when it is absent or did not finish."""
    items = load(path)["benchmarks"]
    if name not in items:
        raise KeyError(f"bench item {name!r} is not in {path}; it has {', '.join(items)}")
    if items[name]["status"] != "ok":
        raise ValueError(f"bench item {name!r} did not finish ({items[name]['status']}): rerun "
                         f"`make bench ARGS='--only {name}'`")
    return items[name]


def bench_row(name: str, prefix: str, path: Path = BENCH_RESULTS) -> dict[str, Any]:
    """The row of item ``name`` whose title starts with ``prefix``: exactly one must match."""
    rows = [r for r in bench_item(name, path)["rows"] if r["item"].startswith(prefix)]
    if len(rows) != 1:
        titles = "; ".join(r["item"] for r in bench_item(name, path)["rows"])
        raise KeyError(f"{len(rows)} rows of {name!r} start with {prefix!r}; its rows: {titles}")
    return rows[0]


def bench_data(name: str, path: Path = BENCH_RESULTS) -> dict[str, Any]:
    """The raw numbers of item ``name`` (what its rows were computed from)."""
    return bench_item(name, path)["data"]


def run_date(item: str, path: Path = BENCH_RESULTS) -> str:
    """When the committed run measured ``item``, and on what: one line for a lesson to print under a quoted table.

    The item's own date, not the run's: ``make bench --only other_items`` rewrites the run's date but keeps this
    item's numbers, so the lesson's printed line (and nbval's stored output) stays true."""
    r = load(path)
    m = r["machine"]
    date = bench_item(item, path).get("date", r["date"])
    return f"make bench of {date[:10]} ({m['cpu']}, {m['cores']} cores, torch {m['torch']})"


BALANCING_POLICIES = {"loss_free": "loss-free, γ scaled", "loss_free_v3_gamma": "loss-free, V3's γ = 0.001",
                      "seq_aux": "sequence-wise aux loss", "batch_aux": "batch-wise aux loss", "none": "no balancing"}


def balancing_table(path: Path = BENCH_RESULTS) -> str:
    """The trained balancing comparison (item "repro_balance") as the lines lessons 3 and 9 print: one row per policy,
    MaxVio_global on validation, validation loss and domain ↔ expert mutual information, mean ± std over seeds."""
    bal = bench_data("repro_balance", path)
    seeds = len(bal["val_loss"]["loss_free"]["values"])
    lines = [f"{run_date('repro_balance', path)}; {bal['steps']} steps, {seeds} seeds, mean ± std",
             f"{'policy':<27}{'MaxVio_global':>15}{'validation loss':>20}{'MI domain-expert':>19}"]
    names = {**BALANCING_POLICIES, "loss_free": f"loss-free, γ = {bal['gamma']:.4f}"}
    for key, name in names.items():
        v, lo, mi = bal["max_vio_global"][key], bal["val_loss"][key], bal["domain_expert_mi"][key]
        lines.append(f"{name:<27}{v['mean']:>8.2f} ± {v['std']:.2f}{lo['mean']:>12.4f} ± {lo['std']:.4f}"
                     f"{mi['mean']:>11.3f} ± {mi['std']:.3f}")
    return "\n".join(lines)
