"""Checkers for lesson 2 (mixture of experts and the router): combinations, group limits and gating weights.

Every expected value is computed by ``dsv3_mini``: counts from a ``ModelConfig``, weights and selections by running
the real ``dsv3_mini.moe.Router``.
"""

from __future__ import annotations

import math

import torch

from dsv3_mini.config import ModelConfig, preset
from dsv3_mini.moe import Router

from .verdict import Verdict, check_choice, check_number

# Exercise 3: the affinities s of one token over 8 experts (the notebook shows the same numbers).
GATE_SCORES = (0.90, 0.20, 0.75, 0.40, 0.85, 0.10, 0.60, 0.30)
GATE_EXPERT = 2
BIAS_OPTIONS = ("rises", "falls", "stays the same")


def combinations(cfg: ModelConfig) -> int:
    """How many different sets of ``num_experts_per_tok`` experts a router without groups can choose."""
    return math.comb(cfg.n_routed_experts, cfg.num_experts_per_tok)


def fine_grained_example() -> ModelConfig:
    """The DeepSeekMoE paper's example: 16 experts with top-2, each expert split into 4 (a quarter as wide)."""
    coarse = preset("tiny").replace(n_routed_experts=16, num_experts_per_tok=2, n_group=1, topk_group=1,
                                    moe_intermediate_size=64)
    m = 4
    return coarse.replace(n_routed_experts=m * coarse.n_routed_experts,
                          num_experts_per_tok=m * coarse.num_experts_per_tok,
                          moe_intermediate_size=coarse.moe_intermediate_size // m)


def check_fine_grained_combinations(answer: object) -> Verdict:
    """Exercise 1: expert combinations after splitting each of 16 experts (top-2) into 4."""
    return check_number(answer, combinations(fine_grained_example()),
                        "splitting by 4 gives 4× as many experts and 4× as many chosen per token; "
                        "count the ways to choose that many (math.comb)", unit="combinations")


def candidates_after_group_limit(cfg: ModelConfig) -> int:
    """Experts a token can still choose from once its ``topk_group`` best groups are kept."""
    return cfg.topk_group * (cfg.n_routed_experts // cfg.n_group)


def check_candidates(answer: object) -> Verdict:
    """Exercise 2: DeepSeek-V3's candidate experts per token after group limiting."""
    return check_number(answer, candidates_after_group_limit(preset("deepseek-v3")),
                        "kept groups × experts per group (n_routed_experts / n_group)", unit="experts")


def gate_router() -> Router:
    """A real Router whose logits equal its input: 8 experts, top-4, no groups, V3's routed scale."""
    v3 = preset("deepseek-v3")
    cfg = preset("tiny").replace(hidden_size=len(GATE_SCORES), n_routed_experts=len(GATE_SCORES),
                                 num_experts_per_tok=4, n_group=1, topk_group=1,
                                 routed_scaling_factor=v3.routed_scaling_factor)
    router = Router(cfg)
    with torch.no_grad():
        router.weight.copy_(torch.eye(len(GATE_SCORES)))  # u_t · e_i = u_t[i]
    return router


@torch.no_grad()
def gate_weight(scores: tuple[float, ...] = GATE_SCORES, expert: int = GATE_EXPERT) -> float:
    """The gating weight g of ``expert`` when the router sees the affinities ``scores`` (0 if not chosen)."""
    router = gate_router()
    routing = router(torch.logit(torch.tensor([scores], dtype=torch.float64)).float())
    chosen = routing.indices[0].tolist()
    return float(routing.weights[0, chosen.index(expert)]) if expert in chosen else 0.0


def check_gate_weight(answer: object) -> Verdict:
    """Exercise 3: the gating weight of one expert, given the affinities of all eight."""
    return check_number(answer, round(gate_weight(), 4),
                        "keep the 4 largest scores, divide the expert's score by their sum, "
                        "then multiply by routed_scaling_factor", rel_tol=1e-3)


@torch.no_grad()
def bias_effect_on_weight(delta: float = 0.05) -> str:
    """What raising a chosen expert's bias does to its gating weight, found by running the Router."""
    router = gate_router()
    x = torch.logit(torch.tensor([GATE_SCORES], dtype=torch.float64)).float()
    before = router(x)
    router.bias[GATE_EXPERT] += delta
    after = router(x)
    slot_before = before.indices[0].tolist().index(GATE_EXPERT)
    slot_after = after.indices[0].tolist().index(GATE_EXPERT)
    g0, g1 = float(before.weights[0, slot_before]), float(after.weights[0, slot_after])
    if math.isclose(g0, g1, rel_tol=1e-6):
        return "stays the same"
    return "rises" if g1 > g0 else "falls"


def check_bias_effect(answer: object) -> Verdict:
    """Exercise 4: the selection bias of a chosen expert rises a little; what happens to its gating weight?"""
    return check_choice(answer, bias_effect_on_weight(), BIAS_OPTIONS,
                        "look at which quantity the bias b enters: the selection (s + b), or the weights")
