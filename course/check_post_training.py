"""Checkers for lesson 11 (post-training: SFT and GRPO on the addition task).

Each expected value is computed by ``dsv3_mini``: the group-relative advantage by ``grpo.group_advantages``, the KL
estimator by ``grpo.kl_estimate``, and the MTP draft's acceptance from the results that ``benchmarks/repro_grpo.py``
wrote into ``checkpoints/grpo/results.json`` (the lesson's figures read the same file).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from dsv3_mini.grpo import group_advantages, kl_estimate

from .paths import POST_TRAINING_RESULTS as RESULTS
from .verdict import Verdict, check_number

# exercise 1: a group of G = 8 outputs of which two are right; the learner gives the advantage of a right one
EXERCISE_REWARDS = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0)
# exercise 2: the policy gives the sampled token probability 0.2, the reference 0.5
EXERCISE_P_THETA, EXERCISE_P_REF = 0.2, 0.5


def post_training_results(path: Path = RESULTS) -> dict[str, Any]:
    """``results.json`` of the post-training benchmark (``benchmarks/repro_grpo.py``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: `benchmarks/repro_grpo.py` (make bench) writes it")
    return json.loads(path.read_text())


def right_answer_advantage(rewards: tuple[float, ...] = EXERCISE_REWARDS) -> float:
    """A_i of an output with reward 1 in the group ``rewards``."""
    r = torch.tensor([rewards])
    return float(group_advantages(r)[0, rewards.index(1.0)])


def exercise_kl(p_theta: float = EXERCISE_P_THETA, p_ref: float = EXERCISE_P_REF) -> float:
    return float(kl_estimate(torch.tensor(math.log(p_theta)), torch.tensor(math.log(p_ref))))


def acceptance_drop_points(path: Path = RESULTS) -> float:
    """Points of MTP draft acceptance lost by RL: SFT's minus the mean after GRPO (before the re-tune)."""
    m = post_training_results(path)["mtp_acceptance"]
    return 100 * (m["sft"] - m["after_grpo"]["mean"])


def check_advantage(answer: object) -> Verdict:
    return check_number(answer, right_answer_advantage(), rel_tol=1e-3,
                        hint="A_i = (r_i − mean r) / std r over the 8 rewards; torch.std is the unbiased std "
                             "(divide by G − 1).")


def check_kl(answer: object) -> Verdict:
    return check_number(answer, exercise_kl(), rel_tol=1e-3,
                        hint="D_KL = π_ref/π_θ − log(π_ref/π_θ) − 1, with the natural logarithm.")


def check_acceptance_drop(answer: object) -> Verdict:
    # a rounded answer (one decimal) is fine
    return check_number(answer, acceptance_drop_points(), abs_tol=0.1, unit="points",
                        hint="results['mtp_acceptance']: 'sft' is one number, 'after_grpo' a spread over seeds "
                             "(use its 'mean'); both are shares, the answer is in points (× 100).")
