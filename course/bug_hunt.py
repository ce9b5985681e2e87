"""Bug-hunt labs: a model (or a function) with one planted bug, and the tools to find it.

The most instructive DeepSeek-V3 mistakes in public code are bugs, not wrong answers. Each lab hands the learner a
broken copy of one piece of ``dsv3_mini`` — the library itself stays correct — and the course's own tools find it:

============================  =============================================================  =========================
bug                           what is wrong                                                  the tool that finds it
============================  =============================================================  =========================
``"bias-in-weights"``         the selection bias b is added to the gating weights            ``parity_gap``
``"rope-not-applied"``        MLA never rotates its RoPE dimensions (q_R, k_R)               ``parity_gap``
``"mla-cache-2dc"``           the cache formula counts 2·d_c numbers per token and layer     ``cache_formula_gap``
``"aux-loss-dropped"``        the balance loss is computed but never added to the loss       ``loss_gap``
``"bias-gets-gradient"``      the bias is a parameter in the autograd graph                  ``bias_gradient``
``"mtp-target-leak"``         the MTP loss scores a module against the token it was given    ``mtp_leak``
============================  =============================================================  =========================

A lesson opens its lab by a neutral name, ``open_lab("1a")`` (``LABS``). ``lab(bug)`` returns a ``Lab``: ``.model``
(or ``.function``) with the bug, ``.source`` (the planted function to read), ``.signature`` of the function a fix
must provide, and ``.detect()`` running the tool. ``repair(bug, fixed)`` builds the same lab with the learner's
fixed function installed instead; ``course.check_bug_hunt`` confirms that the learner named the right bug and that
the repaired model passes the tool. The six planted functions share their signatures with the library code they
replace (``Router.select``, ``MLA.forward``, ``bytes_per_token``) or, for the two loss bugs, with ``total_loss`` /
``mtp_losses`` below, which the lab wraps around ``DeepSeekV3.forward``. ``solution(bug)`` is the correct function
(the library's own where it has one).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from dsv3_mini.attention import MLA, _attend
from dsv3_mini.config import ModelConfig, preset
from dsv3_mini.interop import to_transformers
from dsv3_mini.kv_cache import KVCache, bytes_per_token
from dsv3_mini.model import DeepSeekV3, cross_entropy
from dsv3_mini.moe import Router, Routing

BUGS = {
    "bias-in-weights": "the selection bias b is added to the gating weights",
    "rope-not-applied": "MLA never applies RoPE to its rope dimensions",
    "mla-cache-2dc": "the MLA cache formula is 2·d_c instead of d_c + d_R",
    "aux-loss-dropped": "the auxiliary balance loss is computed but never added to the loss",
    "bias-gets-gradient": "the selection bias receives gradients",
    "mtp-target-leak": "the MTP target is the token the module was given (it leaks)",
}
# The labs as the lessons hand them out: a neutral name, so opening one does not say what is wrong with it.
LABS = {"1a": "rope-not-applied", "1b": "mla-cache-2dc", "2": "bias-in-weights", "3a": "aux-loss-dropped",
        "3b": "bias-gets-gradient", "5": "mtp-target-leak"}


def bug_menu() -> str:
    """The names a diagnosis may use, one per line with what each bug does (what every lab prints first)."""
    return "\n".join(f"{name:<20} {what}" for name, what in BUGS.items())


PARITY_TOL = 1e-4  # max |Δlogits| against transformers in fp32 (tests/test_parity.py)
LEAK_MARGIN = 0.5  # nats: on random tokens an honest loss stays within this of ln(vocab)


# -- the pieces shared by the planted functions and a learner's fix --------------------------------------------------
def group_limited_topk(cfg: ModelConfig, choice: torch.Tensor) -> torch.Tensor:
    """(T, E) selection scores s + b -> (T, K) expert indices: the best ``topk_group`` groups, top-K inside them."""
    if cfg.n_group > 1:
        grouped = choice.view(-1, cfg.n_group, cfg.n_routed_experts // cfg.n_group)
        group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)
        kept = group_scores.topk(cfg.topk_group, dim=-1).indices
        keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept, True)
        choice = grouped.masked_fill(~keep[..., None], float("-inf")).view(-1, cfg.n_routed_experts)
    return choice.topk(cfg.num_experts_per_tok, dim=-1).indices


def routing(router: torch.nn.Module, scores: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor,
            tokens_shape: tuple[int, ...] | None) -> Routing:
    """Normalise and scale the chosen weights (T, K) as V3 does and wrap everything in a ``Routing``."""
    cfg = router.cfg
    if cfg.norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    counts = torch.bincount(indices.flatten(), minlength=cfg.n_routed_experts)
    return Routing(scores=scores, weights=weights * cfg.routed_scaling_factor, indices=indices, counts=counts,
                   tokens_shape=tokens_shape or (scores.shape[0],))


# -- the planted functions (neutral names: the hunt is to find what is wrong) ----------------------------------------
def select_v1(router, scores, tokens_shape=None):
    choice = scores.detach() + router.bias
    indices = group_limited_topk(router.cfg, choice)
    weights = (scores + router.bias).gather(1, indices)
    return routing(router, scores, weights, indices, tokens_shape)


def select_v2(router, scores, tokens_shape=None):
    choice = scores + router.bias
    indices = group_limited_topk(router.cfg, choice.detach())
    weights = (choice - router.bias.detach()).gather(1, indices)
    return routing(router, scores, weights, indices, tokens_shape)


def mla_forward(attn, x, cos, sin, cache=None, layer=0, impl=None):
    b, s, _ = x.shape
    q = attn.wq(x) if attn.cfg.q_lora_rank is None else attn.wq_b(attn.q_norm(attn.wq_a(x)))
    q = q.view(b, s, attn.n_heads, -1).transpose(1, 2)  # (b, h, s, d_h + d_R)
    q_nope, q_rope = q.split([attn.d_nope, attn.d_rope], dim=-1)
    c_kv, k_rope = attn.wkv_a(x).split([attn.d_c, attn.d_rope], dim=-1)
    c_kv = attn.kv_norm(c_kv)  # (b, s, d_c)
    if cache is not None:
        c_kv, k_rope = cache.update(layer, c_kv, k_rope)
    t = c_kv.shape[1]
    w_kv_b = attn.wkv_b.weight.view(attn.n_heads, attn.d_nope + attn.d_v, attn.d_c)
    kv = torch.einsum("btc,hdc->bhtd", c_kv, w_kv_b)  # k_C and v_C for every head
    k_nope, v = kv.split([attn.d_nope, attn.d_v], dim=-1)
    k = torch.cat([k_nope, k_rope[:, None].expand(b, attn.n_heads, t, attn.d_rope)], dim=-1)
    out = _attend(torch.cat([q_nope, q_rope], dim=-1), k, v, attn.scale)
    return attn.wo(out.transpose(1, 2).reshape(b, s, attn.n_heads * attn.d_v))


def bytes_per_token_v1(cfg, dtype_bytes=2):
    return cfg.num_hidden_layers * 2 * cfg.kv_lora_rank * dtype_bytes


def total_loss_v1(model, main, mtp_losses, balance):
    loss = main
    if mtp_losses:
        loss = loss + model.cfg.mtp_loss_weight / len(model.mtp) * torch.stack(mtp_losses).sum()
    return loss


def mtp_losses_v1(model, mtp_logits, targets):
    return [cross_entropy(logits, targets[:, k - 1: k - 1 + logits.shape[1]])
            for k, logits in enumerate(mtp_logits, start=1)]


# -- the correct counterparts of the two loss functions (the library inlines them in DeepSeekV3.forward) -------------
def total_loss(model, main, mtp_losses, balance):
    """L = L_main + λ/D · Σ_k L_MTP^k + the balance term (report eq. 25, section 2.1.2)."""
    loss = total_loss_v1(model, main, mtp_losses, balance)
    return loss if balance is None else loss + balance


def mtp_losses(model, mtp_logits, targets):
    """CE of depth k against the token k + 1 ahead: entry [k-1][:, i] is scored against ``targets[:, i + k]``."""
    return [cross_entropy(logits, targets[:, k:]) for k, logits in enumerate(mtp_logits, start=1)]


# -- installing a function into a fresh model ------------------------------------------------------------------------
def _install_select(model: DeepSeekV3, select: Callable, as_parameter: bool = False) -> None:
    for moe in model.moe_layers():
        gate = moe.gate
        if as_parameter:  # the bias registered as a parameter, as in code that ports V3 naively
            bias = gate.bias.detach().clone()
            del gate._buffers["bias"]
            gate.bias = torch.nn.Parameter(bias)
        gate.select = types.MethodType(select, gate)


def _install_mla(model: DeepSeekV3, forward: Callable) -> None:
    for block in model.modules():
        if isinstance(block, MLA):
            block.forward = types.MethodType(forward, block)


def _install_losses(model: DeepSeekV3, total: Callable, per_depth: Callable) -> None:
    """Wrap ``forward`` so the training loss is assembled by ``total(model, main, mtp_losses(...), balance)``."""

    def forward(self, tokens, targets=None, cache=None):
        out = DeepSeekV3.forward(self, tokens, targets=targets, cache=cache)
        if targets is None:
            return out
        depth = per_depth(self, self.mtp_logits(tokens, out.hidden_states), targets)
        loss = total(self, out.main_loss, depth, out.balance_loss)
        return dataclasses.replace(out, loss=loss, mtp_losses=depth)

    model.forward = types.MethodType(forward, model)


@dataclass(frozen=True)
class _Spec:
    planted: Callable
    correct: Callable  # the library's (or this module's) correct function: the solution, and what tests repair with
    install: Callable[[DeepSeekV3, Callable], None] | None  # None: the lab is the function itself
    config: dict[str, Any]
    detector: str


SPECS = {
    "bias-in-weights": _Spec(select_v1, Router.select, lambda m, f: _install_select(m, f), {}, "parity_gap"),
    "bias-gets-gradient": _Spec(select_v2, Router.select, lambda m, f: _install_select(m, f, as_parameter=True), {},
                                "bias_gradient"),
    "rope-not-applied": _Spec(mla_forward, MLA.forward, _install_mla, {"mla_impl": "naive"}, "parity_gap"),
    "mla-cache-2dc": _Spec(bytes_per_token_v1, bytes_per_token, None, {}, "cache_formula_gap"),
    "aux-loss-dropped": _Spec(total_loss_v1, total_loss, lambda m, f: _install_losses(m, f, mtp_losses),
                              {"balance": "aux-loss", "aux_loss_alpha": 0.1}, "loss_gap"),
    "mtp-target-leak": _Spec(mtp_losses_v1, mtp_losses, lambda m, f: _install_losses(m, total_loss, f), {},
                             "mtp_leak"),
}


@dataclass
class Lab:
    """One bug hunt: the broken ``model`` (or ``function``), the planted ``source`` to read, the tool."""

    bug: str
    model: DeepSeekV3 | None
    function: Callable
    detector: str

    @property
    def source(self) -> str:
        return inspect.getsource(self.function)

    @property
    def signature(self) -> str:
        return f"{self.function.__name__}{inspect.signature(self.function)}"

    def detect(self) -> float:
        """The tool's measurement: 0 (or below its tolerance) when the code is right; see ``passes``."""
        return DETECTORS[self.detector](self.model if self.model is not None else self.function)

    def passes(self) -> bool:
        value = self.detect()
        return value <= (PARITY_TOL if self.detector == "parity_gap" else 1e-6 if self.detector == "loss_gap"
                         else 0.0)


def _check_bug(bug: str) -> _Spec:
    if bug not in SPECS:
        raise ValueError(f"bug={bug!r} is not one of {', '.join(map(repr, SPECS))}")
    return SPECS[bug]


def _randomize_biases(model: DeepSeekV3, scale: float = 0.05, seed: int = 1) -> None:
    """Nonzero selection biases (as after some balancing steps): with b = 0 a bias bug is invisible."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for moe in model.moe_layers():
            moe.gate.bias.copy_((torch.rand(moe.gate.bias.shape, generator=g) * 2 - 1) * scale)


def _build(bug: str, function: Callable, seed: int) -> Lab:
    spec = _check_bug(bug)
    if spec.install is None:
        return Lab(bug, None, function, spec.detector)
    torch.manual_seed(seed)
    model = DeepSeekV3(preset("tiny").replace(**spec.config)).eval()
    _randomize_biases(model)
    spec.install(model, function)
    return Lab(bug, model, function, spec.detector)


def lab(bug: str, seed: int = 0) -> Lab:
    """The lab of ``bug`` (one of ``BUGS``): a tiny model (or a function) with that bug planted."""
    return _build(bug, _check_bug(bug).planted, seed)


def bug_of(lab_id: str) -> str:
    """The bug planted in lesson lab ``lab_id`` (a key of ``LABS``)."""
    if lab_id not in LABS:
        raise ValueError(f"lab_id={lab_id!r} is not one of {', '.join(map(repr, LABS))}")
    return LABS[lab_id]


def open_lab(lab_id: str, seed: int = 0) -> Lab:
    """Lesson lab ``lab_id`` ("1a", "1b", "2", "3a", "3b", "5"): ``lab`` of its planted bug."""
    return lab(bug_of(lab_id), seed)


def solution(bug: str) -> Callable:
    """The correct function for ``bug``'s lab: ``Router.select``, ``MLA.forward``, ``kv_cache.bytes_per_token``, or
    ``total_loss`` / ``mtp_losses`` above."""
    return _check_bug(bug).correct


def repair(bug: str, fixed: Callable, seed: int = 0) -> Lab:
    """The same lab with the learner's ``fixed`` function (same signature as ``lab(bug).function``) installed."""
    spec = _check_bug(bug)
    want, got = inspect.signature(spec.planted), inspect.signature(fixed)
    if len(want.parameters) != len(got.parameters):
        raise ValueError(f"fixed must take {len(want.parameters)} arguments ({', '.join(want.parameters)}), like "
                         f"the planted function; it takes ({', '.join(got.parameters)})")
    return _build(bug, fixed, seed)


# -- the tools ---------------------------------------------------------------------------------------------------------
def _tokens(cfg: ModelConfig, batch: int = 2, seq: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(seed))


def parity_gap(model: DeepSeekV3) -> float:
    """max |Δlogits| between ``model`` and transformers' DeepseekV3ForCausalLM with the same weights
    (``dsv3_mini.interop.to_transformers``); ≤ 1e-4 for a correct model in fp32."""
    hf = to_transformers(model)
    tokens = _tokens(model.cfg)
    with torch.no_grad():
        return (model(tokens).logits - hf(tokens).logits).abs().max().item()


def cache_formula_gap(formula: Callable[[ModelConfig, int], int], tokens: int = 8) -> float:
    """|measured − formula| bytes: a real MLA cache of the tiny model after ``tokens`` tokens (fp32, batch 1),
    ``KVCache.nbytes()``, against ``tokens × formula(cfg, 4)``."""
    cfg = preset("tiny")
    torch.manual_seed(0)
    model = DeepSeekV3(cfg).eval()
    cache = KVCache(cfg.num_hidden_layers)
    with torch.no_grad():
        model(_tokens(cfg, batch=1, seq=tokens), cache=cache)
    return float(abs(cache.nbytes() - tokens * formula(cfg, 4)))


def loss_gap(model: DeepSeekV3) -> float:
    """|loss − (L_main + λ/D Σ L_MTP + L_balance)| for one batch: every term the model computed must be in the loss
    it trains on. 0 for a correct model."""
    tokens = _tokens(model.cfg)
    with torch.no_grad():
        out = model.train()(tokens[:, :-1], targets=tokens[:, 1:])
    model.eval()
    parts = [out.main_loss, *(model.cfg.mtp_loss_weight / len(model.mtp) * x for x in out.mtp_losses)]
    if out.balance_loss is not None:
        parts.append(out.balance_loss)
    return abs(out.loss.item() - torch.stack(parts).sum().item())


def bias_gradient(model: DeepSeekV3) -> float:
    """The gradient norm that one backward pass of the training loss leaves on the routers' biases b
    (0 for V3: b is a buffer moved by the sign rule, never by the optimizer)."""
    tokens = _tokens(model.cfg)
    model.zero_grad(set_to_none=True)
    model.train()(tokens[:, :-1], targets=tokens[:, 1:]).loss.backward()
    model.eval()
    grads = [moe.gate.bias.grad for moe in model.moe_layers() if moe.gate.bias.grad is not None]
    return float(torch.stack([g.norm() for g in grads]).norm()) if grads else 0.0


def mtp_leak(model: DeepSeekV3, steps: int = 25, seed: int = 0) -> float:
    """The leakage test: train a copy on uniformly random tokens, where nothing can be predicted, and return how far
    its MTP loss falls below ln(vocab) (nats), less ``LEAK_MARGIN``. An honest loss cannot get below ln(vocab) on
    such data, so a positive value means the module is scored against something it can see."""
    trainee = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(trainee.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    loss = math.inf
    for _ in range(steps):  # 25 steps: the leak shows ~1.3 nats under ln(vocab), the honest loss 0
        tokens = torch.randint(0, model.cfg.vocab_size, (8, 33), generator=g)
        out = trainee(tokens[:, :-1], targets=tokens[:, 1:])
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        loss = out.mtp_losses[0].item()
    return max(0.0, math.log(model.cfg.vocab_size) - LEAK_MARGIN - loss)


DETECTORS: dict[str, Callable[[Any], float]] = {
    "parity_gap": parity_gap, "cache_formula_gap": cache_formula_gap, "loss_gap": loss_gap,
    "bias_gradient": bias_gradient, "mtp_leak": mtp_leak,
}
