"""Reproduction: auxiliary-loss-free balancing vs a classic auxiliary loss (arXiv 2408.15664; V3 report §2.1.2).

Paper (1B model): aux loss MaxVio_global 0.72, perplexity 9.56; loss-free 0.04, 9.50 (3B: 0.52 / 7.97 vs
0.04 / 7.92). Here: the "mini" model trained twice per seed, same initial weights and batches, once with the
course's default (bias rule γ = 0.001 + sequence-wise loss α = 0.0001) and once with the classic auxiliary loss
(α = 0.01, no bias). MaxVio_global is measured on the validation batches, per MoE layer of the main model; the table
shows its mean over the layers. Run budget: ``repro.py``. For comparison, the note quotes MaxVio_global of the
shipped checkpoint (``checkpoints/mini/summary.json``: loss-free, 900 steps of 12 × 256), if it is there.
"""

from __future__ import annotations

import json
import statistics

from . import repro
from .common import ROOT, row

SHIPPED = ROOT / "checkpoints" / "mini" / "summary.json"


def shipped_max_vio() -> dict | None:
    """MaxVio_global per MoE layer and the step count of the shipped mini run (None without its summary)."""
    try:
        summary = json.loads(SHIPPED.read_text())
        return {"max_vio_global": summary["max_vio_global"], "step": summary["step"]}
    except (OSError, ValueError, KeyError):
        return None


def needs(quick: bool) -> list[tuple[str, int]]:
    return repro.with_base("aux_loss", quick)


def run(quick: bool = False) -> dict:
    repro.ensure(needs(quick), quick)
    lf, aux = repro.results("base", quick), repro.results("aux_loss", quick)
    vio = {name: repro.spread([statistics.fmean(r["max_vio_global"]) for r in runs])
           for name, runs in (("loss_free", lf), ("aux_loss", aux))}
    loss_lf, loss_aux, dloss = repro.paired_val_loss(lf, aux)
    loss = {"loss_free": loss_lf, "aux_loss": loss_aux}
    n = len(lf)
    shipped = shipped_max_vio()
    shipped_note = "" if shipped is None else (
        f"; the shipped run after {shipped['step']} steps: {statistics.fmean(shipped['max_vio_global']):.2f} "
        f"({', '.join(f'{v:.2f}' for v in shipped['max_vio_global'])})")
    rows = [
        row("Loss-free vs aux-loss balancing: MaxVio_global (validation, mean of MoE layers)",
            f"loss-free {repro.pm(vio['loss_free'], 2)} vs aux-loss {repro.pm(vio['aux_loss'], 2)}",
            "paper (1B): 0.04 vs 0.72", "loss-free lower", vio["loss_free"]["mean"] < vio["aux_loss"]["mean"],
            f"{n} seed{'s' * (n > 1)}, mean ± std, {repro.train_config('base', 0, quick).steps} steps" + shipped_note),
        row("Loss-free vs aux-loss balancing: validation loss (nats/byte)",
            f"loss-free {repro.pm(loss['loss_free'], 4)} vs aux-loss {repro.pm(loss['aux_loss'], 4)}",
            "paper (1B): ppl 9.50 vs 9.56", "loss-free not worse", dloss["mean"] <= 0,
            f"paired Δ = {dloss['mean']:+.4f} ± {dloss['std']:.4f}"),
    ]
    return {"rows": rows, "data": {"max_vio_global": vio, "val_loss": loss, "val_loss_difference": dloss,
                                   "shipped_run": shipped,
                                   "runs": repro.run_summary(lf + aux)}}
