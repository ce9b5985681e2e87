"""Checkers for the pipeline lesson: a bubble by hand, DualPipe's memory, and which schedule wins.

Every expected value is computed by ``dsv3_mini.pipeline_schedule``: the report's Table 2 formulas
(``table2_bubble``, ``table2_activations``) and the step-by-step layout (``simulate``).
"""

from __future__ import annotations

from dsv3_mini.pipeline_schedule import SCHEDULES, simulate, table2_activations, table2_bubble

from .verdict import Verdict, check_choice, check_number

V3_PP = 16  # DeepSeek-V3 trains with 16-way pipeline parallelism (report §3.2)
# Exercise 1 and 2: chunk times in units of one forward chunk; the backward for inputs B − W equals F (Table 2's
# setting, where the simulated DualPipe bubble is the formula)
F, B, W, FB = 1.0, 1.5, 0.5, 2.0
# Exercise 4: which schedule has the shortest step here (nothing overlaps, no weight part to defer)?
RACE = {"pp": 8, "micro_batches": 16, "F": 1.0, "B": 2.0, "W": 0.0, "FB": 3.0}


def check_1f1b_bubble(answer: object) -> Verdict:
    """Exercise 1: the 1F1B bubble with V3's 16 ranks, F = 1, B = 1.5."""
    return check_number(answer, table2_bubble("1f1b", V3_PP, F, B, W), "(PP − 1)(F + B): every rank waits for "
                        "the first forward wave to reach it and for the last backward wave to come back",
                        abs_tol=1e-9, unit="forward-chunk times")


def check_dualpipe_bubble(answer: object) -> Verdict:
    """Exercise 2: the DualPipe bubble with V3's 16 ranks, F = 1, B = 1.5, W = 0.5, F&B = 2."""
    return check_number(answer, table2_bubble("dualpipe", V3_PP, F, B, W, FB),
                        "(PP/2 − 1)(F&B + B − 3W): half the ranks' depth, because micro-batches enter from both ends",
                        rel_tol=1e-9, unit="forward-chunk times")


def check_dualpipe_memory(activations: object, parameter_copies: object) -> Verdict:
    """Exercise 3: per rank, DualPipe's peak activations (micro-batches) and parameter copies at PP = 16."""
    tl = simulate("dualpipe", V3_PP, 2 * V3_PP)
    acts = check_number(activations, max(tl.peak_activations),
                        f"Table 2: one more micro-batch than 1F1B's PP ({table2_activations('1f1b', V3_PP)})",
                        unit="micro-batches")
    if not acts:
        return acts
    return check_number(parameter_copies, tl.parameter_copies,
                        "each rank holds a stage of each direction: stage r and stage PP − 1 − r", unit="copies")


def race_winner() -> str:
    """The schedule with the shortest simulated step in ``RACE`` (1F1B and ZB1P tie when W = 0)."""
    times = {s: simulate(s, RACE["pp"], RACE["micro_batches"], RACE["F"], RACE["B"], RACE["W"], RACE["FB"]).makespan
             for s in SCHEDULES}
    return min(times, key=times.get)


def check_race(answer: object) -> Verdict:
    """Exercise 4: which of "1f1b", "zb1p", "dualpipe" finishes ``RACE`` first?"""
    return check_choice(answer, race_winner(), SCHEDULES,
                        "with W = 0 zero bubble has nothing to move, so ZB1P is 1F1B; compare (PP − 1)(F + B) with "
                        "(PP/2 − 1)(F&B + B): DualPipe's bubble is shorter even when F&B = F + B")
