"""Model configuration: one validated dataclass and three named presets.

Field names follow transformers' ``DeepseekV3Config`` where one exists, so a learner can hold the released
``config.json`` beside this file. Every invalid combination raises ``ValueError`` naming the fields involved and
what is allowed, so a mistake in a notebook cell reads like advice, not like a shape error deep inside torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

ATTENTION_KINDS = ("mla", "mha", "gqa", "mqa")
MLA_IMPLS = ("auto", "naive", "absorbed")
SCORING_FUNCS = ("sigmoid", "softmax")
BALANCE_POLICIES = ("loss-free", "aux-loss", "seq-aux-loss", "none")
PRESETS = ("tiny", "mini", "mini-dense", "deepseek-v3")
_YARN_KEYS = {"factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale", "mscale_all_dim"}
# rope_scaling["rope_type"]: the position-interpolation methods of dsv3_mini.rope (None = plain RoPE) and their keys
ROPE_TYPES = ("linear", "ntk", "yarn")
_ROPE_KEYS = {"linear": {"factor", "original_max_position_embeddings"},
              "ntk": {"factor", "original_max_position_embeddings"}, "yarn": _YARN_KEYS}



def check_choice(name: str, value: object, allowed) -> None:
    """``ValueError("name='x' is not one of 'a', 'b'")`` unless ``value`` is one of ``allowed`` (a tuple or a dict's
    keys): the one error every setting with a fixed set of values gives."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}")


def check_positive(settings: object, *names: str) -> None:
    """``ValueError("steps=0 must be a positive integer")`` unless each named attribute of ``settings`` is >= 1
    (or None, where a field allows it: ``threads=None`` leaves torch's own count)."""
    for name in names:
        value = getattr(settings, name)
        if value is not None and value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")

@dataclass
class ModelConfig:
    """Shape of a DeepSeek-V3-style model. ``preset("deepseek-v3")`` is the released 671B configuration.

    Attention is MLA by default; ``attention="mha" | "gqa" | "mqa"`` swaps in standard multi-head attention with
    ``num_key_value_heads`` KV heads of size ``head_dim`` (for the KV-cache comparison of the course).
    """

    vocab_size: int = 256
    hidden_size: int = 64
    num_hidden_layers: int = 3
    first_k_dense_replace: int = 1  # the first k layers use a dense FFN, the rest MoE
    intermediate_size: int = 128  # dense FFN width
    moe_intermediate_size: int = 32  # width of one expert
    # attention
    attention: str = "mla"
    num_attention_heads: int = 4
    num_key_value_heads: int | None = None  # only for mha/gqa/mqa; None = num_attention_heads
    head_dim: int | None = None  # only for mha/gqa/mqa; None = v_head_dim
    q_lora_rank: int | None = 32  # d_c' (None = a plain query projection)
    kv_lora_rank: int = 32  # d_c
    qk_nope_head_dim: int = 16  # d_h
    qk_rope_head_dim: int = 8  # d_h^R
    v_head_dim: int = 16
    # how MLA computes: "naive" (expand K, V), "absorbed" (attend to the latent), or "auto": naive for a forward
    # without a cache (training, scoring whole sequences), absorbed when decoding with a cache, as DeepSeek does
    mla_impl: str = "auto"
    # positions
    max_position_embeddings: int = 512
    rope_theta: float = 10000.0
    # None: plain RoPE; {"rope_type": "linear" | "ntk" | "yarn", "factor": s, "original_max_position_embeddings": ...}
    # (no rope_type: YaRN, as DeepSeek-V3's config)
    rope_scaling: dict[str, Any] | None = None
    # mixture of experts
    n_routed_experts: int = 8
    n_shared_experts: int = 1
    num_experts_per_tok: int = 2
    n_group: int = 2
    topk_group: int = 1
    routed_scaling_factor: float = 2.5
    scoring_func: str = "sigmoid"  # "softmax" (V2-style) is kept for comparison
    norm_topk_prob: bool = True
    # load balancing (dsv3_mini.balancing): "loss-free" (bias rule + tiny sequence-wise loss), "aux-loss" (batch-wise),
    # "seq-aux-loss" (the same loss per sequence), "none"
    balance: str = "loss-free"
    bias_update_speed: float = 0.001  # γ
    seq_aux_alpha: float = 0.0001  # α of the complementary sequence-wise loss
    aux_loss_alpha: float = 0.01  # α of the auxiliary losses ("aux-loss", "seq-aux-loss"); our choice, not V3's
    # multi-token prediction: number of sequential MTP modules (V3 uses 1) and the loss weight λ
    num_nextn_predict_layers: int = 1
    mtp_loss_weight: float = 0.3
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        self._validate()

    # -- derived sizes ---------------------------------------------------------------------------------------------
    @property
    def qk_head_dim(self) -> int:
        """Query/key width per head in MLA: the no-position part plus the RoPE part (128 + 64 = 192 in V3)."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def kv_heads(self) -> int:
        """Number of K/V heads for standard attention kinds (MHA: all heads, MQA: one)."""
        if self.attention == "mha":
            return self.num_attention_heads
        if self.attention == "mqa":
            return 1
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def std_head_dim(self) -> int:
        """Head width of standard (non-MLA) attention."""
        return self.head_dim or self.v_head_dim

    @property
    def num_moe_layers(self) -> int:
        return self.num_hidden_layers - self.first_k_dense_replace

    @property
    def is_moe(self) -> bool:
        return self.num_moe_layers > 0 and self.n_routed_experts > 0

    @property
    def softmax_scale(self) -> float:
        """1/sqrt(d_h + d_h^R) for MLA (1/sqrt(head_dim) otherwise), times YaRN's mscale² when context is extended."""
        dim = self.qk_head_dim if self.attention == "mla" else self.std_head_dim
        scale = dim**-0.5
        if self.rope_scaling is not None:
            mscale_all_dim = self.rope_scaling.get("mscale_all_dim", 0)
            if mscale_all_dim:
                m = yarn_mscale(self.rope_scaling["factor"], mscale_all_dim)
                scale *= m * m
        return scale

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {unknown}; allowed fields: {sorted(known)}")
        return cls(**d)

    # -- validation ------------------------------------------------------------------------------------------------
    def _validate(self) -> None:
        def positive(*names: str) -> None:
            for n in names:
                v = getattr(self, n)
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ValueError(f"{n}={v!r} must be a positive integer")

        positive("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
                 "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "max_position_embeddings")
        check_choice("attention", self.attention, ATTENTION_KINDS)
        check_choice("mla_impl", self.mla_impl, MLA_IMPLS)
        check_choice("scoring_func", self.scoring_func, SCORING_FUNCS)
        check_choice("balance", self.balance, BALANCE_POLICIES)
        for n in ("bias_update_speed", "seq_aux_alpha", "aux_loss_alpha", "mtp_loss_weight"):
            if not getattr(self, n) >= 0:
                raise ValueError(f"{n}={getattr(self, n)!r} must be a number >= 0")
        if self.q_lora_rank is not None:
            positive("q_lora_rank")
        if self.qk_rope_head_dim % 2:
            raise ValueError(f"qk_rope_head_dim={self.qk_rope_head_dim} must be even: RoPE rotates pairs of dimensions")
        if self.attention != "mla":
            if self.head_dim is not None:
                positive("head_dim")
            if self.std_head_dim % 2:
                raise ValueError(f"head_dim={self.std_head_dim} must be even: RoPE rotates pairs of dimensions")
            if self.attention == "gqa" and self.num_key_value_heads is not None:
                positive("num_key_value_heads")
            if self.num_attention_heads % self.kv_heads:
                raise ValueError(
                    f"num_attention_heads={self.num_attention_heads} is not divisible by "
                    f"num_key_value_heads={self.kv_heads}: each KV head must serve the same number of query heads "
                    f"(allowed: divisors of {self.num_attention_heads})"
                )
        if not 0 <= self.first_k_dense_replace <= self.num_hidden_layers:
            raise ValueError(
                f"first_k_dense_replace={self.first_k_dense_replace} must be between 0 and "
                f"num_hidden_layers={self.num_hidden_layers}"
            )
        if self.num_nextn_predict_layers < 0:
            raise ValueError(f"num_nextn_predict_layers={self.num_nextn_predict_layers} must be 0 or more")
        if self.num_moe_layers > 0:
            self._validate_moe()
        self._validate_rope_scaling()

    def _validate_moe(self) -> None:
        for n in ("moe_intermediate_size", "n_routed_experts", "num_experts_per_tok", "n_group", "topk_group"):
            v = getattr(self, n)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{n}={v!r} must be a positive integer when the model has MoE layers")
        if self.n_shared_experts < 0:
            raise ValueError(f"n_shared_experts={self.n_shared_experts} must be 0 or more")
        if self.n_routed_experts % self.n_group:
            raise ValueError(
                f"n_routed_experts={self.n_routed_experts} is not divisible by n_group={self.n_group} "
                f"(allowed n_group: divisors of {self.n_routed_experts})"
            )
        per_group = self.n_routed_experts // self.n_group
        if self.n_group > 1 and per_group < 2:
            raise ValueError(
                f"n_routed_experts={self.n_routed_experts} / n_group={self.n_group} leaves {per_group} expert per "
                "group; a group's score is the sum of its top-2 experts, so each group needs at least 2"
            )
        if self.topk_group > self.n_group:
            raise ValueError(
                f"topk_group={self.topk_group} is larger than n_group={self.n_group} (allowed: 1..{self.n_group})"
            )
        reachable = self.topk_group * per_group
        if self.num_experts_per_tok > reachable:
            raise ValueError(
                f"num_experts_per_tok={self.num_experts_per_tok} is larger than the experts in the kept groups: "
                f"topk_group={self.topk_group} × (n_routed_experts={self.n_routed_experts} / n_group={self.n_group}) "
                f"= {reachable} (allowed: 1..{reachable})"
            )

    def _validate_rope_scaling(self) -> None:
        if self.rope_scaling is None:
            return
        rs = self.rope_scaling
        if not isinstance(rs, dict):
            raise ValueError(f"rope_scaling={rs!r} must be None (plain RoPE) or a dict with 'rope_type' and 'factor'")
        kind = rs.get("rope_type", rs.get("type", "yarn"))
        if kind not in ROPE_TYPES:
            raise ValueError(f"rope_scaling rope_type={kind!r} is not one of {', '.join(map(repr, ROPE_TYPES))} "
                             "(or rope_scaling=None for plain RoPE)")
        allowed = _ROPE_KEYS[kind]
        unknown = sorted(set(rs) - allowed - {"type", "rope_type", "rope_theta"})
        if unknown:
            raise ValueError(f"rope_scaling has unknown keys {unknown} for rope_type={kind!r}; "
                             f"allowed: {sorted(allowed)}")
        if "factor" not in rs or (kind == "yarn" and "original_max_position_embeddings" not in rs):
            needs = "'factor' and 'original_max_position_embeddings'" if kind == "yarn" else "'factor'"
            raise ValueError(f"rope_scaling with rope_type={kind!r} needs {needs}")
        factor = rs["factor"]
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not factor >= 1:
            raise ValueError(f"rope_scaling factor={factor!r} must be a number >= 1 (the scale s; 1 = no scaling)")
        fast, slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1
        if kind == "yarn" and not fast > slow > 0:
            raise ValueError(f"rope_scaling beta_fast={fast} must be larger than beta_slow={slow} > 0 (YaRN ramps "
                             "between the pairs that turn beta_fast times and those that turn beta_slow times)")

    # -- interop ---------------------------------------------------------------------------------------------------
    @classmethod
    def from_transformers(cls, hf_config: Any) -> ModelConfig:
        """Read a ``transformers.DeepseekV3Config`` (MLA attention; fields map one to one)."""
        rp = dict(getattr(hf_config, "rope_parameters", None) or {})
        kind = rp.get("rope_type", rp.get("type", "default"))
        rope_scaling = None
        if kind == "yarn":
            rope_scaling = {k: rp[k] for k in _YARN_KEYS if rp.get(k) is not None}
            rope_scaling.setdefault("original_max_position_embeddings", hf_config.max_position_embeddings)
        elif kind == "linear":
            rope_scaling = {"rope_type": "linear", "factor": rp["factor"]}
        elif kind != "default":
            raise ValueError(f"rope type {kind!r} of the transformers config is not supported; "
                             "allowed: default, linear, yarn")
        if getattr(hf_config, "attention_bias", False):
            raise ValueError("attention_bias=True is not supported (DeepSeek-V3 has no attention biases)")
        if getattr(hf_config, "hidden_act", "silu") != "silu":
            raise ValueError(f"hidden_act={hf_config.hidden_act!r} is not supported; allowed: 'silu' (SwiGLU)")
        return cls(
            vocab_size=hf_config.vocab_size,
            hidden_size=hf_config.hidden_size,
            num_hidden_layers=hf_config.num_hidden_layers,
            first_k_dense_replace=hf_config.first_k_dense_replace,
            intermediate_size=hf_config.intermediate_size,
            moe_intermediate_size=hf_config.moe_intermediate_size,
            num_attention_heads=hf_config.num_attention_heads,
            q_lora_rank=hf_config.q_lora_rank,
            kv_lora_rank=hf_config.kv_lora_rank,
            qk_nope_head_dim=hf_config.qk_nope_head_dim,
            qk_rope_head_dim=hf_config.qk_rope_head_dim,
            v_head_dim=hf_config.v_head_dim,
            max_position_embeddings=hf_config.max_position_embeddings,
            rope_theta=float(rp.get("rope_theta", 10000.0)),
            rope_scaling=rope_scaling,
            n_routed_experts=hf_config.n_routed_experts,
            n_shared_experts=hf_config.n_shared_experts,
            num_experts_per_tok=hf_config.num_experts_per_tok,
            n_group=hf_config.n_group,
            topk_group=hf_config.topk_group,
            routed_scaling_factor=float(hf_config.routed_scaling_factor),
            norm_topk_prob=bool(hf_config.norm_topk_prob),
            num_nextn_predict_layers=int(getattr(hf_config, "num_nextn_predict_layers", 1) or 0),
            rms_norm_eps=hf_config.rms_norm_eps,
            initializer_range=hf_config.initializer_range,
            name="from-transformers",
        )

    def to_transformers(self) -> Any:
        """The equivalent ``transformers.DeepseekV3Config`` (MLA with sigmoid scoring only)."""
        if self.attention != "mla":
            raise ValueError(f"attention={self.attention!r} has no DeepseekV3Config equivalent; allowed: 'mla'")
        if self.scoring_func != "sigmoid":
            raise ValueError(
                f"scoring_func={self.scoring_func!r} has no DeepseekV3Config equivalent; allowed: 'sigmoid'"
            )
        from transformers import DeepseekV3Config

        rope = {"rope_type": "default", "rope_theta": self.rope_theta}
        kind = None if self.rope_scaling is None else self.rope_scaling.get("rope_type", "yarn")
        if kind == "yarn":
            rope = {"rope_type": "yarn", "rope_theta": self.rope_theta,
                    **{k: v for k, v in self.rope_scaling.items() if k in _YARN_KEYS}}
        elif kind == "linear":
            rope = {"rope_type": "linear", "rope_theta": self.rope_theta, "factor": float(self.rope_scaling["factor"])}
        elif kind == "ntk":  # static NTK-aware scaling is plain RoPE with a larger base: theta · s^(d/(d-2))
            d = self.qk_rope_head_dim
            rope = {"rope_type": "default",
                    "rope_theta": self.rope_theta * self.rope_scaling["factor"] ** (d / (d - 2))}
        moe = self.num_moe_layers > 0
        return DeepseekV3Config(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            moe_intermediate_size=self.moe_intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_attention_heads,
            n_shared_experts=self.n_shared_experts,
            n_routed_experts=self.n_routed_experts if moe else 1,
            routed_scaling_factor=self.routed_scaling_factor,
            kv_lora_rank=self.kv_lora_rank,
            q_lora_rank=self.q_lora_rank,
            qk_rope_head_dim=self.qk_rope_head_dim,
            v_head_dim=self.v_head_dim,
            qk_nope_head_dim=self.qk_nope_head_dim,
            n_group=self.n_group if moe else 1,
            topk_group=self.topk_group if moe else 1,
            num_experts_per_tok=self.num_experts_per_tok if moe else 1,
            first_k_dense_replace=self.first_k_dense_replace,
            norm_topk_prob=self.norm_topk_prob,
            max_position_embeddings=self.max_position_embeddings,
            rms_norm_eps=self.rms_norm_eps,
            initializer_range=self.initializer_range,
            rope_parameters=rope,
            rope_interleave=True,
            tie_word_embeddings=False,
            num_mtp_layers=self.num_nextn_predict_layers,
        )


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature factor sqrt(t) = 0.1·mscale·ln(s) + 1 (1 when s <= 1)."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def preset(name: str) -> ModelConfig:
    """Named configurations.

    - ``"tiny"``: for tests and notebooks; a forward pass takes milliseconds. One MTP module.
    - ``"mini"``: the end-to-end training run of the course (a few million parameters, trains on 2 CPU cores).
    - ``"mini-dense"``: a dense baseline with about the same *active* parameters per token as ``"mini"``.
    - ``"deepseek-v3"``: the released 671B configuration, for calculators only (never instantiate it).
    """
    if name == "tiny":
        return ModelConfig(name="tiny")
    if name == "mini":
        return ModelConfig(
            vocab_size=256, hidden_size=192, num_hidden_layers=4, first_k_dense_replace=1, intermediate_size=512,
            moe_intermediate_size=96, num_attention_heads=4, q_lora_rank=96, kv_lora_rank=64, qk_nope_head_dim=32,
            qk_rope_head_dim=16, v_head_dim=32, max_position_embeddings=1024, n_routed_experts=16, n_shared_experts=1,
            num_experts_per_tok=4, n_group=4, topk_group=2, num_nextn_predict_layers=1, name="mini",
        )
    if name == "mini-dense":
        # 1 shared + 4 routed experts of width 96 are active per token in "mini": a dense FFN of 5 × 96 = 480.
        return preset("mini").replace(first_k_dense_replace=4, intermediate_size=480, name="mini-dense")
    if name == "deepseek-v3":
        return ModelConfig(
            vocab_size=129280, hidden_size=7168, num_hidden_layers=61, first_k_dense_replace=3, intermediate_size=18432,
            moe_intermediate_size=2048, num_attention_heads=128, q_lora_rank=1536, kv_lora_rank=512,
            qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, max_position_embeddings=163840,
            rope_scaling={"factor": 40, "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1,
                          "mscale": 1.0, "mscale_all_dim": 1.0},
            n_routed_experts=256, n_shared_experts=1, num_experts_per_tok=8, n_group=8, topk_group=4,
            routed_scaling_factor=2.5, num_nextn_predict_layers=1, name="deepseek-v3",
        )
    raise ValueError(f"preset name {name!r} is not one of {', '.join(map(repr, PRESETS))}")
