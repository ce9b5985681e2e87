"""Checkers for lesson 3 (load balancing): MaxVio, the sign rule, its proportional variant, and which policy
puts its own gradient on the router.

The exercise data live here (``LOAD``, ``BIAS``, ``GAMMA``) so the notebook and the checkers read the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import torch

from dsv3_mini.balancing import POLICIES, max_violation, proportional_update, router_gradients, sign_update
from dsv3_mini.config import preset
from dsv3_mini.data import generate_corpus
from dsv3_mini.model import DeepSeekV3

from .verdict import Verdict, check_choice, check_number

LOAD = (12, 4, 6, 10, 8, 8)  # tokens routed to each of 6 experts in one step
BIAS = (0.0, 0.002, -0.001, 0.0, 0.001, 0.0)  # their selection biases before the update
GAMMA = 0.001  # bias update speed γ (V3's value)


def _load() -> torch.Tensor:
    return torch.tensor(LOAD)


def _bias() -> torch.Tensor:
    return torch.tensor(BIAS, dtype=torch.float64)


def check_max_violation(answer: object) -> Verdict:
    """Exercise 1: MaxVio of ``LOAD``."""
    return check_number(answer, max_violation(_load()),
                        "MaxVio = (largest load − mean load) / mean load; the mean is over all experts",
                        abs_tol=1e-6)


def _check_vector(answer: object, expected: torch.Tensor, hint: str, abs_tol: float) -> Verdict:
    """Compare a sequence of numbers with ``expected`` element by element."""
    if answer is None or answer is ...:
        return Verdict(False, "No answer yet: replace the `...` with a list of numbers. " + hint)
    try:
        value = torch.as_tensor(answer, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError):
        return Verdict(False, f"Expected a list of {len(expected)} numbers, got {answer!r}. {hint}")
    if value.shape != expected.shape:
        return Verdict(False, f"Expected {len(expected)} numbers (one per expert), got {value.numel()}. {hint}")
    shown = "[" + ", ".join(f"{x:g}" for x in expected.tolist()) + "]"
    if torch.allclose(value, expected, rtol=0.0, atol=abs_tol):
        return Verdict(True, f"Correct: {shown}.")
    wrong = [i for i in range(len(expected)) if abs(value[i] - expected[i]) > abs_tol]
    return Verdict(False, f"Not yet (experts {wrong} are off). Hint: {hint}")


def check_sign_update(answer: object) -> Verdict:
    """Exercise 2: the biases after one sign-rule update with ``LOAD``, ``BIAS`` and ``GAMMA``."""
    expected = sign_update(_bias(), _load(), GAMMA).round(decimals=9)  # drop float32 noise of γ from the display
    return _check_vector(answer, expected,
                         "each bias moves by exactly γ towards balance: down if the expert is above the mean load, "
                         "up if below, not at all if exactly at the mean", abs_tol=1e-9)


def check_proportional_update(answer: object) -> Verdict:
    """Exercise 3: expert 0's bias after one *proportional* update (the variant, not V3's rule)."""
    expected = round(float(proportional_update(_bias(), _load(), GAMMA)[0]), 9)
    return check_number(answer, expected,
                        "the step is γ times the relative violation (mean − load) / mean, with its sign",
                        abs_tol=1e-9)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Tiny tensors: more torch threads only add overhead (a lot on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _router_gradient_ratio(policy: str) -> float:
    """‖∇ balance term‖ / ‖∇ language-modelling loss‖ on the router weights of a fresh tiny model, one batch."""
    with _one_thread(), torch.random.fork_rng():  # leaves the learner's random state as it was
        return _gradient_ratio(policy)


def _gradient_ratio(policy: str) -> float:
    torch.manual_seed(0)
    model = DeepSeekV3(preset("tiny").replace(balance=policy)).train()
    tokens = generate_corpus(4 * 65, seed=0)[0][: 4 * 65].view(4, 65)
    lm, bal, _ = router_gradients(model, tokens[:, :-1], tokens[:, 1:])
    return float(bal.norm() / lm.norm())


@cache
def _policy_with_largest_router_gradient() -> str:
    return max(POLICIES, key=_router_gradient_ratio)


def check_gradient_policy(answer: object) -> Verdict:
    """Exercise 4: the policy whose balancing pushes hardest on the router weights through the gradient."""
    expected = _policy_with_largest_router_gradient()
    return check_choice(answer, expected, POLICIES,
                        "which mechanism is a term of the loss with a weight big enough to balance? "
                        "A buffer that a rule sets is not differentiated")
