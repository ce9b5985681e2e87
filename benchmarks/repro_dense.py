"""Reproduction: MoE vs dense at equal active parameters (DeepSeekMoE; V3 report §2.1.2).

"mini" has, per MoE layer, 1 shared + 4 of 16 routed experts of width 96 active per token; "mini-dense" replaces
every FFN by one SwiGLU of width 5 × 96 = 480, the same active FFN parameters (``dsv3_mini.config``). The MoE model
holds ~3× the FFN parameters in total; the claim is that it learns more per step at the same compute. Both trained
for the same steps on the same batches; different architectures, so the seeds give different initial weights.
Run budget: ``repro.py``.
"""

from __future__ import annotations

from dsv3_mini import count_params

from . import repro
from .common import row


def needs(quick: bool) -> list[tuple[str, int]]:
    return repro.with_base("dense", quick)


def run(quick: bool = False) -> dict:
    repro.ensure(needs(quick), quick)
    moe, dense = repro.results("base", quick), repro.results("dense", quick)
    loss_moe, loss_dense, delta = repro.paired_val_loss(moe, dense)
    loss = {"moe": loss_moe, "dense": loss_dense}
    counts = {name: count_params(repro.train_config(v, 0, quick).model_config()) for name, v in (("moe", "base"),
                                                                                              ("dense", "dense"))}
    params = {name: {"total": c.total, "active": c.active} for name, c in counts.items()}
    n = len(moe)
    rows = [row("MoE vs dense at equal active params: validation loss (nats/byte)",
                f"MoE {repro.pm(loss['moe'], 4)} vs dense {repro.pm(loss['dense'], 4)}",
                "DeepSeekMoE: MoE better at equal compute", "MoE lower", delta["mean"] < 0,
                f"Δ = {delta['mean']:+.4f} ± {delta['std']:.4f}, {n} seed{'s' * (n > 1)}; active params "
                f"{params['moe']['active']:,} vs {params['dense']['active']:,}, total {params['moe']['total']:,} vs "
                f"{params['dense']['total']:,}")]
    return {"rows": rows, "data": {"val_loss": loss, "val_loss_difference": delta, "params": params,
                                   "runs": repro.run_summary(moe + dense)}}
