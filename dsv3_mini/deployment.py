"""Serving and paying for DeepSeek-V3: weight and cache memory, GPUs, a decode speed bound, and the training bill.

Pure arithmetic on a ``ModelConfig`` (default ``preset("deepseek-v3")``), nothing allocated:

- ``weight_bytes``: the matrices at the weight precision — FP8 adds one FP32 scale per 128×128 block (§3.3.2) —
  and, as in V3's FP8 recipe, the embedding, output head, norms and router centroids kept in BF16.
- ``plan``: weights + KV cache (MLA, and the same-shape MHA it replaces, from ``kv_cache.bytes_per_token``) for a
  context and batch; the fewest GPUs that hold them (a GPU count that divides the routed experts, for expert
  parallelism) and a decode-time upper bound on tokens per second from memory bandwidth: every step reads the
  weights it uses and the whole cache once, split perfectly over the GPUs (no communication, no compute limit).
- ``DEPLOYMENTS``: the prefill and decode units of §3.4 with the numbers they imply (experts per GPU).
- ``training_bill``: 6 · N_active · tokens training FLOPs (report: 14.8T tokens) → H800 GPU hours at a stated
  utilisation, against the report's 2.788M hours and $5.576M, with the report's own caveat.

GPU figures are datasheet values (memory, bandwidth, dense peak FLOP/s) typed in ``GPUS``; every other number is
computed. Memory is in bytes; "GB" in messages means 10⁹ bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import ModelConfig, preset
from .kv_cache import bytes_per_token
from .params import count_params, expert_params

FORMATS = {"fp8": 1, "bf16": 2, "fp32": 4}
FP8_BLOCK = 128 * 128  # one FP32 scale per 128×128 weight block
REPORTED_GPU_HOURS = 2_664_000 + 119_000 + 5_000  # pre-training + context extension + post-training (Table 1)
REPORTED_PRETRAINING_HOURS = 2_664_000
PRICE_PER_GPU_HOUR = 2.0  # US$, the report's assumption
COST_CAVEAT = ("the aforementioned costs include only the official training of DeepSeek-V3, excluding the costs "
               "associated with prior research and ablation experiments on architectures, algorithms, or data")


@dataclass(frozen=True)
class GPU:
    """Datasheet numbers: memory (GB), memory bandwidth (TB/s), dense peak TFLOP/s in BF16 and FP8."""

    name: str
    memory_gb: float
    bandwidth_tbs: float
    bf16_tflops: float
    fp8_tflops: float


GPUS = {  # NVIDIA datasheets (SXM); the H800 is the H100 with a cut interconnect, same memory and compute
    "H800": GPU("H800", 80, 3.35, 989.5, 1979.0),
    "H100": GPU("H100", 80, 3.35, 989.5, 1979.0),
    "H200": GPU("H200", 141, 4.8, 989.5, 1979.0),
    "A100-80GB": GPU("A100-80GB", 80, 2.039, 312.0, 0.0),
}


def _format(field: str, fmt: str) -> int:
    if fmt not in FORMATS:
        raise ValueError(f"{field}={fmt!r} is not one of {', '.join(map(repr, FORMATS))}")
    return FORMATS[fmt]


def _gpu(gpu: str | GPU) -> GPU:
    if isinstance(gpu, GPU):
        if gpu.memory_gb <= 0 or gpu.bandwidth_tbs <= 0:
            raise ValueError(f"gpu memory_gb={gpu.memory_gb} and bandwidth_tbs={gpu.bandwidth_tbs} must be positive")
        return gpu
    if gpu not in GPUS:
        raise ValueError(f"gpu={gpu!r} is not one of {', '.join(map(repr, GPUS))} (or pass a GPU(...))")
    return GPUS[gpu]


@dataclass(frozen=True)
class WeightMemory:
    """``quantized``: parameters stored at the weight precision (attention, dense FFN, shared and routed experts);
    ``kept``: parameters kept in BF16 (embedding, head, norms, routers); ``scales``: bytes of FP8 block scales."""

    quantized: int
    kept: int
    scales: int
    bytes: int


def weight_bytes(cfg: ModelConfig | None = None, weights: str = "fp8") -> WeightMemory:
    """Bytes of the main model's weights (MTP not included). DeepSeek-V3 at FP8: 673,150,450,384 (≈ 673 GB)."""
    cfg = cfg or preset("deepseek-v3")
    per = _format("weights", weights)
    b = count_params(cfg).breakdown
    kept = b["embedding"] + b["head"] + b["norms"] + b["routers"]
    quantized = sum(b.values()) - kept
    scales = 4 * math.ceil(quantized / FP8_BLOCK) if weights == "fp8" else 0
    kept_bytes = kept * max(per, FORMATS["bf16"])  # never below BF16 (FP32 weights keep these in FP32)
    return WeightMemory(quantized=quantized, kept=kept, scales=scales, bytes=quantized * per + scales + kept_bytes)


def mha_equivalent(cfg: ModelConfig) -> ModelConfig:
    """The MHA that MLA replaces: every head caches its own key and value of v_head_dim (128 in V3)."""
    return cfg.replace(attention="mha", head_dim=cfg.v_head_dim, num_key_value_heads=None)


@dataclass(frozen=True)
class Plan:
    """A serving plan; bytes unless named otherwise. ``*_mha``: the same with MHA's cache."""

    gpu: GPU
    weights: WeightMemory
    kv_bytes: int
    kv_bytes_mha: int
    gpus: int
    gpus_mha: int
    usable_bytes_per_gpu: float
    step_bytes: float
    step_bytes_mha: float
    tokens_per_s: float
    tokens_per_s_mha: float

    @property
    def total_bytes(self) -> int:
        return self.weights.bytes + self.kv_bytes


def gpus_needed(total_bytes: float, usable_bytes_per_gpu: float, n_experts: int) -> int:
    """The fewest GPUs that hold ``total_bytes`` and split ``n_experts`` evenly (expert parallelism)."""
    n = max(1, math.ceil(total_bytes / usable_bytes_per_gpu))
    fits = [d for d in range(n, n_experts + 1) if n_experts % d == 0]
    if not fits:
        raise ValueError(f"gpu memory is too small: {total_bytes / 1e9:,.1f} GB needs {n} GPUs of "
                         f"{usable_bytes_per_gpu / 1e9:,.1f} usable GB, more than the n_routed_experts={n_experts} "
                         "ranks expert parallelism can use")
    return fits[0]


def decode_step_bytes(cfg: ModelConfig, weights: str, kv_bytes: int, batch: int) -> float:
    """Bytes one decoding step reads: weights every token uses, the routed experts that the batch touches (uniform
    routing: E·(1 − (1 − K/E)^batch) per layer), the BF16 head and routers, and the whole KV cache."""
    per = _format("weights", weights) + (4 / FP8_BLOCK if weights == "fp8" else 0)
    kept = max(FORMATS[weights], FORMATS["bf16"])
    b = count_params(cfg).breakdown
    always = b["attention"] + b["dense_ffn"] + b["shared_experts"]
    e, k = cfg.n_routed_experts, cfg.num_experts_per_tok
    touched = e * (1 - (1 - k / e) ** batch) if cfg.is_moe else 0.0
    routed = cfg.num_moe_layers * touched * expert_params(cfg)
    return (always + routed) * per + (b["head"] + b["routers"] + b["norms"]) * kept + kv_bytes


def plan(cfg: ModelConfig | None = None, weights: str = "fp8", cache: str = "bf16", context: int = 32768,
         batch: int = 1, gpu: str | GPU = "H200", gpus: int | None = None, usable: float = 0.9) -> Plan:
    """Memory, GPUs and the decode bound for ``batch`` sequences of ``context`` tokens.

    ``usable``: the fraction of each GPU's memory given to weights and cache (the rest: activations, buffers).
    ``gpus=None`` finds the fewest; a given count is checked (divides the experts, holds weights + cache).
    """
    cfg = cfg or preset("deepseek-v3")
    g = _gpu(gpu)
    cache_b = _format("cache", cache)
    for name, value in (("context", context), ("batch", batch)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if not 0 < usable <= 1:
        raise ValueError(f"usable={usable} must be a fraction in (0, 1]")
    w = weight_bytes(cfg, weights)
    kv = batch * context * bytes_per_token(cfg, cache_b)
    kv_mha = batch * context * bytes_per_token(mha_equivalent(cfg), cache_b)
    per_gpu = g.memory_gb * 1e9 * usable
    n_exp = cfg.n_routed_experts if cfg.is_moe else 1
    if gpus is None:
        n = gpus_needed(w.bytes + kv, per_gpu, n_exp)
    else:
        if not isinstance(gpus, int) or gpus < 1:
            raise ValueError(f"gpus={gpus!r} must be a positive integer (or None to find the fewest)")
        if cfg.is_moe and n_exp % gpus:
            raise ValueError(f"n_routed_experts={n_exp} is not divisible by gpus={gpus} "
                             f"(allowed: {[d for d in range(1, n_exp + 1) if n_exp % d == 0]})")
        if w.bytes > gpus * per_gpu:
            raise ValueError(f"gpus={gpus} × gpu={g.name!r} ({g.memory_gb:g} GB) × usable={usable} = "
                             f"{gpus * per_gpu / 1e9:,.1f} GB is too small for the {w.bytes / 1e9:,.1f} GB of "
                             f"{weights} weights")
        if w.bytes + kv > gpus * per_gpu:
            raise ValueError(f"gpus={gpus} × gpu={g.name!r} ({g.memory_gb:g} GB) × usable={usable} = "
                             f"{gpus * per_gpu / 1e9:,.1f} GB is too small for weights + KV cache = "
                             f"{(w.bytes + kv) / 1e9:,.1f} GB; lower context or batch, or add GPUs")
        n = gpus
    try:
        n_mha = gpus_needed(w.bytes + kv_mha, per_gpu, n_exp)
    except ValueError:
        n_mha = 0  # MHA's cache does not fit on any expert-parallel count of these GPUs
    bandwidth = g.bandwidth_tbs * 1e12
    step = decode_step_bytes(cfg, weights, kv, batch)
    step_mha = decode_step_bytes(cfg, weights, kv_mha, batch)
    return Plan(gpu=g, weights=w, kv_bytes=kv, kv_bytes_mha=kv_mha, gpus=n, gpus_mha=n_mha,
                usable_bytes_per_gpu=per_gpu, step_bytes=step, step_bytes_mha=step_mha,
                tokens_per_s=batch * n * bandwidth / step, tokens_per_s_mha=batch * n * bandwidth / step_mha)


# -- V3's published deployment units (§3.4) ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Deployment:
    """One serving unit: ``nodes`` × 8 GPUs; attention in TP × DP; MoE in EP over ``ep`` GPUs with ``extra_slots``
    expert slots beyond the routed experts (redundant copies, and in decoding the shared expert's copies)."""

    name: str
    nodes: int
    tp: int
    dp: int
    ep: int
    extra_slots: int
    shared_as_routed: bool
    gpus_per_node: int = 8

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    def validate(self, cfg: ModelConfig) -> None:
        if self.tp * self.dp != self.gpus:
            raise ValueError(f"{self.name}: tp={self.tp} × dp={self.dp} must equal the {self.gpus} GPUs")
        if self.ep > self.gpus:
            raise ValueError(f"{self.name}: ep={self.ep} is larger than the {self.gpus} GPUs")
        slots = cfg.n_routed_experts + self.extra_slots
        if slots % self.ep:
            raise ValueError(f"{self.name}: n_routed_experts + extra_slots = {slots} is not divisible by "
                             f"ep={self.ep}")

    def experts_per_gpu(self, cfg: ModelConfig | None = None) -> int:
        cfg = cfg or preset("deepseek-v3")
        self.validate(cfg)
        return (cfg.n_routed_experts + self.extra_slots) // self.ep

    def experts_per_token(self, cfg: ModelConfig | None = None) -> int:
        """Routed experts a token visits: K, plus the shared expert when it is served as a routed one."""
        cfg = cfg or preset("deepseek-v3")
        return cfg.num_experts_per_tok + (cfg.n_shared_experts if self.shared_as_routed else 0)

    def expert_bytes_per_gpu(self, cfg: ModelConfig | None = None, weights: str = "fp8") -> float:
        """Expert weights on one GPU: its slots in every MoE layer (FP8 block scales included)."""
        cfg = cfg or preset("deepseek-v3")
        per = _format("weights", weights) + (4 / FP8_BLOCK if weights == "fp8" else 0)
        return self.experts_per_gpu(cfg) * cfg.num_moe_layers * expert_params(cfg) * per


DEPLOYMENTS = {
    # 4 nodes / 32 GPUs: attention TP4 + SP with DP8; MoE EP32; 32 redundant experts (each GPU 8 + 1)
    "prefill": Deployment("prefill", nodes=4, tp=4, dp=8, ep=32, extra_slots=32, shared_as_routed=False),
    # 40 nodes / 320 GPUs: attention TP4 + SP with DP80; MoE EP320, one expert per GPU; 64 GPUs for redundant and
    # shared experts; the shared expert is treated as routed, so a token visits 9
    "decode": Deployment("decode", nodes=40, tp=4, dp=80, ep=320, extra_slots=64, shared_as_routed=True),
}


# -- the training bill ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingBill:
    """6 · N_active · tokens, and what it means in GPU hours. ``implied_utilisation``: the fraction of the dense
    peak that the report's 2.788M hours correspond to."""

    tokens: float
    active_params: int
    flops: float
    peak_flops: float
    utilisation: float
    gpu_hours: float
    implied_utilisation: float
    implied_utilisation_pretraining: float
    cost_usd: float
    reported_cost_usd: float


def training_bill(cfg: ModelConfig | None = None, tokens: float = 14.8e12, utilisation: float = 0.4,
                  gpu: str | GPU = "H800", precision: str = "bf16") -> TrainingBill:
    """Training FLOPs ≈ 6 · N_active · tokens (N_active: ``count_params(cfg).active_non_embedding``, 36.6B for V3:
    the embedding is a lookup). Attention scores and MTP are left out of 6N (``flops.py`` counts them).
    ``utilisation``: the fraction of the ``precision`` dense peak achieved (stated, not measured)."""
    cfg = cfg or preset("deepseek-v3")
    g = _gpu(gpu)
    if precision not in ("bf16", "fp8"):
        raise ValueError(f"precision={precision!r} is not one of 'bf16', 'fp8'")
    if not 0 < utilisation <= 1:
        raise ValueError(f"utilisation={utilisation} must be a fraction in (0, 1]")
    if not tokens > 0:
        raise ValueError(f"tokens={tokens} must be positive")
    n = count_params(cfg).active_non_embedding
    flops = 6.0 * n * tokens
    peak = (g.bf16_tflops if precision == "bf16" else g.fp8_tflops) * 1e12
    if peak <= 0:
        raise ValueError(f"gpu={g.name} has no {precision} peak")
    hours = flops / (peak * utilisation) / 3600
    return TrainingBill(tokens=tokens, active_params=n, flops=flops, peak_flops=peak, utilisation=utilisation,
                        gpu_hours=hours, implied_utilisation=flops / (peak * REPORTED_GPU_HOURS * 3600),
                        implied_utilisation_pretraining=flops / (peak * REPORTED_PRETRAINING_HOURS * 3600),
                        cost_usd=hours * PRICE_PER_GPU_HOUR, reported_cost_usd=REPORTED_GPU_HOURS * PRICE_PER_GPU_HOUR)
