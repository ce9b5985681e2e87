"""The trainer: AdamW, warm-up + cosine schedule, gradient clipping, the bias update once per step, MTP loss,
optional FP8 simulation, periodic validation, JSON-lines metrics and atomic safetensors checkpoints.

From a notebook: ``result = train(TrainConfig(preset="tiny", steps=50))`` returns the model and the history;
an interrupt (Kernel → Interrupt) stops after the current step, saves a checkpoint and returns normally.
From a shell: ``python -m dsv3_mini.train --preset mini --steps 1200 --out checkpoints/mini`` (``make train``).

Files in ``--out``:
- ``checkpoint.safetensors``: model, optimizer moments and RNG state as tensors; the run's config, step and
  optimizer step as JSON in the file's metadata (one file, written to a temporary name and renamed: an interrupt
  never leaves a broken checkpoint). ``checkpoint.json`` repeats that JSON for people to read.
- ``metrics.jsonl``: one JSON object per log line (``split`` "train" or "val").
- ``model.safetensors`` + ``summary.json`` at the end: the weights alone in bfloat16 (small enough to ship) and the
  validation loss of exactly those weights.
No pickle anywhere: only safetensors and JSON are read back.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .balancing import apply_bias_update, max_violation
from .config import BALANCE_POLICIES, PRESETS, ModelConfig, preset
from .data import Dataset, builtin_dataset, text_dataset
from .model import DeepSeekV3, cross_entropy
from .utils import seed_everything

FORMAT_VERSION = 1


@dataclass
class TrainConfig:
    """Everything that defines a run. ``decay_steps`` is the cosine horizon (default: ``steps``); keep it fixed to
    make a shorter run the exact prefix of a longer one."""

    preset: str = "tiny"
    steps: int = 200
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 20
    decay_steps: int | None = None
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 8
    log_every: int = 10
    save_every: int = 200
    seed: int = 0
    threads: int | None = None
    out: str | None = None
    data: str | None = None
    train_bytes: int = 2_000_000
    balance: str = "loss-free"
    bias_update_speed: float | None = None
    fp8: bool = False
    mtp_depth: int | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS or self.preset == "deepseek-v3":
            allowed = ", ".join(repr(p) for p in PRESETS if p != "deepseek-v3")
            raise ValueError(f"preset={self.preset!r} is not one of {allowed} (deepseek-v3 is for calculators only)")
        if self.balance not in BALANCE_POLICIES:
            raise ValueError(f"balance={self.balance!r} is not one of {', '.join(map(repr, BALANCE_POLICIES))}")
        for name in ("steps", "batch_size", "seq_len", "eval_every", "eval_batches", "log_every", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.mtp_depth is not None and self.mtp_depth < 0:
            raise ValueError(f"--mtp-depth {self.mtp_depth} must be 0 (no MTP) or more")
        if self.bias_update_speed is not None and self.bias_update_speed < 0:
            raise ValueError(f"--bias-update-speed {self.bias_update_speed} must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads {self.threads} must be >= 1")
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


@torch.no_grad()
def evaluate(model: DeepSeekV3, dataset: Dataset, batch_size: int, seq_len: int,
             max_batches: int | None = None) -> dict[str, Any]:
    """Validation: main next-token loss, each MTP loss, and MaxVio_global per MoE layer (main layers only)."""
    was_training = model.training
    model.eval()
    main, mtp, n = 0.0, [0.0] * len(model.mtp), 0
    moes = model.moe_layers(include_mtp=False)
    load = [torch.zeros(m.gate.weight.shape[0]) for m in moes]
    for tokens, targets, _ in dataset.val_batches(batch_size, seq_len, max_batches):
        out = model(tokens)
        main += float(cross_entropy(out.logits, targets)) * len(tokens)
        for k, lg in enumerate(model.mtp_logits(tokens, out.hidden_states), start=1):
            mtp[k - 1] += float(cross_entropy(lg, targets[:, k:])) * len(tokens)
        for acc, m in zip(load, moes, strict=True):
            acc += m.last_routing.counts
        n += len(tokens)
    model.train(was_training)
    if n == 0:
        raise ValueError(f"the validation split is shorter than seq_len={seq_len}")
    return {"loss": main / n, "mtp_losses": [x / n for x in mtp], "max_vio_global": [max_violation(x) for x in load]}


# -- checkpoints ------------------------------------------------------------------------------------------------

def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(path: Path, model: DeepSeekV3, opt: torch.optim.Optimizer, tc: TrainConfig, step: int,
                    generator: torch.Generator) -> None:
    """Model, AdamW moments, RNG states and the run's JSON in one safetensors file, written atomically."""
    names = {id(p): n for n, p in model.named_parameters()}
    tensors = {f"model.{k}": v.detach() for k, v in model.state_dict().items()}
    optim_steps = {}
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p)
            if state:
                n = names[id(p)]
                tensors[f"optim.exp_avg.{n}"] = state["exp_avg"]
                tensors[f"optim.exp_avg_sq.{n}"] = state["exp_avg_sq"]
                optim_steps[n] = float(state["step"])
    tensors["rng.data"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"format": FORMAT_VERSION, "step": step, "model_config": model.cfg.to_dict(),
            "train_config": dataclasses.asdict(tc), "optim_steps": optim_steps}
    text = json.dumps(meta, indent=1)
    _atomic_save(tensors, path, {"dsv3_mini": text})
    _atomic_write_text(text, path.with_suffix(".json"))


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a checkpoint or exported model; safetensors + JSON only."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {str(path)!r}")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("dsv3_mini", "null"))
        if not meta or meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{str(path)!r} is not a dsv3_mini file of format {FORMAT_VERSION}")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return meta, tensors


def load_model(path: str | Path) -> DeepSeekV3:
    """A model (fp32, eval mode) from a training checkpoint or an exported ``model.safetensors``."""
    meta, tensors = read_checkpoint(path)
    model = DeepSeekV3(ModelConfig.from_dict(meta["model_config"]))
    state = {k[len("model."):]: v.float() for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model.eval()


def export_model(model: DeepSeekV3, path: Path) -> None:
    """The weights alone, in bfloat16 (half the bytes), for shipping; load with ``load_model``."""
    tensors = {f"model.{k}": v.detach().to(torch.bfloat16) if v.is_floating_point() else v
               for k, v in model.state_dict().items()}
    meta = {"format": FORMAT_VERSION, "model_config": model.cfg.to_dict(), "dtype": "bfloat16"}
    _atomic_save(tensors, path, {"dsv3_mini": json.dumps(meta)})


def _restore(path: Path, model: DeepSeekV3, opt: torch.optim.Optimizer, generator: torch.Generator) -> int:
    meta, tensors = read_checkpoint(path)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    for n, p in model.named_parameters():
        if n in meta["optim_steps"]:
            opt.state[p] = {"step": torch.tensor(meta["optim_steps"][n]),
                            "exp_avg": tensors[f"optim.exp_avg.{n}"].clone(),
                            "exp_avg_sq": tensors[f"optim.exp_avg_sq.{n}"].clone()}
    generator.set_state(tensors["rng.data"])
    torch.set_rng_state(tensors["rng.torch"])
    return int(meta["step"])


# -- interrupts -------------------------------------------------------------------------------------------------

@contextmanager
def _deferred_interrupt() -> Iterator[list[bool]]:
    """Turn Ctrl-C / Kernel → Interrupt into a flag checked between steps, so a step is never half applied."""
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):  # noqa: ARG001
        flag[0] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# -- the loop ---------------------------------------------------------------------------------------------------

def train(tc: TrainConfig, resume: bool = False, progress: bool = True, dataset: Dataset | None = None) -> TrainResult:
    """Train (or continue, with ``resume=True``, from ``tc.out``/checkpoint.safetensors) up to ``tc.steps``.

    ``tc.threads`` sets torch's thread count for the run; the previous count is restored afterwards, so a notebook
    that trains with ``threads=1`` keeps its own setting for the cells that follow.
    """
    threads = torch.get_num_threads()
    try:
        return _train(tc, resume, progress, dataset)
    finally:
        torch.set_num_threads(threads)


def _train(tc: TrainConfig, resume: bool, progress: bool, dataset: Dataset | None) -> TrainResult:
    out = Path(tc.out) if tc.out else None
    ckpt = out / "checkpoint.safetensors" if out else None
    if resume:
        if ckpt is None or not ckpt.is_file():
            raise ValueError(f"--resume needs a checkpoint in --out; none at {str(ckpt)!r}")
        meta, _ = read_checkpoint(ckpt)
        tc = dataclasses.replace(TrainConfig(**meta["train_config"]), steps=tc.steps, out=tc.out)
    seed_everything(tc.seed, tc.threads)
    dataset = dataset or load_dataset(tc)
    model = DeepSeekV3(tc.model_config()).train()
    if tc.fp8:
        from .fp8 import apply_fp8

        apply_fp8(model)
    opt = make_optimizer(model, tc)
    generator = torch.Generator().manual_seed(tc.seed)
    step = _restore(ckpt, model, opt, generator) if resume else 0
    history: list[dict[str, Any]] = []
    metrics = None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        metrics_path = out / "metrics.jsonl"
        kept = []
        if resume and metrics_path.exists():  # drop lines logged after the checkpoint: a resumed file = a straight one
            kept = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
            kept = [r for r in kept if r["step"] <= step]
            history.extend(kept)
        _atomic_write_text("".join(json.dumps(r) + "\n" for r in kept), metrics_path)
        metrics = metrics_path.open("a")

    def log(record: dict[str, Any]) -> None:
        history.append(record)
        if metrics:
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()

    interrupted = False
    bar = tqdm(total=tc.steps, initial=step, disable=not progress, desc=f"train {tc.preset}", unit="step")
    t0, tokens_seen = time.perf_counter(), 0
    try:
        with _deferred_interrupt() as stop:
            while step < tc.steps:
                if stop[0]:
                    interrupted = True
                    break
                step += 1
                lr = learning_rate(step, tc)
                for group in opt.param_groups:
                    group["lr"] = lr
                tokens, targets, _ = dataset.get_batch("train", tc.batch_size, tc.seq_len, generator)
                result = model(tokens, targets=targets)
                opt.zero_grad(set_to_none=True)
                result.loss.backward()
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip))
                opt.step()
                vios = apply_bias_update(model)
                tokens_seen += tokens.numel()
                bar.update(1)
                bar.set_postfix(loss=f"{result.main_loss.item():.3f}")
                if step % tc.log_every == 0 or step == tc.steps:
                    elapsed = time.perf_counter() - t0
                    log({"step": step, "split": "train", "loss": result.main_loss.item(),
                         "mtp_losses": [x.item() for x in result.mtp_losses],
                         "balance_loss": result.balance_loss.item() if result.balance_loss is not None else None,
                         "total_loss": result.loss.item(), "lr": lr, "grad_norm": grad_norm,
                         "max_vio": vios, "tokens_per_s": tokens_seen / elapsed if elapsed else None})
                if step % tc.eval_every == 0 or step == tc.steps:
                    val = evaluate(model, dataset, tc.batch_size, tc.seq_len, tc.eval_batches)
                    log({"step": step, "split": "val", **val})
                if ckpt and (step % tc.save_every == 0 or step == tc.steps):
                    save_checkpoint(ckpt, model, opt, tc, step, generator)
    finally:
        bar.close()
        if ckpt and step > 0 and (interrupted or sys.exc_info()[0] is not None):
            save_checkpoint(ckpt, model, opt, tc, step, generator)
        if metrics:
            metrics.close()
    if interrupted:
        print(f"Interrupted after step {step}; the model, its history" + (f" and {ckpt}" if ckpt else "") +
              " are kept. Continue with --resume.", file=sys.stderr)
    return TrainResult(model=model.eval(), history=history, step=step, interrupted=interrupted, checkpoint=ckpt,
                       dataset=dataset)


def finish(result: TrainResult, tc: TrainConfig, command: str) -> dict[str, Any]:
    """Export the bf16 weights and record the validation loss of exactly those weights in summary.json."""
    out = Path(tc.out)
    export_model(result.model, out / "model.safetensors")
    shipped = load_model(out / "model.safetensors")
    val = evaluate(shipped, result.dataset, tc.batch_size, tc.seq_len, tc.eval_batches)
    summary = {"command": command, "step": result.step, "val_loss": val["loss"], "val_mtp_losses": val["mtp_losses"],
               "max_vio_global": val["max_vio_global"], "unigram_baseline": result.dataset.unigram_baseline(),
               "dataset": result.dataset.source, "eval": {"batch_size": tc.batch_size, "seq_len": tc.seq_len,
                                                           "batches": tc.eval_batches}}
    _atomic_write_text(json.dumps(summary, indent=1) + "\n", out / "summary.json")
    return summary


# -- command line -----------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump, no traceback
        self.exit(2, f"error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m dsv3_mini.train", description=__doc__.split("\n\n")[0])
    d = TrainConfig()
    p.add_argument("--preset", default="mini", choices=[x for x in PRESETS if x != "deepseek-v3"])
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--seq-len", type=int, default=d.seq_len)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--min-lr", type=float, default=d.min_lr)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--decay-steps", type=int, default=None, help="cosine horizon (default: --steps)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--grad-clip", type=float, default=d.grad_clip)
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--eval-batches", type=int, default=d.eval_batches)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="directory for checkpoint, metrics and the exported model")
    p.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.safetensors up to --steps")
    p.add_argument("--data", default=None, help="train on this text file instead of the built-in corpus")
    p.add_argument("--train-bytes", type=int, default=d.train_bytes)
    p.add_argument("--balance", default=d.balance, choices=BALANCE_POLICIES)
    p.add_argument("--bias-update-speed", type=float, default=None, help="γ of the bias rule (default 0.001)")
    p.add_argument("--fp8", action="store_true", help="simulate FP8 (E4M3, tile/block scaling) in linear layers")
    p.add_argument("--mtp-depth", type=int, default=None, help="number of MTP modules (0 disables MTP)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    kwargs = {k: v for k, v in vars(args).items() if k in fields}
    try:
        tc = TrainConfig(**kwargs)
        tc.model_config()
        if tc.threads is not None:  # for the whole command: training and the export's evaluation
            torch.set_num_threads(tc.threads)
        result = train(tc, resume=args.resume, progress=not args.no_progress)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    last_val = [r for r in result.history if r["split"] == "val"]
    if last_val:
        print(f"step {result.step}: validation loss {last_val[-1]['loss']:.4f}")
    if tc.out and not result.interrupted and result.step == tc.steps:
        command = "python -m dsv3_mini.train " + " ".join(argv if argv is not None else sys.argv[1:])
        summary = finish(result, tc, command)
        print(f"exported {tc.out}/model.safetensors: validation loss {summary['val_loss']:.4f} "
              f"(unigram baseline {summary['unigram_baseline']:.4f})")
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
