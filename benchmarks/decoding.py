"""Decoding speed and KV-cache size at 1K and 4K context: absorbed MLA, naive MLA and an MHA cache.

Three models of the same width ("mini": hidden 192, 4 layers, 4 heads; ``max_position_embeddings`` raised to fit
4K): MLA with the absorbed path (attends to the cached latent c_KV and k_R), MLA with the naive path (the same cache,
re-expanded into per-head K and V at every step) — the same weights, so both must produce the same tokens — and
standard MHA with 4 heads of 48 (hidden / heads), which caches full K and V. Greedy, random weights; batch 1 at
both contexts, and batch ``BATCH`` at the longest (a server decodes many sequences at once: every step then reads
``BATCH`` caches, and the cache's bytes, not the per-step operator overhead of a 4-layer model, bound the step).

Each model is prefilled once with the context (in chunks of 1024 positions); then every repetition crops the cache
back to the context (``KVCache.crop``) and times ``new`` greedy steps, exactly the loop of
``dsv3_mini.generate.generate``. The variants alternate; speed-ups are medians of per-repetition ratios. Cache bytes
are measured (``KVCache.nbytes``, fp32) and compared with ``dsv3_mini.kv_cache.bytes_per_token``.
"""

from __future__ import annotations

import functools

import torch

from dsv3_mini import DeepSeekV3, preset, seed_everything
from dsv3_mini.generate import generate
from dsv3_mini.kv_cache import bytes_per_token, naive_mla_bytes_per_token

from .common import THREADS, fmt_spread, interleave, paired_ratio, row, summary

CHUNK = 1024
GOAL = 2.0  # at the longest context, absorbed MLA against MHA and against naive MLA (issue 15)
BATCH = 8  # the batched measurement at the longest context (one-off: 1.39x MHA at batch 1, 2.13x at 4, 2.42x at 16)


def configs(quick: bool, max_positions: int) -> dict:
    base = preset("tiny" if quick else "mini")
    base = base.replace(num_nextn_predict_layers=0, max_position_embeddings=max_positions)
    mha_head = base.hidden_size // base.num_attention_heads
    return {"mla_absorbed": base.replace(mla_impl="absorbed"), "mla_naive": base.replace(mla_impl="naive"),
            "mha": base.replace(attention="mha", head_dim=mha_head)}


@torch.inference_mode()  # as generate() runs
def prefill(model: DeepSeekV3, prompt: torch.Tensor):
    cache = model.new_cache()
    for chunk in prompt.split(CHUNK, dim=1):
        logits = model(chunk, cache=cache, logits_to_keep=1).logits[:, -1]
    return cache, logits


@torch.inference_mode()  # as generate() runs
def decode(model: DeepSeekV3, cache, logits: torch.Tensor, context: int, new: int) -> torch.Tensor:
    """``new`` greedy steps after the cached context (the cache is cropped back first); returns the new tokens."""
    cache.crop(context)
    out = []
    for step in range(new):
        nxt = logits.argmax(dim=-1)[:, None]
        out.append(nxt)
        if step + 1 < new:
            logits = model(nxt, cache=cache, logits_to_keep=1).logits[:, -1]
    return torch.cat(out, dim=1)


def measure(models: dict, cfgs: dict, prompt: torch.Tensor, new: int, reps: int, check_generate: bool) -> dict:
    """Prefill every model with ``prompt`` (batch, context), time ``new`` greedy steps: the item's data entry."""
    context = prompt.shape[1]
    state = {k: prefill(m, prompt) for k, m in models.items()}
    tokens = {k: decode(m, *state[k], context, new) for k, m in models.items()}
    same = torch.equal(tokens["mla_absorbed"], tokens["mla_naive"])
    if check_generate:  # our timed loop is generate()'s loop
        ref = generate(models["mla_absorbed"], prompt, new, temperature=0.0)[:, context:]
        same = same and torch.equal(ref, tokens["mla_absorbed"])
    times = interleave({k: functools.partial(decode, models[k], *state[k], context, new) for k in models}, reps,
                       warmup=0)
    batch = prompt.shape[0]
    entry = {"same_tokens": same, "batch": batch}
    for k, cfg in cfgs.items():
        cache = state[k][0]
        cache.crop(context)
        measured = cache.nbytes() / context / batch
        formula = bytes_per_token(cfg, dtype_bytes=4)
        entry[k] = {"tokens_per_s": summary([batch * new / t for t in times[k]]), "seconds": times[k],
                    "cache_bytes": cache.nbytes(), "measured_bytes_per_token": measured,
                    "bytes_per_token_fp32": formula, "bytes_per_token_bf16": bytes_per_token(cfg, 2),
                    "formula_matches": measured == formula}
        if k == "mla_naive":
            entry[k]["expanded_kv_bytes_per_token_fp32"] = naive_mla_bytes_per_token(cfg, 4)
    entry["speedup_vs"] = {k: paired_ratio(times[k], times["mla_absorbed"]) for k in ("mha", "mla_naive")}
    return entry


def speed_row(entry: dict, title: str, longest: bool, note: str) -> dict:
    """The tok/s row of one measurement: the goal (2× MHA and naive) at the longest context, absorbed ≥ naive before."""
    a, n, m = entry["mla_absorbed"], entry["mla_naive"], entry["mha"]
    x_mha, x_naive = entry["speedup_vs"]["mha"]["median"], entry["speedup_vs"]["mla_naive"]["median"]
    return row(title, f"absorbed MLA {fmt_spread(a['tokens_per_s'])}",
               f"naive MLA {fmt_spread(n['tokens_per_s'])}; MHA {fmt_spread(m['tokens_per_s'])}",
               f"≥ {GOAL:g}× MHA and ≥ {GOAL:g}× naive; same tokens" if longest else "absorbed ≥ naive; same tokens",
               entry["same_tokens"] and (min(x_mha, x_naive) >= GOAL if longest else x_naive >= 1),
               f"absorbed / MHA {x_mha:.2f}×, absorbed / naive {x_naive:.2f}×{note}")


def run(quick: bool = False) -> dict:
    contexts, new, reps, batch = ((64, 128), 4, 1, 2) if quick else ((1024, 4096), 32, 9, BATCH)
    cfgs = configs(quick, max(contexts) + new)
    seed_everything(0, THREADS)
    models = {k: DeepSeekV3(c).eval() for k, c in cfgs.items()}
    models["mla_naive"].load_state_dict(models["mla_absorbed"].state_dict())
    g = torch.Generator().manual_seed(0)
    rows, data = [], {"configs": {k: c.to_dict() for k, c in cfgs.items()}, "new_tokens": new, "reps": reps}
    for context in contexts:
        prompt = torch.randint(0, cfgs["mha"].vocab_size, (1, context), generator=g)
        entry = measure(models, cfgs, prompt, new, reps, check_generate=context == contexts[0])
        data[str(context)] = entry
        a, n, m = entry["mla_absorbed"], entry["mla_naive"], entry["mha"]
        longest = context == contexts[-1]
        rows.append(speed_row(entry, f"Decoding at {context:,} context, tok/s (batch 1, {cfgs['mha'].name})", longest,
                              " (medians of paired repetitions)" + ("; at batch 1 a step's ~470 operators (about 2 ms) "
                                                                     "outweigh reading the cache: the batched row "
                                                                     "below" if longest else "")))
        rows.append(row(f"KV cache at {context:,} context (fp32, measured)",
                        f"MLA {a['cache_bytes'] / 2**20:.2f} MiB ({a['measured_bytes_per_token']:,.0f} B/token)",
                        f"MHA {m['cache_bytes'] / 2**20:.2f} MiB ({m['measured_bytes_per_token']:,.0f} B/token); "
                        f"naive MLA caching K,V would hold {n['expanded_kv_bytes_per_token_fp32']:,} B/token",
                        "= bytes_per_token", all(entry[k]["formula_matches"] for k in cfgs),
                        f"MHA / MLA = {m['cache_bytes'] / a['cache_bytes']:.1f}×"))
    context = contexts[-1]
    prompt = torch.randint(0, cfgs["mha"].vocab_size, (batch, context), generator=g)
    entry = measure(models, cfgs, prompt, new, reps, check_generate=False)
    data[f"{context}_batch{batch}"] = entry
    a, m = entry["mla_absorbed"], entry["mha"]
    rows.append(speed_row(entry, f"Decoding at {context:,} context, batch {batch}, tok/s ({cfgs['mha'].name})", True,
                          f"; {batch} sequences decoded together, as a server does: each step reads {batch} caches "
                          f"({a['cache_bytes'] / batch / 2**20:.0f} MiB each for MLA, "
                          f"{m['cache_bytes'] / batch / 2**20:.0f} MiB for MHA)"))
    return {"rows": rows, "data": data}
