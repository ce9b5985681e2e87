"""The trainer: AdamW, warm-up + cosine schedule, gradient clipping, the bias update once per step, MTP loss,
optional FP8 simulation, periodic validation, JSON-lines metrics and atomic safetensors checkpoints.

From a notebook: ``result = train(TrainConfig(preset="tiny", steps=50))`` returns the model and the history;
an interrupt (Kernel → Interrupt) stops after the current step, saves a checkpoint and returns normally.
From a shell, ``make train`` is ``python -m dsv3_mini.train --preset mini --steps 900 --batch-size 12 --seq-len 256
--eval-every 100 --threads 2 --out checkpoints/mini``. ``--device cuda`` (or ``mps``) trains on a GPU;
``torchrun --nproc-per-node N -m dsv3_mini.train ...`` trains on N processes, with the results of one
(``dsv3_mini.data_parallel``).

One optimizer step is ``train_step``; ``train`` is the loop around it (batches, logging, validation, checkpoints).
The command line is generated from ``TrainConfig``: one flag per field (``--batch-size`` for ``batch_size``), with
the field's type, default and help (``--help`` lists them), plus ``--resume`` and ``--no-progress``. The files a run
writes to ``--out`` (checkpoint, metrics, exported model, summary) are described in ``dsv3_mini.checkpoint``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .balancing import apply_bias_update, max_violation
from .checkpoint import (
    atomic_write_text,
    export_model,
    load_model,
    read_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from .cli import command_line, command_parser, config_from_args, run_command, setting
from .config import BALANCE_POLICIES, PRESETS, ModelConfig, check_choice, check_positive, preset
from .data import Dataset, builtin_dataset, text_dataset
from .data_parallel import DataParallel, data_parallel, is_main_process, local_rank, unwrap
from .devices import DEVICES, autocast_context, check_device, cpu_bf16_capped
from .fp8 import apply_fp8
from .interrupt import deferred_interrupt
from .model import DeepSeekV3, ModelOutput, cross_entropy
from .utils import seed_everything

TRAINABLE_PRESETS = tuple(p for p in PRESETS if p != "deepseek-v3")  # V3 itself is for the calculators only
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # --precision -> the forward pass's autocast dtype


@dataclass
class TrainConfig:
    """Everything that defines a run. ``decay_steps`` is the cosine horizon (default: ``steps``); keep it fixed to
    make a shorter run the exact prefix of a longer one."""

    preset: str = setting("tiny", "model preset (dsv3_mini.config.preset)", choices=TRAINABLE_PRESETS)
    steps: int = setting(200, "optimizer steps of the whole run (--resume continues up to this)")
    batch_size: int = setting(16, "sequences per batch")
    seq_len: int = setting(128, "bytes per sequence")
    lr: float = setting(3e-3, "peak learning rate, reached at the end of the warm-up")
    min_lr: float = setting(3e-4, "learning rate at the end of the cosine decay")
    warmup_steps: int = setting(20, "steps of linear warm-up from 0 to --lr")
    decay_steps: int | None = setting(None, "cosine horizon (default: --steps)")
    weight_decay: float = setting(0.1, "AdamW weight decay of the matrices (norm weights are not decayed)")
    grad_clip: float = setting(1.0, "the gradient's global norm is clipped to this")
    eval_every: int = setting(100, "validate every this many steps, and after the last")
    eval_batches: int = setting(8, "validation batches per evaluation")
    log_every: int = setting(10, "log a training record every this many steps, and after the last")
    save_every: int = setting(200, "write the checkpoint every this many steps, and after the last (needs --out)")
    seed: int = setting(0, "seed of the initial weights, the batches and the built-in corpus")
    threads: int | None = setting(None, "torch threads for the run (default: torch's own count)")
    out: str | None = setting(None, "directory for checkpoint, metrics and the exported model")
    data: str | None = setting(None, "train on this text file instead of the built-in corpus")
    train_bytes: int = setting(2_000_000, "bytes of the built-in corpus's training split")
    balance: str = setting("loss-free", "load-balancing policy of the MoE routers", choices=BALANCE_POLICIES)
    bias_update_speed: float | None = setting(None, f"γ of the bias rule (default {ModelConfig.bias_update_speed})")
    fp8: bool = setting(False, "simulate FP8 (E4M3, tile/block scaling) in linear layers")
    device: str = setting("cpu", "where to compute (cuda and mps when this machine has them)", choices=DEVICES)
    precision: str = setting("fp32", "forward-pass precision: fp32, or bf16 autocast (the report's baseline for FP8)",
                             choices=tuple(PRECISIONS))
    mtp_depth: int | None = setting(None, "number of MTP modules (default: the preset's; 0 disables MTP)")
    model_overrides: dict[str, Any] = field(default_factory=dict, metadata={"help": "ModelConfig fields to change"})

    def __post_init__(self) -> None:
        if self.preset not in TRAINABLE_PRESETS:
            allowed = ", ".join(repr(p) for p in TRAINABLE_PRESETS)
            raise ValueError(f"preset={self.preset!r} is not one of {allowed} (deepseek-v3 is for calculators only)")
        check_choice("balance", self.balance, BALANCE_POLICIES)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("device", self.device, DEVICES)  # whether this machine has it is checked when the run starts
        check_positive(self, "steps", "batch_size", "seq_len", "eval_every", "eval_batches", "log_every", "save_every",
                       "threads")
        if self.mtp_depth is not None and self.mtp_depth < 0:
            raise ValueError(f"--mtp-depth {self.mtp_depth} must be 0 (no MTP) or more")
        if self.bias_update_speed is not None and self.bias_update_speed < 0:
            raise ValueError(f"--bias-update-speed {self.bias_update_speed} must be >= 0")
        if self.warmup_steps < 0 or (self.decay_steps is not None and self.decay_steps < 1):
            raise ValueError("warmup_steps must be >= 0 and decay_steps >= 1")
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr):
            raise ValueError(f"lr={self.lr} must be > 0 and 0 <= min_lr={self.min_lr} <= lr")

    def model_config(self) -> ModelConfig:
        changes: dict[str, Any] = {"balance": self.balance, **self.model_overrides}
        if self.bias_update_speed is not None:
            changes["bias_update_speed"] = self.bias_update_speed
        if self.mtp_depth is not None:
            changes["num_nextn_predict_layers"] = self.mtp_depth
        cfg = preset(self.preset).replace(**changes)
        if self.seq_len > cfg.max_position_embeddings:
            raise ValueError(f"seq_len={self.seq_len} exceeds max_position_embeddings={cfg.max_position_embeddings}")
        return cfg


@dataclass
class TrainResult:
    model: DeepSeekV3
    history: list[dict[str, Any]]
    step: int
    interrupted: bool = False
    checkpoint: Path | None = None
    dataset: Dataset | None = None


@dataclass
class StepResult:
    """What one optimizer step reports: the model's output on the batch (``loss``, ``main_loss``, ``mtp_losses``,
    ``balance_loss``), the learning rate it used, the gradient norm before clipping, and MaxVio_batch per MoE layer."""

    output: ModelOutput
    lr: float
    grad_norm: float
    max_vio: list[float]


def learning_rate(step: int, tc: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``min_lr`` at ``decay_steps`` (steps count from 1)."""
    horizon = tc.decay_steps or tc.steps
    if step <= tc.warmup_steps:
        return tc.lr * step / max(1, tc.warmup_steps)
    progress = min(1.0, (step - tc.warmup_steps) / max(1, horizon - tc.warmup_steps))
    return tc.min_lr + 0.5 * (tc.lr - tc.min_lr) * (1 + math.cos(math.pi * progress))


def load_dataset(tc: TrainConfig) -> Dataset:
    if tc.data:
        return text_dataset(tc.data)
    return builtin_dataset(train_bytes=tc.train_bytes, seed=tc.seed)


def make_optimizer(model: DeepSeekV3, tc: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (norm weights are not decayed)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr, betas=(0.9, 0.95))


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, tokens: torch.Tensor, targets: torch.Tensor,
               tc: TrainConfig, step: int, autocast: torch.dtype | None = None,
               parallel: DataParallel | None = None) -> StepResult:
    """Optimizer step number ``step`` (from 1) on one batch of (batch, seq) tokens and next-token targets.

    The scheduled learning rate, the forward pass with every loss (main + λ/D · Σ MTP + balance), backward, the
    gradient clipped to ``tc.grad_clip``, AdamW, then the bias update of every router from the step's expert counts.
    ``autocast`` runs the forward pass under autocast in that dtype on the batch's device (the trainer runs
    ``--precision``; ``benchmarks/mfu.py`` also measures bf16). With ``parallel``, ``model`` is the DDP-wrapped model,
    the batch is this rank's slice, and the expert counts are summed over the ranks before the bias rule.
    """
    lr = learning_rate(step, tc)
    for group in opt.param_groups:
        group["lr"] = lr
    with autocast_context(tokens.device, autocast):
        output = model(tokens, targets=targets)
    opt.zero_grad(set_to_none=True)
    output.loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip))
    opt.step()
    if parallel:
        parallel.sum_expert_counts(unwrap(model))
    return StepResult(output=output, lr=lr, grad_norm=grad_norm, max_vio=apply_bias_update(unwrap(model)))


@torch.no_grad()
def evaluate(model: DeepSeekV3, dataset: Dataset, batch_size: int, seq_len: int,
             max_batches: int | None = None, parallel: DataParallel | None = None) -> dict[str, Any]:
    """Validation: main next-token loss, each MTP loss, and MaxVio_global per MoE layer (main layers only).

    On the model's device. With ``parallel`` each rank takes its slice of every validation batch and the sums are
    added up over the ranks: every rank returns the numbers of the whole validation set.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    main, mtp, n = 0.0, [0.0] * len(model.mtp), 0
    moes = model.moe_layers(include_mtp=False)
    load = [torch.zeros(m.gate.weight.shape[0], device=device) for m in moes]
    for tokens, targets, _ in dataset.val_batches(batch_size, seq_len, max_batches):
        if parallel:
            tokens, targets = parallel.shard(tokens), parallel.shard(targets)
            if not len(tokens):  # a short last batch has no row for this rank
                continue
        tokens, targets = tokens.to(device), targets.to(device)
        out = model(tokens)
        main += float(cross_entropy(out.logits, targets)) * len(tokens)
        for k, lg in enumerate(model.mtp_logits(tokens, out.hidden_states), start=1):
            mtp[k - 1] += float(cross_entropy(lg, targets[:, k:])) * len(tokens)
        for acc, m in zip(load, moes, strict=True):
            acc += m.last_routing.counts
        n += len(tokens)
    model.train(was_training)
    if parallel:  # each rank saw its slices: add up the weighted losses, the sequences and the expert loads
        main, *mtp, n = parallel.sum([main, *mtp, n])
        for acc in load:
            parallel.sum_tensor(acc)
    if n == 0:
        raise ValueError(f"the validation split is shorter than seq_len={seq_len}")
    return {"loss": main / n, "mtp_losses": [x / n for x in mtp], "max_vio_global": [max_violation(x) for x in load]}


# -- the loop ---------------------------------------------------------------------------------------------------

def train(tc: TrainConfig, resume: bool = False, progress: bool = True, dataset: Dataset | None = None) -> TrainResult:
    """Train (or continue, with ``resume=True``, from ``tc.out``/checkpoint.safetensors) up to ``tc.steps``.

    ``tc.threads`` sets torch's thread count for the run; the previous count is restored afterwards, so a notebook
    that trains with ``threads=1`` keeps its own setting for the cells that follow. Started by torchrun, every process
    runs this and the run is data parallel (``dsv3_mini.data_parallel``); the model is built on the CPU with the
    seed's weights, then moved to ``tc.device``.
    """
    threads = torch.get_num_threads()
    try:
        device = check_device(tc.device, local_rank())
        with data_parallel(device) as parallel:
            return _train(tc, resume, progress, dataset, device, parallel)
    finally:
        torch.set_num_threads(threads)


def _train(tc: TrainConfig, resume: bool, progress: bool, dataset: Dataset | None, device: torch.device,
           parallel: DataParallel | None) -> TrainResult:
    main_rank = parallel is None or parallel.is_main  # the one that writes files
    out = Path(tc.out) if tc.out else None
    ckpt = out / "checkpoint.safetensors" if out else None
    if resume:
        if ckpt is None or not ckpt.is_file():
            raise ValueError(f"--resume needs a checkpoint in --out; none at {str(ckpt)!r}")
        meta, _ = read_checkpoint(ckpt)
        tc = dataclasses.replace(TrainConfig(**meta["train_config"]), steps=tc.steps, out=tc.out, device=tc.device)
    if parallel:
        parallel.check_batch(tc.batch_size)
    slow_bf16 = cpu_bf16_capped(device, PRECISIONS[tc.precision])
    if slow_bf16 and main_rank:
        warnings.warn(slow_bf16, RuntimeWarning, stacklevel=3)
    seed_everything(tc.seed, tc.threads)
    dataset = dataset or load_dataset(tc)
    model = DeepSeekV3(tc.model_config()).train()
    if tc.fp8:
        apply_fp8(model)
    model.to(device)
    opt = make_optimizer(model, tc)
    generator = torch.Generator().manual_seed(tc.seed)
    step = restore_checkpoint(ckpt, model, opt, generator) if resume else 0
    stepped = parallel.wrap(model, tc.seq_len) if parallel else model  # what train_step runs: DDP or the model
    history: list[dict[str, Any]] = []
    metrics = None
    if out and main_rank:
        out.mkdir(parents=True, exist_ok=True)
        metrics_path = out / "metrics.jsonl"
        kept = []
        if resume and metrics_path.exists():  # drop lines logged after the checkpoint: a resumed file = a straight one
            kept = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
            kept = [r for r in kept if r["step"] <= step]
            history.extend(kept)
        atomic_write_text("".join(json.dumps(r) + "\n" for r in kept), metrics_path)
        metrics = metrics_path.open("a")

    def log(record: dict[str, Any]) -> None:
        history.append(record)
        if metrics:
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()

    interrupted = False
    bar = tqdm(total=tc.steps, initial=step, disable=not (progress and main_rank), desc=f"train {tc.preset}",
               unit="step")
    t0, tokens_seen = time.perf_counter(), 0
    try:
        with deferred_interrupt() as stop:
            while step < tc.steps:
                if parallel.any(stop[0]) if parallel else stop[0]:  # all ranks stop after the same step
                    interrupted = True
                    break
                step += 1
                tokens, targets, _ = dataset.get_batch("train", tc.batch_size, tc.seq_len, generator)
                tokens_seen += tokens.numel()  # the global batch's
                if parallel:
                    tokens, targets = parallel.shard(tokens), parallel.shard(targets)
                s = train_step(stepped, opt, tokens.to(device), targets.to(device), tc, step,
                               autocast=PRECISIONS[tc.precision], parallel=parallel)
                bar.update(1)
                bar.set_postfix(loss=f"{s.output.main_loss.item():.3f}")  # under DDP: rank 0's slice
                if step % tc.log_every == 0 or step == tc.steps:
                    elapsed = time.perf_counter() - t0
                    o = parallel.mean_losses(s.output) if parallel else s.output  # the global batch's losses
                    log({"step": step, "split": "train", "loss": o.main_loss.item(),
                         "mtp_losses": [x.item() for x in o.mtp_losses],
                         "balance_loss": o.balance_loss.item() if o.balance_loss is not None else None,
                         "total_loss": o.loss.item(), "lr": s.lr, "grad_norm": s.grad_norm,
                         "max_vio": s.max_vio, "tokens_per_s": tokens_seen / elapsed if elapsed else None})
                if step % tc.eval_every == 0 or step == tc.steps:
                    val = evaluate(model, dataset, tc.batch_size, tc.seq_len, tc.eval_batches, parallel)
                    log({"step": step, "split": "val", **val})
                if ckpt and main_rank and (step % tc.save_every == 0 or step == tc.steps):
                    save_checkpoint(ckpt, model, opt, dataclasses.asdict(tc), step, generator)
    finally:
        bar.close()
        if ckpt and main_rank and step > 0 and (interrupted or sys.exc_info()[0] is not None):
            save_checkpoint(ckpt, model, opt, dataclasses.asdict(tc), step, generator)
        if metrics:
            metrics.close()
    if interrupted and main_rank:
        print(f"Interrupted after step {step}; the model, its history" + (f" and {ckpt}" if ckpt else "") +
              " are kept. Continue with --resume.", file=sys.stderr)
    return TrainResult(model=model.eval(), history=history, step=step, interrupted=interrupted, checkpoint=ckpt,
                       dataset=dataset)


def finish(result: TrainResult, tc: TrainConfig, command: str) -> dict[str, Any]:
    """Export the bf16 weights and record the validation loss of exactly those weights in summary.json."""
    out = Path(tc.out)
    export_model(result.model, out / "model.safetensors")
    shipped = load_model(out / "model.safetensors").to(next(result.model.parameters()).device)
    val = evaluate(shipped, result.dataset, tc.batch_size, tc.seq_len, tc.eval_batches)
    summary = {"command": command, "step": result.step, "val_loss": val["loss"], "val_mtp_losses": val["mtp_losses"],
               "max_vio_global": val["max_vio_global"], "unigram_baseline": result.dataset.unigram_baseline(),
               "dataset": result.dataset.source, "eval": {"batch_size": tc.batch_size, "seq_len": tc.seq_len,
                                                           "batches": tc.eval_batches}}
    atomic_write_text(json.dumps(summary, indent=1) + "\n", out / "summary.json")
    return summary


# -- command line: generated from TrainConfig (dsv3_mini.cli) ----------------------------------------------------------

PROG = "python -m dsv3_mini.train"


def _parser() -> argparse.ArgumentParser:
    """TrainConfig's flags, then the two that say how to run rather than what: ``--resume`` and ``--no-progress``."""
    p = command_parser(TrainConfig, PROG, __doc__.split("\n\n")[0])
    p.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.safetensors up to --steps")
    return p


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """The TrainConfig of a command line: the words after ``python -m dsv3_mini.train`` (default: ``sys.argv``).

    ``--resume`` and ``--no-progress`` say how to run, not what: they are accepted and left out. Unknown flags and
    bad values exit with a one-line error (as the command does); a bad combination raises ``TrainConfig``'s ValueError.
    """
    return config_from_args(TrainConfig, _parser().parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    return run_command(_parser(), argv, lambda args: _run(args, argv))


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    tc = config_from_args(TrainConfig, args)
    tc.model_config()
    if tc.threads is not None:  # for the whole command: training and the export's evaluation
        torch.set_num_threads(tc.threads)
    result = train(tc, resume=args.resume, progress=not args.no_progress)
    if not is_main_process():  # rank 0 reports and exports for the whole data-parallel run
        return 130 if result.interrupted else 0
    last_val = [r for r in result.history if r["split"] == "val"]
    if last_val:
        print(f"step {result.step}: validation loss {last_val[-1]['loss']:.4f}")
    if tc.out and not result.interrupted and result.step == tc.steps:
        summary = finish(result, tc, command_line(PROG, argv))
        print(f"exported {tc.out}/model.safetensors: validation loss {summary['val_loss']:.4f} "
              f"(unigram baseline {summary['unigram_baseline']:.4f})")
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
