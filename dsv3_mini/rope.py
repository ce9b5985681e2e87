"""Rotary position embedding (RoPE) with YaRN context extension.

DeepSeek-V3 rotates *pairs* of neighbouring dimensions, (x0, x1), (x2, x3), ..., each pair by its own frequency —
the complex-number form of RoPE used in DeepSeek's inference code. We write the rotated pairs out de-interleaved
(all first halves, then all second halves), exactly as transformers does; since queries and keys get the same
layout, no attention score changes.

YaRN (arXiv 2309.00071, used by V3 to go 4K → 32K → 128K) blends two sets of frequencies: high-frequency dimensions
keep their original frequency (extrapolation), low-frequency ones are divided by the scale s (interpolation), with a
linear ramp between the β_fast and β_slow boundaries. The attention temperature sqrt(t) = 0.1·ln(s) + 1 enters the
softmax scale (see ``ModelConfig.softmax_scale``).

V3's context extension (report §4.3): after pre-training at 4K, two phases of 1,000 steps each, 4K → 32K with a batch
of 1,920 sequences, then → 128K with a batch of 480, both at learning rate 7.3e-6 and with the same YaRN
hyper-parameters, s = 40, α = 1, β = 32 (the released config's ``factor``, ``beta_slow`` and ``beta_fast``), applied
to the decoupled RoPE dimensions only. This module implements the frequencies and the temperature; the course does not
run the extension phases (its presets train at short contexts without YaRN).
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

    With YaRN, frequencies are blended between θ_j (extrapolate) and θ_j / s (interpolate).
    """
    pos_freqs = theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim)
    inv_freq = 1.0 / pos_freqs
    if rope_scaling is None:
        return inv_freq, 1.0
    factor = float(rope_scaling["factor"])
    original_max = rope_scaling["original_max_position_embeddings"]
    beta_fast = rope_scaling.get("beta_fast") or 32
    beta_slow = rope_scaling.get("beta_slow") or 1
    mscale, mscale_all_dim = rope_scaling.get("mscale"), rope_scaling.get("mscale_all_dim")
    if mscale and mscale_all_dim:
        attention_factor = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
    else:
        attention_factor = yarn_mscale(factor)

    def correction_dim(num_rotations: float) -> float:
        # the dimension whose wavelength fits `num_rotations` times into the original context
        return dim * math.log(original_max / (num_rotations * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp  # 1: keep the original frequency; 0: divide it by s
    inv_freq = (inv_freq / factor) * (1 - extrapolation) + inv_freq * extrapolation
    return inv_freq, float(attention_factor)


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
