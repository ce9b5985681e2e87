"""Reproduction: Multi-Token Prediction on vs off — next-token validation loss (V3 report §2.2, §4.5.1, Table 4).

The report's ablation trains a small MoE (15.7B total parameters, 1.33T tokens) and a large one (228.7B, 540B tokens)
with and without one MTP module and finds MTP improves most benchmarks at equal training tokens; the module is
dropped at inference, so the main model is what is compared. Here: the "mini" model with one MTP module (λ = 0.3)
vs the same model without, same seed, initial weights of the main model and batches; the main model's next-token
validation loss

- at equal steps, at two budgets: ``repro.STEPS`` (120) and ``repro.LONG_STEPS`` (900, the shipped run's step count,
  at the repro batch of 8 × 128); γ follows ``repro.bias_speed_for`` at each length;
- at equal wall clock: MTP costs time per step, so the model without it gets the steps it could do in the time of
  120 MTP steps (measured from the 120-step runs' times, median ratio over seeds), its own cosine schedule.
"""

from __future__ import annotations

import statistics

from . import repro
from .common import row


def needs(quick: bool) -> list[tuple[str, int]]:
    return repro.with_base("no_mtp", quick) + [(v, s) for s in repro.seeds(quick) for v in ("base_long", "no_mtp_long")]


def _row(on: list[dict], off: list[dict], what: str) -> tuple[dict, dict]:
    loss_on, loss_off, delta = repro.paired_val_loss(on, off)
    n = len(on)
    return row(f"MTP on vs off: next-token validation loss (nats/byte), {what}",
               f"on {repro.pm(loss_on, 4)} vs off {repro.pm(loss_off, 4)}",
               "Table 4 (15.7B / 228.7B MoE): MTP improves most benchmarks", "on not worse", delta["mean"] <= 0,
               f"paired Δ = {delta['mean']:+.4f} ± {delta['std']:.4f}, {n} seed{'s' * (n > 1)}; MTP's own loss "
               f"{repro.pm(repro.spread([r['val_mtp_losses'][0] for r in on]), 4)}"), {
        "mtp": loss_on, "no_mtp": loss_off, "difference": delta}


def run(quick: bool = False) -> dict:
    repro.ensure(needs(quick), quick)
    on, off = repro.results("base", quick), repro.results("no_mtp", quick)
    ratio = statistics.median(a["seconds"] / b["seconds"] for a, b in zip(on, off, strict=True))
    steps = repro.train_config("base", 0, quick).steps
    equal_time = max(steps, round(steps * ratio))
    repro.define_variant("no_mtp_equal_time", mtp_depth=0, steps=equal_time)
    repro.ensure([("no_mtp_equal_time", s) for s in repro.seeds(quick)], quick)
    long_on, long_off = repro.results("base_long", quick), repro.results("no_mtp_long", quick)
    same_time = repro.results("no_mtp_equal_time", quick)
    long_steps = repro.train_config("base_long", 0, quick).steps
    rows, data = [], {"time_ratio": ratio, "equal_time_steps": equal_time}
    for key, a, b, what in (("equal_steps", on, off, f"{steps} steps each"),
                            ("equal_steps_long", long_on, long_off, f"{long_steps} steps each"),
                            ("equal_time", on, same_time, f"equal wall clock ({steps} vs {equal_time} steps)")):
        r, d = _row(a, b, what)
        rows.append(r)
        data[key] = d
    rows[-1]["note"] += f"; an MTP step takes {ratio:.2f}× a step without MTP (median over seeds)"
    data["runs"] = repro.run_summary(on + off + long_on + long_off + same_time)
    return {"rows": rows, "data": data}
