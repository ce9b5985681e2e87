"""Parameter counts from the configuration alone (nothing is allocated), so the 671B model can be counted too.

Conventions (DeepSeek's own accounting where it gives one):
- ``total``: the main model — embedding, every block (norms and router biases included), final norm, output head.
  MTP modules are counted separately in ``mtp`` (their embedding and head are shared with the main model).
- ``active_non_embedding``: the parameters one token uses, the embedding (a lookup, not a matmul) left out:
  36,625,618,432 ≈ 36.6B for V3, DeepSeek's own accounting (the release's README_WEIGHTS.md: "activation parameters
  36.6B, including 0.9B for the output head"); the report's abstract says 37B. This is the figure to lead with.
- ``active``: the same with the whole embedding table counted (37,552,297,472 ≈ 37.6B for V3): a side note.
- ``mtp``: one MTP module of V3 is 11,610,068,224 ≈ 11.6B here, its 2d -> d projection and norms included;
  README_WEIGHTS.md states "11.5B unique parameters" (its embedding and head are shared). The release README's
  685B = 671B + 14B (not a figure of the report) counts the checkpoint's stored copies of embedding and head too:
  11.6B + 2 × 0.93B = 13.5B by this count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import ModelConfig


@dataclass(frozen=True)
class ParamCount:
    total: int
    active: int
    active_non_embedding: int
    mtp: int
    breakdown: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        return (f"total {self.total:,} · activated per token {self.active_non_embedding:,} "
                f"({self.active:,} with the embedding) · MTP {self.mtp:,}")


def attention_params(cfg: ModelConfig) -> int:
    """One attention module (its input norm not included)."""
    d, h = cfg.hidden_size, cfg.num_attention_heads
    if cfg.attention != "mla":
        hd, g = cfg.std_head_dim, cfg.kv_heads
        return d * h * hd + 2 * d * g * hd + h * hd * d
    if cfg.q_lora_rank is None:
        q = d * h * cfg.qk_head_dim
    else:
        q = d * cfg.q_lora_rank + cfg.q_lora_rank + cfg.q_lora_rank * h * cfg.qk_head_dim  # W_DQ, norm, W_UQ+W_QR
    kv = d * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) + cfg.kv_lora_rank  # W_DKV+W_KR, norm
    kv += cfg.kv_lora_rank * h * (cfg.qk_nope_head_dim + cfg.v_head_dim)  # W_UK + W_UV
    return q + kv + h * cfg.v_head_dim * d  # + W_O


def expert_params(cfg: ModelConfig) -> int:
    """One routed or shared expert: a SwiGLU with 3 matrices of hidden × moe_intermediate_size."""
    return 3 * cfg.hidden_size * cfg.moe_intermediate_size


def dense_ffn_params(cfg: ModelConfig) -> int:
    return 3 * cfg.hidden_size * cfg.intermediate_size


def router_params(cfg: ModelConfig) -> int:
    """Centroids e_i (E × hidden) plus the selection bias b (E)."""
    return cfg.n_routed_experts * cfg.hidden_size + cfg.n_routed_experts


def count_params(cfg: ModelConfig) -> ParamCount:
    """Analytic counts for ``cfg``; for ``preset("deepseek-v3")`` total = 671,026,419,200."""
    d, v = cfg.hidden_size, cfg.vocab_size
    attn, norms = attention_params(cfg), 2 * d
    dense_block = attn + norms + dense_ffn_params(cfg)
    n_moe = cfg.num_moe_layers
    routed_all = cfg.n_routed_experts * expert_params(cfg)
    routed_active = cfg.num_experts_per_tok * expert_params(cfg)
    shared = cfg.n_shared_experts * expert_params(cfg)
    moe_block = attn + norms + router_params(cfg) + shared + routed_all
    moe_block_active = attn + norms + router_params(cfg) + shared + routed_active
    embedding = head = v * d
    breakdown = {
        "embedding": embedding,
        "attention": cfg.num_hidden_layers * attn,
        "norms": cfg.num_hidden_layers * norms + d,
        "dense_ffn": cfg.first_k_dense_replace * dense_ffn_params(cfg),
        "shared_experts": n_moe * shared,
        "routed_experts": n_moe * routed_all,
        "routers": n_moe * router_params(cfg),
        "head": head,
    }
    total = sum(breakdown.values())
    active_non_embedding = cfg.first_k_dense_replace * dense_block + n_moe * moe_block_active + d + head
    # an MTP module: two norms, the 2d -> d projection M_k, one block (MoE if the model has MoE), a final norm
    mtp_block = moe_block if n_moe else dense_block
    mtp = cfg.num_nextn_predict_layers * (2 * d + 2 * d * d + mtp_block + d)
    return ParamCount(total=total, active=active_non_embedding + embedding,
                      active_non_embedding=active_non_embedding, mtp=mtp, breakdown=breakdown)
