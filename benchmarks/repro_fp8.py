"""Reproduction: simulated FP8 training vs FP32 — relative loss error (V3 report §3.3, Figure 10).

The report: FP8 (E4M3, 1×128 / 128×128 scaling, FP32 promotion) stays within 0.25% relative loss error of BF16.
Two measurements here, our reference being FP32 (not BF16):

- over a run: the "mini" model trained with ``fp8=True`` (``dsv3_mini.fp8.apply_fp8``: real float8 rounding of every
  big linear layer's inputs and weights, straight-through gradients) and in FP32, same seed, initial weights and
  batches; |L_fp8 − L_fp32| / L_fp32 at every logged training step (the same batch in both runs), averaged over the
  run, and the same for the final validation loss. Next to it, the seed-to-seed spread of FP32 runs (other initial
  weights and batches): the size of run-to-run variation in this short, steep part of training. Budget: ``repro.py``.
- at fixed weights: the shipped checkpoint's validation loss with the FP8 simulation switched on vs off — FP8's
  numerical effect on the loss with no training trajectory to diverge.
"""

from __future__ import annotations

import statistics

import torch

from dsv3_mini import DeepSeekV3, preset
from dsv3_mini.checkpoint import load_model
from dsv3_mini.data import builtin_dataset
from dsv3_mini.fp8 import apply_fp8
from dsv3_mini.train import evaluate

from . import repro
from .common import ROOT, row

CHECKPOINT = ROOT / "checkpoints" / "mini" / "model.safetensors"

GOAL = 0.0025


def relative_errors(run: dict, ref: dict, skip: int = 0) -> list[float]:
    """|L − L_ref| / L_ref at each logged step of two runs with the same batches (after the first ``skip`` logs)."""
    a, b = dict(run["train_curve"]), dict(ref["train_curve"])
    return [abs(a[s] - b[s]) / b[s] for s in sorted(a)[skip:] if s in b]


def fixed_weights(quick: bool) -> dict:
    """Validation loss of one set of weights, FP32 and with FP8 simulation (shipped checkpoint; quick: random tiny)."""
    if quick or not CHECKPOINT.is_file():
        torch.manual_seed(0)
        model, source, (batch, seq, batches) = DeepSeekV3(preset("tiny")).eval(), "random tiny model", (2, 32, 1)
    else:
        model, source, (batch, seq, batches) = load_model(CHECKPOINT), str(CHECKPOINT.relative_to(ROOT)), (12, 256, 4)
    data = builtin_dataset(train_bytes=10_000, seed=0)
    fp32 = evaluate(model, data, batch, seq, batches)["loss"]
    apply_fp8(model)
    fp8 = evaluate(model, data, batch, seq, batches)["loss"]
    return {"model": source, "fp32_loss": fp32, "fp8_loss": fp8, "relative_error": abs(fp8 - fp32) / fp32,
            "tokens": batch * seq * batches}


def run(quick: bool = False) -> dict:
    repro.ensure(needs(quick), quick)
    fp32, fp8 = repro.results("base", quick), repro.results("fp8", quick)
    per_seed = [sum(e) / len(e) for e in (relative_errors(a, b) for a, b in zip(fp8, fp32, strict=True))]
    err = repro.spread(per_seed)
    val = repro.spread([abs(a["val_loss"] - b["val_loss"]) / b["val_loss"] for a, b in zip(fp8, fp32, strict=True)])
    slowdown = repro.spread([b["tokens_per_s"] / a["tokens_per_s"] for a, b in zip(fp8, fp32, strict=True)])
    steps = sorted(dict(fp32[0]["train_curve"]))
    seed_spread = statistics.fmean(  # relative std of the FP32 loss across seeds, at each logged step
        statistics.pstdev(c) / statistics.fmean(c) for c in ([dict(r["train_curve"])[s] for r in fp32] for s in steps))
    fixed = fixed_weights(quick)
    n = len(fp32)
    rows = [row("FP8 (simulated) vs FP32: relative training-loss error over a run",
                f"{100 * err['mean']:.2f}% ± {100 * err['std']:.2f}%", "paper: < 0.25% (vs BF16)",
                f"< {100 * GOAL:.2f}%", err["mean"] < GOAL,
                f"mean over logged steps, {n} seed{'s' * (n > 1)}; final validation loss {100 * val['mean']:.2f}% "
                f"apart; FP32 runs of different seeds: {100 * seed_spread:.1f}% apart; simulation "
                f"{slowdown['mean']:.1f}× slower"),
            row("FP8 (simulated) vs FP32: relative loss error at fixed weights (validation)",
                f"{100 * fixed['relative_error']:.3f}%", "paper: < 0.25% (vs BF16)", f"< {100 * GOAL:.2f}%",
                fixed["relative_error"] < GOAL,
                f"{fixed['model']}: {fixed['fp32_loss']:.4f} (FP32) vs {fixed['fp8_loss']:.4f} (FP8), "
                f"{fixed['tokens']:,} tokens")]
    return {"rows": rows, "data": {"relative_error": err, "final_val_relative_error": val, "fp8_slowdown": slowdown,
                                   "fp32_seed_to_seed_relative_std": seed_spread, "fixed_weights": fixed,
                                   "goal": GOAL, "runs": repro.run_summary(fp32 + fp8)}}


def needs(quick: bool) -> list[tuple[str, int]]:
    return repro.with_base("fp8", quick)
