"""The checkers of lesson 9 accept the right answers, hint on wrong ones, and compute their answers from the library."""

from course import check_claims


def test_kv_reduction_is_the_reports_98_6_percent():
    assert round(check_claims.kv_reduction_vs_naive(), 3) == 0.986
    assert check_claims.check_kv_reduction(1 - 70_272 / 4_997_120)
    assert check_claims.check_kv_reduction(0.986)  # rounded as the report rounds it


def test_kv_reduction_hints_on_a_wrong_answer_and_on_a_percentage():
    wrong = check_claims.check_kv_reduction(0.933)
    assert not wrong and "Hint" in wrong.message
    percent = check_claims.check_kv_reduction(98.6)
    assert not percent and "fraction" in percent.message
    assert "No answer yet" in check_claims.check_kv_reduction(...).message


def test_tokens_per_forward_of_85_percent_acceptance():
    assert check_claims.tokens_per_forward() == 1.85
    assert check_claims.tokens_per_forward(0.0) == 1.0 and check_claims.tokens_per_forward(1.0) == 2.0
    assert check_claims.check_tokens_per_forward(1 + 0.85)
    wrong = check_claims.check_tokens_per_forward(0.85)
    assert not wrong and "Hint" in wrong.message


def test_mha_reduction_uses_v3s_own_shape():
    expected = 1 - 61 * 576 * 2 / (61 * 2 * 128 * 128 * 2)
    assert check_claims.kv_reduction_vs_mha() == expected
    assert check_claims.check_mha_reduction(expected)
    wrong = check_claims.check_mha_reduction(check_claims.kv_reduction_vs_naive())
    assert not wrong and "Hint" in wrong.message


def test_the_uncheckable_claim_is_the_trained_models_perplexity():
    assert set(check_claims.CLAIM_TEXT) == set(check_claims.CLAIMS)
    assert check_claims.check_uncheckable("perplexity")
    assert check_claims.check_uncheckable(" Perplexity ")
    wrong = check_claims.check_uncheckable("kv-cache")
    assert not wrong and "Hint" in wrong.message
    assert "is not one of" in check_claims.check_uncheckable("fp8").message
