"""Where the time of one training step goes: matmuls, attention, the MoE dispatch, elementwise passes, the rest.

    .venv/bin/python -m benchmarks.train_profile            # "mini", 12 × 256, MTP off; ours and transformers

The step is ``train_step``'s (forward + loss + backward of the "mini" model, MTP off, the same weights in ours and in
transformers' ``DeepseekV3ForCausalLM``). ``torch.profiler`` records a few steps; every operator's own time (its
self time: not counting the operators it calls) is put in one category by its name (``CATEGORIES``), and the shares
are scaled to the step's wall clock, timed without the profiler (median of ``reps``). *ops* counts the operators a
step calls; times a trivial operator's cost (measured here, as in ``decode_profile``) it is the *dispatch floor*:
what the step would still take if every operator's arithmetic were free. Not a ``make bench`` item: a diagnostic
whose table is copied into benchmarks/README.md ("Training-step profile").
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

from torch.profiler import ProfilerActivity, profile

from dsv3_mini import seed_everything

from .common import THREADS, print_ms_table
from .decode_profile import trivial_op_ms
from .train_step import same_weights, setup

# operator name (without "aten::") -> category; anything else is "other"
CATEGORIES = {
    "matmuls": ("mm", "bmm", "addmm", "baddbmm", "_grouped_mm", "addmv", "mv"),
    "attention kernel": ("_scaled_dot_product_flash_attention_for_cpu",
                         "_scaled_dot_product_flash_attention_for_cpu_backward", "_softmax", "_softmax_backward_data"),
    "MoE dispatch": ("index_select", "index_add_", "index_add", "index", "index_put_", "_index_put_impl_", "sort",
                     "argsort", "topk", "where", "nonzero", "scatter", "scatter_", "scatter_add_", "gather",
                     "bincount", "cat", "split", "split_with_sizes", "unbind", "stack", "masked_fill", "masked_fill_",
                     "item", "_local_scalar_dense", "all", "isneginf"),
    "elementwise": ("mul", "mul_", "add", "add_", "sub", "div", "div_", "silu", "silu_backward", "sigmoid",
                    "sigmoid_backward", "pow", "rsqrt", "neg", "exp", "fill_", "zero_", "copy_", "clone", "zeros_like",
                    "_to_copy", "sum", "mean", "_fused_rms_norm", "_fused_rms_norm_backward", "threshold_backward"),
    "loss": ("_log_softmax", "_log_softmax_backward_data", "nll_loss_forward", "nll_loss_backward"),
}
_CATEGORY = {op: cat for cat, ops in CATEGORIES.items() for op in ops}


def category(op_name: str) -> str:
    return _CATEGORY.get(op_name.removeprefix("aten::"), "other")


def profile_step(step, reps: int = 9, profiled: int = 3) -> dict[str, float]:
    """Milliseconds per step by category (scaled to the unprofiled wall clock), plus ``step``, ``ops``, ``floor``."""
    for _ in range(2):
        step()
    walls = []
    for _ in range(reps):
        t = time.perf_counter()
        step()
        walls.append(time.perf_counter() - t)
    wall = statistics.median(walls) * 1e3
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(profiled):
            step()
    self_ms: dict[str, float] = defaultdict(float)
    for e in prof.key_averages():
        if e.key.startswith("aten::"):
            self_ms[category(e.key)] += e.self_cpu_time_total / 1e3 / profiled
    # top-level operators: the forward's (the backward's run under autograd-engine events)
    ops = sum(e.cpu_parent is None and e.name.startswith("aten::") for e in prof.events())
    total = sum(self_ms.values())
    out = {"step": wall}
    out.update({k: wall * v / total for k, v in sorted(self_ms.items(), key=lambda kv: -kv[1])})
    out["ops"] = ops / profiled
    out["floor"] = out["ops"] * trivial_op_ms()
    return out


def steps(threads: int = THREADS):
    """The two step functions of ``train_step`` (ours, transformers'), on the same weights and batch."""
    seed_everything(0, threads)
    cfg, (batch, seq), _ = setup(quick=False)
    s = same_weights(cfg, batch, seq)
    return {"dsv3_mini": s.ours_step, "transformers": s.hf_step}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.train_profile", description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=THREADS, help="torch threads")
    args = ap.parse_args(argv)
    rows = [(name, profile_step(fn)) for name, fn in steps(args.threads).items()]
    keys = ["step", *CATEGORIES, "other", "ops", "floor"]
    print_ms_table(rows, keys, 1)


if __name__ == "__main__":
    main()
