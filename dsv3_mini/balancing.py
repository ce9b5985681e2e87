"""Load balancing for DeepSeekMoE: the auxiliary-loss-free bias rule, the balance losses, and the MaxVio metric.

Auxiliary-loss-free balancing (arXiv 2408.15664; V3 report §2.1.2): after each optimizer step, per MoE layer,
    b_i ← b_i + γ · sign(mean_load − load_i)
so over-loaded experts become less likely to be *selected* and under-loaded ones more. The bias never enters the
gating weights and gets no gradient. V3 uses γ = 0.001 for most of training.

The complementary sequence-wise loss (V3 eq. 17-20), with a tiny α (0.0001 in V3):
    L_Bal = α Σ_i f_i P_i,  f_i = N / (K·T) · #{t : i ∈ TopK(t)},  P_i = (1/T) Σ_t s_i,t / Σ_j s_j,t
averaged over the sequences of a batch. The classic auxiliary loss (Switch/GShard form) is the same product over
the whole batch, α·N·Σ_i f_i P_i with f_i the fraction of routed slots that went to expert i.

Policies (``ModelConfig.balance``): "loss-free" (bias rule + sequence-wise loss), "aux-loss" (classic loss, no
bias), "none". ``proportional_update`` is a *variant* some learners meet elsewhere; V3 uses the sign rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import BALANCE_POLICIES, ModelConfig
from .moe import Router

POLICIES = BALANCE_POLICIES


def sign_update(bias: torch.Tensor, tokens_per_expert: torch.Tensor, speed: float) -> torch.Tensor:
    """The sign rule: returns a new bias (the argument is not modified). Exactly balanced experts stay put."""
    load = tokens_per_expert.float()
    return bias + speed * torch.sign(load.mean() - load)


def proportional_update(bias: torch.Tensor, tokens_per_expert: torch.Tensor, speed: float) -> torch.Tensor:
    """Variant (not V3): move each bias by γ times its relative violation (mean − load) / mean."""
    load = tokens_per_expert.float()
    mean = load.mean()
    return bias + speed * (mean - load) / mean.clamp_min(1e-9)


def max_violation(load: torch.Tensor) -> float:
    """MaxVio = (max_i load_i − mean load) / mean load (arXiv 2408.15664); 0 for a perfectly balanced load."""
    load = load.float()
    mean = load.mean()
    return 0.0 if mean == 0 else float((load.max() - mean) / mean)


def _assignments(indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """(..., T, K) chosen experts -> (..., n_experts) counts per expert."""
    flat = indices.flatten(-2)
    return torch.zeros(*flat.shape[:-1], n_experts, device=indices.device).scatter_add_(
        -1, flat, torch.ones_like(flat, dtype=torch.float)
    )


def sequence_balance_loss(scores: torch.Tensor, indices: torch.Tensor, alpha: float = 1e-4) -> torch.Tensor:
    """V3's complementary sequence-wise loss. scores (batch, seq, E) affinities s; indices (batch, seq, K).

    Equals α when every sequence is perfectly balanced, and grows as routing concentrates.
    """
    n_experts, k, t = scores.shape[-1], indices.shape[-1], scores.shape[-2]
    f = _assignments(indices, n_experts) * n_experts / (k * t)  # (batch, E)
    p = (scores / scores.sum(dim=-1, keepdim=True)).mean(dim=-2)  # (batch, E)
    return alpha * (f * p).sum(dim=-1).mean()


def aux_loss(scores: torch.Tensor, indices: torch.Tensor, alpha: float = 1e-2) -> torch.Tensor:
    """Classic batch-level auxiliary loss α·N·Σ f_i P_i (Switch/GShard). scores (T, E) or (batch, seq, E)."""
    n_experts = scores.shape[-1]
    scores, indices = scores.reshape(-1, n_experts), indices.reshape(-1, indices.shape[-1])
    f = _assignments(indices, n_experts) / indices.numel()  # fraction of routed slots per expert, sums to 1
    p = (scores / scores.sum(dim=-1, keepdim=True)).mean(dim=0)
    return alpha * n_experts * (f * p).sum()


def balance_loss(model: torch.nn.Module) -> torch.Tensor | None:
    """The balance loss of the model's policy over its MoE layers' latest routing (None when there is none)."""
    cfg: ModelConfig = model.cfg
    terms = []
    for moe in model.moe_layers():
        r = moe.last_routing
        if r is None:
            continue
        if cfg.balance == "loss-free" and cfg.seq_aux_alpha > 0:
            terms.append(sequence_balance_loss(r.scores.view(*r.tokens_shape, -1),
                                               r.indices.view(*r.tokens_shape, -1), cfg.seq_aux_alpha))
        elif cfg.balance == "aux-loss":
            terms.append(aux_loss(r.scores, r.indices, cfg.aux_loss_alpha))
    return torch.stack(terms).sum() if terms else None


def router_gradients(model: torch.nn.Module, tokens: torch.Tensor,
                     targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Where the router's gradient comes from, for one batch: (∇ LM, ∇ balance, balance term).

    The gradients on all router weights e_i (every MoE layer, flattened into one vector each) of the language-model
    losses (main + MTP) and of the policy's balance term alone. The bias b_i is a buffer, so neither touches it.
    Without a balance term (policy "none") the second vector is zeros and the third value None.
    """
    out = model(tokens, targets=targets)
    gates = [moe.gate.weight for moe in model.moe_layers()]
    if out.balance_loss is None:
        lm = torch.autograd.grad(out.loss, gates)
        return _flat(lm), torch.zeros_like(_flat(lm)), None
    lm = torch.autograd.grad(out.loss - out.balance_loss, gates, retain_graph=True)
    bal = torch.autograd.grad(out.balance_loss, gates)
    return _flat(lm), _flat(bal), out.balance_loss.detach()


def _flat(grads: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads])


@torch.no_grad()
def apply_bias_update(model: torch.nn.Module) -> list[float]:
    """Once per optimizer step: move every router's bias by the sign rule on the counts of that step.

    Uses the counts each MoE layer accumulated in training mode since the last call (all micro-batches of the step),
    then resets them. Biases move only under the "loss-free" policy. Returns MaxVio per MoE layer for that step.
    """
    cfg: ModelConfig = model.cfg
    vios = []
    for moe in model.moe_layers():
        counts = moe.step_counts.clone()
        vios.append(max_violation(counts))
        if cfg.balance == "loss-free" and counts.sum() > 0:
            moe.gate.bias.copy_(sign_update(moe.gate.bias, counts, cfg.bias_update_speed))
        moe.step_counts.zero_()
    return vios


@dataclass
class BalanceHistory:
    """A simulated balancing run: ``load`` (steps, E) tokens per expert, ``bias`` (steps, E) the bias *before*
    each step's update, ``max_vio`` (steps,)."""

    load: torch.Tensor
    bias: torch.Tensor
    max_vio: torch.Tensor


def skewed_router(cfg: ModelConfig, tokens: int, skew: float, seed: int = 0) -> tuple[Router, torch.Tensor]:
    """A real ``Router`` plus inputs whose mean direction favours the first experts (skew 0 = unbiased input).

    Returns (router, inputs of shape (tokens, hidden)). Used by tests, the widgets and the notebooks.
    """
    g = torch.Generator().manual_seed(seed)
    router = Router(cfg)
    with torch.no_grad():
        router.weight.copy_(torch.randn(router.weight.shape, generator=g) / cfg.hidden_size**0.5)
        direction = router.weight[: max(1, cfg.n_routed_experts // 4)].sum(0)
        direction = direction / direction.norm()
    x = torch.randn(tokens, cfg.hidden_size, generator=g) + skew * direction
    return router, x


def simulate_balancing(cfg: ModelConfig, policy: str = "loss-free", steps: int = 200, tokens: int = 512,
                       skew: float = 2.0, speed: float = 1e-3, alpha: float = 1e-2, lr: float = 10.0,
                       update: str = "sign", seed: int = 0) -> BalanceHistory:
    """Run a balancing policy on a skewed router for ``steps`` steps, fresh tokens each step.

    - "loss-free": router weights frozen; the bias moves by ``update`` ("sign", V3's rule, or "proportional").
    - "aux-loss": no bias; the router weights take SGD steps (learning rate ``lr``) on the classic aux loss (α).
    - "none": nothing moves; shows the imbalance of the skewed router.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy={policy!r} is not one of {', '.join(map(repr, POLICIES))}")
    if update not in ("sign", "proportional"):
        raise ValueError(f"update={update!r} is not one of 'sign', 'proportional'")
    if steps < 1 or tokens < 1:
        raise ValueError(f"steps={steps} and tokens={tokens} must be positive")
    router, x0 = skewed_router(cfg, tokens, skew, seed)
    direction = x0.mean(0)
    g = torch.Generator().manual_seed(seed + 1)
    rule = sign_update if update == "sign" else proportional_update
    # every step's fresh tokens at once (the same numbers as drawing them step by step); with frozen router weights
    # ("loss-free", "none") their affinities too, so each step only runs the router's selection with the current bias
    xs = torch.randn(steps, tokens, cfg.hidden_size, generator=g) + direction
    frozen = policy != "aux-loss"
    if frozen:
        with torch.no_grad():
            all_scores = router.affinities(xs)
    loads, biases, vios = [], [], []
    for step in range(steps):
        biases.append(router.bias.clone())
        routing = router.select(all_scores[step]) if frozen else router(xs[step])
        loads.append(routing.counts.float())
        vios.append(max_violation(routing.counts))
        if policy == "loss-free":
            router.bias.copy_(rule(router.bias, routing.counts, speed))
        elif policy == "aux-loss":
            router.zero_grad()
            aux_loss(routing.scores, routing.indices, alpha).backward()
            with torch.no_grad():
                router.weight -= lr * router.weight.grad
    return BalanceHistory(load=torch.stack(loads), bias=torch.stack(biases), max_vio=torch.tensor(vios))
