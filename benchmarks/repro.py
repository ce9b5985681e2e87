"""Short training runs shared by the reproductions (``repro_*.py``): one run per (variant, seed), each run once.

Every claim compares a variant with the same baseline run, so the baseline is trained once per seed and reused.
Runs go through the real trainer, ``dsv3_mini.train.train(TrainConfig(...), progress=False)``, with a budget that
fits ``make bench`` (documented in benchmarks/README.md): the "mini" model on 8 × 128-token batches for ``STEPS``
steps (``LONG_STEPS`` for the long-budget MTP pair), cosine schedule over the run, validation once at the end on
``EVAL_BATCHES`` fixed batches. Each run uses one torch thread, so its numbers do not depend on how many runs share
the machine; two run side by side on 2 cores. The same seed gives the same initial weights (MTP modules are
initialised after the main model) and the same batches, so variants are compared seed by seed.

**The bias speed γ is scaled to the run** (``bias_speed_for``). The sign rule moves each bias by exactly γ per step,
so in a run of S steps no bias can travel further than γ·S. A trained router needs offsets of a definite size: the
shipped 900-step run's biases reach ``needed_bias_offset()`` ≈ 0.28 in absolute value. V3's γ = 0.001 over its
~10⁵ steps can travel that distance hundreds of times; over our 120 steps it could travel at most 0.12, less than
half of it, and balancing would never finish. So the runs here use γ = offset / (S / 4): the bias can reach the
needed offset within the first quarter of the run, like V3's, which takes a tiny fraction of its run. The variant
``loss_free_v3_gamma`` keeps V3's 0.001 to show the difference.
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

import torch

from dsv3_mini.analysis import domain_expert_mutual_information, routing_by_domain
from dsv3_mini.checkpoint import load_model
from dsv3_mini.config import preset
from dsv3_mini.data import builtin_dataset
from dsv3_mini.train import TrainConfig, train

from .common import ROOT

SHIPPED_MODEL = ROOT / "checkpoints" / "mini" / "model.safetensors"
STEPS = 120
LONG_STEPS = 900  # the shipped run's step count (at the repro batch: 1/3 of its tokens)
REACH = 4  # the bias may take up to 1/REACH of the run to reach the offset a trained router needs
V3_GAMMA = 0.001
BATCH, SEQ = 8, 128
EVAL_BATCHES = 16
TRAIN_BYTES = 1_000_000
SEEDS = (0, 1, 2)
WORKERS = 2

VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},  # the course's recipe: loss-free balancing (γ scaled to the run), one MTP module, fp32
    "loss_free_v3_gamma": {"bias_update_speed": V3_GAMMA},  # V3's γ, too slow for a short run
    "seq_aux": {"balance": "seq-aux-loss"},  # the sequence-wise auxiliary loss (α = 0.01), no bias
    "aux_loss": {"balance": "aux-loss"},  # the batch-wise auxiliary loss (α = 0.01), no bias
    "no_balance": {"balance": "none"},
    "no_mtp": {"mtp_depth": 0},
    "base_long": {"steps": LONG_STEPS},
    "no_mtp_long": {"steps": LONG_STEPS, "mtp_depth": 0},
    "fp8": {"fp8": True},
    "bf16": {"precision": "bf16"},
    "dense": {"preset": "mini-dense"},
}

_results: dict[tuple[str, int, bool], dict[str, Any]] = {}


@functools.cache
def needed_bias_offset() -> float:
    """The largest |b_i| of the shipped 900-step run's routers (main model): how far a bias had to travel."""
    model = load_model(SHIPPED_MODEL)
    return max(float(m.gate.bias.abs().max()) for m in model.moe_layers(include_mtp=False))


def bias_speed_for(steps: int) -> float:
    """γ for a run of ``steps``: the needed offset reachable within the first 1/REACH of the run (never below V3's)."""
    return max(V3_GAMMA, needed_bias_offset() / (steps / REACH))


def seeds(quick: bool) -> tuple[int, ...]:
    return SEEDS[:1] if quick else SEEDS


def define_variant(name: str, **overrides: Any) -> None:
    """A variant decided while the benchmark runs (e.g. a step count from measured times); passed to the workers."""
    VARIANTS[name] = overrides


def train_config(variant: str, seed: int, quick: bool, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The TrainConfig of one run: the shared budget, then the variant's ``overrides`` (default: VARIANTS)."""
    overrides = VARIANTS[variant] if overrides is None else overrides
    if quick:
        base = {"preset": "tiny", "steps": 4, "batch_size": 2, "seq_len": 32, "eval_batches": 1, "warmup_steps": 1}
    else:
        base = {"preset": "mini", "steps": STEPS, "batch_size": BATCH, "seq_len": SEQ, "eval_batches": EVAL_BATCHES}
    fields = {**base, "log_every": 1, "seed": seed, "threads": 1, **overrides}
    if quick and "steps" in overrides:  # a long budget is 2× the quick one
        fields["steps"] = min(overrides["steps"], 2 * base["steps"])
    fields["eval_every"] = fields["steps"]
    if fields["steps"] > STEPS:
        fields["log_every"] = 5
    fields.setdefault("bias_update_speed", bias_speed_for(fields["steps"]))
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


def train_run(variant: str, seed: int, quick: bool, overrides: dict[str, Any]) -> dict[str, Any]:
    """One training run; the validation record and the training-loss curve."""
    tc = train_config(variant, seed, quick, overrides)
    torch.set_num_threads(1)  # for the analysis after training too: two 2-thread workers on 2 cores oversubscribe
    t = time.perf_counter()
    result = train(tc, progress=False, dataset=_dataset(seed, quick))
    seconds = time.perf_counter() - t
    val = [h for h in result.history if h["split"] == "val"][-1]
    curve = [(h["step"], h["loss"]) for h in result.history if h["split"] == "train"]
    # expert specialisation by domain on the validation batches (the report's Figure 9 analogue)
    fractions = routing_by_domain(result.model, result.dataset, tc.batch_size, tc.seq_len, tc.eval_batches)
    return {"variant": variant, "seed": seed, "seconds": seconds, "val_loss": val["loss"],
            "val_mtp_losses": val["mtp_losses"], "max_vio_global": val["max_vio_global"], "train_curve": curve,
            "tokens_per_s": tc.steps * tc.batch_size * tc.seq_len / seconds,
            "domain_expert_fractions": fractions.tolist(),
            "domain_expert_mi": domain_expert_mutual_information(fractions).tolist(),
            "config": {k: v for k, v in vars(tc).items() if k not in ("out", "data", "model_overrides")}}


def ensure(runs: Iterable[tuple[str, int]], quick: bool, log: Callable[[str], None] = print) -> None:
    """Train every (variant, seed) not trained yet in this process, ``WORKERS`` at a time."""
    todo = [(v, s) for v, s in dict.fromkeys(runs) if (v, s, quick) not in _results]
    todo.sort(key=lambda r: -train_config(r[0], r[1], quick).steps)  # longest first: the two workers end together
    if not todo:
        return
    workers = min(WORKERS, len(todo), os.cpu_count() or 1)
    if workers == 1:
        for v, s in todo:
            _results[v, s, quick] = train_run(v, s, quick, VARIANTS[v])
            log(f"    trained {v} seed {s} in {_results[v, s, quick]['seconds']:.0f} s")
        return
    # spawn, not fork: a forked child of a process that already used torch's thread pool can hang. A spawned child
    # imports ``benchmarks.repro`` by name, from the parent's working directory and import path.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(train_run, v, s, quick, VARIANTS[v]): (v, s) for v, s in todo}
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
                               "tokens_per_s", "domain_expert_mi", "train_curve")} | {"steps": r["config"]["steps"],
            "bias_update_speed": r["config"]["bias_update_speed"]} for r in runs]
