"""The checkers of lesson 7 accept the right answers, hint on wrong ones, and compute their answers from the library."""

from dsv3_mini.exercises import fact_check


def test_kv_reduction_is_the_reports_98_6_percent():
    assert round(fact_check.kv_reduction_vs_naive(), 3) == 0.986
    assert fact_check.check_kv_reduction(1 - 70_272 / 4_997_120)
    assert fact_check.check_kv_reduction(0.986)  # rounded as the report rounds it


def test_kv_reduction_hints_on_a_wrong_answer_and_on_a_percentage():
    wrong = fact_check.check_kv_reduction(0.933)
    assert not wrong and "Hint" in wrong.message
    percent = fact_check.check_kv_reduction(98.6)
    assert not percent and "fraction" in percent.message
    assert "No answer yet" in fact_check.check_kv_reduction(...).message


def test_tokens_per_forward_of_85_percent_acceptance():
    assert fact_check.tokens_per_forward() == 1.85
    assert fact_check.tokens_per_forward(0.0) == 1.0 and fact_check.tokens_per_forward(1.0) == 2.0
    assert fact_check.check_tokens_per_forward(1 + 0.85)
    wrong = fact_check.check_tokens_per_forward(0.85)
    assert not wrong and "Hint" in wrong.message


def test_mha_reduction_uses_v3s_own_shape():
    expected = 1 - 61 * 576 * 2 / (61 * 2 * 128 * 128 * 2)
    assert fact_check.kv_reduction_vs_mha() == expected
    assert fact_check.check_mha_reduction(expected)
    wrong = fact_check.check_mha_reduction(fact_check.kv_reduction_vs_naive())
    assert not wrong and "Hint" in wrong.message


def test_the_uncheckable_claim_is_the_trained_models_perplexity():
    assert set(fact_check.CLAIM_TEXT) == set(fact_check.CLAIMS)
    assert fact_check.check_uncheckable("perplexity")
    assert fact_check.check_uncheckable(" Perplexity ")
    wrong = fact_check.check_uncheckable("kv-cache")
    assert not wrong and "Hint" in wrong.message
    assert "is not one of" in fact_check.check_uncheckable("fp8").message
