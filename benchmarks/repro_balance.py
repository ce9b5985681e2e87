"""Reproduction: auxiliary-loss-free balancing vs auxiliary losses (arXiv 2408.15664; V3 report §2.1.2, §4.5.2–4.5.3).

Paper (1B model): a sequence-wise auxiliary loss gives MaxVio_global 0.72 and perplexity 9.56, loss-free 0.04 and
9.50 (3B: 0.52 / 7.97 vs 0.04 / 7.92). V3 §4.5.3 adds the batch-wise auxiliary loss: validation loss 2.258
(sequence-wise) vs 2.253 (loss-free) vs 2.253 (batch-wise) at 1B — the balancing *scope* matters, and a batch-wise
loss, like the bias rule, lets single sequences be unbalanced. Figure 9: loss-free experts specialise more by domain.

Here: the "mini" model trained once per policy and seed, same initial weights and batches:
- ``base``: the course's loss-free recipe (bias rule + sequence-wise loss α = 0.0001), γ scaled to the run length
  (``repro.bias_speed_for``; the docstring of ``repro`` explains the rule);
- ``loss_free_v3_gamma``: the same with V3's γ = 0.001 — too slow for 120 steps;
- ``seq_aux``: the sequence-wise auxiliary loss with α = 0.01 (our choice: the paper sweeps α), no bias;
- ``aux_loss``: the batch-wise auxiliary loss, the same α, no bias;
- ``no_balance``: no balancing at all.
MaxVio_global is measured on the validation batches, per MoE layer of the main model; the table shows its mean over
the layers. Specialisation: the mutual information between a token's domain (arithmetic, code, SQL, English) and the
expert it is routed to (``dsv3_mini.analysis``), mean over layers. For comparison, the note quotes MaxVio_global of the
shipped checkpoint (``checkpoints/mini/summary.json``: loss-free, 900 steps of 12 × 256), if it is there.
"""

from __future__ import annotations

import json
import statistics

from . import repro
from .common import ROOT, row

SHIPPED = ROOT / "checkpoints" / "mini" / "summary.json"
POLICIES = {"loss_free": "base", "loss_free_v3_gamma": "loss_free_v3_gamma", "seq_aux": "seq_aux",
            "batch_aux": "aux_loss", "none": "no_balance"}


def shipped_max_vio() -> dict | None:
    """MaxVio_global per MoE layer and the step count of the shipped mini run (None without its summary)."""
    try:
        summary = json.loads(SHIPPED.read_text())
        return {"max_vio_global": summary["max_vio_global"], "step": summary["step"]}
    except (OSError, ValueError, KeyError):
        return None


def needs(quick: bool) -> list[tuple[str, int]]:
    return [(v, s) for s in repro.seeds(quick) for v in POLICIES.values()]


def run(quick: bool = False) -> dict:
    repro.ensure(needs(quick), quick)
    runs = {name: repro.results(v, quick) for name, v in POLICIES.items()}
    vio = {name: repro.spread([statistics.fmean(r["max_vio_global"]) for r in rs]) for name, rs in runs.items()}
    loss = {name: repro.spread([r["val_loss"] for r in rs]) for name, rs in runs.items()}
    mi = {name: repro.spread([statistics.fmean(r["domain_expert_mi"]) for r in rs]) for name, rs in runs.items()}
    delta = {name: repro.spread([a["val_loss"] - b["val_loss"] for a, b in zip(runs["loss_free"], rs, strict=True)])
             for name, rs in runs.items() if name != "loss_free"}
    n, steps = len(runs["loss_free"]), repro.train_config("base", 0, quick).steps
    gamma = repro.train_config("base", 0, quick).bias_update_speed
    shipped = shipped_max_vio()
    shipped_note = "" if shipped is None else (
        f"; the shipped run (γ = 0.001, {shipped['step']} steps): {statistics.fmean(shipped['max_vio_global']):.2f}")
    seeds = f"{n} seed{'s' * (n > 1)}, mean ± std, {steps} steps"
    lf = f"loss-free (γ = {gamma:.4f})"
    rows = [
        row("Balancing: MaxVio_global (validation, mean of MoE layers), loss-free vs sequence-wise aux loss",
            f"{lf} {repro.pm(vio['loss_free'], 2)} vs seq-wise {repro.pm(vio['seq_aux'], 2)}",
            "2408.15664 (1B): 0.04 vs 0.72", "loss-free lower", vio["loss_free"]["mean"] < vio["seq_aux"]["mean"],
            seeds + f"; batch-wise aux {repro.pm(vio['batch_aux'], 2)}, none {repro.pm(vio['none'], 2)}"
            + shipped_note),
        row("Balancing: validation loss (nats/byte), loss-free vs sequence-wise aux loss",
            f"loss-free {repro.pm(loss['loss_free'], 4)} vs seq-wise {repro.pm(loss['seq_aux'], 4)}",
            "2408.15664 (1B): ppl 9.50 vs 9.56; V3 §4.5.3: 2.253 vs 2.258", "loss-free not worse",
            delta["seq_aux"]["mean"] <= 0,
            f"paired Δ = {delta['seq_aux']['mean']:+.4f} ± {delta['seq_aux']['std']:.4f}"),
        row("Balancing scope: batch-wise aux loss vs loss-free (validation loss)",
            f"batch-wise {repro.pm(loss['batch_aux'], 4)} vs loss-free {repro.pm(loss['loss_free'], 4)}",
            "V3 §4.5.3 (1B): 2.253 vs 2.253 (seq-wise 2.258)", "batch-wise closer to loss-free than seq-wise",
            abs(delta["batch_aux"]["mean"]) < abs(delta["seq_aux"]["mean"]),
            f"paired Δ (loss-free − batch-wise) = {delta['batch_aux']['mean']:+.4f} ± {delta['batch_aux']['std']:.4f}; "
            f"MaxVio_global batch-wise {repro.pm(vio['batch_aux'], 2)}"),
        row("Balancing: the bias speed γ must match the run length (MaxVio_global)",
            f"γ = {gamma:.4f}: {repro.pm(vio['loss_free'], 2)} vs γ = {repro.V3_GAMMA}: "
            f"{repro.pm(vio['loss_free_v3_gamma'], 2)}",
            f"V3: γ = {repro.V3_GAMMA} over ~10⁵ steps", "scaled γ lower",
            vio["loss_free"]["mean"] < vio["loss_free_v3_gamma"]["mean"],
            f"in {steps} steps a bias travels at most γ·steps = {gamma * steps:.2f} vs {repro.V3_GAMMA * steps:.2f}; "
            f"the shipped run's biases needed {repro.needed_bias_offset():.2f}; validation loss with V3's γ "
            f"{repro.pm(loss['loss_free_v3_gamma'], 4)}"),
        row("Expert specialisation by domain: mutual information domain ↔ expert (nats, mean of MoE layers)",
            f"loss-free {repro.pm(mi['loss_free'], 3)} vs seq-wise aux {repro.pm(mi['seq_aux'], 3)}",
            "V3 Figure 9: loss-free experts specialise more", "loss-free higher",
            mi["loss_free"]["mean"] > mi["seq_aux"]["mean"],
            f"batch-wise aux {repro.pm(mi['batch_aux'], 3)}, none {repro.pm(mi['none'], 3)}; ln 4 = 1.386 is the "
            "most for 4 domains"),
    ]
    return {"rows": rows, "data": {"gamma": gamma, "steps": steps, "needed_bias_offset": repro.needed_bias_offset(),
                                   "max_vio_global": vio, "val_loss": loss, "val_loss_difference": delta,
                                   "domain_expert_mi": mi, "shipped_run": shipped,
                                   "domain_expert_fractions": {name: rs[0]["domain_expert_fractions"]
                                                               for name, rs in runs.items()},
                                   "runs": repro.run_summary([r for rs in runs.values() for r in rs])}}
