"""Rotary position embedding (RoPE) and three ways to read past the training length: linear, NTK-aware, YaRN.

DeepSeek-V3 rotates *pairs* of neighbouring dimensions, (x0, x1), (x2, x3), ..., each pair by its own frequency —
the complex-number form of RoPE used in DeepSeek's inference code. We write the rotated pairs out de-interleaved
(all first halves, then all second halves), exactly as transformers does; since queries and keys get the same
layout, no attention score changes.

YaRN (arXiv 2309.00071, used by V3 to go 4K → 32K → 128K) blends two sets of frequencies: high-frequency dimensions
keep their original frequency (extrapolation), low-frequency ones are divided by the scale s (interpolation), with a
linear ramp between the β_fast and β_slow boundaries. The attention temperature sqrt(t) = 0.1·ln(s) + 1 enters the
softmax scale (see ``ModelConfig.softmax_scale``).

The methods, chosen by ``rope_scaling["rope_type"]`` (``None``: plain RoPE, θ_j = theta^(-2j/dim)), for a scale s:

- ``"linear"`` (position interpolation, arXiv 2306.15595): every frequency divided by s, θ'_j = θ_j / s — position p
  is read as p / s, so s × the training length lands on angles the model has seen, at s times finer spacing;
- ``"ntk"`` (NTK-aware scaling): the base raised, theta' = theta · s^(dim/(dim−2)) — the fastest pair keeps its
  frequency, the slowest is divided by exactly s, those in between by less;
- ``"yarn"``: the ramp above between the two, plus the temperature.

V3's context extension (report §4.3): after pre-training at 4K, two phases of 1,000 steps each, 4K → 32K with a batch
of 1,920 sequences, then → 128K with a batch of 480, both at learning rate 7.3e-6 and with the same YaRN
hyper-parameters, s = 40, α = 1, β = 32 (the released config's ``factor``, ``beta_slow`` and ``beta_fast``), applied
to the decoupled RoPE dimensions only. This module implements the frequencies and the temperature;
``dsv3_mini.long_context`` runs the two phases at mini scale on a passkey-retrieval model.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .config import ModelConfig, yarn_mscale


def inverse_frequencies(
    dim: int, theta: float, rope_scaling: dict[str, Any] | None = None
) -> tuple[torch.Tensor, float]:
    """Per-pair angular frequencies θ_j = theta^(-2j/dim), shape ``(dim // 2,)``, and the cos/sin amplitude factor.

    ``rope_scaling`` (validated by ``ModelConfig``) picks the method: ``"linear"`` divides every θ_j by s,
    ``"ntk"`` uses the base theta · s^(dim/(dim−2)), ``"yarn"`` (the default when no ``rope_type`` is given, as in
    DeepSeek-V3's config) blends θ_j (extrapolate) and θ_j / s (interpolate) and returns its temperature as the
    amplitude. Only YaRN changes the amplitude (1.0 otherwise).
    """
    kind = rope_type(rope_scaling)
    factor = float(rope_scaling["factor"]) if rope_scaling is not None else 1.0
    if kind == "ntk":
        theta = theta * factor ** (dim / (dim - 2))  # theta' = theta · s^(dim/(dim−2))
    pos_freqs = theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim)
    inv_freq = 1.0 / pos_freqs
    if kind in (None, "ntk"):
        return inv_freq, 1.0
    if kind == "linear":
        return inv_freq / factor, 1.0  # position p read as p / s
    original_max = rope_scaling["original_max_position_embeddings"]
    beta_fast = rope_scaling.get("beta_fast") or 32
    beta_slow = rope_scaling.get("beta_slow") or 1
    mscale, mscale_all_dim = rope_scaling.get("mscale"), rope_scaling.get("mscale_all_dim")
    if mscale and mscale_all_dim:
        attention_factor = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
    else:
        attention_factor = yarn_mscale(factor)
    extrapolation = 1 - yarn_ramp(dim, theta, original_max, beta_fast, beta_slow)  # 1: keep θ_j; 0: θ_j / s
    inv_freq = (inv_freq / factor) * (1 - extrapolation) + inv_freq * extrapolation
    return inv_freq, float(attention_factor)


def rope_type(rope_scaling: dict[str, Any] | None) -> str | None:
    """The method of a ``rope_scaling`` dict: None (plain RoPE), "linear", "ntk" or "yarn" (no ``rope_type``: YaRN)."""
    if rope_scaling is None:
        return None
    return rope_scaling.get("rope_type", rope_scaling.get("type", "yarn"))


def yarn_ramp(dim: int, theta: float, original_max: int, beta_fast: float = 32, beta_slow: float = 1) -> torch.Tensor:
    """YaRN's interpolation weight per pair, shape ``(dim // 2,)``: 0 keeps θ_j (pairs that turn more than β_fast
    times within the original context), 1 divides it by s (fewer than β_slow turns), linear in between."""

    def correction_dim(num_rotations: float) -> float:
        # the dimension whose wavelength fits `num_rotations` times into the original context
        return dim * math.log(original_max / (num_rotations * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    return torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)


class RotaryEmbedding(nn.Module):
    """Precomputed cos/sin tables, shape ``(max_position_embeddings, dim // 2)``, for positions 0..max-1."""

    def __init__(self, dim: int, cfg: ModelConfig):
        super().__init__()
        inv_freq, amplitude = inverse_frequencies(dim, cfg.rope_theta, cfg.rope_scaling)
        freqs = torch.arange(cfg.max_position_embeddings, dtype=torch.float32)[:, None] * inv_freq
        self.max_positions = cfg.max_position_embeddings
        self.register_buffer("cos", freqs.cos() * amplitude, persistent=False)
        self.register_buffer("sin", freqs.sin() * amplitude, persistent=False)

    @classmethod
    def for_model(cls, cfg: ModelConfig) -> RotaryEmbedding:
        """The tables a model of ``cfg`` rotates with: MLA rotates only its decoupled ``qk_rope_head_dim`` part of
        each query and the shared key k_R; MHA / GQA / MQA rotate whole heads of ``std_head_dim``."""
        return cls(cfg.qk_rope_head_dim if cfg.attention == "mla" else cfg.std_head_dim, cfg)

    def forward(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for positions ``start .. start+length-1``, each ``(length, dim // 2)``."""
        if start + length > self.max_positions:
            raise ValueError(
                f"position {start + length - 1} is beyond max_position_embeddings={self.max_positions}; "
                "use a shorter sequence or a config with a larger max_position_embeddings"
            )
        return self.cos[start : start + length], self.sin[start : start + length]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x_2j, x_2j+1) of ``x`` (..., seq, dim) by angle position·θ_j; cos/sin are (seq, dim // 2).

    Output layout: the rotated first elements of all pairs, then the rotated second elements.
    """
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
