"""Checkers for the bug-hunt labs (``course.bug_hunt``): did the learner name the planted bug, and does the fix work?

``check_diagnosis(lab_id, answer)`` compares the learner's answer (one of the keys of ``bug_hunt.BUGS``) with the
bug planted in lab ``lab_id`` (a key of ``bug_hunt.LABS``). ``check_fix(lab_id, fixed)`` installs the learner's
fixed function in a fresh copy of the lab and runs the lab's tool on it (the transformers parity test, the cache-
bytes check, the loss-terms check, the gradient check or the leakage test): the fix is right when the tool finds
nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from . import bug_hunt
from .verdict import Verdict, check_choice

HINTS = {
    "bias-in-weights": "compare with transformers (parity_gap) on a router whose biases are not zero: which "
                       "experts are chosen may use s + b, but what do the gating weights use?",
    "rope-not-applied": "parity_gap says the logits differ; the attention's q_rope and k_rope are split off, but "
                        "are they ever rotated by position?",
    "mla-cache-2dc": "the measured cache holds c_KV (d_c numbers) and one shared RoPE key (d_R numbers) per token "
                     "and layer; what does the formula count?",
    "aux-loss-dropped": "loss_gap: the model computes a balance term; is it part of the loss it trains on?",
    "bias-gets-gradient": "the forward is right (parity passes); look at bias_gradient after one backward pass",
    "mtp-target-leak": "mtp_leak: on random tokens nothing is predictable, yet the MTP loss falls; which token is "
                       "the module scored against, and which token did it get as input?",
}


def check_diagnosis(lab_id: str, answer: object) -> Verdict:
    """Name the bug of lab ``lab_id``: one of ``bug_hunt.BUGS``."""
    bug = bug_hunt.bug_of(lab_id)
    return check_choice(answer, bug, tuple(bug_hunt.BUGS), HINTS[bug])


def check_fix(lab_id: str, fixed: Callable | None) -> Verdict:
    """The learner's ``fixed`` function, installed in a fresh copy of lab ``lab_id``, must pass the lab's tool."""
    bug = bug_hunt.bug_of(lab_id)
    if fixed is None or fixed is ...:
        return Verdict(False, "No fix yet: write the corrected function (same arguments as the planted one) and pass "
                              "it here.")
    if not callable(fixed):
        return Verdict(False, f"Expected a function, got {fixed!r}.")
    try:
        repaired = bug_hunt.repair(bug, fixed)
        value = repaired.detect()
    except ValueError as err:
        return Verdict(False, str(err))
    except Exception as err:  # a learner's fix that crashes gets a verdict, not a traceback
        return Verdict(False, f"The fixed function raised {type(err).__name__}: {err}")
    tool = repaired.detector
    if repaired.passes():
        return Verdict(True, f"Fixed: {tool} finds nothing now ({value:.3g}).")
    return Verdict(False, f"Not fixed yet: {tool} still measures {value:.3g}. Hint: {HINTS[bug]}")
