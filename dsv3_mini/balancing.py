"""Load balancing for DeepSeekMoE: the auxiliary-loss-free bias rule, the balance losses, and the MaxVio metric.

Auxiliary-loss-free balancing (arXiv 2408.15664; V3 report §2.1.2): after each optimizer step, per MoE layer,
    b_i ← b_i + γ · sign(mean_load − load_i)
so over-loaded experts become less likely to be *selected* and under-loaded ones more. The bias never enters the
gating weights and gets no gradient. V3 uses γ = 0.001 for most of training.

The complementary sequence-wise loss (V3 eq. 17-20), with a tiny α (0.0001 in V3):
    L_Bal = α Σ_i f_i P_i,  f_i = N / (K·T) · #{t : i ∈ TopK(t)},  P_i = (1/T) Σ_t s_i,t / Σ_j s_j,t
averaged over the sequences of a batch. The classic auxiliary loss (Switch/GShard form) is the same product over
the whole batch, α·N·Σ_i f_i P_i with f_i the fraction of routed slots that went to expert i.

Policies (``ModelConfig.balance``): "loss-free" (bias rule + sequence-wise loss), "aux-loss" (the classic loss over
the whole batch, no bias), "seq-aux-loss" (the sequence-wise loss with the auxiliary loss's large α, no bias: the
baseline of 2408.15664 and of V3 §4.5.3, which finds that the *scope*, batch vs sequence, is what matters), "none".
``simulate_balancing`` (the widget's router-only simulation) runs "loss-free", "aux-loss" and "none".
``proportional_update`` is a *variant* some learners meet elsewhere; V3 uses the sign rule.

One difference from eq. 18: V3 counts f_i over the top-K of the raw affinities s; we count the experts actually
selected (top-K of s + b). Without a bias ("seq-aux-loss") they are the same; under "loss-free" ours follows the
routing the bias produces.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import BALANCE_POLICIES, ModelConfig
from .moe import Router

POLICIES = tuple(p for p in BALANCE_POLICIES if p != "seq-aux-loss")  # what simulate_balancing runs


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
        elif cfg.balance == "seq-aux-loss":
            terms.append(sequence_balance_loss(r.scores.view(*r.tokens_shape, -1),
                                               r.indices.view(*r.tokens_shape, -1), cfg.aux_loss_alpha))
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


def _route(cfg: ModelConfig, choice: torch.Tensor, not_twice: torch.Tensor) -> torch.Tensor:
    """``Router.select`` for many token batches at once: choice s + b (P, E, T), experts first -> the chosen experts
    (P, T, K), for each batch the very indices ``Router.select`` returns. ``not_twice`` (m, m, 1) is −inf on the
    diagonal and 0 elsewhere, m = E / n_group.

    ``Router.select`` scores each group by the sum of its two highest with a ``topk`` per (token, group): many short
    rows, which ``torch.topk`` handles slowly. Here that sum is the largest sum of two different members, one maximum
    over all pairs; rounding is monotonic, so it is the very float that ``topk(2).values.sum()`` gives, and the two
    ``topk`` calls that follow (best groups, then best experts in them) see the same numbers: same indices, ties
    included.
    """
    p, e, t = choice.shape
    if cfg.n_group > 1:
        grouped = choice.view(p, cfg.n_group, e // cfg.n_group, t)
        pairs = (grouped.unsqueeze(-2) + not_twice).add_(grouped.unsqueeze(-3))  # (P, G, m, m, T); adding 0 is exact
        best = pairs.amax((-3, -2)).transpose(1, 2).topk(cfg.topk_group, dim=-1).indices  # (P, T, topk_group)
        # −inf for the groups left out, 0 for the kept ones: adding it is Router.select's masked_fill
        dropped = torch.full((p, t, cfg.n_group), float("-inf")).scatter_(-1, best, 0.0)
        choice = (grouped + dropped.transpose(1, 2).unsqueeze(2)).view(p, e, t)
    return choice.transpose(1, 2).topk(cfg.num_experts_per_tok, dim=-1).indices


def simulate_policies(cfg: ModelConfig, policies: tuple[str, ...] = POLICIES, steps: int = 200, tokens: int = 512,
                      skew: float = 2.0, speed: float = 1e-3, alpha: float = 1e-2, lr: float = 10.0,
                      update: str = "sign", seed: int = 0) -> dict[str, BalanceHistory]:
    """``simulate_balancing`` for several policies in one pass: {policy: BalanceHistory}, each exactly what
    ``simulate_balancing`` returns for that policy alone (same router, same tokens, same numbers).

    The steps run in order, since each step's routing depends on the bias or weights the step before left; within a
    step the routing of all policies is one batch (P, E, T) through ``_route``.
    """
    policies = tuple(dict.fromkeys(policies))
    if not policies or any(p not in POLICIES for p in policies):
        raise ValueError(f"policies={policies!r}: each must be one of {', '.join(map(repr, POLICIES))}")
    if update not in ("sign", "proportional"):
        raise ValueError(f"update={update!r} is not one of 'sign', 'proportional'")
    if steps < 1 or tokens < 1:
        raise ValueError(f"steps={steps} and tokens={tokens} must be positive")
    router, x0 = skewed_router(cfg, tokens, skew, seed)
    g = torch.Generator().manual_seed(seed + 1)
    rule = sign_update if update == "sign" else proportional_update
    # every step's fresh tokens at once (the same numbers as drawing them step by step); with frozen router weights
    # ("loss-free", "none") their affinities too, so each step only runs the selection with the current bias
    xs = torch.randn(steps, tokens, cfg.hidden_size, generator=g) + x0.mean(0)
    if policies != ("aux-loss",):
        with torch.no_grad():
            frozen = router.affinities(xs).transpose(1, 2).contiguous()  # (steps, E, T)
    trained = Router(cfg)  # "aux-loss" moves its weights; `router` keeps the initial ones
    trained.load_state_dict(router.state_dict())
    aux = policies.index("aux-loss") if "aux-loss" in policies else None
    n, e = len(policies), cfg.n_routed_experts
    not_twice = torch.zeros(e // cfg.n_group, e // cfg.n_group).fill_diagonal_(float("-inf"))[..., None]
    offsets = torch.arange(n)[:, None] * e  # policy i counts into bins i·E … i·E + E − 1
    bias = [torch.zeros(e) for _ in policies]  # each policy's b; only "loss-free" moves it
    loads, biases = [], []
    for step in range(steps):
        biases.append(torch.stack(bias))  # (P, E), before this step's update
        if aux is not None:
            scores = trained.affinities(xs[step])  # (T, E), with gradient
            s_t = torch.stack([scores.detach().T if i == aux else frozen[step] for i in range(n)])
        else:
            s_t = frozen[step]  # (E, T), the same for every frozen policy
        chosen = _route(cfg, s_t + biases[-1][..., None], not_twice)  # (P, T, K)
        counts = torch.bincount((chosen.flatten(1) + offsets).flatten(), minlength=n * e).view(n, e)
        loads.append(counts)  # (P, E) tokens per expert
        for i, policy in enumerate(policies):
            if policy == "loss-free":
                bias[i] = rule(bias[i], counts[i], speed)
        if aux is not None:
            (grad,) = torch.autograd.grad(aux_loss(scores, chosen[aux], alpha), trained.weight)
            with torch.no_grad():
                trained.weight -= lr * grad
    load = torch.stack(loads, dim=1).float()  # (P, steps, E)
    mean = load.mean(-1)
    max_vio = torch.where(mean == 0, 0.0, (load.amax(-1) - mean) / mean)  # MaxVio_batch: each step's own tokens
    bias_history = torch.stack(biases, dim=1)
    return {p: BalanceHistory(load=load[i], bias=bias_history[i], max_vio=max_vio[i]) for i, p in enumerate(policies)}


def simulate_balancing(cfg: ModelConfig, policy: str = "loss-free", steps: int = 200, tokens: int = 512,
                       skew: float = 2.0, speed: float = 1e-3, alpha: float = 1e-2, lr: float = 10.0,
                       update: str = "sign", seed: int = 0) -> BalanceHistory:
    """Run a balancing policy on a skewed router for ``steps`` steps, fresh tokens each step.

    - "loss-free": router weights frozen; the bias moves by ``update`` ("sign", V3's rule, or "proportional").
    - "aux-loss": no bias; the router weights take SGD steps (learning rate ``lr``) on the classic aux loss (α).
    - "none": nothing moves; shows the imbalance of the skewed router.

    ``max_vio`` is MaxVio_batch, one value per step (its own tokens); the loop itself is ``simulate_policies``.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy={policy!r} is not one of {', '.join(map(repr, POLICIES))}")
    return simulate_policies(cfg, (policy,), steps=steps, tokens=tokens, skew=skew, speed=speed, alpha=alpha, lr=lr,
                             update=update, seed=seed)[policy]
