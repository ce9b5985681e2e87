"""Greedy ``generate`` at 1K context: dsv3_mini against transformers' ``DeepseekV3ForCausalLM.generate``, same weights.

The weights are the shipped checkpoint's (``checkpoints/mini/model.safetensors``; random "mini" weights if it is
missing), with ``max_position_embeddings`` raised to fit the context (RoPE tables are computed, not stored) and MTP
left out (transformers has none). ``dsv3_mini.interop.to_transformers`` copies them into transformers' class, which
runs with its defaults (SDPA attention, its dynamic cache), as a new user would call it: ``generate(input_ids,
max_new_tokens=n, do_sample=False)``, with no end-of-sequence id (our vocabulary is bytes: id 1, transformers' default
``eos_token_id``, is a byte like any other, and ``min_new_tokens`` would instead mask its logit and change the greedy
tokens). Batch 1; the prompt is 1,024 bytes of the validation split.
Each timed call is a whole generation, prefill included, for both; the two alternate after a warm-up. The tokens must
be identical.
"""

from __future__ import annotations

import torch

from dsv3_mini import DeepSeekV3, preset, seed_everything
from dsv3_mini.checkpoint import load_model
from dsv3_mini.data import builtin_dataset
from dsv3_mini.generate import generate
from dsv3_mini.interop import to_transformers

from .common import ROOT, THREADS, fmt_spread, interleave, paired_ratio, row, summary

CHECKPOINT = ROOT / "checkpoints" / "mini" / "model.safetensors"
GOAL = 2.0


def same_weights_model(positions: int, quick: bool) -> tuple[DeepSeekV3, str]:
    """Our model without MTP and with room for ``positions`` positions; the weights' source."""
    if quick:
        return DeepSeekV3(preset("tiny").replace(num_nextn_predict_layers=0)).eval(), "random tiny model"
    source = load_model(CHECKPOINT) if CHECKPOINT.is_file() else DeepSeekV3(preset("mini"))
    model = DeepSeekV3(source.cfg.replace(max_position_embeddings=positions, num_nextn_predict_layers=0))
    model.load_state_dict({k: v for k, v in source.state_dict().items() if not k.startswith("mtp.")})
    name = str(CHECKPOINT.relative_to(ROOT)) if CHECKPOINT.is_file() else "random mini weights (no checkpoint)"
    return model.eval(), name


def run(quick: bool = False) -> dict:
    context, new, reps = (64, 8, 1) if quick else (1024, 64, 15)  # 5 left the median ratio moving by ±0.1
    seed_everything(0, THREADS)
    model, source = same_weights_model(context + new, quick)
    hf = to_transformers(model)
    hf.generation_config.eos_token_id = None  # bytes only: every id is a token, none ends the text
    val = builtin_dataset(train_bytes=10_000, seed=0).val
    prompt = val[:context][None].long()

    @torch.no_grad()
    def theirs():
        return hf.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                           do_sample=False, pad_token_id=0)

    def ours():
        return generate(model, prompt, new, temperature=0.0)

    same = torch.equal(ours(), theirs())
    times = interleave({"dsv3_mini": ours, "transformers": theirs}, reps)
    speedup = paired_ratio(times["transformers"], times["dsv3_mini"])
    tps = {k: summary([new / t for t in v]) for k, v in times.items()}
    rows = [row(f"Greedy generate at {context:,} context vs transformers, tok/s (batch 1, {new} new, same weights)",
                f"{fmt_spread(tps['dsv3_mini'])} tok/s; {speedup['median']:.2f}× "
                f"({speedup['min']:.2f}–{speedup['max']:.2f})",
                f"transformers {fmt_spread(tps['transformers'])} tok/s", f"≥ {GOAL:g}×; identical tokens",
                same and speedup["median"] >= GOAL,
                f"{source}; whole generate() calls, prefill included; transformers' defaults (SDPA, dynamic cache)")]
    return {"rows": rows, "data": {"model": source, "context": context, "new_tokens": new, "reps": reps,
                                   "identical_tokens": same, "seconds": times, "tokens_per_s": tps,
                                   "speedup": speedup, "goal": GOAL}}
