"""The bug-hunt labs: every tool passes the correct code and catches its planted bug; the checker agrees."""

from __future__ import annotations

import pytest
import torch

from course import bug_hunt, check_bug_hunt
from dsv3_mini import DeepSeekV3, preset
from dsv3_mini.kv_cache import bytes_per_token

pytest.importorskip("transformers")  # parity_gap is the transformers parity test

BUGS = list(bug_hunt.BUGS)
LAB_OF = {bug: lab_id for lab_id, bug in bug_hunt.LABS.items()}


def test_every_bug_of_the_issue_has_a_lab():
    assert set(BUGS) == set(bug_hunt.SPECS) == set(check_bug_hunt.HINTS) == set(bug_hunt.LABS.values())
    assert len(BUGS) == 6


@pytest.mark.parametrize("bug", BUGS)
def test_the_tool_catches_the_planted_bug(bug):
    lab = bug_hunt.open_lab(LAB_OF[bug])
    assert lab.bug == bug
    assert not lab.passes(), f"{lab.detector} measured {lab.detect()} on the planted bug"
    assert lab.signature.startswith(lab.function.__name__) and "def " in lab.source


@pytest.mark.parametrize("bug", BUGS)
def test_the_tool_passes_the_correct_code(bug):
    assert bug_hunt.repair(bug, bug_hunt.solution(bug)).passes()


@pytest.mark.parametrize("bug", BUGS)
def test_checker_accepts_the_fix_and_rejects_the_bug(bug):
    assert check_bug_hunt.check_fix(LAB_OF[bug], bug_hunt.solution(bug))
    assert not check_bug_hunt.check_fix(LAB_OF[bug], bug_hunt.SPECS[bug].planted)


@pytest.mark.parametrize("bug", BUGS)
def test_checker_names_only_the_planted_bug(bug):
    lab_id = LAB_OF[bug]
    assert check_bug_hunt.check_diagnosis(lab_id, bug)
    for other in BUGS:
        if other != bug:
            assert not check_bug_hunt.check_diagnosis(lab_id, other)
    assert not check_bug_hunt.check_diagnosis(lab_id, ...)
    assert "is not one of" in check_bug_hunt.check_diagnosis(lab_id, "no such bug").message


def test_the_library_itself_stays_correct():
    """Building labs patches only their own model instances, never dsv3_mini's classes or functions."""
    for bug in BUGS:
        bug_hunt.lab(bug)
    torch.manual_seed(0)
    model = DeepSeekV3(preset("tiny")).eval()
    assert bug_hunt.parity_gap(model) <= bug_hunt.PARITY_TOL
    assert bug_hunt.bias_gradient(model) == 0.0 and bug_hunt.loss_gap(model) < 1e-6
    assert bug_hunt.cache_formula_gap(bytes_per_token) == 0


def test_a_fix_with_the_wrong_arguments_is_explained():
    verdict = check_bug_hunt.check_fix(LAB_OF["mla-cache-2dc"], lambda cfg: 0)
    assert not verdict and "2 arguments" in verdict.message
    assert not check_bug_hunt.check_fix(LAB_OF["mla-cache-2dc"], ...)


def test_a_fix_that_crashes_gets_a_verdict():
    def broken(cfg, dtype_bytes=2):
        raise KeyError("oops")

    verdict = check_bug_hunt.check_fix(LAB_OF["mla-cache-2dc"], broken)
    assert not verdict and "KeyError" in verdict.message


def test_unknown_bug_is_a_value_error():
    with pytest.raises(ValueError, match="bug='nope' is not one of"):
        bug_hunt.lab("nope")
    with pytest.raises(ValueError, match="lab_id='nope' is not one of"):
        check_bug_hunt.check_diagnosis("nope", "x")


def test_the_bug_menu_names_every_bug_once_with_its_description():
    lines = bug_hunt.bug_menu().splitlines()
    assert [line.split()[0] for line in lines] == BUGS
    assert all(bug_hunt.BUGS[line.split()[0]] in line for line in lines)
