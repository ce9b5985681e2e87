"""Training-step throughput: dsv3_mini vs transformers' DeepseekV3ForCausalLM, same config, same weights.

One process, the two models built from one set of weights (``dsv3_mini.interop.to_transformers``), timed alternately
(ours, theirs, ours, theirs, ...) on the trainer's batch shape (12 × 256, ``make train``'s MINI_RUN). A step is
forward + loss + backward (the optimizer is the same AdamW for both, so it is left out). MTP is off (transformers'
class has no MTP module), everything else is the "mini" preset as the trainer builds it, including its default
``mla_impl="auto"`` (the naive MLA bracketing in training, the absorbed one only when decoding). transformers runs
with its defaults on this CPU (SDPA attention, ``grouped_mm`` experts): that is the baseline of the goal. For
information, also timed: our model forced onto the absorbed MLA path, and transformers with its "eager" experts (a
per-expert loop, its default before ``grouped_mm``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsv3_mini import DeepSeekV3, preset, seed_everything
from dsv3_mini.data import builtin_dataset
from dsv3_mini.flops import training_step_flops
from dsv3_mini.interop import to_transformers
from dsv3_mini.model import cross_entropy

from .common import THREADS, fmt_spread, interleave, matmul_peak, paired_ratio, row, summary

GOAL = 1.5


def setup(quick: bool):
    """(config, batch shape, reps) of the full or the quick run."""
    if quick:
        return preset("tiny").replace(num_nextn_predict_layers=0), (2, 32), 2
    return preset("mini").replace(num_nextn_predict_layers=0), (12, 256), 15


@dataclass
class SameWeights:
    """Our model and transformers' with one set of weights, the batch they train on, and a training step (forward +
    loss + backward) for each kind of model: ``ours_step(model)``, ``hf_step(model)``."""

    tokens: torch.Tensor
    targets: torch.Tensor
    ours: DeepSeekV3
    hf: torch.nn.Module

    def ours_step(self, model: DeepSeekV3 | None = None) -> None:
        model = model or self.ours
        model.zero_grad(set_to_none=True)
        model(self.tokens, targets=self.targets).loss.backward()

    def hf_step(self, model: torch.nn.Module | None = None) -> None:
        model = model or self.hf
        model.zero_grad(set_to_none=True)
        cross_entropy(model(input_ids=self.tokens, use_cache=False).logits, self.targets).backward()


def same_weights(cfg, batch: int, seq: int) -> SameWeights:
    """Build ``cfg`` (random weights from the current seed), its transformers copy and a training batch."""
    data = builtin_dataset(train_bytes=200_000, val_bytes=10_000, seed=0)
    tokens, targets, _ = data.get_batch("train", batch, seq, torch.Generator().manual_seed(0))
    ours = DeepSeekV3(cfg).train()
    return SameWeights(tokens, targets, ours, to_transformers(ours).train())


def run(quick: bool = False) -> dict:
    seed_everything(0, THREADS)
    cfg, (batch, seq), reps = setup(quick)
    s = same_weights(cfg, batch, seq)
    absorbed = DeepSeekV3(cfg.replace(mla_impl="absorbed")).train()
    absorbed.load_state_dict(s.ours.state_dict())
    hf_eager = to_transformers(s.ours).train()  # transformers' per-expert loop instead of grouped_mm
    hf_eager.config._experts_implementation = "eager"

    with torch.no_grad():  # the same model: the same loss on the same batch
        loss_ours = float(s.ours(s.tokens, targets=s.targets).main_loss)
        loss_hf = float(cross_entropy(s.hf(input_ids=s.tokens, use_cache=False).logits, s.targets))
    if abs(loss_ours - loss_hf) > 1e-3:
        raise RuntimeError(f"the two models disagree (loss {loss_ours:.5f} vs {loss_hf:.5f}): no fair comparison")

    times = interleave({"dsv3_mini": s.ours_step, "transformers": s.hf_step,
                        "dsv3_mini_absorbed_mla": lambda: s.ours_step(absorbed),
                        "transformers_eager_experts": lambda: s.hf_step(hf_eager)}, reps)
    n = batch * seq
    tps = {k: summary([n / t for t in v]) for k, v in times.items()}
    speedup = paired_ratio(times["transformers"], times["dsv3_mini"])
    speedup_absorbed = paired_ratio(times["transformers"], times["dsv3_mini_absorbed_mla"])
    speedup_eager = paired_ratio(times["transformers_eager_experts"], times["dsv3_mini"])
    met = speedup["median"] >= GOAL
    # How far the goal is from the hardware: the step's model FLOPs over the fp32 matmul peak (as ``mfu`` measures
    # it), for both models and for a step 1.5× faster than theirs.
    peak = max(matmul_peak(cfg.hidden_size, cfg.intermediate_size, n, torch.float32, quick).values())
    flops = training_step_flops(cfg, batch, seq).total
    mfu = {k: flops / (n / tps[k]["median"]) / peak for k in ("dsv3_mini", "transformers")}
    mfu_needed = GOAL * mfu["transformers"]
    rows = [
        row("Training step tokens/s (fwd+bwd, mini, 12×256)",
            f"{fmt_spread(tps['dsv3_mini'])} tok/s", f"transformers {fmt_spread(tps['transformers'])} tok/s",
            "—", None, "median (min–max) of interleaved repetitions"),
        row("Training step speed-up vs transformers", f"{speedup['median']:.2f}× "
            f"({speedup['min']:.2f}–{speedup['max']:.2f})", "1.00×", f"≥ {GOAL}×", met,
            f"our absorbed-MLA path: {speedup_absorbed['median']:.2f}×; vs transformers with eager experts: "
            f"{speedup_eager['median']:.2f}×; the step's FLOPs run at {mfu['dsv3_mini']:.0%} (ours) and "
            f"{mfu['transformers']:.0%} (transformers) of the fp32 matmul peak, so {GOAL}× would need "
            f"{mfu_needed:.0%}"),
    ]
    return {"rows": rows, "data": {
        "config": cfg.name, "batch": batch, "seq_len": seq, "reps": reps, "mla_impl": cfg.mla_impl,
        "transformers_attn": s.hf.config._attn_implementation,
        "transformers_experts": getattr(s.hf.config, "_experts_implementation", None),
        "loss_ours": loss_ours, "loss_transformers": loss_hf, "step_seconds": times, "tokens_per_s": tps,
        "speedup": speedup, "speedup_absorbed_mla": speedup_absorbed,
        "speedup_vs_transformers_eager_experts": speedup_eager, "goal": GOAL, "met": met,
        "peak_fp32_flops_per_s": peak, "step_flops": flops, "mfu_at_median": mfu, "mfu_needed_for_goal": mfu_needed}}
