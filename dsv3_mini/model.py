"""The DeepSeek-V3 model: embedding, ``first_k_dense_replace`` dense blocks, MoE blocks, final norm, output head.

The blocks (``block.Block``) are pre-norm: x = x + Attention(RMSNorm(x)); x = x + FFN(RMSNorm(x)), where FFN is a
SwiGLU in the first ``first_k_dense_replace`` blocks and DeepSeekMoE after them (V3 report §2.1; 3 dense + 58 MoE
blocks in V3). The MTP modules (``mtp.py``) reuse the same block and share the embedding and the head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .balancing import balance_loss
from .block import Block
from .config import ModelConfig
from .kv_cache import KVCache
from .moe import MoE
from .mtp import MTPModule
from .rope import RotaryEmbedding

IGNORE_INDEX = -100  # targets with this value are not scored


@dataclass
class ModelOutput:
    """What ``DeepSeekV3.forward`` returns.

    - ``logits`` (batch, seq, vocab) of the main model; ``hidden_states`` (batch, seq, hidden) the last block's output
      before the final norm (h^0, where MTP starts).
    - With targets: ``main_loss`` the next-token cross-entropy; ``mtp_losses`` one cross-entropy per MTP depth;
      ``balance_loss`` the policy's balance term (None if it has none); ``loss`` the training loss
      main + λ/D · Σ mtp + balance.
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None
    main_loss: torch.Tensor | None = None
    mtp_losses: list[torch.Tensor] = field(default_factory=list)
    balance_loss: torch.Tensor | None = None


class DeepSeekV3(nn.Module):
    """A DeepSeek-V3-shaped language model built from a ``ModelConfig``.

    ``forward(tokens, targets=None, cache=None)``: tokens (batch, seq) int64 -> ``ModelOutput``; ``targets[:, i]``
    is the token that follows ``tokens[:, i]``. With a ``KVCache`` the tokens continue the cached positions.
    ``mtp`` holds ``num_nextn_predict_layers`` MTP modules sharing ``embed`` and ``head``; they run when targets are
    given (training) or through ``mtp_logits`` / speculative decoding.
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
        self.mtp = nn.ModuleList(MTPModule(cfg) for _ in range(cfg.num_nextn_predict_layers))
        self.rope = RotaryEmbedding.for_model(cfg)
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

    def moe_layers(self, include_mtp: bool = True) -> list[MoE]:
        """The MoE modules in layer order, then those of the MTP modules (for balancing and inspection)."""
        blocks = list(self.layers) + ([m.block for m in self.mtp] if include_mtp else [])
        return [b.ffn for b in blocks if isinstance(b.ffn, MoE)]

    def new_cache(self, capacity: int | None = None) -> KVCache:
        """An empty cache for this model; ``capacity`` positions are allocated at the first write (None: grow)."""
        return KVCache(self.cfg.num_hidden_layers, capacity)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None, logits_to_keep: int = 0) -> ModelOutput:
        """``logits_to_keep`` = n > 0 runs the final norm and the head on the last n positions only (decoding needs
        one; the head is the model's widest matmul), so ``logits`` is (batch, n, vocab); 0 keeps every position."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape (batch, seq); got {tuple(tokens.shape)}")
        if tokens.numel():
            lo, hi = tokens.aminmax()  # one pass and one read-back for both bounds
            if int(lo) < 0 or int(hi) >= self.cfg.vocab_size:
                raise ValueError(f"token ids must lie in 0..{self.cfg.vocab_size - 1} "
                                 f"(vocab_size={self.cfg.vocab_size})")
        if not isinstance(logits_to_keep, int) or logits_to_keep < 0:
            raise ValueError(f"logits_to_keep={logits_to_keep!r} must be an integer >= 0 (0 = every position)")
        if logits_to_keep and targets is not None:
            raise ValueError("logits_to_keep must be 0 when targets are given (the loss scores every position)")
        start = len(cache) if cache is not None else 0
        cos, sin = self.rope(start, tokens.shape[1])
        x = self.embed(tokens)
        for i, block in enumerate(self.layers):
            x = block(x, cos, sin, cache, i)
        logits = self.head(self.norm(x[:, -logits_to_keep:] if logits_to_keep else x))
        if targets is None:
            return ModelOutput(logits=logits, hidden_states=x)
        if targets.shape != tokens.shape:
            raise ValueError(f"targets shape {tuple(targets.shape)} must equal tokens shape {tuple(tokens.shape)}")
        main = cross_entropy(logits, targets)
        mtp_losses = [cross_entropy(lg, targets[:, k:]) for k, lg in enumerate(self.mtp_logits(tokens, x), start=1)]
        balance = balance_loss(self)
        loss = main
        if mtp_losses:
            loss = loss + self.cfg.mtp_loss_weight / len(self.mtp) * torch.stack(mtp_losses).sum()
        if balance is not None:
            loss = loss + balance
        return ModelOutput(logits=logits, loss=loss, hidden_states=x, main_loss=main, mtp_losses=mtp_losses,
                           balance_loss=balance)

    def mtp_logits(self, tokens: torch.Tensor, h0: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every MTP depth k = 1..D: a list of (batch, seq - k, vocab).

        Entry [k-1][:, i] predicts token i + k + 1 from h^{k-1}_i and the embedding of token i + k: it never sees
        the token it predicts. ``h0`` is the main model's ``hidden_states`` for ``tokens``.
        """
        out, h, seq = [], h0, tokens.shape[1]
        for k, module in enumerate(self.mtp, start=1):
            if seq - k < 1:
                break
            cos, sin = self.rope(0, seq - k)
            h = module(h[:, : seq - k], self.embed(tokens[:, k:]), cos, sin)
            out.append(self.head(module.norm(h)))
        return out


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of (batch, seq, vocab) logits against (batch, seq) targets, skipping IGNORE_INDEX."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)
