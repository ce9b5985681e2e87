"""Checkers for lesson 6 (the mini end-to-end training run): the shipped run in ``checkpoints/mini/``.

Each expected value comes from the library or from what the library recorded about the shipped run: the unigram
baseline that ``dsv3_mini.train.finish`` wrote into ``summary.json`` (``tests/test_shipped_checkpoint.py`` checks it
equals ``builtin_dataset(seed=0).unigram_baseline()``), the run's own command parsed by the trainer's command-line
parser (``dsv3_mini.train.parse_args``), and the routing of the shipped model measured with
``dsv3_mini.analysis.routing_by_domain``.
"""

from __future__ import annotations

import json
import math
import shlex
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from dsv3_mini.analysis import routing_by_domain
from dsv3_mini.checkpoint import load_model
from dsv3_mini.data import DOMAINS, builtin_dataset
from dsv3_mini.train import parse_args

from .paths import SHIPPED_RUN
from .verdict import Verdict, check_choice, check_number

RUN = SHIPPED_RUN
# the settings lesson 6 uses for its heat map: 4 validation batches of 16 windows of 256 bytes
ROUTING_BATCHES, ROUTING_BATCH_SIZE, ROUTING_SEQ_LEN = 4, 16, 256


def shipped_summary(run: Path = RUN) -> dict[str, Any]:
    """``summary.json`` of the shipped run (written by ``make train``)."""
    path = Path(run) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the shipped run is made by `make train`")
    return json.loads(path.read_text())


def shipped_tokens(run: Path = RUN) -> int:
    """Training tokens the shipped run saw: steps × batch size × sequence length, from its recorded command."""
    command = shlex.split(shipped_summary(run)["command"])
    tc = parse_args(command[3:])  # drop "python -m dsv3_mini.train"
    return tc.steps * tc.batch_size * tc.seq_len


def routing_entropy(fractions: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each domain's expert distribution, averaged over MoE layers: (domains,).

    ``fractions`` (layers, domains, experts) from ``routing_by_domain``; 0·ln 0 counts as 0.
    """
    return torch.special.entr(fractions).sum(-1).mean(0)


@lru_cache(maxsize=1)
def most_concentrated_domain(run: Path = RUN) -> str:
    """The domain whose routing in the shipped model has the lowest entropy (the lesson's heat-map settings)."""
    model = load_model(Path(run) / "model.safetensors")
    val_only = builtin_dataset(train_bytes=1, seed=0)  # the validation split depends on the seed only
    frac = routing_by_domain(model, val_only, ROUTING_BATCH_SIZE, ROUTING_SEQ_LEN, ROUTING_BATCHES)
    return DOMAINS[int(routing_entropy(frac).argmin())]


def check_unigram_bits(answer: object) -> Verdict:
    """Exercise 1: the unigram baseline of the built-in corpus in bits per byte."""
    bits = shipped_summary()["unigram_baseline"] / math.log(2)
    return check_number(answer, round(bits, 4), "a nat is the unit of ln, a bit the unit of log2: "
                        "log2(x) = ln(x) / ln(2)", rel_tol=1e-3, unit="bits per byte")


def check_tokens_seen(answer: object) -> Verdict:
    """Exercise 2: how many training tokens the shipped run processed."""
    return check_number(answer, shipped_tokens(), "every step processes one batch of batch-size windows of "
                        "seq-len bytes; read all three numbers from summary['command']", unit="tokens")


def check_concentrated_domain(answer: object) -> Verdict:
    """Exercise 3: the domain with the most concentrated routing (lowest entropy over experts)."""
    if answer is None or answer is ...:
        return check_choice(answer, DOMAINS[0], DOMAINS, "")
    return check_choice(answer, most_concentrated_domain(), DOMAINS,
                        "for each domain, sum -p·ln p over the 16 experts of a layer, average over the 3 layers, "
                        "and take the smallest (torch.special.entr computes -p·ln p)")
