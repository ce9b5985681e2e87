"""MoE dispatch: our grouped dispatch (``dsv3_mini.moe.MoE``) against the per-expert loop learners write first.

Ours sorts the (token, slot) pairs by expert once and gives each expert one contiguous slice (``argsort`` +
``split``). The baseline is the loop found in most first MoE implementations (and in transformers' eager experts):
for every expert, find its tokens with ``torch.where(indices == e)``, gather them, run the expert, ``index_add_`` the
weighted result. A third variant runs every expert on every token and masks the result by the gating weights (the
"dense" MoE, no gather at all; E/K times the FLOPs). All three use the same router call and the same weights; the
benchmark checks that their outputs and gradients agree, then times forward and forward + backward, interleaved, at
the "mini" size (12 × 256 tokens, 16 experts of width 96, top-4, 1 shared).

Alone, one MoE layer's tensors fit this CPU's caches, which flatters the loop (its per-expert gathers and zero-filled
gradients stay in cache). So the same two dispatches are also timed where the trainer runs them: a whole training step
of the "mini" model (12 × 256, forward + loss + backward, MTP off as in ``train_step``), once with our dispatch and
once with the loop in every MoE layer, the same weights and batch, interleaved; the losses are checked equal first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dsv3_mini import DeepSeekV3, preset, seed_everything
from dsv3_mini.moe import MoE

from .common import THREADS, fmt_spread, interleave, paired_ratio, row, summary


def _expert(moe: MoE, e: int, x: torch.Tensor) -> torch.Tensor:
    return F.linear(F.silu(F.linear(x, moe.w1[e])) * F.linear(x, moe.w3[e]), moe.w2[e])


def loop_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """The per-expert loop: (batch, seq, hidden) -> same shape, the same function as ``moe(x)``."""
    flat = x.reshape(-1, x.shape[-1])
    routing = moe.gate(flat)
    out = torch.zeros_like(flat)
    for e in range(moe.w1.shape[0]):
        token, slot = torch.where(routing.indices == e)
        if len(token):
            out.index_add_(0, token, _expert(moe, e, flat[token]) * routing.weights[token, slot, None])
    if moe.shared is not None:
        out = out + moe.shared(flat)
    moe.last_routing = routing  # as MoE.forward: the model's balance loss reads it
    return out.view(x.shape)


def dense_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, weighted by a (tokens, experts) gate matrix that is zero off the top-K."""
    flat = x.reshape(-1, x.shape[-1])
    routing = moe.gate(flat)
    gates = torch.zeros(flat.shape[0], moe.w1.shape[0], dtype=flat.dtype).scatter(1, routing.indices, routing.weights)
    h = F.silu(torch.einsum("td,eid->eti", flat, moe.w1)) * torch.einsum("td,eid->eti", flat, moe.w3)
    out = torch.einsum("etd,te->td", torch.einsum("eti,edi->etd", h, moe.w2), gates)
    if moe.shared is not None:
        out = out + moe.shared(flat)
    return out.view(x.shape)


def _grads(moe: MoE, fn, x: torch.Tensor, probe: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    moe.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    out = fn(x)
    (out * probe).sum().backward()
    return out.detach(), [x.grad] + [p.grad.clone() for p in moe.parameters()]


def run(quick: bool = False) -> dict:
    seed_everything(0, THREADS)
    cfg, (batch, seq), reps = (preset("tiny"), (2, 32), 2) if quick else (preset("mini"), (12, 256), 20)
    moe = MoE(cfg).train()
    with torch.no_grad():
        for p in moe.parameters():
            torch.nn.init.normal_(p, std=cfg.initializer_range)
        moe.gate.bias.uniform_(-0.05, 0.05)  # a router after some balancing
    x = torch.randn(batch, seq, cfg.hidden_size)
    probe = torch.randn_like(x)
    variants = {"grouped": moe, "loop": lambda t: loop_moe(moe, t), "dense": lambda t: dense_moe(moe, t)}

    ref_out, ref_grads = _grads(moe, moe, x, probe)
    agreement = {}
    for name in ("loop", "dense"):
        out, grads = _grads(moe, variants[name], x, probe)
        agreement[name] = {"max_abs_output_diff": float((out - ref_out).abs().max()),
                           "max_abs_grad_diff": max(float((a - b).abs().max()) for a, b in zip(grads, ref_grads,
                                                                                               strict=True))}
    same = all(a["max_abs_output_diff"] < 1e-5 and a["max_abs_grad_diff"] < 1e-4 for a in agreement.values())

    def forward(fn):
        with torch.no_grad():
            fn(x)

    def train(fn):
        moe.zero_grad(set_to_none=True)
        (fn(x) * probe).sum().backward()

    fwd = interleave({k: (lambda f=f: forward(f)) for k, f in variants.items()}, reps)
    bwd = interleave({k: (lambda f=f: train(f)) for k, f in variants.items()}, reps)
    res = {phase: {k: summary(v) for k, v in t.items()} for phase, t in (("forward", fwd), ("forward_backward", bwd))}
    sp = {"forward": paired_ratio(fwd["loop"], fwd["grouped"]),
          "forward_backward": paired_ratio(bwd["loop"], bwd["grouped"]),
          "forward_vs_dense": paired_ratio(fwd["dense"], fwd["grouped"]),
          "forward_backward_vs_dense": paired_ratio(bwd["dense"], bwd["grouped"])}
    rows = []
    for phase, label in (("forward", "forward"), ("forward_backward", "forward + backward")):
        r = res[phase]
        rows.append(row(f"MoE dispatch, {label} ({cfg.name}, {batch * seq} tokens), ms",
                        f"grouped {fmt_spread(r['grouped'], 1e3, 1)}",
                        f"per-expert loop {fmt_spread(r['loop'], 1e3, 1)}; dense mask {fmt_spread(r['dense'], 1e3, 1)}",
                        "same output; faster than the loop", same and sp[phase]["median"] > 1.0,
                        f"{sp[phase]['median']:.2f}× vs loop, {sp[phase + '_vs_dense']['median']:.2f}× vs dense mask"))
    step = in_training_step(quick)
    rows.append(row(f"MoE dispatch inside a training step ({step['config']}, {step['tokens']} tokens, fwd+bwd), "
                    "ms per step", f"grouped {fmt_spread(step['seconds']['grouped'], 1e3, 0)}",
                    f"per-expert loop {fmt_spread(step['seconds']['loop'], 1e3, 0)}",
                    "same loss; faster than the loop", step["same_loss"] and step["speedup"]["median"] > 1.0,
                    f"{step['speedup']['median']:.2f}× vs loop (the whole step, {step['moe_layers']} MoE layers); "
                    "alone (rows above) a layer's tensors stay in cache"))
    return {"rows": rows, "data": {"config": cfg.name, "tokens": batch * seq, "reps": reps, "agreement": agreement,
                                   "same_output": same, "seconds": res, "speedup": sp, "training_step": step}}


def in_training_step(quick: bool = False) -> dict:
    """A training step of the whole model with our dispatch and with the loop in every MoE layer (interleaved)."""
    seed_everything(0, THREADS)
    cfg, (batch, seq), reps = ((preset("tiny"), (2, 32), 2) if quick else (preset("mini"), (12, 256), 12))
    cfg = cfg.replace(num_nextn_predict_layers=0)
    model = DeepSeekV3(cfg).train()
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq + 1), generator=torch.Generator().manual_seed(0))
    tokens, targets = tokens[:, :-1], tokens[:, 1:]
    moes = model.moe_layers()

    def step(loop: bool) -> float:
        for m in moes:  # an instance attribute: nn.Module.__call__ runs it instead of MoE.forward
            if loop:
                m.forward = lambda t, m=m: loop_moe(m, t)
            else:
                m.__dict__.pop("forward", None)
        model.zero_grad(set_to_none=True)
        loss = model(tokens, targets=targets).loss
        loss.backward()
        return float(loss.detach())

    same = abs(step(False) - step(True)) < 1e-5
    times = interleave({"grouped": lambda: step(False), "loop": lambda: step(True)}, reps)
    step(False)
    return {"config": cfg.name, "tokens": batch * seq, "moe_layers": len(moes), "reps": reps, "same_loss": same,
            "seconds": {k: summary(v) for k, v in times.items()},
            "speedup": paired_ratio(times["loop"], times["grouped"])}
