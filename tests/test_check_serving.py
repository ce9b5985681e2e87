"""Lesson 8's checkers accept the right answer (computed by hand from the report's numbers) and hint on a wrong one."""

import math

from course import check_serving


def test_experts_for_the_cost_of_four_nodes():
    assert check_serving.check_experts_for_four_nodes(4 * 160 / 50)
    assert check_serving.check_experts_for_four_nodes(13)
    wrong = check_serving.check_experts_for_four_nodes(8)
    assert not wrong and "Hint" in wrong.message


def test_kv_cache_at_128k():
    assert check_serving.check_kv_cache_gb(131_072 * 61 * 576 * 2 / 1e9)  # 9.21 GB
    mha = check_serving.check_kv_cache_gb(131_072 * 61 * 2 * 128 * 128 * 2 / 1e9)
    assert not mha and "576" in mha.message


def test_h200_count():
    weights = 673.15e9  # FP8 with scales, embedding and head in BF16
    assert math.ceil((weights + 32_768 * 70_272) / (0.9 * 141e9)) == 6
    assert check_serving.check_h200_count(8)  # 6 does not divide 256 experts; 8 does
    assert not check_serving.check_h200_count(6)


def test_redundant_experts():
    ranks = [90 + 10, 20 + 40, 15 + 15, 30 + 20]
    assert check_serving.check_max_over_mean(max(ranks) / (sum(ranks) / 4))  # 100 / 60
    assert not check_serving.check_max_over_mean(90 / (sum(check_serving.LOADS) / 8))
    assert check_serving.check_first_redundant(0)
    assert not check_serving.check_first_redundant(3)


def test_gpu_hours():
    assert check_serving.check_gpu_hours(6 * 36.6e9 * 14.8e12 / (0.4 * 989.5e12) / 3600 / 1e6)
    assert not check_serving.check_gpu_hours(2.788)


def test_checkers_say_no_answer_yet():
    for check in (check_serving.check_experts_for_four_nodes, check_serving.check_kv_cache_gb,
                  check_serving.check_h200_count, check_serving.check_max_over_mean,
                  check_serving.check_first_redundant, check_serving.check_gpu_hours):
        assert not check(...) and "No answer yet" in check(...).message
