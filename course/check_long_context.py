"""Checkers for lesson 10 (long context: RoPE past the training length, linear / NTK / YaRN, the extension).

Each expected value comes from the library: the frequencies and the amplitude of ``dsv3_mini.rope``, its cos/sin
tables, and the KV-cache formula of ``dsv3_mini.kv_cache``. Nothing here re-derives RoPE arithmetic by hand.
"""

from __future__ import annotations

import torch

from dsv3_mini.config import preset
from dsv3_mini.kv_cache import cache_bytes
from dsv3_mini.long_context import PasskeyConfig
from dsv3_mini.rope import RotaryEmbedding, inverse_frequencies, yarn_ramp

from .verdict import Verdict, check_number


def ntk_base(dim: int = 8, theta: float = 10000.0, factor: float = 4.0) -> float:
    """The base the NTK-aware frequencies of ``dsv3_mini.rope`` use, read back from its θ_1 = base^(-2/dim)."""
    inv, _ = inverse_frequencies(dim, theta, {"rope_type": "ntk", "factor": factor})
    return float(inv[1].double() ** (-dim / 2))


def linear_matching_position(position: int = 400, factor: float = 4.0) -> int:
    """The position of plain RoPE whose rotation equals ``position`` under linear interpolation at ``factor``
    (searched in the two cos/sin tables of the tiny model's 8 RoPE dimensions)."""
    cfg = preset("tiny").replace(max_position_embeddings=1024)
    scaled = RotaryEmbedding(8, cfg.replace(rope_scaling={"rope_type": "linear", "factor": factor}))
    plain = RotaryEmbedding(8, cfg)
    target = torch.cat([scaled.cos[position], scaled.sin[position]])
    table = torch.cat([plain.cos, plain.sin], dim=1)
    return int((table - target).abs().amax(dim=1).argmin())


def yarn_temperature(factor: float = 40.0) -> float:
    """√t, the amplitude YaRN gives cos and sin (so t multiplies every attention logit), at scale ``factor``."""
    _, amplitude = inverse_frequencies(64, 10000.0, {"factor": factor, "original_max_position_embeddings": 4096})
    return amplitude


def kept_pairs() -> int:
    """How many of DeepSeek-V3's 32 RoPE pairs (d_h^R = 64, theta 10,000, pre-trained at 4K) YaRN leaves at their
    original frequency (ramp 0)."""
    cfg = preset("deepseek-v3")
    original = cfg.rope_scaling["original_max_position_embeddings"]
    return int((yarn_ramp(cfg.qk_rope_head_dim, cfg.rope_theta, original, cfg.rope_scaling["beta_fast"],
                          cfg.rope_scaling["beta_slow"]) == 0).sum())


def passkey_cache_bytes(tokens: int = 1024) -> int:
    """BF16 KV-cache bytes of the passkey model (MLA) holding ``tokens`` tokens, batch 1."""
    return cache_bytes(PasskeyConfig().model_config(), tokens)


def check_ntk_base(answer: object) -> Verdict:
    """Exercise 1: the base theta' of NTK-aware scaling for dim 8, theta 10,000, s = 4."""
    return check_number(answer, ntk_base(), "NTK-aware raises the base: theta' = theta · s^(dim/(dim−2))",
                        rel_tol=1e-3)


def check_linear_position(answer: object) -> Verdict:
    """Exercise 2: position 400 under linear interpolation at s = 4 turns like which plain position?"""
    return check_number(answer, linear_matching_position(),
                        "linear interpolation divides every frequency by s: angle = (p / s) · θ_j")


def check_yarn_temperature(answer: object) -> Verdict:
    """Exercise 3: V3's √t at s = 40."""
    return check_number(answer, yarn_temperature(), "√t = 0.1 · ln(s) + 1", rel_tol=1e-3)


def check_kept_pairs(answer: object) -> Verdict:
    """Exercise 4: the pairs of V3's 32 that YaRN keeps unchanged."""
    return check_number(answer, kept_pairs(),
                        "a pair keeps its frequency when it turns more than β_fast = 32 times within the original "
                        "context: count the pairs whose turns in 4,096 positions, 4096 · θ_j / 2π with "
                        "θ_j = 10000^(−2j/64), exceed 32", unit="pairs")


def check_cache_bytes(answer: object) -> Verdict:
    """Exercise 5: the passkey model's BF16 KV cache at 1,024 tokens."""
    return check_number(answer, passkey_cache_bytes(),
                        "MLA caches d_c + d_R numbers per token and layer (kv_lora_rank + qk_rope_head_dim), "
                        "2 bytes each, in every layer", unit="bytes")
