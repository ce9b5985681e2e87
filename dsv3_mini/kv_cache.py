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

    Preallocated and written in place (as nanochat's engine does): each layer owns buffers of ``capacity`` positions
    and a length; ``update`` copies only the new positions into the buffers and returns views of the filled part, so
    a decoding step costs a write of one position, not a copy of the whole cache (``torch.cat`` would copy all t
    cached positions, every layer, every token: O(t²) bytes moved over a generation). A cache built without a
    ``capacity`` (or one that runs out) grows by doubling, so the copies stay O(t) in total.
    """

    def __init__(self, num_layers: int, capacity: int | None = None):
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity={capacity} must be None (grow as needed) or a number of positions >= 1")
        self.capacity = capacity
        self._buffers: list[tuple[torch.Tensor, ...] | None] = [None] * num_layers
        self._lengths = [0] * num_layers

    def __len__(self) -> int:
        """Number of cached positions."""
        return self._lengths[0]

    @property
    def layers(self) -> list[tuple[torch.Tensor, ...] | None]:
        """Per layer, views of the filled positions, (batch, len, ...) each; None for a layer never written."""
        return [None if b is None else tuple(x[:, :n] for x in b) for b, n in zip(self._buffers, self._lengths,
                                                                                  strict=True)]

    def _allocate(self, layer: int, need: int, new: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Buffers of layer ``layer`` with room for ``need`` positions, keeping what is cached."""
        old, length = self._buffers[layer], self._lengths[layer]
        size = max(need, self.capacity or 0, 2 * old[0].shape[1] if old is not None else 0)
        bufs = tuple(torch.empty(x.shape[0], size, *x.shape[2:], dtype=x.dtype, device=x.device) for x in new)
        if old is not None and length:
            for b, o in zip(bufs, old, strict=True):
                b[:, :length] = o[:, :length]
        self._buffers[layer] = bufs
        return bufs

    def update(self, layer: int, *new: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Write new positions (batch, n, ...) after those of layer ``layer``; return views of all of them."""
        bufs, start = self._buffers[layer], self._lengths[layer]
        end = start + new[0].shape[1]
        if bufs is not None and (bufs[0].shape[0] != new[0].shape[0] or len(bufs) != len(new)):
            raise ValueError(f"layer {layer} caches batch size {bufs[0].shape[0]} and {len(bufs)} tensors; got batch "
                             f"size {new[0].shape[0]} and {len(new)} tensors (use a new cache for another batch)")
        if bufs is None or end > bufs[0].shape[1]:
            bufs = self._allocate(layer, end, new)
        for b, x in zip(bufs, new, strict=True):
            b[:, start:end] = x
        self._lengths[layer] = end
        return tuple(b[:, :end] for b in bufs)

    def crop(self, length: int) -> None:
        """Forget every position from ``length`` on (speculative decoding rolls back rejected drafts); O(1)."""
        if length < 0:
            raise ValueError(f"length={length} must be >= 0")
        self._lengths = [min(n, length) for n in self._lengths]

    def nbytes(self) -> int:
        """Bytes of the positions the cache holds (what the formulas count; ``allocated_bytes`` adds the free room)."""
        return sum(x[:, :n].numel() * x.element_size() for b, n in zip(self._buffers, self._lengths, strict=True)
                   if b is not None for x in b)

    def allocated_bytes(self) -> int:
        """Bytes of the buffers, filled or not."""
        return sum(x.numel() * x.element_size() for b in self._buffers if b is not None for x in b)
