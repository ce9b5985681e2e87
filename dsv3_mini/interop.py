"""Conversion to and from transformers' ``DeepseekV3ForCausalLM`` — the referee of our parity tests.

Names map one to one (``wq_a`` ↔ ``q_a_proj``, ``wkv_b`` ↔ ``kv_b_proj``, ...). transformers stores the routed
experts fused: ``gate_up_proj`` (E, 2·inter, hidden) is our ``[w1; w3]`` and ``down_proj`` is our ``w2``; the router
bias is ``e_score_correction_bias``. Requires the ``dev`` extra (transformers).
"""

from __future__ import annotations

from typing import Any

import torch

from .config import ModelConfig
from .model import DeepSeekV3

_ATTN = {"wq": "q_proj", "wq_a": "q_a_proj", "q_norm": "q_a_layernorm", "wq_b": "q_b_proj",
         "wkv_a": "kv_a_proj_with_mqa", "kv_norm": "kv_a_layernorm", "wkv_b": "kv_b_proj", "wo": "o_proj"}
_FFN = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}


def _names(cfg: ModelConfig) -> dict[str, str]:
    """Our state-dict key -> transformers' key, for every tensor except the fused expert weights."""
    m = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
         "head.weight": "lm_head.weight"}
    for i in range(cfg.num_hidden_layers):
        ours, theirs = f"layers.{i}.", f"model.layers.{i}."
        m[ours + "attn_norm.weight"] = theirs + "input_layernorm.weight"
        m[ours + "ffn_norm.weight"] = theirs + "post_attention_layernorm.weight"
        for a, b in _ATTN.items():
            if a == "wq" and cfg.q_lora_rank is not None or a in ("wq_a", "q_norm", "wq_b") and cfg.q_lora_rank is None:
                continue
            m[f"{ours}attn.{a}.weight"] = f"{theirs}self_attn.{b}.weight"
        if i < cfg.first_k_dense_replace:
            for a, b in _FFN.items():
                m[f"{ours}ffn.{a}.weight"] = f"{theirs}mlp.{b}.weight"
        else:
            m[ours + "ffn.gate.weight"] = theirs + "mlp.gate.weight"
            m[ours + "ffn.gate.bias"] = theirs + "mlp.gate.e_score_correction_bias"
            if cfg.n_shared_experts:
                for a, b in _FFN.items():
                    m[f"{ours}ffn.shared.{a}.weight"] = f"{theirs}mlp.shared_experts.{b}.weight"
    return m


def _rope_rows(cfg: ModelConfig) -> tuple[list[tuple[str, int, int]], torch.Tensor]:
    """Rows holding RoPE inputs (key, offset, stride) and the permutation from rotate-half to pairwise layout."""
    r = cfg.qk_rope_head_dim
    q_key = "attn.wq.weight" if cfg.q_lora_rank is None else "attn.wq_b.weight"
    rows = [(q_key, cfg.qk_nope_head_dim, cfg.qk_head_dim), ("attn.wkv_a.weight", cfg.kv_lora_rank, 0)]
    perm = torch.stack([torch.arange(r // 2), torch.arange(r // 2) + r // 2], dim=-1).flatten()
    return rows, perm


def _permute_rope_rows(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> None:
    """Turn rotate-half RoPE weights (pairs i, i + r/2) into our pairwise layout (pairs 2j, 2j + 1), in place."""
    rows, perm = _rope_rows(cfg)
    for i in range(cfg.num_hidden_layers):
        for key, offset, stride in rows:
            w = sd[f"layers.{i}.{key}"]
            heads = cfg.num_attention_heads if stride else 1
            for h in range(heads):
                start = h * stride + offset
                block = w[start : start + cfg.qk_rope_head_dim]
                w[start : start + cfg.qk_rope_head_dim] = block[perm].clone()


def to_transformers(model: DeepSeekV3) -> Any:
    """A ``transformers.DeepseekV3ForCausalLM`` (fp32, eval mode) holding the same weights as ``model``."""
    from transformers import DeepseekV3ForCausalLM

    cfg = model.cfg
    hf = DeepseekV3ForCausalLM(cfg.to_transformers()).float().eval()
    ours = model.state_dict()
    theirs = {b: ours[a].detach().clone() for a, b in _names(cfg).items()}
    for i in range(cfg.first_k_dense_replace, cfg.num_hidden_layers):
        p = f"layers.{i}.ffn."
        theirs[f"model.layers.{i}.mlp.experts.gate_up_proj"] = torch.cat([ours[p + "w1"], ours[p + "w3"]], dim=1)
        theirs[f"model.layers.{i}.mlp.experts.down_proj"] = ours[p + "w2"].detach().clone()
    missing = [k for k in hf.state_dict() if k not in theirs]
    if missing and any("shared_experts" not in k for k in missing):
        raise RuntimeError(f"no source for transformers weights {missing[:5]}")
    hf.load_state_dict(theirs, strict=False)
    return hf


def from_transformers(hf_model: Any) -> DeepSeekV3:
    """A ``DeepSeekV3`` with the weights of a ``transformers.DeepseekV3ForCausalLM``.

    transformers' class holds no MTP weights, so our MTP modules (if the config has any) keep a fresh initialisation.
    """
    cfg = ModelConfig.from_transformers(hf_model.config)
    model = DeepSeekV3(cfg)
    theirs = hf_model.state_dict()
    sd = {a: theirs[b].detach().float().clone() for a, b in _names(cfg).items()}
    for i in range(cfg.first_k_dense_replace, cfg.num_hidden_layers):
        w1, w3 = theirs[f"model.layers.{i}.mlp.experts.gate_up_proj"].float().chunk(2, dim=1)
        sd[f"layers.{i}.ffn.w1"], sd[f"layers.{i}.ffn.w3"] = w1.clone(), w3.clone()
        sd[f"layers.{i}.ffn.w2"] = theirs[f"model.layers.{i}.mlp.experts.down_proj"].float().clone()
    if not getattr(hf_model.config, "rope_interleave", True):
        _permute_rope_rows(sd, cfg)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected or any(not k.startswith("mtp.") for k in missing):
        raise RuntimeError(f"weights did not map one to one: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model
