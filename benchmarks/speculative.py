"""Speculative decoding with the MTP module on the shipped checkpoint: acceptance rate and wall-clock speed-up.

The checkpoint ``checkpoints/mini/model.safetensors`` (``make train``) is loaded with
``dsv3_mini.checkpoint.load_model``. Prompts are windows of the validation split of ``builtin_dataset(seed=0)`` that
start at a line start. For each prompt, plain greedy ``generate(..., temperature=0.0)`` and ``speculative_generate`` run
once each, the one going first alternating between prompts (batch 1), in ``ROUNDS`` passes over the prompts; their
outputs must be identical. Acceptance = accepted drafts / drafted over all prompts; speed-up = total plain seconds /
total speculative seconds (and the spread of per-prompt ratios). The costs of one plain step, one 2-token verify and
one MTP draft are timed too: they bound the speed-up this model can get. The V3 report: 85–90% acceptance, about 1.8×.
"""

from __future__ import annotations

import time

import torch

from dsv3_mini import DeepSeekV3, preset, seed_everything
from dsv3_mini.checkpoint import load_model
from dsv3_mini.data import builtin_dataset
from dsv3_mini.generate import generate, speculative_generate
from dsv3_mini.kv_cache import KVCache

from .common import ROOT, THREADS, Skipped, interleave, row, summary

CHECKPOINT = ROOT / "checkpoints" / "mini" / "model.safetensors"
GOAL = 1.4  # wall clock over plain greedy decoding (issue 15)
ROUNDS = 3  # passes over the prompts: one pass left the ratio moving by ±0.1 between runs


def prompts(count: int, length: int) -> list[torch.Tensor]:
    """``count`` validation windows of ``length`` bytes, each starting after a newline, spread over the split."""
    val = builtin_dataset(train_bytes=10_000, seed=0).val
    starts = (val[:-length - 1] == ord("\n")).nonzero().flatten() + 1
    picks = starts[torch.linspace(0, len(starts) - 1, count).long()]
    return [val[s : s + length] for s in picks.tolist()]


@torch.inference_mode()  # as generate() runs
def step_costs(model, prompt: torch.Tensor, reps: int = 20) -> dict[str, float]:
    """Median seconds, after ``prompt`` is cached, of a main-model forward on 1 and on 2 new tokens (plain decoding
    and a verify step) and of one MTP draft on 1 and on 2 new positions (the MTP block, then the head on the last):
    ``speculative_generate`` drafts on 2 positions after an accepted draft (both go into the MTP cache) and on 1
    after a rejected one."""
    cache, mtp_cache, mtp = model.new_cache(), KVCache(1), model.mtp[0]
    out = model(prompt[None], cache=cache)
    cos, sin = model.rope(0, prompt.shape[0] - 1)
    mtp(out.hidden_states[:, :-1], model.embed(prompt[None, 1:]), cos, sin, mtp_cache)
    n, m = len(cache), len(mtp_cache)
    one, two = prompt[None, -1:], prompt[None, -2:]

    def forward(tokens):
        cache.crop(n)
        model(tokens, cache=cache)

    def draft(k: int):
        mtp_cache.crop(m - (k - 1))
        cos, sin = model.rope(m - (k - 1), k)
        h = mtp(out.hidden_states[:, -k:], model.embed(prompt[None, -k:]), cos, sin, mtp_cache)
        model.head(mtp.norm(h[:, -1:])).argmax(-1)

    t = interleave({"forward_1": lambda: forward(one), "forward_2": lambda: forward(two),
                    "draft_1": lambda: draft(1), "draft_2": lambda: draft(2)}, reps)
    return {k: summary(v)["median"] for k, v in t.items()}


def run(quick: bool = False) -> dict:
    seed_everything(0, THREADS)
    if quick:  # exercise the code on a random tiny model; its acceptance means nothing
        model, count, length, new, source = DeepSeekV3(preset("tiny")).eval(), 2, 16, 16, "random tiny model"
    else:
        if not CHECKPOINT.is_file():
            raise Skipped(f"no checkpoint at {CHECKPOINT.relative_to(ROOT)} (run `make train` first)")
        model, count, length, new, source = load_model(CHECKPOINT), 8, 64, 128, str(CHECKPOINT.relative_to(ROOT))
    drafted = accepted = forwards = produced = 0
    plain_s, spec_s, identical = [], [], True
    generate(model, prompts(1, length)[0], 8, temperature=0.0)  # warm-up
    speculative_generate(model, prompts(1, length)[0], 8)
    for i, p in enumerate(prompts(count, length) * ROUNDS):
        runs = {"plain": lambda p=p: generate(model, p, new, temperature=0.0),
                "speculative": lambda p=p: speculative_generate(model, p, new)}
        out, secs = {}, {}
        for name in sorted(runs, reverse=(i + i // count) % 2 == 1):  # alternate who goes first, per prompt and round
            t = time.perf_counter()
            out[name] = runs[name]()
            secs[name] = time.perf_counter() - t
        spec, stats = out["speculative"]
        identical = identical and torch.equal(out["plain"], spec)
        if i < count:  # every round decodes the same tokens: count them once
            drafted, accepted = drafted + stats.drafted, accepted + stats.accepted
            forwards, produced = forwards + stats.forward_passes, produced + stats.new_tokens
        plain_s.append(secs["plain"])
        spec_s.append(secs["speculative"])
    costs = step_costs(model, prompts(1, length)[0])
    rate = accepted / drafted if drafted else 0.0
    # a speculative step = one 2-token verify + one draft (on 2 positions after an acceptance, on 1 after a rejection)
    # and yields tokens_per_forward tokens; plain = one forward
    costs["draft"] = rate * costs["draft_2"] + (1 - rate) * costs["draft_1"]
    bound = produced / forwards * costs["forward_1"] / (costs["forward_2"] + costs["draft"])
    speedup = sum(plain_s) / sum(spec_s)
    per_prompt = summary([sum(plain_s[i::count]) / sum(spec_s[i::count]) for i in range(count)])
    rows = [
        row("MTP speculative decoding: acceptance of the draft", f"{100 * rate:.1f}%", "paper 85–90%", "—", None,
            f"{produced / forwards:.2f} tokens per main-model forward"),
        row("MTP speculative decoding: wall-clock speed-up", f"{speedup:.2f}× "
            f"({per_prompt['min']:.2f}–{per_prompt['max']:.2f} per prompt)", "paper ≈ 1.8×",
            f"≥ {GOAL:g}×; identical tokens", identical and speedup >= GOAL,
            f"{count} validation prompts × {new} new tokens, {ROUNDS} rounds, batch 1; a 2-token verify costs "
            f"{costs['forward_2'] / costs['forward_1']:.2f}× a 1-token forward and a draft "
            f"{costs['draft'] / costs['forward_1']:.2f}× (on 2 positions after an acceptance "
            f"{costs['draft_2'] / costs['forward_1']:.2f}×, on 1 {costs['draft_1'] / costs['forward_1']:.2f}×), "
            f"so ≈ {bound:.2f}× is the most to expect here"),
    ]
    return {"rows": rows, "data": {
        "model": source, "prompts": count, "prompt_len": length, "new_tokens": new, "drafted": drafted,
        "accepted": accepted, "acceptance_rate": rate, "main_forward_passes": forwards,
        "tokens_per_forward": produced / forwards, "plain_seconds": plain_s, "speculative_seconds": spec_s,
        "speedup": speedup, "speedup_per_prompt": per_prompt, "identical": identical, "step_seconds": costs,
        "expected_speedup": bound,
        "rounds": ROUNDS,
        "tokens_per_s": {"plain": ROUNDS * count * new / sum(plain_s),
                         "speculative": ROUNDS * count * new / sum(spec_s)}}}
