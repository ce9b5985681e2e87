from dsv3_mini.exercises import check_choice, check_number


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
