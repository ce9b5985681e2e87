"""A task with a verifiable answer for post-training: two-digit addition, the sum written with its digits reversed.

Post-training needs answers a rule can check (V3 report §5.2.1: "for mathematical problems with deterministic
results ... rule-based verification"). Here the question is ``"\\n23+48="`` and the answer is ``"17\\n"``: 23 + 48 = 71,
written ones digit first. Why this format:
- **Reversed digits.** Written the usual way, the first digit of 71 already depends on the carry out of 3 + 8, so the
  model must finish the whole sum before its first token. Ones digit first, every digit needs only the two digits
  above it and the carry of the digit it has just written: left-to-right decoding meets the carry in the order it is
  computed (Lee et al. 2023, "Teaching arithmetic to small transformers"). ``reverse=False`` keeps the usual order,
  for comparison.
- **Two digits each, 10..99.** Every prompt is 7 bytes long, so a batch of prompts decodes together with the KV cache
  (``generate`` needs one prompt length), and the 8,100 pairs split into a fixed held-out set and a training set.
- **The leading "\\n"** is how every line of the pre-training corpus starts (``data._arithmetic`` writes
  ``"123+45=168\\n"`` lines, digits in the usual order: the shipped model gets almost none of those right).

Reward (rule-based, as V3's for math): 1 if the completion starts with exactly the answer followed by ``"\\n"``,
else 0. No partial credit and no separate format reward: a right number without its newline scores 0.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from .data import decode, encode
from .generate import generate
from .model import DeepSeekV3

LOW, HIGH = 10, 99  # both operands are two-digit numbers
PROMPT_LEN = 7  # "\n" a "+" b "=": every prompt has this many bytes
MAX_NEW_TOKENS = 4  # the longest answer: three digits and the newline
N_HELDOUT = 500  # pairs never used for training, for held-out exact accuracy
END = "\n"

Pair = tuple[int, int]


def check_pair(a: int, b: int) -> None:
    for name, v in (("a", a), ("b", b)):
        if not isinstance(v, int) or not LOW <= v <= HIGH:
            raise ValueError(f"operand {name}={v!r} must be an integer in {LOW}..{HIGH} (two digits)")


def prompt_text(a: int, b: int) -> str:
    """The question: ``"\\n23+48="``."""
    check_pair(a, b)
    return f"{END}{a}+{b}="


def answer_text(a: int, b: int, reverse: bool = True) -> str:
    """The exact answer the reward accepts: the sum's digits (ones first if ``reverse``) and ``"\\n"``."""
    check_pair(a, b)
    digits = str(a + b)
    return (digits[::-1] if reverse else digits) + END


def all_pairs() -> list[Pair]:
    return [(a, b) for a in range(LOW, HIGH + 1) for b in range(LOW, HIGH + 1)]


def split_pairs(n_heldout: int = N_HELDOUT, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """(train, held-out): a fixed shuffle of all 8,100 pairs; the first ``n_heldout`` are held out.

    The split depends on ``seed`` only, so every run of the course scores the same held-out pairs and never trains on
    them (SFT and GRPO draw their prompts from ``train``).
    """
    pairs = all_pairs()
    if not 0 < n_heldout < len(pairs):
        raise ValueError(f"n_heldout={n_heldout} must be between 1 and {len(pairs) - 1}")
    random.Random(seed).shuffle(pairs)
    return pairs[n_heldout:], pairs[:n_heldout]


def prompt_tokens(pairs: Sequence[Pair]) -> torch.Tensor:
    """(len(pairs), PROMPT_LEN) token ids of the prompts."""
    if not pairs:
        raise ValueError("pairs is empty: give at least one (a, b)")
    return torch.stack([encode(prompt_text(a, b)) for a, b in pairs])


def reward(completion: str, a: int, b: int, reverse: bool = True) -> float:
    """1.0 if ``completion`` starts with the exact answer and its newline (what follows is ignored), else 0.0."""
    return 1.0 if completion.startswith(answer_text(a, b, reverse)) else 0.0


def completion_strings(completions: torch.Tensor) -> list[str]:
    """(batch, new) generated token ids -> text per row."""
    return [decode(row.tolist()) for row in completions]


def rewards(completions: torch.Tensor, pairs: Sequence[Pair], reverse: bool = True) -> torch.Tensor:
    """(batch,) rewards of (batch, new) completions; row i answers ``pairs[i]``."""
    if completions.shape[0] != len(pairs):
        raise ValueError(f"{completions.shape[0]} completions for {len(pairs)} pairs: give one pair per row")
    return torch.tensor([reward(s, a, b, reverse) for s, (a, b) in zip(completion_strings(completions), pairs,
                                                                        strict=True)])


def completion_mask(completions: torch.Tensor) -> torch.Tensor:
    """(batch, new) bool: the tokens of each completion up to and including its first newline (all if none).

    These are the tokens the answer consists of; what the sampler wrote after the newline is not part of it and is
    neither rewarded nor trained on.
    """
    newline = completions == ord(END)
    before = newline.long().cumsum(dim=1) - newline.long()  # newlines strictly before each position
    return before == 0


def exact_accuracy(model: DeepSeekV3, pairs: Sequence[Pair], reverse: bool = True, batch_size: int = 500) -> float:
    """Share of ``pairs`` the model answers exactly with greedy decoding (temperature 0), the held-out metric."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    was_training = model.training
    model.eval()
    correct = 0.0
    for i in range(0, len(pairs), batch_size):
        chunk = list(pairs[i: i + batch_size])
        out = generate(model, prompt_tokens(chunk), MAX_NEW_TOKENS)[:, PROMPT_LEN:]
        correct += float(rewards(out, chunk, reverse).sum())
    model.train(was_training)
    return correct / len(pairs)
