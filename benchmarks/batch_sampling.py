"""Sampling many short sequences at once (what GRPO's groups need): one batch of 64 against 64 batch-1 calls.

GRPO (V3 report §5.2.2) samples a group of G outputs per question before it can score any of them, so decoding
throughput over many short sequences bounds its steps. The shipped checkpoint (random "mini" weights if it is
missing) samples 32 new tokens after each of 64 validation prompts of 32 bytes, at temperature 1 with a seeded
``torch.Generator``: once as one ``generate`` call on the (64, 32) batch, once as 64 calls of batch 1, alternating,
after a warm-up. Rows of the batch draw from the generator in another order than the sequential calls, so the samples
differ between the two; as a check of the batched path, greedy decoding of the first prompts in the batch is compared
with their batch-1 greedy decoding (same tokens expected, though a batch may round differently).
"""

from __future__ import annotations

import torch

from dsv3_mini import DeepSeekV3, preset, seed_everything
from dsv3_mini.checkpoint import load_model
from dsv3_mini.generate import generate

from .common import ROOT, THREADS, fmt_spread, interleave, paired_ratio, row, summary
from .speculative import prompts

CHECKPOINT = ROOT / "checkpoints" / "mini" / "model.safetensors"
CHECKED = 8  # prompts whose batched greedy tokens are compared with batch-1 decoding


def run(quick: bool = False) -> dict:
    batch, length, new, reps = (8, 16, 8, 1) if quick else (64, 32, 32, 3)
    seed_everything(0, THREADS)
    if quick:
        model, source = DeepSeekV3(preset("tiny")).eval(), "random tiny model"
    elif CHECKPOINT.is_file():
        model, source = load_model(CHECKPOINT), str(CHECKPOINT.relative_to(ROOT))
    else:
        model, source = DeepSeekV3(preset("mini")).eval(), "random mini weights (no checkpoint)"
    group = torch.stack(prompts(batch, length)).long()  # (batch, length)

    def batched():
        return generate(model, group, new, temperature=1.0, generator=torch.Generator().manual_seed(0))

    def sequential():
        g = torch.Generator().manual_seed(0)
        return [generate(model, p, new, temperature=1.0, generator=g) for p in group]

    greedy = generate(model, group[:CHECKED], new)
    agree = sum(torch.equal(greedy[i], generate(model, group[i], new)) for i in range(len(greedy)))
    times = interleave({"batch": batched, "sequential": sequential}, reps)
    speedup = paired_ratio(times["sequential"], times["batch"])
    tps = {k: summary([batch * new / t for t in v]) for k, v in times.items()}
    rows = [row(f"Batched sampling, {batch} prompts × {new} new tokens (temperature 1), tok/s",
                f"batch {batch}: {fmt_spread(tps['batch'])}", f"batch 1 × {batch} sequential: "
                f"{fmt_spread(tps['sequential'])}", "—", None,
                f"{speedup['median']:.1f}× ({speedup['min']:.1f}–{speedup['max']:.1f}); {source}; prompts of "
                f"{length} bytes; greedy rows equal to batch-1 decoding: {agree}/{len(greedy)}")]
    return {"rows": rows, "data": {"model": source, "batch": batch, "prompt_len": length, "new_tokens": new,
                                   "reps": reps, "seconds": times, "tokens_per_s": tps, "speedup": speedup,
                                   "greedy_rows_equal_batch_1": agree, "greedy_rows_checked": len(greedy)}}
