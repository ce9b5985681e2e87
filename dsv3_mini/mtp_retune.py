"""What RL does to the MTP draft, and the fix: re-tune only the MTP module on the policy's own outputs.

V3 keeps its MTP module for speculative decoding (report §2.2, §5.4.3: 85–90% acceptance of the second token). RL
(``dsv3_mini.grpo``) updates the main model through its own output tokens only; the MTP module never runs in that
loss, so it keeps drafting for the SFT model while the main model it must agree with moves away. The draft's
acceptance (``generate.speculative_generate``'s stats) can fall. The fix measured here: a few AdamW steps on the MTP
loss alone, every other weight frozen (the shared embedding and head included), on sequences the RL policy itself
writes greedily (the text speculative decoding will serve).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .addition_task import MAX_NEW_TOKENS, Pair, prompt_tokens
from .generate import generate, speculative_generate
from .model import DeepSeekV3, cross_entropy


def mtp_acceptance(model: DeepSeekV3, pairs: Sequence[Pair], max_new_tokens: int = MAX_NEW_TOKENS) -> float:
    """Share of MTP drafts the main model accepts, greedy speculative decoding of each prompt (batch 1)."""
    if not pairs:
        raise ValueError("pairs is empty: give at least one (a, b)")
    drafted = accepted = 0
    for row in prompt_tokens(pairs):
        _, stats = speculative_generate(model, row, max_new_tokens)
        drafted, accepted = drafted + stats.drafted, accepted + stats.accepted
    return accepted / drafted if drafted else 0.0


def retune_mtp(model: DeepSeekV3, pairs: Sequence[Pair], steps: int = 20, lr: float = 1e-3,
               batch_size: int = 64, seed: int = 0) -> list[float]:
    """Train only ``model.mtp`` (in place) on the MTP loss of the model's own greedy outputs for ``pairs``.

    Every other parameter keeps its value (``requires_grad`` is restored afterwards). Returns the MTP loss per step.
    """
    if not model.mtp:
        raise ValueError("retune_mtp needs a model with an MTP module (num_nextn_predict_layers >= 1)")
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"steps={steps} and batch_size={batch_size} must be >= 1, lr={lr} > 0")
    model.eval()
    tokens = generate(model, prompt_tokens(pairs), MAX_NEW_TOKENS)  # the policy's own text
    flags = {p: p.requires_grad for p in model.parameters()}
    model.requires_grad_(False)
    mtp_params = list(model.mtp.parameters())
    for p in mtp_params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(mtp_params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    g, losses = torch.Generator().manual_seed(seed), []
    try:
        for _ in range(steps):
            batch = tokens[torch.randperm(len(tokens), generator=g)[:batch_size]]
            inputs, targets = batch[:, :-1], batch[:, 1:]
            with torch.no_grad():
                h0 = model(inputs).hidden_states  # the frozen main model's h^0
            logits = model.mtp_logits(inputs, h0)[0]  # predicts token i + 2 from h_i and token i + 1
            loss = cross_entropy(logits, targets[:, 1:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        for m in model.moe_layers():
            m.step_counts.zero_()  # the MTP block's counts: no bias moves here
    return losses
