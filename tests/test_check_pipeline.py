"""The pipeline lesson's checkers accept the right answer (worked out by hand from Table 2) and hint on a wrong one."""

from course import check_pipeline


def test_1f1b_bubble_by_hand():
    assert check_pipeline.check_1f1b_bubble((16 - 1) * (1 + 1.5))
    wrong = check_pipeline.check_1f1b_bubble(16 * 2.5)
    assert not wrong and "Hint" in wrong.message


def test_dualpipe_bubble_by_hand():
    assert check_pipeline.check_dualpipe_bubble((16 / 2 - 1) * (2 + 1.5 - 3 * 0.5))
    wrong = check_pipeline.check_dualpipe_bubble((16 - 1) * (2 + 1.5 - 3 * 0.5))
    assert not wrong and "PP/2" in wrong.message


def test_dualpipe_memory_is_pp_plus_one_and_two_copies():
    assert check_pipeline.check_dualpipe_memory(17, 2)
    assert not check_pipeline.check_dualpipe_memory(16, 2)
    wrong = check_pipeline.check_dualpipe_memory(17, 1)
    assert not wrong and "stage PP − 1 − r" in wrong.message


def test_race_is_won_by_dualpipe_even_without_overlap():
    # by hand: 1F1B and ZB1P (W = 0) idle (8 − 1)(1 + 2) = 21, DualPipe (8/2 − 1)(3 + 2) = 15
    assert check_pipeline.race_winner() == "dualpipe"
    assert check_pipeline.check_race("DualPipe")
    assert not check_pipeline.check_race("zb1p")
    assert "is not one of" in check_pipeline.check_race("gpipe").message


def test_checkers_say_no_answer_yet():
    for verdict in (check_pipeline.check_1f1b_bubble(...), check_pipeline.check_dualpipe_bubble(...),
                    check_pipeline.check_dualpipe_memory(..., ...), check_pipeline.check_race(...)):
        assert not verdict and "No answer yet" in verdict.message
