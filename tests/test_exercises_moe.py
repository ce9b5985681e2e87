"""Lesson 2's checkers accept the right answer (computed by hand from the report's numbers) and hint on a wrong one."""

import math

from dsv3_mini.exercises import moe


def test_fine_grained_combinations():
    assert moe.check_fine_grained_combinations(math.comb(64, 8))
    wrong = moe.check_fine_grained_combinations(math.comb(16, 2))
    assert not wrong and "Hint" in wrong.message


def test_candidates_after_group_limit_in_v3():
    assert moe.check_candidates(4 * 256 // 8)
    wrong = moe.check_candidates(256)
    assert not wrong and "Hint" in wrong.message


def test_gate_weight_is_normalised_over_the_chosen_and_scaled():
    chosen = sorted(moe.GATE_SCORES, reverse=True)[:4]
    right = moe.GATE_SCORES[moe.GATE_EXPERT] / sum(chosen) * 2.5
    assert moe.check_gate_weight(right)
    unscaled = moe.check_gate_weight(right / 2.5)
    assert not unscaled and "routed_scaling_factor" in unscaled.message
    over_all = moe.check_gate_weight(moe.GATE_SCORES[moe.GATE_EXPERT] / sum(moe.GATE_SCORES) * 2.5)
    assert not over_all


def test_bias_selects_but_never_weights():
    assert moe.bias_effect_on_weight() == "stays the same"
    assert moe.check_bias_effect("Stays the same")
    wrong = moe.check_bias_effect("rises")
    assert not wrong and "Hint" in wrong.message
    assert "is not one of" in moe.check_bias_effect("up").message


def test_checkers_say_no_answer_yet():
    for check in (moe.check_fine_grained_combinations, moe.check_candidates, moe.check_gate_weight,
                  moe.check_bias_effect):
        assert not check(...) and "No answer yet" in check(...).message
