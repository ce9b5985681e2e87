"""One transformer block of DeepSeek-V3, shared by the main model (``model.py``) and the MTP modules (``mtp.py``).

Pre-norm: x = x + Attention(RMSNorm(x)); x = x + FFN(RMSNorm(x)). The FFN is a dense SwiGLU in the first
``first_k_dense_replace`` blocks and DeepSeekMoE after them (V3 report §2.1; 3 dense + 58 MoE blocks in V3); an MTP
module's block is an MoE block when the main model has MoE layers.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import make_attention
from .config import ModelConfig
from .kv_cache import KVCache
from .moe import MoE, SwiGLU


class Block(nn.Module):
    """One transformer block: (batch, seq, hidden) -> (batch, seq, hidden)."""

    def __init__(self, cfg: ModelConfig, moe: bool):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.attn = make_attention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.ffn = MoE(cfg) if moe else SwiGLU(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, layer)
        return x + self.ffn(self.ffn_norm(x))
