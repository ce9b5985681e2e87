"""Reproduction: Multi-Token Prediction on vs off — next-token validation loss at equal steps (V3 report §2.2, §4.5.1).

The report's ablation (Table 4) finds MTP improves most benchmarks at equal training tokens; the extra module is
dropped at inference, so the main model's next-token loss is what counts. Here: the "mini" model with one MTP module
(λ = 0.3) vs the same model without, same seed, initial weights of the main model and batches; the main model's
next-token validation loss after the same number of steps. Run budget: ``repro.py``.
"""

from __future__ import annotations

from . import repro
from .common import row


def needs(quick: bool) -> list[tuple[str, int]]:
    return repro.with_base("no_mtp", quick)


def run(quick: bool = False) -> dict:
    repro.ensure(needs(quick), quick)
    on, off = repro.results("base", quick), repro.results("no_mtp", quick)
    loss_on, loss_off, delta = repro.paired_val_loss(on, off)
    loss = {"mtp": loss_on, "no_mtp": loss_off}
    n = len(on)
    rows = [row("MTP on vs off: next-token validation loss (nats/byte)",
                f"on {repro.pm(loss['mtp'], 4)} vs off {repro.pm(loss['no_mtp'], 4)}",
                "paper: MTP improves most benchmarks (Table 4)", "on not worse", delta["mean"] <= 0,
                f"paired Δ = {delta['mean']:+.4f} ± {delta['std']:.4f}, {n} seed{'s' * (n > 1)}; "
                f"MTP's own loss {repro.pm(repro.spread([r['val_mtp_losses'][0] for r in on]), 4)}")]
    return {"rows": rows, "data": {"val_loss": loss, "val_loss_difference": delta,
                                   "runs": repro.run_summary(on + off)}}
