"""Attention: Multi-head Latent Attention (MLA) and, for comparison, MHA / GQA / MQA behind one interface.

Every attention module has ``forward(x, cos, sin, cache=None, layer=0)`` with ``x`` of shape (batch, seq, hidden),
``cos``/``sin`` for the new positions, and an optional ``KVCache`` that it reads and extends.

MLA (DeepSeek-V2 report §2.1, V3 report §2.1.1, equations 1-11 of V3):
    c_Q = q_norm(W_DQ h),  q_C = W_UQ c_Q,  q_R = RoPE(W_QR c_Q)         (low-rank query, per-head rope part)
    c_KV = kv_norm(W_DKV h),  k_C = W_UK c_KV,  v_C = W_UV c_KV            (low-rank key/value)
    k_R = RoPE_t(W_KR h_t)                                                  (one rope key shared by all heads)
    o_t,i = Σ_j softmax_j((q_C,i·k_C,j + q_R,i·k_R,j) / sqrt(d_h + d_R)) v_C,j
Equations 1 and 6 write c_KV = W_DKV h and c_Q = W_DQ h; the extra RMSNorms after the compressed latents are stated
in the report's §4.2 (hyper-parameters) and are in DeepSeek's code. Only c_KV (after kv_norm) and k_R (already
rotated to its own position t) are cached, (batch, seq, d_c) and (batch, seq, d_R). The *naive* path expands k_C and
v_C for every head; the *absorbed* path folds W_UK into the query (q_C·W_UK c = (W_UK^T q_C)·c) and W_UV into the
output, so it attends to the latent directly — MQA with one 576-dim key shared by all heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import ModelConfig
from .kv_cache import KVCache
from .rope import apply_rope


def causal_mask(q_len: int, k_len: int, device: torch.device) -> torch.Tensor | None:
    """Boolean (q_len, k_len) mask for queries at the last q_len of k_len positions; None when nothing is hidden."""
    if q_len == 1:
        return None
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=k_len - q_len)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, **kw) -> torch.Tensor:
    """Scaled dot-product attention (batch, heads, q_len, d) with the causal rule for cached prefixes.

    When values are narrower than queries and keys (MLA: 32 vs 48 in "mini", 128 vs 192 in V3), they are padded with
    zeros to the key width and the padding is cut off the output: the result is the same, and PyTorch's fused
    (flash) CPU kernel, which wants one head width for q, k and v, replaces the unfused softmax path: faster forward
    + backward at the trainer's shapes (1.4-1.7× in one-off measurements of this call alone; not a ``make bench``
    item, which times whole steps).
    """
    q_len, k_len = q.shape[-2], k.shape[-2]
    d_v = v.shape[-1]
    if d_v < q.shape[-1] and q_len > 1:
        v = F.pad(v, (0, q.shape[-1] - d_v))
    if q_len == k_len:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, **kw)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(q_len, k_len, q.device), scale=scale,
                                             **kw)
    return out[..., :d_v]


def attend_latent(q_latent: torch.Tensor, q_rope: torch.Tensor, c_kv: torch.Tensor, k_rope: torch.Tensor,
                  scale: float) -> torch.Tensor:
    """Absorbed MLA attention against the cached latents, without building a key: (b, h, s, d_c).

    q_latent (b, h, s, d_c) = W_UK^T q_C and q_rope (b, h, s, d_R) per head; c_kv (b, t, d_c) and k_rope (b, t, d_R)
    are the cache's own tensors (views, never copied). The score of eq. 10 is two matmuls added in one ``baddbmm``,
        scores = scale · (q_R k_R^T + q_latent c_KV^T)                   (b, h·s, t)
    with every head's queries stacked as rows against the one key all heads share (MQA), so neither the 576-wide
    [c_KV; k_R] concatenation nor a per-head expansion of t positions is ever materialised. The new queries are the
    last s of the t positions (the causal rule for a cached prefix). Then softmax and the weighted sum of c_KV.
    """
    b, h, s, d_c = q_latent.shape
    t = c_kv.shape[1]
    rope_scores = torch.bmm(q_rope.reshape(b, h * s, -1), k_rope.transpose(1, 2))
    scores = torch.baddbmm(rope_scores, q_latent.reshape(b, h * s, d_c), c_kv.transpose(1, 2), beta=scale,
                           alpha=scale)
    if s > 1:
        scores = scores.view(b, h, s, t).masked_fill_(~causal_mask(s, t, scores.device), float("-inf"))
    probs = scores.softmax(dim=-1).view(b, h * s, t)
    return torch.bmm(probs, c_kv).view(b, h, s, d_c)


class MLA(nn.Module):
    """Multi-head Latent Attention. Weight names follow DeepSeek's inference code (wq_a, wkv_a, kv_norm, wkv_b)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        h, d = cfg.num_attention_heads, cfg.hidden_size
        self.n_heads, self.d_nope, self.d_rope, self.d_v = h, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
        self.d_c = cfg.kv_lora_rank
        if cfg.q_lora_rank is None:
            self.wq = nn.Linear(d, h * cfg.qk_head_dim, bias=False)
        else:
            self.wq_a = nn.Linear(d, cfg.q_lora_rank, bias=False)  # W_DQ
            self.q_norm = nn.RMSNorm(cfg.q_lora_rank, eps=cfg.rms_norm_eps)
            self.wq_b = nn.Linear(cfg.q_lora_rank, h * cfg.qk_head_dim, bias=False)  # [W_UQ; W_QR]
        self.wkv_a = nn.Linear(d, self.d_c + self.d_rope, bias=False)  # [W_DKV; W_KR]
        self.kv_norm = nn.RMSNorm(self.d_c, eps=cfg.rms_norm_eps)
        self.wkv_b = nn.Linear(self.d_c, h * (self.d_nope + self.d_v), bias=False)  # [W_UK; W_UV] per head
        self.wo = nn.Linear(h * self.d_v, d, bias=False)  # W_O
        self.scale = cfg.softmax_scale

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0, impl: str | None = None) -> torch.Tensor:
        """(batch, seq, hidden) -> (batch, seq, hidden). ``impl`` overrides ``cfg.mla_impl``.

        "naive", "absorbed", or "auto": naive where every position is a query — no cache (training), or the prefill of
        an empty cache — since expanding K and V is then the cheaper bracketing (48-dim keys in "mini", 192 in V3,
        against 80 and 576 in the latent; a 1,024-token prefill of "mini" took 48 ms naive, 60 ms absorbed, one-off
        measurement), and absorbed when new queries continue a cached prefix, where they would otherwise re-expand
        every cached latent at every step.
        """
        impl = impl or self.cfg.mla_impl
        b, s, _ = x.shape
        q = self.wq(x) if self.cfg.q_lora_rank is None else self.wq_b(self.q_norm(self.wq_a(x)))
        q = q.view(b, s, self.n_heads, -1).transpose(1, 2)  # (b, h, s, d_h + d_R)
        q_nope, q_rope = q.split([self.d_nope, self.d_rope], dim=-1)
        q_rope = apply_rope(q_rope, cos, sin)

        c_kv, k_rope = self.wkv_a(x).split([self.d_c, self.d_rope], dim=-1)
        c_kv = self.kv_norm(c_kv)  # (b, s, d_c)
        k_rope = apply_rope(k_rope, cos, sin)  # (b, s, d_R): one rope key for all heads
        if cache is not None:
            c_kv, k_rope = cache.update(layer, c_kv, k_rope)
        t = c_kv.shape[1]
        if impl == "auto":  # t == s: no cached prefix, every position is a query
            impl = "naive" if cache is None or 1 < s == t else "absorbed"

        w_kv_b = self.wkv_b.weight.view(self.n_heads, self.d_nope + self.d_v, self.d_c)
        if impl == "naive":
            kv = torch.einsum("btc,hdc->bhtd", c_kv, w_kv_b)  # k_C and v_C for every head
            k_nope, v = kv.split([self.d_nope, self.d_v], dim=-1)
            k = torch.cat([k_nope, k_rope[:, None].expand(b, self.n_heads, t, self.d_rope)], dim=-1)
            out = _attend(torch.cat([q_nope, q_rope], dim=-1), k, v, self.scale)
        elif impl == "absorbed":
            w_uk, w_uv = w_kv_b.split([self.d_nope, self.d_v], dim=1)
            q_latent = torch.einsum("bhsd,hdc->bhsc", q_nope, w_uk)  # W_UK absorbed into the query
            if t > s:  # new queries after a cached prefix (decoding, verifying): score the cached latents in place
                out_latent = attend_latent(q_latent, q_rope, c_kv, k_rope, self.scale)
            else:
                key = torch.cat([c_kv, k_rope], dim=-1)[:, None].expand(b, self.n_heads, t, self.d_c + self.d_rope)
                value = c_kv[:, None].expand(b, self.n_heads, t, self.d_c)
                out_latent = _attend(torch.cat([q_latent, q_rope], dim=-1), key, value, self.scale)
            out = torch.einsum("bhsc,hvc->bhsv", out_latent, w_uv)  # W_UV absorbed into the output
        else:
            raise ValueError(f"impl={impl!r} is not one of 'auto', 'naive', 'absorbed'")
        return self.wo(out.transpose(1, 2).reshape(b, s, self.n_heads * self.d_v))


class StandardAttention(nn.Module):
    """MHA, GQA or MQA: ``kv_heads`` key/value heads shared by groups of query heads; RoPE on the whole head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h, d, hd, g = cfg.num_attention_heads, cfg.hidden_size, cfg.std_head_dim, cfg.kv_heads
        self.n_heads, self.kv_heads, self.head_dim = h, g, hd
        self.wq = nn.Linear(d, h * hd, bias=False)
        self.wk = nn.Linear(d, g * hd, bias=False)
        self.wv = nn.Linear(d, g * hd, bias=False)
        self.wo = nn.Linear(h * hd, d, bias=False)
        self.scale = cfg.softmax_scale

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0, impl: str | None = None) -> torch.Tensor:
        """(batch, seq, hidden) -> (batch, seq, hidden). ``impl`` is accepted for a common interface and unused."""
        b, s, _ = x.shape
        q = apply_rope(self.wq(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2), cos, sin)
        k = apply_rope(self.wk(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2), cos, sin)
        v = self.wv(x).view(b, s, self.kv_heads, self.head_dim)
        if cache is not None:  # cached as (b, seq, kv_heads, d_h)
            k, v = cache.update(layer, k.transpose(1, 2), v)
            k = k.transpose(1, 2)
        out = _attend(q, k, v.transpose(1, 2), self.scale, enable_gqa=self.kv_heads != self.n_heads)
        return self.wo(out.transpose(1, 2).reshape(b, s, self.n_heads * self.head_dim))


def make_attention(cfg: ModelConfig) -> nn.Module:
    return MLA(cfg) if cfg.attention == "mla" else StandardAttention(cfg)


def decode_step_flops(layer: MLA, impl: str, cached: int) -> int:
    """FLOPs of one MLA layer for one new token attending to ``cached`` earlier positions, with path ``impl``.

    Counted by ``torch.utils.flop_counter`` on whatever device ``layer`` lives on; build the layer under
    ``torch.device("meta")`` to count a DeepSeek-V3-sized layer without allocating or computing anything.
    """
    if impl not in ("naive", "absorbed"):
        raise ValueError(f"impl={impl!r} is not one of 'naive', 'absorbed'")
    cfg, device = layer.cfg, next(layer.parameters()).device
    with torch.device(device):
        cache = KVCache(num_layers=1)
        cache.update(0, torch.empty(1, cached, cfg.kv_lora_rank), torch.empty(1, cached, cfg.qk_rope_head_dim))
        h = torch.empty(1, 1, cfg.hidden_size)
        cos = sin = torch.empty(1, cfg.qk_rope_head_dim // 2)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        layer(h, cos, sin, cache=cache, impl=impl)
    return counter.get_total_flops()
