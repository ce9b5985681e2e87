"""Checkers for lesson 5 (multi-token prediction and speculative decoding).

Each expected value comes from running the library: a tiny model's MTP loss reveals which token a depth scores, its
logits count the scored predictions, a forward hook counts the main model's forward passes in ``generate``. The
global random state is restored afterwards, so checking an answer never changes the numbers of later cells.
"""

from __future__ import annotations

import torch

from dsv3_mini.config import preset
from dsv3_mini.generate import generate
from dsv3_mini.model import DeepSeekV3, cross_entropy

from .verdict import Verdict, check_number


def _tiny_model(depth: int = 1) -> DeepSeekV3:
    torch.manual_seed(0)
    return DeepSeekV3(preset("tiny").replace(num_nextn_predict_layers=depth)).eval()


def mtp_target_offset(seq_len: int = 12) -> int:
    """The j for which the depth-1 MTP module at position i is scored against token t_{i+j}.

    Found, not assumed: the model's own ``mtp_losses[0]`` is compared with the cross-entropy of its depth-1 logits
    against the stream shifted by j = 1, 2, 3.
    """
    with torch.random.fork_rng():
        model = _tiny_model()
        stream = torch.randint(0, 256, (1, seq_len + 3))
        tokens, targets = stream[:, :seq_len], stream[:, 1 : seq_len + 1]
        with torch.no_grad():
            out = model(tokens, targets=targets)
            logits = model.mtp_logits(tokens, out.hidden_states)[0]  # (1, seq_len - 1, vocab)
    n = logits.shape[1]
    for j in (1, 2, 3):
        if torch.allclose(cross_entropy(logits, stream[:, j : j + n]), out.mtp_losses[0]):
            return j
    raise RuntimeError("no shift of the stream reproduces the model's MTP loss")  # a library bug, not a wrong answer


def scored_predictions(seq_len: int, depth: int) -> int:
    """How many (position, target) pairs the training loss scores: the main head's plus every MTP depth's."""
    with torch.random.fork_rng():
        model = _tiny_model(depth)
        tokens = torch.randint(0, 256, (1, seq_len))
        with torch.no_grad():
            out = model(tokens)
            mtp = model.mtp_logits(tokens, out.hidden_states)
    return out.logits.shape[1] + sum(lg.shape[1] for lg in mtp)


def greedy_forward_passes(new_tokens: int) -> int:
    """Main-model forward passes that plain ``generate`` makes for ``new_tokens`` tokens (counted with a hook)."""
    calls: list[int] = []
    with torch.random.fork_rng():
        model = _tiny_model()
        handle = model.register_forward_hook(lambda *_: calls.append(1))
        try:
            generate(model, [1, 2, 3], new_tokens, temperature=0.0)
        finally:
            handle.remove()
    return len(calls)


def check_mtp_target(answer: object) -> Verdict:
    """Exercise 1: the depth-1 module at position i predicts t_{i + answer}."""
    return check_number(answer, mtp_target_offset(),
                        "the module at position i already reads the embedding of t_{i+1}; "
                        "it predicts the token after that one")


def check_tokens_per_forward(answer: object, acceptance: float = 0.85) -> Verdict:
    """Exercise 2: expected new tokens per main-model forward with one draft accepted with probability p.

    Every verification forward yields the main model's own next token for sure, plus the draft when it is
    accepted: 1 + p on average.
    """
    return check_number(answer, 1.0 + acceptance,
                        "one verification forward always gives one token; what does an accepted draft add, "
                        "on average?", abs_tol=1e-9, unit="tokens per forward")


def check_scored_predictions(answer: object, seq_len: int = 16, depth: int = 3) -> Verdict:
    """Exercise 3: (position, target) pairs scored by the main loss and D MTP losses on seq_len tokens."""
    return check_number(answer, scored_predictions(seq_len, depth),
                        "the main head scores every position; depth k has no target for its last k positions")


def check_greedy_forwards(answer: object, new_tokens: int = 48) -> Verdict:
    """Exercise 4: main-model forward passes of plain greedy decoding for ``new_tokens`` new tokens."""
    return check_number(answer, greedy_forward_passes(new_tokens),
                        "the prefill over the prompt already gives the first new token; "
                        "each later token needs one more forward", unit="forward passes")
