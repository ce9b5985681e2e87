"""The DeepSeek-V3 model: embedding, ``first_k_dense_replace`` dense blocks, MoE blocks, final norm, output head.

Each block is pre-norm: x = x + Attention(RMSNorm(x)); x = x + FFN(RMSNorm(x)), where FFN is a SwiGLU in the first
``first_k_dense_replace`` blocks and DeepSeekMoE after them (V3 report §2.1; 3 dense + 58 MoE blocks in V3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .attention import make_attention
from .config import ModelConfig
from .kv_cache import KVCache
from .moe import MoE, SwiGLU
from .rope import RotaryEmbedding


@dataclass
class ModelOutput:
    """``logits`` (batch, seq, vocab); ``loss`` the mean next-token cross-entropy (None without targets);
    ``hidden_states`` (batch, seq, hidden) the final normed states that the head reads (MTP starts from them)."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None
    extra_losses: dict[str, torch.Tensor] = field(default_factory=dict)


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


class DeepSeekV3(nn.Module):
    """A DeepSeek-V3-shaped language model built from a ``ModelConfig``.

    ``forward(tokens, targets=None, cache=None)``: tokens (batch, seq) int64 -> ``ModelOutput``.
    With a ``KVCache`` the tokens continue the cached positions (incremental decoding).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(
            Block(cfg, moe=i >= cfg.first_k_dense_replace) for i in range(cfg.num_hidden_layers)
        )
        self.norm = nn.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.rope = RotaryEmbedding(cfg.qk_rope_head_dim if cfg.attention == "mla" else cfg.std_head_dim, cfg)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0, initializer_range) for every matrix, ones for norms, zeros for router biases (as transformers)."""
        std = self.cfg.initializer_range
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, mean=0.0, std=std)
            elif "norm" in name:
                nn.init.ones_(p)
        for m in self.moe_layers():
            m.gate.bias.zero_()

    def moe_layers(self) -> list[MoE]:
        """The MoE modules, in layer order (for balancing and inspection)."""
        return [b.ffn for b in self.layers if isinstance(b.ffn, MoE)]

    def new_cache(self) -> KVCache:
        return KVCache(self.cfg.num_hidden_layers)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None) -> ModelOutput:
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape (batch, seq); got {tuple(tokens.shape)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.cfg.vocab_size):
            raise ValueError(f"token ids must lie in 0..{self.cfg.vocab_size - 1} (vocab_size={self.cfg.vocab_size})")
        start = len(cache) if cache is not None else 0
        cos, sin = self.rope(start, tokens.shape[1])
        x = self.embed(tokens)
        for i, block in enumerate(self.layers):
            x = block(x, cos, sin, cache, i)
        h = self.norm(x)
        logits = self.head(h)
        loss = None
        if targets is not None:
            if targets.shape != tokens.shape:
                raise ValueError(f"targets shape {tuple(targets.shape)} must equal tokens shape {tuple(tokens.shape)}")
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
        return ModelOutput(logits=logits, loss=loss, hidden_states=h)
