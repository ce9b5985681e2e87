"""Short training runs shared by the reproductions (``repro_*.py``): one run per (variant, seed), each run once.

Every claim compares a variant with the same baseline run, so the baseline is trained once per seed and reused.
Runs go through the real trainer, ``dsv3_mini.train.train(TrainConfig(...), progress=False)``, with a budget that
fits ``make bench`` (documented in benchmarks/README.md): the "mini" model on 8 × 128-token batches for ``STEPS``
steps, cosine schedule over the run, validation once at the end on ``EVAL_BATCHES`` fixed batches. Each run uses one
torch thread, so its numbers do not depend on how many runs share the machine; two run side by side on 2 cores.
The same seed gives the same initial weights (MTP modules are initialised after the main model) and the same batches,
so variants are compared seed by seed.
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

from dsv3_mini.config import preset
from dsv3_mini.data import builtin_dataset
from dsv3_mini.train import TrainConfig, train

STEPS = 120
BATCH, SEQ = 8, 128
EVAL_BATCHES = 16
TRAIN_BYTES = 1_000_000
SEEDS = (0, 1, 2)
WORKERS = 2

VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},  # the course's recipe: loss-free balancing, one MTP module, fp32
    "aux_loss": {"balance": "aux-loss"},
    "no_mtp": {"mtp_depth": 0},
    "fp8": {"fp8": True},
    "dense": {"preset": "mini-dense"},
}

_results: dict[tuple[str, int, bool], dict[str, Any]] = {}


def seeds(quick: bool) -> tuple[int, ...]:
    return SEEDS[:1] if quick else SEEDS


def train_config(variant: str, seed: int, quick: bool) -> TrainConfig:
    if quick:
        base = {"preset": "tiny", "steps": 4, "batch_size": 2, "seq_len": 32, "eval_batches": 1, "warmup_steps": 1}
    else:
        base = {"preset": "mini", "steps": STEPS, "batch_size": BATCH, "seq_len": SEQ, "eval_batches": EVAL_BATCHES}
    fields = {**base, "eval_every": base["steps"], "log_every": 1 if quick else 5, "seed": seed, "threads": 1,
              **VARIANTS[variant]}
    if quick and variant == "dense":  # "tiny" has no dense preset: the same recipe as "mini-dense", on "tiny"
        cfg = preset("tiny")
        width = (cfg.n_shared_experts + cfg.num_experts_per_tok) * cfg.moe_intermediate_size
        fields.update(preset="tiny", model_overrides={"first_k_dense_replace": cfg.num_hidden_layers,
                                                      "intermediate_size": width})
    return TrainConfig(**fields)


@functools.cache
def _dataset(seed: int, quick: bool):
    return builtin_dataset(train_bytes=50_000 if quick else TRAIN_BYTES, val_bytes=20_000 if quick else 100_000,
                           seed=seed)


def train_run(variant: str, seed: int, quick: bool) -> dict[str, Any]:
    """One training run; the validation record and the training-loss curve."""
    tc = train_config(variant, seed, quick)
    t = time.perf_counter()
    result = train(tc, progress=False, dataset=_dataset(seed, quick))
    seconds = time.perf_counter() - t
    val = [h for h in result.history if h["split"] == "val"][-1]
    curve = [(h["step"], h["loss"]) for h in result.history if h["split"] == "train"]
    return {"variant": variant, "seed": seed, "seconds": seconds, "val_loss": val["loss"],
            "val_mtp_losses": val["mtp_losses"], "max_vio_global": val["max_vio_global"], "train_curve": curve,
            "tokens_per_s": tc.steps * tc.batch_size * tc.seq_len / seconds,
            "config": {k: v for k, v in vars(tc).items() if k not in ("out", "data", "model_overrides")}}


def ensure(runs: Iterable[tuple[str, int]], quick: bool, log: Callable[[str], None] = print) -> None:
    """Train every (variant, seed) not trained yet in this process, ``WORKERS`` at a time."""
    todo = [(v, s) for v, s in dict.fromkeys(runs) if (v, s, quick) not in _results]
    if not todo:
        return
    workers = min(WORKERS, len(todo), os.cpu_count() or 1)
    if workers == 1:
        for v, s in todo:
            _results[v, s, quick] = train_run(v, s, quick)
            log(f"    trained {v} seed {s} in {_results[v, s, quick]['seconds']:.0f} s")
        return
    # spawn, not fork: a forked child of a process that already used torch's thread pool can hang. A spawned child
    # imports ``benchmarks.repro`` by name, from the parent's working directory and import path.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(train_run, v, s, quick): (v, s) for v, s in todo}
        for done, fut in enumerate(as_completed(futures), start=1):
            v, s = futures[fut]
            _results[v, s, quick] = fut.result()
            log(f"    [{done}/{len(todo)}] trained {v} seed {s} in {_results[v, s, quick]['seconds']:.0f} s")


def results(variant: str, quick: bool) -> list[dict[str, Any]]:
    """The runs of ``variant``, one per seed (trained before by ``ensure``)."""
    ensure([(variant, s) for s in seeds(quick)], quick)
    return [_results[variant, s, quick] for s in seeds(quick)]


def with_base(variant: str, quick: bool) -> list[tuple[str, int]]:
    """The runs a claim needs: the base and ``variant``, for every seed (what a reproduction's ``needs`` returns)."""
    return [(v, s) for s in seeds(quick) for v in ("base", variant)]


def paired_val_loss(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> tuple[dict, dict, dict]:
    """Validation losses of two variants' runs, seed by seed: the spread of each and of the paired difference a − b."""
    return (spread([r["val_loss"] for r in a]), spread([r["val_loss"] for r in b]),
            spread([x["val_loss"] - y["val_loss"] for x, y in zip(a, b, strict=True)]))


def spread(xs: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "min": min(xs),
            "max": max(xs), "values": xs}


def pm(s: dict[str, float], digits: int = 3) -> str:
    """'mean ± std' for a spread."""
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def run_summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a reproduction stores of its runs (the training curves are kept: the table is computed from them)."""
    return [{k: r[k] for k in ("variant", "seed", "seconds", "val_loss", "val_mtp_losses", "max_vio_global",
                               "tokens_per_s", "train_curve")} for r in runs]
