"""The KV cache: what decoding keeps per token, measured (``KVCache``) and computed (``bytes_per_token``).

Per token and per layer a cache holds (DeepSeek-V2 report, Table 1):

- MHA: 2·n_h·d_h numbers (a key and a value per head),
- GQA: 2·n_g·d_h (one key/value per group of query heads),
- MQA: 2·d_h (one key/value for all heads),
- MLA: d_c + d_R (the compressed latent c_KV and the shared RoPE key k_R) — 512 + 64 = 576 in DeepSeek-V3.

``formula_and_measured_bytes`` runs a model into a fresh cache and puts the two side by side.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig


def elements_per_token_per_layer(cfg: ModelConfig) -> int:
    """Numbers cached per token in one layer for the config's attention kind."""
    if cfg.attention == "mla":
        return cfg.kv_lora_rank + cfg.qk_rope_head_dim  # c_KV and k_R
    return 2 * cfg.kv_heads * cfg.std_head_dim  # K and V of each KV head


def bytes_per_token(cfg: ModelConfig, dtype_bytes: int = 2) -> int:
    """Bytes of KV cache per token over all layers (``dtype_bytes=2`` for BF16). DeepSeek-V3: 70,272."""
    if dtype_bytes < 1:
        raise ValueError(f"dtype_bytes={dtype_bytes} must be a positive number of bytes (1 FP8, 2 BF16, 4 FP32)")
    return cfg.num_hidden_layers * elements_per_token_per_layer(cfg) * dtype_bytes


def naive_mla_bytes_per_token(cfg: ModelConfig, dtype_bytes: int = 2) -> int:
    """Bytes per token if MLA cached its expanded per-head keys (d_h + d_R) and values instead of the latent.

    DeepSeek-V3: 61 × 128 × (192 + 128) × 2 = 4,997,120 bytes — what absorbing W_UK and W_UV avoids.
    """
    return cfg.num_hidden_layers * cfg.num_attention_heads * (cfg.qk_head_dim + cfg.v_head_dim) * dtype_bytes


def cache_bytes(cfg: ModelConfig, tokens: int, batch: int = 1, dtype_bytes: int = 2) -> int:
    """Total cache bytes for ``batch`` sequences of ``tokens`` tokens."""
    return batch * tokens * bytes_per_token(cfg, dtype_bytes)


def formula_and_measured_bytes(model: nn.Module, tokens: torch.Tensor) -> tuple[int, int]:
    """(formula, measured) cache bytes after ``model`` reads ``tokens`` (batch, seq) into a fresh cache.

    formula = batch × seq × ``bytes_per_token(model.cfg)`` at the element size of the model's parameters; measured =
    ``KVCache.nbytes()`` of ``model.new_cache()`` after one forward pass without gradients. Equal for every attention
    kind: the formula counts exactly what the attention layers keep.
    """
    cache = model.new_cache()
    with torch.no_grad():
        model(tokens, cache=cache)
    dtype_bytes = next(model.parameters()).element_size()
    return tokens.numel() * bytes_per_token(model.cfg, dtype_bytes), cache.nbytes()


class KVCache:
    """Per-layer cached tensors, all laid out ``(batch, seq, ...)`` so that the sequence is dimension 1.

    MLA layers store ``(c_kv, k_rope)``; standard attention stores ``(k, v)`` of shape (batch, seq, kv_heads, d_h).
    """

    def __init__(self, num_layers: int):
        self.layers: list[tuple[torch.Tensor, ...] | None] = [None] * num_layers

    def __len__(self) -> int:
        """Number of cached positions."""
        first = self.layers[0]
        return 0 if first is None else first[0].shape[1]

    def update(self, layer: int, *new: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Append new positions to layer ``layer`` and return everything cached there."""
        old = self.layers[layer]
        merged = new if old is None else tuple(torch.cat([o, n], dim=1) for o, n in zip(old, new, strict=True))
        self.layers[layer] = merged
        return merged

    def crop(self, length: int) -> None:
        """Forget every position from ``length`` on (speculative decoding rolls back rejected drafts)."""
        self.layers = [None if t is None else tuple(x[:, :length] for x in t) for t in self.layers]

    def nbytes(self) -> int:
        """Bytes the cache's tensors actually hold."""
        return sum(x.numel() * x.element_size() for t in self.layers if t is not None for x in t)
