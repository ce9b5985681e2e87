"""Lesson 2's checkers accept the right answer (computed by hand from the report's numbers) and hint on a wrong one."""

import math

from course import check_moe


def test_fine_grained_combinations():
    assert check_moe.check_fine_grained_combinations(math.comb(64, 8))
    wrong = check_moe.check_fine_grained_combinations(math.comb(16, 2))
    assert not wrong and "Hint" in wrong.message


def test_candidates_after_group_limit_in_v3():
    assert check_moe.check_candidates(4 * 256 // 8)
    wrong = check_moe.check_candidates(256)
    assert not wrong and "Hint" in wrong.message


def test_gate_weight_is_normalised_over_the_chosen_and_scaled():
    chosen = sorted(check_moe.GATE_SCORES, reverse=True)[:4]
    right = check_moe.GATE_SCORES[check_moe.GATE_EXPERT] / sum(chosen) * 2.5
    assert check_moe.check_gate_weight(right)
    unscaled = check_moe.check_gate_weight(right / 2.5)
    assert not unscaled and "routed_scaling_factor" in unscaled.message
    scores = check_moe.GATE_SCORES
    over_all = check_moe.check_gate_weight(scores[check_moe.GATE_EXPERT] / sum(scores) * 2.5)
    assert not over_all


def test_bias_selects_but_never_weights():
    assert check_moe.bias_effect_on_weight() == "stays the same"
    assert check_moe.check_bias_effect("Stays the same")
    wrong = check_moe.check_bias_effect("rises")
    assert not wrong and "Hint" in wrong.message
    assert "is not one of" in check_moe.check_bias_effect("up").message


def test_checkers_say_no_answer_yet():
    for check in (check_moe.check_fine_grained_combinations, check_moe.check_candidates, check_moe.check_gate_weight,
                  check_moe.check_bias_effect):
        assert not check(...) and "No answer yet" in check(...).message
