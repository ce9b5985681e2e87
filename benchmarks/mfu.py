"""Model FLOP utilisation (MFU) of the trainer's step on the "mini" run, against the matmul peak of this CPU.

MFU = (model FLOPs of one step / step seconds) / peak FLOP/s. Model FLOPs come from
``dsv3_mini.flops.training_step_flops`` (6 · active matmul params + causal attention, main model and MTP). The step is
the trainer's own, ``dsv3_mini.train.train_step`` (learning-rate schedule, forward with targets, backward, gradient
clipping, AdamW, bias update), on the MINI_RUN batch (12 × 256); its time includes the optimizer, whose FLOPs are not
counted. The peak is ``torch.matmul`` in the same process, timed in between the steps: 1024 × 1024 squares and the
model's own largest shape (tokens × hidden @ hidden × dense FFN), the higher of the two is the denominator. fp32 is
what the trainer runs; bf16 autocast (``train_step(..., autocast=torch.bfloat16)``, the forward pass only) is
measured against the bf16 matmul peak.

Both are measured twice: here, on the course's pinned numeric path (``make`` exports ``PINS``: torch, MKL and oneDNN
on their AVX2 code, so lessons print the same digits on every CPU), and in a child process without the pin, as a
script run outside ``make`` gets them. The pin costs fp32 nothing, but it turns off the bf16 matrix code of a CPU
that has one (AVX-512 BF16, AMX): oneDNN then multiplies bf16 by a slow generic path, whose peak can be below fp32's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings

import torch

from dsv3_mini import DeepSeekV3, preset, seed_everything
from dsv3_mini.data import builtin_dataset
from dsv3_mini.flops import training_step_flops
from dsv3_mini.train import TrainConfig, make_optimizer, train_step

from .common import PEAK_SQUARE, ROOT, THREADS, interleave, matmul_peak, row, summary

GOAL = 0.35
PINS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")  # the Makefile's numeric path


def measure(quick: bool = False) -> dict:
    """fp32 and bf16-autocast training steps, interleaved with their matmul peaks, in this process's numeric path."""
    seed_everything(0, THREADS)
    name, (batch, seq), reps = ("tiny", (2, 32), 2) if quick else ("mini", (12, 256), 15)
    cfg = preset(name)
    tc = TrainConfig(preset=name, batch_size=batch, seq_len=seq)
    data = builtin_dataset(train_bytes=200_000, val_bytes=10_000, seed=0)
    gen = torch.Generator().manual_seed(0)
    models, steps, autocast = {}, {"fp32": 0, "bf16": 0}, {"fp32": None, "bf16": torch.bfloat16}
    for kind in ("fp32", "bf16"):
        seed_everything(0, THREADS)
        model = DeepSeekV3(cfg).train()
        models[kind] = (model, make_optimizer(model, tc))

    def step(kind: str):
        model, opt = models[kind]
        tokens, targets, _ = data.get_batch("train", batch, seq, gen)
        steps[kind] += 1
        with warnings.catch_warnings():  # under autocast RMSNorm sees bf16 inputs and fp32 weights and says so
            warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")
            train_step(model, opt, tokens, targets, tc, steps[kind], autocast=autocast[kind])

    peaks: dict[str, list[float]] = {"fp32_square": [], "bf16_square": [], "fp32_model": [], "bf16_model": []}
    shape = {"m": batch * seq, "k": cfg.hidden_size}  # (tokens, hidden) @ (hidden, dense FFN width)

    def peak(dtype: torch.dtype, tag: str):
        for kind, flops_per_s in matmul_peak(cfg.hidden_size, cfg.intermediate_size, batch * seq, dtype, quick).items():
            peaks[f"{tag}_{kind}"].append(flops_per_s)

    times = interleave({"fp32": lambda: step("fp32"), "bf16": lambda: step("bf16"),
                        "peak_fp32": lambda: peak(torch.float32, "fp32"),
                        "peak_bf16": lambda: peak(torch.bfloat16, "bf16")}, reps)
    flops = training_step_flops(cfg, batch, seq)
    out = {}
    for kind in ("fp32", "bf16"):
        ceiling = max(max(peaks[f"{kind}_square"]), max(peaks[f"{kind}_model"]))
        out[kind] = {"step_seconds": times[kind], "model_flops_per_s": summary([flops.total / t for t in times[kind]]),
                     "peak_flops_per_s": ceiling, "mfu": summary([flops.total / t / ceiling for t in times[kind]]),
                     "tokens_per_s": summary([batch * seq / t for t in times[kind]])}
    return {"config": name, "batch": batch, "seq_len": seq, "reps": reps, "flops_per_step": flops.total,
            "flops_per_token": flops.per_token, "matmul_flops": flops.matmul, "attention_flops": flops.attention,
            "main_matmul_params": flops.main_matmul_params, "mtp_matmul_params": flops.mtp_matmul_params,
            "peaks": {k: summary(v) for k, v in peaks.items()}, "square_size": PEAK_SQUARE[quick],
            "model_shape": shape, "env": {k: os.environ.get(k) for k in PINS},
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), **out}


def measure_unpinned(quick: bool = False) -> dict:
    """``measure`` in a child process without the numeric pin (``PINS`` removed from its environment)."""
    env = {k: v for k, v in os.environ.items() if k not in PINS}
    cmd = [sys.executable, "-m", "benchmarks.mfu", "--json"] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300 if quick else 1800)
    if proc.returncode:
        raise RuntimeError(f"the unpinned MFU process failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _gflops(x: float) -> str:
    return f"{x / 1e9:,.0f}" if x >= 10e9 else f"{x / 1e9:.1f}"


def run(quick: bool = False) -> dict:
    pinned, free = measure(quick), measure_unpinned(quick)
    data = {**pinned, "unpinned": free, "goal": GOAL, "met": pinned["fp32"]["mfu"]["median"] >= GOAL}
    return {"rows": table(pinned, free), "data": data}


def table(pinned: dict, free: dict) -> list[dict]:
    """The item's rows from the two measurements (``measure`` here, and without the pin)."""
    name, batch, seq = pinned["config"], pinned["batch"], pinned["seq_len"]
    per_token = f"{pinned['flops_per_token'] / 1e6:.2f} MFLOP/token (dsv3_mini.flops)"
    rows = []

    def ours(m: dict) -> str:
        return (f"{100 * m['mfu']['median']:.1f}% ({m['model_flops_per_s']['median'] / 1e9:.1f} GFLOP/s, "
                f"{m['tokens_per_s']['median']:,.0f} tok/s)")

    fp32, free_fp32 = pinned["fp32"], free["fp32"]
    rows.append(row(f"MFU, fp32 (the trainer), {name} {batch}×{seq}", ours(fp32),
                    f"peak {_gflops(fp32['peak_flops_per_s'])} GFLOP/s (fp32 matmul)", f"≥ {100 * GOAL:.0f}%",
                    fp32["mfu"]["median"] >= GOAL,
                    f"{per_token}; on the pinned path (make); without the pin {ours(free_fp32)} of "
                    f"{_gflops(free_fp32['peak_flops_per_s'])} GFLOP/s"))
    for tag, m, base in (("pinned path (make)", pinned, pinned["fp32"]), ("without the pin", free, free["fp32"])):
        bf16 = m["bf16"]
        vs = bf16["tokens_per_s"]["median"] / base["tokens_per_s"]["median"]
        slow_peak = bf16["peak_flops_per_s"] < base["peak_flops_per_s"]
        note = f"{per_token}; {vs:.2f}× the fp32 step's tok/s on this path"
        if slow_peak:
            note += (f"; bf16 matmuls peak below fp32's ({_gflops(base['peak_flops_per_s'])} GFLOP/s): no bf16 "
                     "matrix code runs on this path (the trainer warns: dsv3_mini.devices.cpu_bf16_capped)")
        elif vs < 0.95:
            note += ": the casts cost more than the faster matmuls save at this size"
        elif vs <= 1.05:
            note += ": at this size the casts cost about what the faster matmuls save"
        shown = (f"{bf16['model_flops_per_s']['median'] / 1e9:.1f} GFLOP/s, {bf16['tokens_per_s']['median']:,.0f} "
                 "tok/s (MFU not meaningful)" if slow_peak else ours(bf16))
        rows.append(row(f"MFU, bf16 autocast, {name} {batch}×{seq}, {tag}", shown,
                        f"peak {_gflops(bf16['peak_flops_per_s'])} GFLOP/s (bf16 matmul)", "—", None, note))
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m benchmarks.mfu", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the numbers mean nothing)")
    ap.add_argument("--json", action="store_true", help="print measure()'s result as one JSON line (the child's mode)")
    args = ap.parse_args()
    result = measure(args.quick)
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
