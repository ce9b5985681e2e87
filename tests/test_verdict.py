from course.verdict import check_choice, check_number


def test_check_number_accepts_right_and_hints_on_wrong():
    assert check_number(576, 576, "latent plus rope key")
    wrong = check_number(512, 576, "latent plus rope key")
    assert not wrong and "Hint: latent plus rope key" in wrong.message
    assert not check_number(..., 576, "h") and "No answer yet" in check_number(..., 576, "h").message
    assert check_number(0.986, 0.9859, "h", abs_tol=1e-3)
    assert "Expected a number" in check_number("many", 1, "h").message


def test_check_choice():
    assert check_choice("MLA", "mla", ("mha", "mla"), "h")
    assert "is not one of" in check_choice("xyz", "mla", ("mha", "mla"), "h").message
    assert not check_choice("mha", "mla", ("mha", "mla"), "compressed")


def test_tour_checkers_agree_with_the_report():
    from course import check_tour

    assert check_tour.check_routed_expert_params(58 * 256 * 3 * 7168 * 2048)
    assert check_tour.check_kv_bytes_per_token(61 * (512 + 64) * 2)
    assert check_tour.check_activated_drop(58 * 4 * 3 * 7168 * 2048)
    wrong = check_tour.check_kv_bytes_per_token(61 * 512 * 2)
    assert not wrong and "Hint" in wrong.message
