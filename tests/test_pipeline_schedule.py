"""The schedule simulator: Table 2's bubbles and memory, dependencies, and clear errors (no processes here)."""

import itertools

import pytest

from dsv3_mini.pipeline_schedule import SCHEDULES, simulate, table2_activations, table2_bubble

PPS = (2, 4, 6, 8, 16)


@pytest.mark.parametrize("pp", PPS)
def test_1f1b_bubble_equals_table2_on_every_rank(pp):
    for m, (f, b) in itertools.product((pp, 2 * pp + 1), ((1, 2), (2, 3), (1, 1), (0.5, 2.5))):
        tl = simulate("1f1b", pp, m, F=f, B=b, W=0.5)
        assert tl.bubble == pytest.approx([table2_bubble("1f1b", pp, f, b, 0.5)] * pp, abs=1e-9)


@pytest.mark.parametrize("pp", PPS)
def test_zb1p_bubble_equals_table2_on_every_rank(pp):
    # ZB-H1's bound holds when a weight chunk fits the gaps it fills: W ≤ F and W ≤ B − W
    for m, (f, b, w) in itertools.product((pp, 3 * pp), ((1, 2, 1), (1, 2, 0.5), (2, 3, 1), (1, 3, 1), (2, 2, 1))):
        tl = simulate("zb1p", pp, m, F=f, B=b, W=w)
        assert tl.bubble == pytest.approx([table2_bubble("zb1p", pp, f, b, w)] * pp, abs=1e-9)


@pytest.mark.parametrize("pp", PPS)
def test_dualpipe_bubble_equals_table2_on_the_middle_ranks(pp):
    # the report's setting: a backward for inputs as long as a forward (B − W = F), W < F; the outer ranks idle less
    for m, f, w, overlap in itertools.product((2 * pp, 2 * pp + 4), (1, 2), (0.25, 0.5), (0.6, 0.8, 1.0)):
        b = f + w
        fb = overlap * (f + b)
        tl = simulate("dualpipe", pp, m, F=f, B=b, W=w, FB=fb)
        formula = table2_bubble("dualpipe", pp, f, b, w, fb)
        assert max(tl.bubble) == pytest.approx(formula, abs=1e-9)
        assert tl.bubble[pp // 2] == pytest.approx(formula, abs=1e-9)
        assert all(x <= formula + 1e-9 for x in tl.bubble)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("pp", (2, 4, 8))
def test_memory_matches_table2(schedule, pp):
    tl = simulate(schedule, pp, 3 * pp if schedule != "dualpipe" else 2 * pp + 2, F=1, B=2, W=0.5, FB=2.5)
    assert max(tl.peak_activations) == table2_activations(schedule, pp)
    assert tl.parameter_copies == {"1f1b": 1, "zb1p": 1, "dualpipe": 2}[schedule]


def test_1f1b_first_rank_holds_pp_micro_batches_and_the_last_one():
    assert simulate("1f1b", 4, 8).peak_activations == [4, 3, 2, 1]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_chunk_waits_for_its_inputs(schedule):
    tl = simulate(schedule, 4, 8, F=1, B=2, W=0.5, FB=2.4)
    stage = (lambda c, w: c.rank if w.direction == 0 else 3 - c.rank) if schedule == "dualpipe" else \
        (lambda c, w: c.rank)
    end = {}
    for c in tl.chunks:
        for w in c.works:
            if w.what != "W":
                end[(w.what if w.what == "F" else "B", w.direction, stage(c, w), w.micro_batch)] = c.end
    for c in tl.chunks:
        for w in c.works:
            s = stage(c, w)
            if w.what == "F" and s > 0:
                assert c.start >= end[("F", w.direction, s - 1, w.micro_batch)] - 1e-12
            if w.what in ("B", "I") and s < 3:
                assert c.start >= end[("B", w.direction, s + 1, w.micro_batch)] - 1e-12
    for r in range(4):  # a rank runs one chunk at a time
        mine = [c for c in tl.chunks if c.rank == r]
        assert all(a.end <= b.start + 1e-12 for a, b in zip(mine, mine[1:], strict=False))


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_micro_batch_runs_forward_and_backward_once_per_stage(schedule):
    pp, m = 4, 8
    tl = simulate(schedule, pp, m)
    per_rank = 2 if schedule == "dualpipe" else 1  # DualPipe: a stage of each direction, half the micro-batches each
    for r in range(pp):
        works = [w for c in tl.chunks if c.rank == r for w in c.works]
        assert sum(w.what == "F" for w in works) == m // per_rank * per_rank
        assert sum(w.what in ("B", "I") for w in works) == m


def test_zero_weight_time_makes_zb1p_a_1f1b():
    assert simulate("zb1p", 4, 8, F=1, B=2, W=0).bubble == simulate("1f1b", 4, 8, F=1, B=2).bubble


@pytest.mark.parametrize(("args", "message"), [
    (("dualpipe", 4, 6), "micro_batches=6"),
    (("dualpipe", 3, 12), "pp=3 is odd"),
    (("1f1b", 4, 3), "micro_batches=3 < pp=4"),
    (("zb1p", 1, 4), "pp=1"),
    (("gpipe", 4, 8), "schedule='gpipe'"),
])
def test_bad_settings_name_the_field(args, message):
    with pytest.raises(ValueError, match=message):
        simulate(*args)


def test_weight_part_longer_than_backward_is_refused():
    with pytest.raises(ValueError, match="W=3"):
        simulate("zb1p", 4, 8, F=1, B=2, W=3)
