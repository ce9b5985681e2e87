"""DeepSeekMoE: shared experts plus fine-grained routed experts behind a sigmoid, group-limited router.

V3 report §2.1.2, equations 12-16:
    h'_t = u_t + Σ_{i=1..N_s} FFN_i^(s)(u_t) + Σ_{i=1..N_r} g_i,t FFN_i^(r)(u_t)
    s_i,t = sigmoid(u_t · e_i)
    selected = TopK over experts of (s_i,t + b_i), restricted to the topk_group best groups
    g_i,t = routed_scale · s_i,t / Σ_{j selected} s_j,t      (the bias b only selects; it never weights)
The bias ``b`` is a buffer, not a parameter: no gradient reaches it; ``dsv3_mini.balancing`` moves it.

Two numbers come from the released configuration and code, not from equations 12-16: the routed scale (2.5 in
``routed_scaling_factor``) and the group score, the sum of a group's top 2 affinities. The 2 is K_r / M = 8 / 4:
each token may reach at most M = 4 nodes (report §2.1.2, §3.2.2), so a node is judged by the best 2 of the 8 experts a
token could send there. DeepSeek's code and transformers write the 2 as a constant, and so do we (our presets keep
K_r / M = 2 where groups are used); DeepSeek-V2 ranked groups by their single highest affinity instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

# the most (token, expert) pairs MoE runs with torch._grouped_mm instead of its expert loop (MoE._grouped_experts)
GROUPED_MAX_PAIRS = 512


class SwiGLU(nn.Module):
    """FFN(x) = W2 (silu(W1 x) ⊙ W3 x): (..., dim) -> (..., dim). Used for dense layers and shared experts."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)  # gate
        self.w3 = nn.Linear(dim, hidden, bias=False)  # up
        self.w2 = nn.Linear(hidden, dim, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


@dataclass
class Routing:
    """One router decision for T tokens and E experts, K chosen per token.

    ``scores`` (T, E) are the affinities s (with gradient, for balance losses), ``weights`` (T, K) the gating values
    g, ``indices`` (T, K) the chosen experts, ``counts`` (E,) tokens per expert; ``tokens_shape`` is the shape the
    T tokens came in, e.g. (batch, seq), so per-sequence statistics can be formed.
    """

    scores: torch.Tensor
    weights: torch.Tensor
    indices: torch.Tensor
    counts: torch.Tensor
    tokens_shape: tuple[int, ...] = ()


def _init_normal(cfg: ModelConfig, *params: torch.Tensor) -> None:
    """Normal(0, initializer_range), so a Router or MoE built on its own is usable (``DeepSeekV3`` re-initialises).

    Drawn from a generator seeded with ``torch.initial_seed()`` rather than the global one: the seed still decides
    the values, and building a module does not shift the random numbers that come after it.
    """
    g = torch.Generator().manual_seed(torch.initial_seed())
    with torch.no_grad():
        for p in params:
            p.normal_(0.0, cfg.initializer_range, generator=g)


class Router(nn.Module):
    """Affinities, group-limited top-k selection with a selection-only bias, and normalised gating weights."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.hidden_size))  # centroids e_i
        self.register_buffer("bias", torch.zeros(cfg.n_routed_experts))  # b_i: selection only, no gradient
        _init_normal(cfg, self.weight)

    def forward(self, x: torch.Tensor) -> Routing:
        """x: (..., hidden), e.g. (T, hidden) or (batch, seq, hidden) -> Routing over its T tokens, whose
        ``tokens_shape`` is ``x.shape[:-1]``. Scores are computed in fp32 whatever the input dtype (as V3 keeps
        gates)."""
        return self.select(self.affinities(x.reshape(-1, x.shape[-1])), tokens_shape=tuple(x.shape[:-1]))

    def affinities(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., hidden) -> the affinities s (..., E): sigmoid (or softmax) of u · e_i, in fp32."""
        logits = F.linear(x.float(), self.weight.float())
        return logits.sigmoid() if self.cfg.scoring_func == "sigmoid" else logits.softmax(dim=-1)

    def select(self, scores: torch.Tensor, tokens_shape: tuple[int, ...] | None = None) -> Routing:
        """Affinities (T, E) -> Routing: group-limited top-k of s + b with the current bias, gating weights from s.

        ``tokens_shape`` is the shape the T tokens came in (default ``(T,)``).
        """
        cfg = self.cfg
        choice = scores.detach() + self.bias  # selection uses s + b; weights below use s alone
        if cfg.n_group > 1:
            grouped = choice.view(-1, cfg.n_group, cfg.n_routed_experts // cfg.n_group)
            group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)  # a group's score: the sum of its top 2
            kept = group_scores.topk(cfg.topk_group, dim=-1).indices
            keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept, True)
            choice = grouped.masked_fill(~keep[..., None], float("-inf")).view(-1, cfg.n_routed_experts)
        indices = choice.topk(cfg.num_experts_per_tok, dim=-1).indices
        weights = scores.gather(1, indices)
        if cfg.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        weights = weights * cfg.routed_scaling_factor
        counts = torch.bincount(indices.flatten(), minlength=cfg.n_routed_experts)
        return Routing(scores=scores, weights=weights, indices=indices, counts=counts,
                       tokens_shape=tokens_shape or (scores.shape[0],))


class MoE(nn.Module):
    """Shared + routed experts. ``forward``: (batch, seq, hidden) -> same shape.

    Routed experts are stored stacked (w1, w3: (E, inter, hidden); w2: (E, hidden, inter)). Dispatch sorts the
    (token, expert) pairs by expert, so each expert runs one matmul on its contiguous slice of tokens.
    The N_s shared experts are one SwiGLU of width N_s × inter: the sum of N_s SwiGLUs is exactly that.
    After each forward, ``last_routing`` holds the router's decision (for balancing and widgets). In training mode
    ``step_counts`` adds up tokens per expert until ``balancing.apply_bias_update`` reads and resets it, so the bias
    update sees every micro-batch of an optimizer step.
    ``linear`` is the matmul the experts use: ``F.linear``, or an FP8 simulation (``fp8.apply_fp8``).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        e, d, i = cfg.n_routed_experts, cfg.hidden_size, cfg.moe_intermediate_size
        self.gate = Router(cfg)
        self.w1 = nn.Parameter(torch.empty(e, i, d))
        self.w3 = nn.Parameter(torch.empty(e, i, d))
        self.w2 = nn.Parameter(torch.empty(e, d, i))
        _init_normal(cfg, self.w1, self.w3, self.w2)
        self.shared = SwiGLU(d, cfg.n_shared_experts * i) if cfg.n_shared_experts else None
        self.register_buffer("step_counts", torch.zeros(e, dtype=torch.long), persistent=False)
        self.last_routing: Routing | None = None
        self.linear = F.linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        routing = self.gate(x)
        self.last_routing = routing
        if self.training:
            self.step_counts += routing.counts
        k = routing.indices.shape[1]
        order = routing.indices.flatten().argsort(stable=True)  # (token, slot) pairs grouped by expert
        token = order // k
        xs = flat.index_select(0, token)  # its backward is deterministic on several threads; flat[token] is not
        gates = routing.weights.flatten()[order, None].to(x.dtype)
        out = torch.zeros_like(flat)
        if self._grouped_ok(xs):
            self._grouped_experts(xs, gates, token, routing.counts, out)
        else:
            self._expert_loop(xs, gates, token, routing.counts.tolist(), out)
        if self.shared is not None:
            out = out + self.shared(flat)
        return out.view(shape)

    def _grouped_ok(self, xs: torch.Tensor) -> bool:
        """Whether the few-token path may run: no autograd, plain matmuls in the weights' dtype, ≤ GROUPED_MAX_PAIRS."""
        return (len(xs) <= GROUPED_MAX_PAIRS and self.linear is F.linear and xs.dtype == self.w1.dtype
                and not (torch.is_grad_enabled() and self.w1.requires_grad)
                and not torch.is_autocast_enabled(xs.device.type))

    def _grouped_experts(self, xs: torch.Tensor, gates: torch.Tensor, token: torch.Tensor, counts: torch.Tensor,
                         out: torch.Tensor) -> None:
        """All experts in three ``torch._grouped_mm`` calls (one per matrix) on the expert-sorted pairs ``xs``.

        For decoding, verifying and sampling (a few tokens, no gradient): a fixed handful of operators whatever the
        number of experts reached, where the loop runs ~8 per expert. The experts timed alone: 1 token × 4 experts
        147 → 128 µs, 2 tokens 217 → 152 µs, 64 tokens 737 → 530 µs; in a whole decoding step of "mini", where the
        other ~400 operators stay, a few percent (benchmarks/README.md, "Decoding profile"). Bitwise the same as the
        loop (each group is the same matmul on the same rows; ``tests/test_moe.py``). Slower than the loop from ~400
        tokens on, so training and long prefills keep the loop.
        """
        offs = counts.cumsum(0).to(torch.int32)
        h = (F.silu(torch._grouped_mm(xs, self.w1.transpose(1, 2), offs=offs))
             * torch._grouped_mm(xs, self.w3.transpose(1, 2), offs=offs))
        out.index_add_(0, token, torch._grouped_mm(h, self.w2.transpose(1, 2), offs=offs) * gates)

    def _expert_loop(self, xs: torch.Tensor, gates: torch.Tensor, token: torch.Tensor, counts: list[int],
                     out: torch.Tensor) -> None:
        """Expert by expert on its contiguous slice of the expert-sorted pairs (training's path)."""
        lin = self.linear
        # Expert by expert, each slice's output is weighted and added in while it is still in the CPU's cache: the
        # same additions in the same order as one index_add_ of all slices, without a (T·K, hidden) concatenation
        # and two more passes over it through main memory.
        # unbind, not w1[e]: its backward stacks the 16 experts' gradients once instead of zero-filling a whole
        # (E, inter, hidden) tensor per expert and matrix and adding those up
        for chunk, g, tok, w1, w3, w2 in zip(xs.split(counts), gates.split(counts), token.split(counts),
                                             self.w1.unbind(), self.w3.unbind(), self.w2.unbind(), strict=True):
            if len(chunk):
                out.index_add_(0, tok, lin(F.silu(lin(chunk, w1)) * lin(chunk, w3), w2) * g)
