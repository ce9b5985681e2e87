"""Model FLOPs of a training step, counted analytically from the configuration (no profiler, no hooks).

A training step costs 3 forward passes' worth of FLOPs (forward 1×, backward 2×: gradients of activations and of
weights). A multiply-add is 2 FLOPs. Per token of the batch:

    FLOPs/token = 6 · N_matmul  +  3 · A_fwd

- N_matmul: weights of the matrices one token is multiplied by (the *active* ones): per layer the attention
  projections (MLA: W_DQ, W_UQ+W_QR, W_DKV+W_KR, W_UK+W_UV, W_O), the FFN (a dense SwiGLU, or the shared experts,
  the top-K routed experts and the router's centroids), then the output head. The embedding is a lookup, not a
  matmul, and norms/biases are not matrices: neither counts.
- A_fwd: attention scores and values, which grow with the context. With causal attention query i sees i keys, so a
  sequence of T tokens has T(T+1)/2 query-key pairs, each 2·h·d_qk FLOPs for q·k and 2·h·d_v for p·v:
        A_fwd per layer per token = (T + 1) · h · (d_qk + d_v)
  MLA is counted as the paper writes it (d_qk = d_h + d_h^R = 48, d_v = 32 in "mini"), whatever the
  implementation computes (training uses the naive bracketing, which does this work; the absorbed path would attend
  in the 80-dim latent and do more: that extra work is not *model* FLOPs). PaLM's convention (6N + 12·L·h·d·T)
  counts all T keys for every query; ours counts only the causal half that is actually needed, so it gives slightly
  lower, more conservative utilisation.
- MTP module k (trained with the main model) adds its 2d→d projection, one block and the shared head, applied to
  T − k positions of each sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ModelConfig
from .params import attention_params


def attention_matmul_params(cfg: ModelConfig) -> int:
    """Matrix weights of one attention module: ``params.attention_params`` without MLA's two latent norms."""
    norms = (cfg.q_lora_rank or 0) + cfg.kv_lora_rank if cfg.attention == "mla" else 0
    return attention_params(cfg) - norms


def ffn_matmul_params(cfg: ModelConfig, moe: bool) -> int:
    """Active FFN matrix weights of one block: a dense SwiGLU, or shared + top-K routed experts + router."""
    d = cfg.hidden_size
    if not moe:
        return 3 * d * cfg.intermediate_size
    expert = 3 * d * cfg.moe_intermediate_size
    return (cfg.n_shared_experts + cfg.num_experts_per_tok) * expert + cfg.n_routed_experts * d


def attention_fwd_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Scores and values of one causal attention layer, forward, per token: (T + 1)·h·(d_qk + d_v)."""
    if cfg.attention == "mla":
        d_qk, d_v = cfg.qk_head_dim, cfg.v_head_dim
    else:
        d_qk = d_v = cfg.std_head_dim
    return (seq_len + 1) * cfg.num_attention_heads * (d_qk + d_v)


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one training step on (batch, seq_len) tokens, and the parts they come from."""

    tokens: int
    main_matmul_params: int
    mtp_matmul_params: int
    matmul: float  # 6 · N · tokens, main model and MTP modules
    attention: float  # 3 · A_fwd · tokens over every layer
    total: float

    @property
    def per_token(self) -> float:
        return self.total / self.tokens


def training_step_flops(cfg: ModelConfig, batch: int, seq_len: int, mtp: bool = True) -> StepFlops:
    """Model FLOPs of forward + backward of ``DeepSeekV3(cfg)`` on a (batch, seq_len) batch (see module docstring)."""
    attn = attention_matmul_params(cfg)
    main = sum(attn + ffn_matmul_params(cfg, moe=i >= cfg.first_k_dense_replace)
               for i in range(cfg.num_hidden_layers))
    main += cfg.hidden_size * cfg.vocab_size  # output head
    tokens = batch * seq_len
    matmul = 6.0 * main * tokens
    attention = 3.0 * cfg.num_hidden_layers * attention_fwd_flops_per_token(cfg, seq_len) * tokens
    mtp_params = 0
    if mtp:
        block_ffn = ffn_matmul_params(cfg, moe=cfg.num_moe_layers > 0)
        mtp_params = 2 * cfg.hidden_size * cfg.hidden_size + attn + block_ffn + cfg.hidden_size * cfg.vocab_size
        for k in range(1, cfg.num_nextn_predict_layers + 1):
            if seq_len - k < 1:
                break
            positions = batch * (seq_len - k)
            matmul += 6.0 * mtp_params * positions
            attention += 3.0 * attention_fwd_flops_per_token(cfg, seq_len - k) * positions
    return StepFlops(tokens=tokens, main_matmul_params=main, mtp_matmul_params=mtp_params, matmul=matmul,
                     attention=attention, total=matmul + attention)
