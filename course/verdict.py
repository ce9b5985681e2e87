"""The verdict every checker returns, and the two comparisons they are built from.

A checker compares a learner's answer with the value the code computes and prints a verdict; a wrong answer gets
a hint that points at the idea, not the number. Checkers never raise on a wrong answer, so a notebook keeps running.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    correct: bool
    message: str

    def __bool__(self) -> bool:
        return self.correct

    def _repr_markdown_(self) -> str:
        return ("✅ " if self.correct else "❌ ") + self.message

    def __repr__(self) -> str:
        return ("✅ " if self.correct else "❌ ") + self.message


def check_number(answer: object, expected: float, hint: str, rel_tol: float = 0.0, abs_tol: float = 0.0,
                 unit: str = "") -> Verdict:
    """Compare a numeric answer with ``expected`` (exactly, or within a tolerance)."""
    if answer is None or answer is ...:
        return Verdict(False, "No answer yet: replace the `...` with your answer. " + hint)
    try:
        value = float(answer)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return Verdict(False, f"Expected a number, got {answer!r}. {hint}")
    if math.isclose(value, expected, rel_tol=rel_tol, abs_tol=abs_tol):
        return Verdict(True, f"Correct: {expected:,}{(' ' + unit) if unit else ''}.")
    return Verdict(False, f"Not yet ({value:,} is not it). Hint: {hint}")


def check_choice(answer: object, expected: str, options: tuple[str, ...], hint: str) -> Verdict:
    """Compare a multiple-choice answer (case-insensitive) with ``expected``; ``options`` lists the allowed ones."""
    if answer is None or answer is ...:
        return Verdict(False, f"No answer yet: choose one of {', '.join(map(repr, options))}.")
    key = str(answer).strip().lower()
    if key not in {o.lower() for o in options}:
        return Verdict(False, f"{answer!r} is not one of {', '.join(map(repr, options))}.")
    if key == expected.lower():
        return Verdict(True, f"Correct: {expected}.")
    return Verdict(False, f"Not yet. Hint: {hint}")
