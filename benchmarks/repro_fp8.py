"""Reproduction: simulated FP8 training vs BF16 — relative loss error (V3 report §3.3, Figure 10).

The report: FP8 training (E4M3, 1×128 / 128×128 scaling, FP32 promotion) stays within 0.25% relative loss error of
the same model trained in BF16, on models of 16B and 230B parameters trained for ~1T tokens. Measured here:

- over a run: the "mini" model trained with ``fp8=True`` (``dsv3_mini.fp8.apply_fp8``: real float8 rounding of every
  big linear layer's inputs and weights, FP32 matmuls, straight-through gradients) and with ``precision="bf16"``
  (CPU bf16 autocast of the forward pass: the report's baseline), same seed, initial weights and batches. Each
  training-loss curve (one point per step) is smoothed with a moving average of ``WINDOW`` steps; the relative error
  |L_fp8 − L_bf16| / L_bf16 of the smoothed curves is averaged over the run. Beside it, the same for BF16 vs FP32
  (another precision change, no FP8 at all) and the seed-to-seed spread of the BF16 runs (other initial weights and
  batches): how far two short runs drift apart whatever causes the difference. Budget: ``repro.py``.
- at fixed weights: the shipped checkpoint's validation loss in FP32, in BF16 autocast and with the FP8 simulation —
  FP8's numerical effect on the loss with no training trajectory to diverge.
"""

from __future__ import annotations

import itertools
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
WINDOW = 10  # steps of the moving average that smooths a training-loss curve


def smoothed(run: dict) -> dict[int, float]:
    """Moving average of the training loss over the last ``WINDOW`` logged steps, from the ``WINDOW``-th on (a run
    shorter than 4 windows, as in ``--quick``, is smoothed over a quarter of its length)."""
    steps, losses = zip(*run["train_curve"], strict=True)
    w = max(1, min(WINDOW, len(steps) // 4))
    return {steps[i]: statistics.fmean(losses[i + 1 - w:i + 1]) for i in range(w - 1, len(steps))}


def curve_error(run: dict, ref: dict) -> float:
    """Mean relative error of two runs' smoothed training-loss curves, over the steps both logged."""
    a, b = smoothed(run), smoothed(ref)
    return statistics.fmean(abs(a[s] - b[s]) / b[s] for s in a if s in b)


def fixed_weights(quick: bool) -> dict:
    """Validation loss of one set of weights, FP32 and with FP8 simulation (shipped checkpoint; quick: random tiny)."""
    if quick or not CHECKPOINT.is_file():
        torch.manual_seed(0)
        model, source, (batch, seq, batches) = DeepSeekV3(preset("tiny")).eval(), "random tiny model", (2, 32, 1)
    else:
        model, source, (batch, seq, batches) = load_model(CHECKPOINT), str(CHECKPOINT.relative_to(ROOT)), (12, 256, 4)
    data = builtin_dataset(train_bytes=10_000, seed=0)
    fp32 = evaluate(model, data, batch, seq, batches)["loss"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = evaluate(model, data, batch, seq, batches)["loss"]
    apply_fp8(model)
    fp8 = evaluate(model, data, batch, seq, batches)["loss"]
    return {"model": source, "fp32_loss": fp32, "bf16_loss": bf16, "fp8_loss": fp8,
            "relative_error": abs(fp8 - bf16) / bf16, "relative_error_vs_fp32": abs(fp8 - fp32) / fp32,
            "bf16_vs_fp32": abs(bf16 - fp32) / fp32, "tokens": batch * seq * batches}


def run(quick: bool = False) -> dict:
    repro.ensure(needs(quick), quick)
    fp32, bf16, fp8 = (repro.results(v, quick) for v in ("base", "bf16", "fp8"))
    err = repro.spread([curve_error(a, b) for a, b in zip(fp8, bf16, strict=True)])
    err_fp32 = repro.spread([curve_error(a, b) for a, b in zip(fp8, fp32, strict=True)])
    bf16_fp32 = repro.spread([curve_error(a, b) for a, b in zip(bf16, fp32, strict=True)])
    seed_pairs = [curve_error(a, b) for a, b in itertools.combinations(bf16, 2)]
    seed_spread = repro.spread(seed_pairs) if seed_pairs else None
    val = repro.spread([abs(a["val_loss"] - b["val_loss"]) / b["val_loss"] for a, b in zip(fp8, bf16, strict=True)])
    slowdown = repro.spread([b["tokens_per_s"] / a["tokens_per_s"] for a, b in zip(fp8, fp32, strict=True)])
    fixed = fixed_weights(quick)
    n = len(fp32)
    spread_note = "" if seed_spread is None else (
        f"; BF16 runs of different seeds: {100 * seed_spread['mean']:.2f}% apart")
    rows = [row("FP8 (simulated) vs BF16: relative error of the smoothed training-loss curve",
                f"{100 * err['mean']:.2f}% ± {100 * err['std']:.2f}%", "paper: < 0.25% (16B / 230B, ~1T tokens)",
                f"< {100 * GOAL:.2f}%", err["mean"] < GOAL,
                f"{WINDOW}-step moving average, mean over the run, {n} seed{'s' * (n > 1)}; BF16 vs FP32 (no FP8): "
                f"{100 * bf16_fp32['mean']:.2f}% ± {100 * bf16_fp32['std']:.2f}%; FP8 vs FP32: "
                f"{100 * err_fp32['mean']:.2f}%" + spread_note + f"; final validation loss {100 * val['mean']:.2f}% "
                f"apart; simulation {slowdown['mean']:.1f}× slower than FP32"),
            row("FP8 (simulated) vs BF16: relative loss error at fixed weights (validation)",
                f"{100 * fixed['relative_error']:.3f}%", "paper: < 0.25% (vs BF16)", f"< {100 * GOAL:.2f}%",
                fixed["relative_error"] < GOAL,
                f"{fixed['model']}: FP32 {fixed['fp32_loss']:.4f}, BF16 {fixed['bf16_loss']:.4f}, FP8 "
                f"{fixed['fp8_loss']:.4f}; FP8 vs FP32 {100 * fixed['relative_error_vs_fp32']:.3f}%, "
                f"{fixed['tokens']:,} tokens")]
    return {"rows": rows, "data": {"relative_error": err, "relative_error_vs_fp32": err_fp32,
                                   "bf16_vs_fp32": bf16_fp32, "bf16_seed_to_seed": seed_spread,
                                   "final_val_relative_error": val, "fp8_slowdown": slowdown, "window": WINDOW,
                                   "fixed_weights": fixed, "goal": GOAL, "runs": repro.run_summary(fp32 + bf16 + fp8)}}


def needs(quick: bool) -> list[tuple[str, int]]:
    return repro.with_base("fp8", quick) + [("bf16", s) for s in repro.seeds(quick)]
