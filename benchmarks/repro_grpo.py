"""Reproduction: post-training on the addition task, SFT then GRPO, against a REINFORCE control (V3 report §5.2.2).

1. SFT of the shipped model (``dsv3_mini.sft``, seed 0, ``SFT_STEPS`` steps, one thread), exported to
   ``checkpoints/sft/`` (the lesson and the RL runs start from exactly those bf16 weights).
2. From it, for each seed: GRPO with the routers' bias rule frozen (the default), GRPO with it running, and the
   REINFORCE-with-mean-baseline control (same samples per step: P prompts × G outputs, same learning rate).
3. Held-out exact accuracy (500 fixed pairs, greedy) before SFT, after SFT and along every RL run; reward, KL and
   MaxVio per step; the MTP draft's acceptance on the held-out prompts after SFT, after GRPO, and after re-tuning only
   the MTP module on the GRPO policy's own outputs (``dsv3_mini.mtp_retune``).
4. The control RL has to answer to: the same SFT run twice as long (``2 * SFT_STEPS``, its own schedule), which sees
   the answers where RL sees only the checker.
The full run writes ``checkpoints/grpo/results.json`` (``data`` below), which lesson 11 reads. Quick mode: a few
steps from the in-memory fine-tune, one seed, nothing written.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from typing import Any

import torch

from dsv3_mini.addition_task import exact_accuracy, split_pairs
from dsv3_mini.checkpoint import atomic_write_text, load_model
from dsv3_mini.grpo import GRPOConfig, grpo
from dsv3_mini.mtp_retune import mtp_acceptance, retune_mtp
from dsv3_mini.sft import SFTConfig, save_sft, sft

from .common import ROOT, row

SFT_DIR, RESULTS = ROOT / "checkpoints" / "sft", ROOT / "checkpoints" / "grpo" / "results.json"
SFT_STEPS, RL_STEPS, EVAL_EVERY, SEEDS = 225, 150, 30, (0, 1, 2)
MTP_PAIRS, RETUNE_STEPS = 200, 20
VARIANTS = {"grpo": {}, "reinforce": {"algorithm": "reinforce"}, "grpo_bias_running": {"bias_rule": "running"}}
GOAL_POINTS = 15.0


def spread(xs: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def pm(s: dict[str, float], scale: float = 100.0) -> str:
    return f"{s['mean'] * scale:.1f} ± {s['std'] * scale:.1f}"


def needs(quick: bool) -> list[tuple[str, int]]:
    """No runs of ``repro.py``'s shared pool: this reproduction fine-tunes the shipped model itself."""
    return []


def run(quick: bool = False) -> dict:
    """Everything on one torch thread (the batch-1 speculative decoding slows down badly on two contended cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(quick)
    finally:
        torch.set_num_threads(threads)


def _run(quick: bool) -> dict:
    sft_cfg = SFTConfig(steps=3 if quick else SFT_STEPS, batch_size=8 if quick else 64)
    t0 = time.perf_counter()
    tuned = sft(sft_cfg, progress=False)
    sft_seconds = time.perf_counter() - t0
    _, heldout = split_pairs()
    mtp_pairs = heldout[: 10 if quick else MTP_PAIRS]
    if quick:
        start, sft_summary = tuned.model, {"heldout_exact_before": None, "heldout_exact_after": None}
    else:
        sft_summary = save_sft(tuned, sft_cfg, SFT_DIR, f"benchmarks/repro_grpo.py (SFTConfig(steps={SFT_STEPS}))")
        start = load_model(SFT_DIR / "model.safetensors")
    sft_summary = {k: sft_summary[k] for k in ("heldout_exact_before", "heldout_exact_after")}
    accept_sft = mtp_acceptance(start, mtp_pairs)
    runs = []
    for variant, changes in VARIANTS.items():
        for seed in SEEDS[:1] if quick else SEEDS:
            cfg = GRPOConfig(steps=2 if quick else RL_STEPS, eval_every=1 if quick else EVAL_EVERY, seed=seed,
                             **({"prompts_per_step": 4} if quick else {}), **changes)
            t0 = time.perf_counter()
            result = grpo(cfg, progress=False, model=start)
            seconds = time.perf_counter() - t0
            record = {"variant": variant, "seed": seed, "seconds": seconds, "config": dataclasses.asdict(cfg),
                      "history": result.history}
            if variant == "grpo":
                record["mtp_acceptance_after_rl"] = mtp_acceptance(result.model, mtp_pairs)
                train_pairs, _ = split_pairs()
                record["mtp_retune_losses"] = retune_mtp(result.model, train_pairs[:2000],
                                                         steps=2 if quick else RETUNE_STEPS, seed=seed)
                record["mtp_acceptance_after_retune"] = mtp_acceptance(result.model, mtp_pairs)
            runs.append(record)
            print(f"  repro_grpo: {variant} seed {seed}: held-out exact {result.history[0]['heldout_exact']:.3f} -> "
                  f"{result.history[-1]['heldout_exact']:.3f} in {seconds:.0f} s", flush=True)
    t0 = time.perf_counter()
    longer = sft(dataclasses.replace(sft_cfg, steps=2 * sft_cfg.steps), progress=False)
    sft_long = {"steps": 2 * sft_cfg.steps, "seconds": time.perf_counter() - t0,
                "heldout_exact": exact_accuracy(longer.model, heldout[: 50 if quick else None])}
    print(f"  repro_grpo: SFT for {sft_long['steps']} steps: held-out exact {sft_long['heldout_exact']:.3f} in "
          f"{sft_long['seconds']:.0f} s", flush=True)
    data = summarise(runs, sft_summary, accept_sft, sft_seconds, sft_cfg.steps, sft_long, quick)
    if not quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(data, indent=1) + "\n", RESULTS)
    return {"rows": rows(data), "data": data}


def summarise(runs: list[dict[str, Any]], sft_summary: dict[str, Any], accept_sft: float, sft_seconds: float,
              sft_steps: int, sft_long: dict[str, Any], quick: bool) -> dict[str, Any]:
    def final(variant: str, key: str = "heldout_exact") -> list[float]:
        return [r["history"][-1][key] for r in runs if r["variant"] == variant]

    start = runs[0]["history"][0]["heldout_exact"]  # every run starts from the same SFT weights
    gain = {v: spread([x - start for x in final(v)]) for v in VARIANTS}
    grpo_runs = [r for r in runs if r["variant"] == "grpo"]
    return {"quick": quick, "sft_steps": sft_steps, "rl_steps": runs[0]["config"]["steps"],
            "sft_seconds": sft_seconds, "heldout_exact_base": sft_summary["heldout_exact_before"],
            "heldout_exact_sft": start, "heldout_exact_final": {v: spread(final(v)) for v in VARIANTS},
            "gain_points": {v: {k: x * 100 if k != "n" else x for k, x in s.items()} for v, s in gain.items()},
            "seconds_per_run": {v: spread([r["seconds"] for r in runs if r["variant"] == v]) for v in VARIANTS},
            "mtp_acceptance": {"sft": accept_sft,
                               "after_grpo": spread([r["mtp_acceptance_after_rl"] for r in grpo_runs]),
                               "after_retune": spread([r["mtp_acceptance_after_retune"] for r in grpo_runs])},
            "runs": runs, "sft_twice_as_long": sft_long}


def paired_points(d: dict[str, Any], a: str, b: str) -> dict[str, float]:
    """Seed-by-seed difference of the final held-out exact accuracy, variant a minus b, in points."""
    last = {(r["variant"], r["seed"]): r["history"][-1]["heldout_exact"] for r in d["runs"]}
    seeds = sorted(s for v, s in last if v == a)
    return spread([100 * (last[a, s] - last[b, s]) for s in seeds])


def rows(d: dict[str, Any]) -> list[dict[str, Any]]:
    f, g, sec, m = d["heldout_exact_final"], d["gain_points"], d["seconds_per_run"], d["mtp_acceptance"]
    s2 = d["sft_twice_as_long"]
    vs_reinforce, vs_running = paired_points(d, "grpo", "reinforce"), paired_points(d, "grpo", "grpo_bias_running")
    n = f["grpo"]["n"]
    base = "—" if d["heldout_exact_base"] is None else f"{d['heldout_exact_base']:.1%}"
    return [
        row("Post-training: held-out exact accuracy, base → SFT → GRPO",
            f"{base} → {d['heldout_exact_sft']:.1%} → {pm(f['grpo'])}%",
            "SFT model", f"GRPO ≥ +{GOAL_POINTS:.0f} points in < 10 min", g["grpo"]["mean"] >= GOAL_POINTS
            and sec["grpo"]["mean"] < 600,
            f"+{g['grpo']['mean']:.1f} ± {g['grpo']['std']:.1f} points, {n} seeds, {d['rl_steps']} steps, "
            f"{sec['grpo']['mean']:.0f} s per run on 1 thread"),
        row("GRPO vs REINFORCE (mean baseline) at equal samples: held-out exact",
            f"GRPO {pm(f['grpo'])}% vs REINFORCE {pm(f['reinforce'])}%", "REINFORCE", "GRPO higher",
            f["grpo"]["mean"] > f["reinforce"]["mean"],
            f"{n} seeds; paired Δ {vs_reinforce['mean']:+.1f} ± {vs_reinforce['std']:.1f} points (one held-out "
            f"score's binomial standard error at 500 prompts: ~2 points)"),
        row("GRPO with the bias rule frozen vs running", f"frozen {pm(f['grpo'])}% vs running "
            f"{pm(f['grpo_bias_running'])}%", "running", "— (a measurement)", None,
            f"{n} seeds; paired Δ {vs_running['mean']:+.1f} ± {vs_running['std']:.1f} points; the default is frozen"),
        row("MTP draft acceptance: SFT → after GRPO → MTP re-tuned", f"{m['sft']:.1%} → {pm(m['after_grpo'])}% → "
            f"{pm(m['after_retune'])}%", "SFT", "falls after RL, recovers after re-tune",
            m["after_grpo"]["mean"] < m["sft"] and m["after_retune"]["mean"] > m["after_grpo"]["mean"],
            f"{MTP_PAIRS} held-out prompts, greedy; re-tune: {RETUNE_STEPS} steps on the MTP module only"),
        row(f"Post-training control: SFT alone for {s2['steps']} steps (twice ours), held-out exact",
            f"{s2['heldout_exact']:.1%} in {s2['seconds']:.0f} s", f"SFT {d['sft_steps']} steps: "
            f"{d['heldout_exact_sft']:.1%}", "— (a measurement)", None,
            "it sees the answers, RL only the checker: on this task more SFT is the cheaper way up; "
            "the lesson's point is the RL loop"),
    ]

