"""Lesson 5's checkers accept the right answers (written from the report's definitions) and hint on wrong ones."""

import torch

from course import check_mtp


def test_depth_one_predicts_the_token_after_next():
    assert check_mtp.mtp_target_offset() == 2
    assert check_mtp.check_mtp_target(2)
    wrong = check_mtp.check_mtp_target(1)  # the off-by-one this lesson is about
    assert not wrong and "Hint" in wrong.message


def test_tokens_per_forward_is_one_plus_acceptance():
    assert check_mtp.check_tokens_per_forward(1.85)
    assert check_mtp.check_tokens_per_forward(1.9, acceptance=0.9)
    wrong = check_mtp.check_tokens_per_forward(0.85)
    assert not wrong and "Hint" in wrong.message


def test_scored_predictions_count_main_and_every_depth():
    assert check_mtp.scored_predictions(16, 3) == 16 + 15 + 14 + 13
    assert check_mtp.check_scored_predictions(58)
    wrong = check_mtp.check_scored_predictions(16 * 4)
    assert not wrong and "Hint" in wrong.message


def test_greedy_decoding_makes_one_forward_per_new_token():
    assert check_mtp.greedy_forward_passes(48) == 48
    assert check_mtp.check_greedy_forwards(48)
    wrong = check_mtp.check_greedy_forwards(49)
    assert not wrong and "Hint" in wrong.message


def test_checkers_do_not_raise_or_move_the_global_random_state():
    state = torch.get_rng_state()
    for check in (check_mtp.check_mtp_target, check_mtp.check_tokens_per_forward, check_mtp.check_scored_predictions,
                  check_mtp.check_greedy_forwards):
        assert not check(...) and "No answer yet" in check(...).message
        assert not check("two")
    assert torch.equal(state, torch.get_rng_state())
