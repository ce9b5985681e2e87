"""The lesson 4 (FP8) checkers accept the answers the library computes and hint on typical mistakes."""

from course import check_fp8


def test_tile_scale_is_amax_over_e4m3_max():
    assert check_fp8.check_tile_scale(3.5 / 448)
    wrong = check_fp8.check_tile_scale(3.5 / 57344)  # E5M2's max instead of E4M3's
    assert not wrong and "Hint" in wrong.message and "largest" in wrong.message
    assert not check_fp8.check_tile_scale(448 / 3.5)  # upside down


def test_activation_scales_are_one_per_token_and_128_channels():
    assert check_fp8.check_activation_scales(256 * 512 // 128)
    wrong = check_fp8.check_activation_scales(2 * 4)  # as if it were 128×128 blocks
    assert not wrong and "Hint" in wrong.message


def test_gradient_format_is_e4m3_as_in_the_report():
    assert check_fp8.check_gradient_format("e4m3") and check_fp8.check_gradient_format(" E4M3 ")
    wrong = check_fp8.check_gradient_format("e5m2")
    assert not wrong and "Hint" in wrong.message and "e4m3" not in wrong.message.lower()
    assert "is not one of" in check_fp8.check_gradient_format("bf16").message


def test_promotions_for_k_7168_every_128():
    assert check_fp8.check_promotions(7168 // 128)
    wrong = check_fp8.check_promotions(7168 // 4)
    assert not wrong and "N_C" in wrong.message


def test_no_answer_yet_is_a_verdict_not_an_error():
    for check in (check_fp8.check_tile_scale, check_fp8.check_activation_scales, check_fp8.check_gradient_format,
                  check_fp8.check_promotions):
        verdict = check(...)
        assert not verdict and "No answer yet" in verdict.message
