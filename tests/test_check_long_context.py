"""Lesson 10's checkers accept the right answers (written from the formulas) and hint on wrong ones."""

import math

import torch

from course import check_long_context as c


def test_ntk_base_is_theta_times_s_to_dim_over_dim_minus_two():
    assert math.isclose(c.ntk_base(), 10000 * 4 ** (8 / 6), rel_tol=1e-6)
    assert c.check_ntk_base(10000 * 4 ** (8 / 6))
    wrong = c.check_ntk_base(40000)  # the base times s: what NTK-aware scaling is not
    assert not wrong and "Hint" in wrong.message


def test_linear_interpolation_reads_position_p_as_p_over_s():
    assert c.linear_matching_position() == 100
    assert c.check_linear_position(100)
    assert not c.check_linear_position(1600)


def test_yarn_temperature_of_v3():
    assert c.check_yarn_temperature(0.1 * math.log(40) + 1)
    assert not c.check_yarn_temperature((0.1 * math.log(40) + 1) ** 2)  # t, not √t


def test_kept_pairs_are_those_turning_more_than_beta_fast_times():
    by_hand = sum(1 for j in range(32) if 4096 * 10000 ** (-2 * j / 64) / (2 * math.pi) > 32)
    assert c.kept_pairs() == by_hand == 11
    assert c.check_kept_pairs(11) and not c.check_kept_pairs(32)


def test_cache_bytes_count_latent_and_rope_key_in_every_layer():
    assert c.passkey_cache_bytes() == 1024 * 3 * (32 + 8) * 2
    assert c.check_cache_bytes(245_760)
    assert not c.check_cache_bytes(1024 * 3 * 2 * 4 * 16 * 2)  # what MHA would cache


def test_checkers_do_not_raise_or_move_the_global_random_state():
    state = torch.get_rng_state()
    for check in (c.check_ntk_base, c.check_linear_position, c.check_yarn_temperature, c.check_kept_pairs,
                  c.check_cache_bytes):
        assert not check(...) and "No answer yet" in check(...).message
        assert not check("abc")
    assert torch.equal(state, torch.get_rng_state())
