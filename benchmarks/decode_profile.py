"""Where the time of one decoding step goes: attention, cache writes, MoE, dense FFN, head, and the rest.

    .venv/bin/python -m benchmarks.decode_profile            # "mini" width, absorbed MLA / MHA, 1K and 4K context
    .venv/bin/python -m benchmarks.decode_profile --threads 1 --clock cpu   # on a machine others are using

The models are those of ``benchmarks/decoding.py`` (same configs, same prefill). Forward hooks on the modules time
each part of ``new`` greedy steps by the wall clock (inclusive of everything a module calls); ``KVCache.update`` is
timed by wrapping it on the cache instance, so "attention" below excludes the cache writes. "other" is what no hook
covers: norms, the embedding, residual adds, the RoPE tables, the token-range check, argmax and the Python between
the modules. Separately, ``torch.profiler`` counts the top-level torch operators of a step; times the cost of a
trivial operator (``x.add_(1)`` on 192 numbers, measured here) that is the *dispatch floor*: what the step would
still take if every operator's arithmetic were free (Python, the module calls and torch's dispatcher). The hooks
themselves cost a few µs per module call, so the parts add up to slightly more than an unhooked step. Not a
``make bench`` item: a diagnostic whose tables are copied into benchmarks/README.md ("Decoding profile").

``--clock cpu`` reads this process's CPU time instead of the wall clock: with one thread it is the time the step
needs, whatever other jobs take meanwhile (with two, it would also count the threads' waits).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from dsv3_mini import DeepSeekV3, seed_everything
from dsv3_mini.kv_cache import KVCache
from dsv3_mini.moe import MoE, SwiGLU

from .common import THREADS, print_ms_table
from .decoding import configs, decode, prefill


def _parts(model: DeepSeekV3) -> list[tuple[str, nn.Module]]:
    """(category, module) pairs to time; no module is nested inside another of the list except in MoE's parts."""
    parts = [("head", model.head)]
    for block in model.layers:
        parts.append(("attention", block.attn))
        if isinstance(block.ffn, MoE):
            parts += [("moe", block.ffn), ("moe: router", block.ffn.gate)]
            if block.ffn.shared is not None:
                parts.append(("moe: shared expert", block.ffn.shared))
        elif isinstance(block.ffn, SwiGLU):
            parts.append(("dense ffn", block.ffn))
    return parts


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def _hook(module: nn.Module, totals: dict[str, float], name: str) -> list:
    start: list[float] = []

    def pre(*_):
        start.append(clock())

    def post(*_):
        totals[name] += clock() - start.pop()

    return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]


def _time_cache_writes(cache: KVCache, totals: dict[str, float]) -> None:
    update = cache.update

    def timed_update(*args, **kwargs):
        t = clock()
        out = update(*args, **kwargs)
        totals["cache writes"] += clock() - t
        return out

    cache.update = timed_update  # this cache only


def breakdown(model: DeepSeekV3, context: int, new: int = 32, reps: int = 3) -> dict[str, float]:
    """Milliseconds per decoding step after ``context`` cached positions, per category (see the module docstring).

    Keys: ``step`` (an unhooked step, the best of ``reps``), the categories, ``ops`` (top-level torch operators
    per step, a count) and ``floor`` (ops × a trivial operator's cost). MoE's parts are inside ``moe`` and listed
    again.
    """
    prompt = torch.randint(0, model.cfg.vocab_size, (1, context), generator=torch.Generator().manual_seed(0))
    cache, logits = prefill(model, prompt)
    decode(model, cache, logits, context, 4)  # warm-up
    steps = new - 1  # decode() runs the model new - 1 times
    wall = min(_timed(lambda: decode(model, cache, logits, context, new)) for _ in range(reps)) / steps
    totals: dict[str, float] = defaultdict(float)
    handles = [h for name, m in _parts(model) for h in _hook(m, totals, name)]
    _time_cache_writes(cache, totals)
    hooked = _timed(lambda: decode(model, cache, logits, context, new)) / steps
    for h in handles:
        h.remove()
    del cache.update  # back to the class's method
    out = {"step": 1e3 * wall}
    out.update({k: 1e3 * v / steps for k, v in sorted(totals.items())})
    out["attention"] -= out.get("cache writes", 0.0)
    out["other"] = 1e3 * hooked - sum(v for k, v in out.items() if k in
                                      ("head", "attention", "cache writes", "moe", "dense ffn"))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        decode(model, cache, logits, context, new)
    out["ops"] = sum(e.cpu_parent is None for e in prof.events()) / steps
    out["floor"] = out["ops"] * trivial_op_ms()
    return out


def trivial_op_ms(calls: int = 2000) -> float:
    """Milliseconds of one call of a torch operator whose arithmetic is negligible (best of 5)."""
    x = torch.zeros(192)
    best = float("inf")
    for _ in range(5):
        t = clock()
        for _ in range(calls):
            x.add_(1)
        best = min(best, (clock() - t) / calls)
    return 1e3 * best


def _timed(fn) -> float:
    t = clock()
    fn()
    return clock() - t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.decode_profile", description=__doc__.splitlines()[0])
    ap.add_argument("--contexts", default="1024,4096", help="comma-separated cached lengths")
    ap.add_argument("--kinds", default="mla_absorbed,mha", help="among mla_absorbed, mla_naive, mha")
    ap.add_argument("--threads", type=int, default=THREADS, help="torch threads")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="what a duration is measured by")
    args = ap.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    contexts = [int(c) for c in args.contexts.split(",")]
    cfgs = configs(False, max(contexts) + 64)
    seed_everything(0, args.threads)
    rows = []
    for kind in args.kinds.split(","):
        model = DeepSeekV3(cfgs[kind]).eval()
        for context in contexts:
            rows.append((f"{kind} @ {context}", breakdown(model, context)))
    keys = list(dict.fromkeys(k for _, r in rows for k in r))
    print_ms_table(rows, keys, 2)


if __name__ == "__main__":
    main()
