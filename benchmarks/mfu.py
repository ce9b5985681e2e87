"""Model FLOP utilisation (MFU) of the trainer's step on the "mini" run, against the matmul peak of this CPU.

MFU = (model FLOPs of one step / step seconds) / peak FLOP/s. Model FLOPs come from
``dsv3_mini.flops.training_step_flops`` (6 · active matmul params + causal attention, main model and MTP). The step is
the trainer's own, ``dsv3_mini.train.train_step`` (learning-rate schedule, forward with targets, backward, gradient
clipping, AdamW, bias update), on the MINI_RUN batch (12 × 256); its time includes the optimizer, whose FLOPs are not
counted. The peak is ``torch.matmul`` in the same process, timed in between the steps: 1024 × 1024 squares and the
model's own largest shape (tokens × hidden @ hidden × dense FFN), the higher of the two is the denominator. fp32 is
what the trainer runs; bf16 autocast (``train_step(..., autocast=torch.bfloat16)``, the forward pass only) is
measured against the bf16 matmul peak.
"""

from __future__ import annotations

import warnings

import torch

from dsv3_mini import DeepSeekV3, preset, seed_everything
from dsv3_mini.data import builtin_dataset
from dsv3_mini.flops import training_step_flops
from dsv3_mini.train import TrainConfig, make_optimizer, train_step

from .common import PEAK_SQUARE, THREADS, interleave, matmul_peak, row, summary

GOAL = 0.35


def run(quick: bool = False) -> dict:
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
    out, rows = {}, []
    for kind in ("fp32", "bf16"):
        ceiling = max(max(peaks[f"{kind}_square"]), max(peaks[f"{kind}_model"]))
        achieved = summary([flops.total / t for t in times[kind]])
        mfu = summary([flops.total / t / ceiling for t in times[kind]])
        out[kind] = {"step_seconds": times[kind], "model_flops_per_s": achieved, "peak_flops_per_s": ceiling,
                     "mfu": mfu, "tokens_per_s": summary([batch * seq / t for t in times[kind]])}
        label = "fp32 (the trainer)" if kind == "fp32" else "bf16 autocast"
        slower = ""
        if kind == "bf16" and out["bf16"]["tokens_per_s"]["median"] < out["fp32"]["tokens_per_s"]["median"]:
            slower = "; slower than fp32 here: the casts cost more than the faster matmuls save"
        rows.append(row(f"MFU, {label}, {name} {batch}×{seq}",
                        f"{100 * mfu['median']:.1f}% ({achieved['median'] / 1e9:.1f} GFLOP/s, "
                        f"{out[kind]['tokens_per_s']['median']:,.0f} tok/s)",
                        f"peak {ceiling / 1e9:.0f} GFLOP/s ({kind} matmul)",
                        f"≥ {100 * GOAL:.0f}%" if kind == "fp32" else "—",
                        mfu["median"] >= GOAL if kind == "fp32" else None,
                        f"{flops.per_token / 1e6:.2f} MFLOP/token (dsv3_mini.flops)" + slower))
    return {"rows": rows, "data": {
        "config": name, "batch": batch, "seq_len": seq, "reps": reps, "flops_per_step": flops.total,
        "flops_per_token": flops.per_token, "matmul_flops": flops.matmul, "attention_flops": flops.attention,
        "main_matmul_params": flops.main_matmul_params, "mtp_matmul_params": flops.mtp_matmul_params,
        "peaks": {k: summary(v) for k, v in peaks.items()}, "square_size": PEAK_SQUARE[quick], "model_shape": shape,
        **out, "goal": GOAL, "met": out["fp32"]["mfu"]["median"] >= GOAL}}
