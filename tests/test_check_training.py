"""Lesson 6's checkers accept the right answers (computed here independently) and hint on wrong ones."""

from __future__ import annotations

import json
import math

import pytest
import torch

from course import check_training
from dsv3_mini.analysis import routing_by_domain
from dsv3_mini.checkpoint import load_model
from dsv3_mini.data import DOMAINS, builtin_dataset

RUN = check_training.RUN


@pytest.fixture(scope="module")
def summary() -> dict:
    path = RUN / "summary.json"
    if not path.is_file():
        pytest.skip("checkpoints/mini/summary.json is missing (make train)")
    return json.loads(path.read_text())


def test_unigram_bits(summary):
    bits = summary["unigram_baseline"] / math.log(2)
    assert check_training.check_unigram_bits(bits)
    assert check_training.check_unigram_bits(round(bits, 3))  # a rounded answer is fine
    wrong = check_training.check_unigram_bits(summary["unigram_baseline"])  # still in nats
    assert not wrong and "Hint" in wrong.message and "log2" in wrong.message
    assert "No answer yet" in check_training.check_unigram_bits(...).message


def test_tokens_seen_follow_the_makefile_command(summary):
    words = summary["command"].split()
    value = {flag: int(words[words.index(flag) + 1]) for flag in ("--steps", "--batch-size", "--seq-len")}
    tokens = value["--steps"] * value["--batch-size"] * value["--seq-len"]
    assert check_training.shipped_tokens() == tokens
    assert check_training.check_tokens_seen(tokens)
    wrong = check_training.check_tokens_seen(value["--steps"] * value["--batch-size"])  # forgot the sequence length
    assert not wrong and "seq-len" in wrong.message


def test_concentrated_domain_is_the_lowest_entropy_one(summary):  # noqa: ARG001 (needs the shipped run)
    model = load_model(RUN / "model.safetensors")
    frac = routing_by_domain(model, builtin_dataset(seed=0), check_training.ROUTING_BATCH_SIZE,
                             check_training.ROUTING_SEQ_LEN, check_training.ROUTING_BATCHES)
    p = frac.clamp_min(1e-30)
    entropy = -(frac * p.log()).sum(-1).mean(0)  # written out, not torch.special.entr
    assert torch.allclose(entropy, check_training.routing_entropy(frac))
    expected = DOMAINS[int(entropy.argmin())]
    assert check_training.most_concentrated_domain() == expected
    assert check_training.check_concentrated_domain(expected)
    assert check_training.check_concentrated_domain(expected.upper())  # case does not matter
    other = next(d for d in DOMAINS if d != expected)
    wrong = check_training.check_concentrated_domain(other)
    assert not wrong and "Hint" in wrong.message
    assert "is not one of" in check_training.check_concentrated_domain("maths").message
    assert "No answer yet" in check_training.check_concentrated_domain(...).message
