"""Supervised fine-tuning (SFT): teach the pre-trained model the task's format, with the loss on the answer only.

V3's post-training starts with SFT on 1.5M prompt → response instances (report §5.1); here the instances are the
addition pairs of ``dsv3_mini.addition_task``. A sequence is prompt + answer, e.g. ``"\\n23+48=17\\n"``; the
targets are the next bytes, but every target that is a byte of the *prompt* is ``IGNORE_INDEX``: the model is
scored only on what it should write (the answer and its newline), not on predicting the question. Rows of a batch
have different lengths (two- or three-digit sums); the shorter ones are padded at the end with ignored targets, which
a causal model cannot see from earlier positions.

One optimizer step is ``dsv3_mini.train.train_step``, the pre-training step itself: AdamW, warm-up + cosine schedule,
clipping, the MTP loss (its targets get the same mask) and the router bias rule.
``python -m dsv3_mini.sft --out checkpoints/sft`` runs it from a shell (flags from ``SFTConfig``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .addition_task import Pair, exact_accuracy, prompt_text, split_pairs
from .addition_task import answer_text as task_answer
from .checkpoint import atomic_write_text, export_model, load_model
from .cli import command_line, command_parser, config_from_args, run_command, setting
from .config import check_positive
from .data import encode
from .interrupt import deferred_interrupt
from .model import IGNORE_INDEX, DeepSeekV3
from .train import TrainConfig, TrainResult, make_optimizer, train_step
from .utils import seed_everything

BASE_MODEL = "checkpoints/mini/model.safetensors"  # the shipped pre-trained model


@dataclass
class SFTConfig:
    """A supervised fine-tune of a pre-trained model on the addition task."""

    init: str = setting(BASE_MODEL, "the pre-trained model to start from (a model.safetensors)")
    steps: int = setting(150, "optimizer steps")
    batch_size: int = setting(64, "prompt → answer pairs per step")
    lr: float = setting(1e-3, "peak learning rate (after the warm-up; cosine decay to lr/10)")
    warmup_steps: int = setting(10, "steps of linear warm-up")
    plain_order: bool = setting(False, "answer in the usual digit order instead of ones digit first")
    seed: int = setting(0, "seed of the batches")
    threads: int | None = setting(1, "torch threads")
    out: str | None = setting(None, "directory for model.safetensors and sft.json")

    def __post_init__(self) -> None:
        check_positive(self, "steps", "batch_size", "threads")
        if self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError(f"lr={self.lr} must be > 0 and warmup_steps={self.warmup_steps} >= 0")

    @property
    def reversed_digits(self) -> bool:
        return not self.plain_order

    def train_config(self) -> TrainConfig:
        """The pre-training step's settings for this fine-tune (schedule, clipping); no weight decay."""
        return TrainConfig(preset="mini", steps=self.steps, lr=self.lr, min_lr=self.lr / 10,
                           warmup_steps=self.warmup_steps, weight_decay=0.0, grad_clip=1.0, seed=self.seed)


def sft_batch(pairs: Sequence[Pair], reverse: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, targets), both (batch, seq): prompt + answer, and the next bytes with the prompt's masked.

    ``targets[i, t]`` is the byte after ``tokens[i, t]`` when that byte belongs to the answer, else IGNORE_INDEX
    (the prompt's bytes, and the padding of rows shorter than the longest).
    """
    if not pairs:
        raise ValueError("pairs is empty: give at least one (a, b)")
    rows = [(encode(prompt_text(a, b)), encode(task_answer(a, b, reverse))) for a, b in pairs]
    seq = max(len(p) + len(ans) for p, ans in rows) - 1
    tokens = torch.full((len(rows), seq), ord("\n"), dtype=torch.long)
    targets = torch.full((len(rows), seq), IGNORE_INDEX, dtype=torch.long)
    for i, (p, ans) in enumerate(rows):
        full = torch.cat([p, ans])
        tokens[i, : len(full) - 1] = full[:-1]
        targets[i, len(p) - 1: len(full) - 1] = ans  # position t predicts byte t + 1: answers start at len(p) - 1
    return tokens, targets


SFTResult = TrainResult  # model, history, step, interrupted; an SFT run keeps no resumable checkpoint


def sft(cfg: SFTConfig, progress: bool = True, model: DeepSeekV3 | None = None) -> SFTResult:
    """Fine-tune ``cfg.init`` (or ``model``) for ``cfg.steps`` steps on random training pairs; one thread by default.

    An interrupt stops after the current step and returns the model as it is (``interrupted=True``). The previous
    torch thread count is restored afterwards.
    """
    threads = torch.get_num_threads()
    try:
        seed_everything(cfg.seed, cfg.threads)
        model = (model if model is not None else load_model(cfg.init)).train()
        tc = cfg.train_config()
        opt = make_optimizer(model, tc)
        train_pairs, _ = split_pairs()
        rng = random.Random(cfg.seed)
        history, step, interrupted = [], 0, False
        bar = tqdm(total=cfg.steps, disable=not progress, desc="SFT", unit="step")
        with deferred_interrupt() as stop:
            while step < cfg.steps:
                if stop[0]:
                    interrupted = True
                    break
                step += 1
                tokens, targets = sft_batch(rng.sample(train_pairs, cfg.batch_size), cfg.reversed_digits)
                s = train_step(model, opt, tokens, targets, tc, step)
                history.append({"step": step, "loss": s.output.main_loss.item(),
                                "mtp_loss": s.output.mtp_losses[0].item() if s.output.mtp_losses else None,
                                "lr": s.lr, "max_vio": s.max_vio})
                bar.update(1)
                bar.set_postfix(loss=f"{history[-1]['loss']:.3f}")
        bar.close()
        return SFTResult(model=model.eval(), history=history, step=step, interrupted=interrupted)
    finally:
        torch.set_num_threads(threads)


def save_sft(result: SFTResult, cfg: SFTConfig, out: str | Path, command: str) -> dict[str, Any]:
    """Write ``out``/model.safetensors (bf16, like the shipped model) and ``out``/sft.json with the held-out exact
    accuracy of exactly those weights, before (``init``) and after; returns the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    export_model(result.model, out / "model.safetensors")
    _, heldout = split_pairs()
    rev = cfg.reversed_digits
    summary = {"command": command, "config": dataclasses.asdict(cfg), "step": result.step,
               "heldout_pairs": len(heldout), "reverse": rev,
               "heldout_exact_before": exact_accuracy(load_model(cfg.init), heldout, rev),
               "heldout_exact_after": exact_accuracy(load_model(out / "model.safetensors"), heldout, rev),
               "history": result.history}
    atomic_write_text(json.dumps(summary, indent=1) + "\n", out / "sft.json")
    return summary


PROG = "python -m dsv3_mini.sft"


def main(argv: list[str] | None = None) -> int:
    return run_command(command_parser(SFTConfig, PROG, __doc__.split("\n\n")[0]), argv, lambda args: _run(args, argv))


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    cfg = config_from_args(SFTConfig, args)
    t0 = time.perf_counter()
    result = sft(cfg, progress=not args.no_progress)
    print(f"SFT: {result.step} steps in {time.perf_counter() - t0:.0f} s, last loss {result.history[-1]['loss']:.4f}")
    if result.interrupted:
        print("Interrupted: nothing written (the fine-tune is short; run it again).", file=sys.stderr)
        return 130
    if cfg.out:
        s = save_sft(result, cfg, cfg.out, command_line(PROG, argv))
        print(f"held-out exact: {s['heldout_exact_before']:.1%} before, {s['heldout_exact_after']:.1%} after "
              f"({s['heldout_pairs']} pairs); wrote {cfg.out}/model.safetensors and sft.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
