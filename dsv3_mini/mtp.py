"""Multi-Token Prediction (V3 report §2.2, equations 21-25).

Module k (k = 1..D) predicts the token k+1 steps ahead, keeping the causal chain: at position i it combines the
previous depth's representation with the embedding of token t_{i+k},
    h'_i^k = M_k [RMSNorm(h_i^{k-1}); RMSNorm(Emb(t_{i+k}))]          (M_k: a 2d -> d projection)
    h_{1:T-k}^k = TRM_k(h'_{1:T-k}^k)                                 (one transformer block, causal)
    P_{i+k+1}^k = OutHead(h_i^k)                                      (the main model's head, shared)
h^0 is the main model's final hidden state. The embedding and the output head are shared with the main model;
the loss is L_MTP = λ/D Σ_k CE_k. At inference the modules can be dropped, or module 1 drafts a token for
speculative decoding (``dsv3_mini.generate.speculative_generate``).
Size of V3's one module: 11.6B by ``count_params(cfg).mtp`` (block, projection and norms); the release's
README_WEIGHTS.md states 11.5B unique parameters, its shared embedding and head excluded.
"""

from __future__ import annotations

import torch
from torch import nn

from .block import Block
from .config import ModelConfig
from .kv_cache import KVCache


class MTPModule(nn.Module):
    """One MTP depth: (h_prev, emb_next) each (batch, seq, hidden) -> h (batch, seq, hidden).

    The returned h feeds the next depth; ``self.norm(h)`` feeds the shared head (V3's release keeps such a norm in
    its ``shared_head``). Its block is an MoE block when the main model has MoE layers, as in V3.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.hidden_size
        self.hnorm = nn.RMSNorm(d, eps=cfg.rms_norm_eps)
        self.enorm = nn.RMSNorm(d, eps=cfg.rms_norm_eps)
        # M_k, applied to [RMSNorm(h); RMSNorm(Emb)] in eq. 21's order. Engines that load DeepSeek's released weights
        # (its eh_proj) concatenate [embedding; hidden], the reverse: map the two halves of the matrix accordingly.
        self.proj = nn.Linear(2 * d, d, bias=False)
        self.block = Block(cfg, moe=cfg.num_moe_layers > 0)
        self.norm = nn.RMSNorm(d, eps=cfg.rms_norm_eps)

    def forward(self, h_prev: torch.Tensor, emb_next: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None) -> torch.Tensor:
        x = self.proj(torch.cat([self.hnorm(h_prev), self.enorm(emb_next)], dim=-1))
        return self.block(x, cos, sin, cache, 0)
