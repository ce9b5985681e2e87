"""Reproduction: context extension with YaRN (V3 report §4.3) on a passkey-retrieval model, three seeds.

For each seed a "tiny" model is trained on passkey documents at 128 bytes (``dsv3_mini.long_context``; seed 0 is the
shipped run in checkpoints/passkey when its settings are the current defaults), then read at 4× its training length
with plain RoPE and with YaRN (s = 4), without fine-tuning and after the two-phase extension (2×, then 4×; plain RoPE
fine-tuned the same way is the control). The headline: retrieval at 4× after YaRN + extension vs plain RoPE, as mean
± std over the seeds. Decode speed and KV-cache bytes at 1×–8× (the shipped model: MLA; an MHA model of the same
heads with random weights) use ``benchmarks.decoding``'s loop. A full run writes checkpoints/passkey/seeds.json
(the lesson reads it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import statistics
import time

import torch

from dsv3_mini import DeepSeekV3, seed_everything
from dsv3_mini.checkpoint import atomic_write_text
from dsv3_mini.long_context import PasskeyConfig, cache_by_length, evaluate, extend, load_run, train_passkey, with_rope

from .common import ROOT, THREADS, interleave, row, summary
from .decoding import decode, prefill

SHIPPED = ROOT / "checkpoints" / "passkey"
SEEDS = (0, 1, 2)
CELLS = ("plain_1x", "plain_4x", "yarn_4x", "plain_ft_4x", "yarn_ft_4x")


def needs(quick: bool) -> list[tuple[str, int]]:
    """No runs of ``repro.py``'s shared pool: this reproduction trains its own passkey models."""
    return []


def config(quick: bool) -> PasskeyConfig:
    if quick:
        return PasskeyConfig(seq_len=64, steps=20, batch_size=4, extend_steps=2)
    return PasskeyConfig()


def base_model(pc: PasskeyConfig, quick: bool) -> DeepSeekV3:
    """The trained model of ``pc.seed``: the shipped one if it was made with exactly ``pc``, else a new run."""
    if not quick and (SHIPPED / "results.json").is_file():
        model, results = load_run(SHIPPED)
        if results["config"] == dataclasses.asdict(pc):
            return model
    return train_passkey(pc, progress=False)[0]


def seed_cells(pc: PasskeyConfig, quick: bool, trials: int) -> dict[str, float]:
    """Retrieval accuracy of one seed in each of CELLS (fresh documents of evaluation seed ``pc.seed``)."""
    n1, n4 = pc.seq_len, 4 * pc.seq_len
    model = base_model(pc, quick)

    def acc(m: DeepSeekV3, n: int) -> float:
        return evaluate(m, (n,), trials=trials, seed=pc.seed)["accuracy_by_length"][0]

    plain_ft, _ = extend(model, "none", pc, pc.seed, progress=False)
    yarn_ft, _ = extend(model, "yarn", pc, pc.seed, progress=False)
    return {"plain_1x": acc(model, n1), "plain_4x": acc(model, n4),
            "yarn_4x": acc(with_rope(model, "yarn", 4.0, pc.seq_len), n4),
            "plain_ft_4x": acc(plain_ft, n4), "yarn_ft_4x": acc(yarn_ft, n4)}


def spread(xs: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "values": xs}


def pct(s: dict[str, float]) -> str:
    return f"{100 * s['mean']:.0f} ± {100 * s['std']:.0f}%"


@torch.no_grad()
def decode_speed(pc: PasskeyConfig, quick: bool, new: int = 16) -> dict[str, dict]:
    """Greedy decoding tokens/s after 1×–8× ``pc.seq_len`` of context: MLA (absorbed) and MHA of the same heads."""
    cfg = pc.model_config()
    seed_everything(0, THREADS)
    models = {"mla": DeepSeekV3(cfg.replace(mla_impl="absorbed")).eval(),
              "mha": DeepSeekV3(cfg.replace(attention="mha", head_dim=cfg.v_head_dim)).eval()}
    g = torch.Generator().manual_seed(0)
    out = {}
    for mult in (1, 2, 4, 8):
        n = mult * pc.seq_len - new
        prompt = torch.randint(0, cfg.vocab_size, (1, n), generator=g)
        state = {k: prefill(m, prompt) for k, m in models.items()}
        times = interleave({k: functools.partial(decode, models[k], *state[k], n, new) for k in models},
                           1 if quick else 5, warmup=0)
        out[str(mult * pc.seq_len)] = {k: summary([new / t for t in ts]) for k, ts in times.items()}
    return out


def run(quick: bool = False) -> dict:
    base = config(quick)
    seeds = SEEDS[:1] if quick else SEEDS
    trials = 1 if quick else 8
    t0 = time.perf_counter()
    per_seed = {s: seed_cells(dataclasses.replace(base, seed=s), quick, trials) for s in seeds}
    cells = {c: spread([per_seed[s][c] for s in seeds]) for c in CELLS}
    kv = cache_by_length(base.model_config(), tuple(m * base.seq_len for m in (1, 2, 4, 8)))
    speed = decode_speed(base, quick)
    data = {"config": dataclasses.asdict(base), "seeds": list(seeds), "trials_per_depth": trials,
            "per_seed": {str(s): v for s, v in per_seed.items()}, "cells": cells, "kv_cache": kv,
            "decode_tokens_per_s": speed, "seconds": time.perf_counter() - t0}
    if not quick:
        atomic_write_text(json.dumps(data, indent=1) + "\n", SHIPPED / "seeds.json")
    yarn, plain, inside = cells["yarn_ft_4x"], cells["plain_4x"], cells["plain_1x"]
    n4 = 4 * base.seq_len
    longest = str(8 * base.seq_len)
    rows = [
        row(f"Passkey retrieval at 4× the training length ({n4} bytes)", f"YaRN + 2-phase extension {pct(yarn)}",
            f"plain RoPE {pct(plain)} (in-length {pct(inside)}); plain + the same fine-tune "
            f"{pct(cells['plain_ft_4x'])}; YaRN without fine-tune {pct(cells['yarn_4x'])}",
            "YaRN + fine-tune ≥ 80% of in-length and > plain", yarn["mean"] >= 0.8 * inside["mean"]
            and yarn["mean"] > plain["mean"], f"{len(seeds)} seed{'s' * (len(seeds) > 1)}, {5 * trials} documents "
            "per seed and cell; V3: needle-in-a-haystack up to 128K after 4K→32K→128K"),
        row(f"KV cache at {8 * base.seq_len} bytes of context (bf16, {base.preset})",
            f"MLA {kv['mla'][-1]:,} B ({kv['mla_per_token']} B/token)",
            f"MHA {kv['mha'][-1]:,} B ({kv['mha_per_token']} B/token)", "—", None,
            f"MHA / MLA = {kv['mha_per_token'] / kv['mla_per_token']:.1f}×, linear in the length"),
        row(f"Decode at {longest} context, tok/s (batch 1, {base.preset})",
            f"MLA {speed[longest]['mla']['median']:,.0f}", f"MHA {speed[longest]['mha']['median']:,.0f}", "—", None,
            "at " + ", ".join(f"{n}: MLA {v['mla']['median']:,.0f} / MHA {v['mha']['median']:,.0f}"
                              for n, v in speed.items())),
    ]
    return {"rows": rows, "data": data}


if __name__ == "__main__":
    result = run()
    for r in result["rows"]:
        print(r["item"], "|", r["ours"], "|", r["baseline"], "|", r["met"])
