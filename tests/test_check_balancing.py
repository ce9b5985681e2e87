"""Lesson 3's checkers accept the right answers (worked out by hand here) and hint on wrong ones."""

from course import check_balancing


def test_exercise_data_are_what_the_lesson_states():
    assert check_balancing.LOAD == (12, 4, 6, 10, 8, 8)  # mean 8
    assert check_balancing.GAMMA == 0.001


def test_max_violation_checker():
    assert check_balancing.check_max_violation((12 - 8) / 8)
    wrong = check_balancing.check_max_violation((12 - 4) / 8)  # max − min instead of max − mean
    assert not wrong and "Hint" in wrong.message
    assert "No answer yet" in check_balancing.check_max_violation(...).message


def test_sign_update_checker():
    assert check_balancing.check_sign_update([-0.001, 0.003, 0.0, -0.001, 0.001, 0.0])
    assert check_balancing.check_sign_update((-1e-3, 3e-3, 0, -1e-3, 1e-3, 0))
    flipped = check_balancing.check_sign_update([0.001, 0.001, -0.002, 0.001, 0.001, 0.0])  # signs the wrong way
    assert not flipped and "Hint" in flipped.message and "experts [0, 1, 2, 3]" in flipped.message
    moved_at_mean = check_balancing.check_sign_update([-0.001, 0.003, 0.0, -0.001, 0.0, -0.001])
    assert not moved_at_mean and "experts [4, 5]" in moved_at_mean.message
    assert "Expected 6 numbers" in check_balancing.check_sign_update([0.0, 0.0]).message
    assert "Expected a list" in check_balancing.check_sign_update("up").message
    assert "No answer yet" in check_balancing.check_sign_update(...).message


def test_proportional_update_checker():
    assert check_balancing.check_proportional_update(0.001 * (8 - 12) / 8)
    wrong = check_balancing.check_proportional_update(-0.001)  # the sign rule's step
    assert not wrong and "relative violation" in wrong.message


def test_gradient_policy_checker():
    assert check_balancing.check_gradient_policy("aux-loss")
    assert check_balancing.check_gradient_policy(" Aux-Loss ")
    wrong = check_balancing.check_gradient_policy("loss-free")
    assert not wrong and "Hint" in wrong.message
    assert "is not one of" in check_balancing.check_gradient_policy("bias").message


def test_gradient_ratio_orders_the_policies():
    ratio = check_balancing._router_gradient_ratio
    assert ratio("none") == 0.0
    assert 0 < ratio("loss-free") < 0.05 < ratio("aux-loss")

