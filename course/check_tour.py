"""Checkers for lesson 0 (the tour): counting DeepSeek-V3's parameters and cache from its configuration."""

from __future__ import annotations

from dsv3_mini.config import preset
from dsv3_mini.kv_cache import bytes_per_token
from dsv3_mini.params import count_params

from .verdict import Verdict, check_number


def check_routed_expert_params(answer: object) -> Verdict:
    """Exercise 1: the parameters of all routed experts of DeepSeek-V3."""
    return check_number(answer, count_params(preset("deepseek-v3")).breakdown["routed_experts"],
                        "MoE layers × experts per layer × 3 matrices × hidden × expert width")


def check_kv_bytes_per_token(answer: object) -> Verdict:
    """Exercise 2: MLA cache bytes per token over all layers, in bf16."""
    return check_number(answer, bytes_per_token(preset("deepseek-v3")),
                        "every layer caches its own latent and RoPE key; 2 bytes per number", unit="bytes")


def check_activated_drop(answer: object) -> Verdict:
    """Exercise 3: how many fewer parameters a token activates with 4 routed experts instead of 8."""
    v3 = preset("deepseek-v3")
    drop = count_params(v3).active - count_params(v3.replace(num_experts_per_tok=4)).active
    return check_number(answer, drop, "4 fewer experts in each of the 58 MoE layers")
