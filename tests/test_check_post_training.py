"""Lesson 11's checkers accept the right answers (computed here by hand or from the results file) and hint on wrong
ones."""

from __future__ import annotations

import json
import math

import pytest

from course import check_post_training


def test_advantage_of_a_right_answer():
    # 2 of 8 right: mean 0.25; unbiased std sqrt((2·0.75² + 6·0.25²) / 7) = sqrt(1.5 / 7)
    expected = 0.75 / math.sqrt(1.5 / 7)
    assert check_post_training.check_advantage(expected)
    assert check_post_training.check_advantage(round(expected, 4))
    wrong = 0.75 / math.sqrt(1.5 / 8)  # the population std: a common slip
    verdict = check_post_training.check_advantage(wrong)
    assert not verdict and "unbiased" in verdict.message
    assert not check_post_training.check_advantage(...)


def test_kl_estimate_by_hand():
    expected = 0.5 / 0.2 - math.log(0.5 / 0.2) - 1
    assert check_post_training.check_kl(expected)
    assert not check_post_training.check_kl(math.log(0.2 / 0.5))  # log π_θ/π_ref: the naive estimator
    assert not check_post_training.check_kl("big")


def test_acceptance_drop_reads_the_results_file():
    if not check_post_training.RESULTS.is_file():
        pytest.fail(f"{check_post_training.RESULTS} is missing: benchmarks/repro_grpo.py writes it")
    m = json.loads(check_post_training.RESULTS.read_text())["mtp_acceptance"]
    drop = 100 * (m["sft"] - m["after_grpo"]["mean"])
    assert check_post_training.check_acceptance_drop(drop)
    assert check_post_training.check_acceptance_drop(round(drop, 1))
    assert not check_post_training.check_acceptance_drop(drop / 100)  # a share, not points


def test_missing_results_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.json is missing"):
        check_post_training.post_training_results(tmp_path / "results.json")
