"""Redundant experts: place copies of the busiest experts so that every rank gets about the same work.

At inference the balance that training reached is not the balance of the traffic being served: loads drift with
what users send. V3's answer (report §3.4): measure the load of each expert while serving, copy the most loaded
ones onto extra slots ("redundant experts", 32 in the prefill deployment: each of 32 GPUs hosts 8 experts + 1
redundant), send each token to one of an expert's copies, and re-place periodically.

The algorithm here is our own, written after the description of DeepSeek's EPLB (github.com/deepseek-ai/EPLB,
its global policy), which is not on PyPI and so cannot be installed here:

1. ``replicate``: every expert gets one slot; each redundant slot goes, one at a time, to the expert whose load per
   copy is largest (that copy halves, thirds, … its load).
2. ``pack``: the slots (load = expert load / its copies) are sorted by load, heaviest first, and each goes to the
   least loaded rank that still has room (every rank gets the same number of slots): the longest-processing-time
   rule with equal bin counts.

A rank's load is the sum of its slots' loads, assuming a token is sent to an expert's copies in equal shares
(the serving system's job). ``max_over_mean`` of the rank loads is the number to bring towards 1: the busiest rank
sets the time of an MoE layer. EPLB's hierarchical policy (groups packed onto nodes first, for node-limited routing)
is not reproduced; ``contiguous`` is the layout without redundancy that ``expert_parallel`` uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import Dataset
from .model import DeepSeekV3


@dataclass(frozen=True)
class Placement:
    """Slots on ranks: ``slot_expert`` (S,) the logical expert of each physical slot, ``slot_rank`` (S,) its rank;
    ``copies`` (E,) slots per expert; ``rank_load`` (ranks,) the load each rank serves."""

    slot_expert: torch.Tensor
    slot_rank: torch.Tensor
    copies: torch.Tensor
    rank_load: torch.Tensor

    @property
    def max_over_mean(self) -> float:
        """max / mean rank load: 1.0 is perfect balance."""
        return (self.rank_load.max() / self.rank_load.mean()).item()

    def experts_on(self, rank: int) -> list[int]:
        return self.slot_expert[self.slot_rank == rank].tolist()


def _check(load: torch.Tensor, ranks: int, redundant: int) -> None:
    if load.dim() != 1 or len(load) == 0:
        raise ValueError(f"load has shape {tuple(load.shape)}; expected (n_routed_experts,)")
    if (load < 0).any():
        raise ValueError("load has negative entries; loads are token counts (>= 0)")
    if ranks < 1:
        raise ValueError(f"ranks={ranks} must be a positive integer")
    if redundant < 0:
        raise ValueError(f"redundant={redundant} must be 0 or more")
    slots = len(load) + redundant
    if slots % ranks:
        raise ValueError(f"n_routed_experts + redundant = {len(load)} + {redundant} = {slots} slots are not divisible "
                         f"by ranks={ranks}: every rank must hold the same number of slots")


def replicate(load: torch.Tensor, redundant: int) -> torch.Tensor:
    """(E,) copies per expert: 1 each, then every redundant slot to the expert with the largest load per copy."""
    copies = torch.ones(len(load), dtype=torch.long)
    for _ in range(redundant):
        copies[int(torch.argmax(load.double() / copies))] += 1  # ties: the lowest expert id
    return copies


def pack(slot_load: torch.Tensor, ranks: int) -> torch.Tensor:
    """(S,) rank of each slot: heaviest first, to the least loaded rank with room (S / ranks slots per rank)."""
    per_rank = len(slot_load) // ranks
    rank_of = torch.empty(len(slot_load), dtype=torch.long)
    totals = [0.0] * ranks
    counts = [0] * ranks
    for s in torch.argsort(slot_load, descending=True, stable=True).tolist():
        r = min((r for r in range(ranks) if counts[r] < per_rank), key=lambda r: (totals[r], r))
        rank_of[s] = r
        totals[r] += float(slot_load[s])
        counts[r] += 1
    return rank_of


def _placement(load: torch.Tensor, slot_expert: torch.Tensor, slot_rank: torch.Tensor, ranks: int) -> Placement:
    copies = torch.bincount(slot_expert, minlength=len(load))
    slot_load = load.double()[slot_expert] / copies[slot_expert]
    rank_load = torch.zeros(ranks, dtype=torch.float64).index_add_(0, slot_rank, slot_load)
    return Placement(slot_expert=slot_expert, slot_rank=slot_rank, copies=copies, rank_load=rank_load)


def contiguous(load: torch.Tensor, ranks: int) -> Placement:
    """No redundancy: expert e on rank e // (E / ranks), the layout of ``expert_parallel``."""
    _check(load, ranks, 0)
    experts = torch.arange(len(load))
    return _placement(load, experts, experts // (len(load) // ranks), ranks)


def balanced(load: torch.Tensor, ranks: int, redundant: int = 0) -> Placement:
    """``replicate`` then ``pack``: ``redundant`` extra slots, E + redundant slots over ``ranks`` (see module doc)."""
    _check(load, ranks, redundant)
    copies = replicate(load, redundant)
    slot_expert = torch.repeat_interleave(torch.arange(len(load)), copies)
    slot_load = load.double()[slot_expert] / copies[slot_expert]
    return _placement(load, slot_expert, pack(slot_load, ranks), ranks)


@torch.no_grad()
def expert_loads(model: DeepSeekV3, dataset: Dataset, batch_size: int = 12, seq_len: int = 256,
                 max_batches: int | None = 4, domain: int | None = None) -> torch.Tensor:
    """(MoE layers, E) tokens routed to each expert on fixed validation windows (``domain``: only its tokens)."""
    moes = model.moe_layers(include_mtp=False)
    counts = torch.zeros(len(moes), model.cfg.n_routed_experts, dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        for tokens, _, domains in dataset.val_batches(batch_size, seq_len, max_batches):
            model(tokens)
            keep = None if domain is None else domains.flatten() == domain
            for layer, moe in enumerate(moes):
                idx = moe.last_routing.indices if keep is None else moe.last_routing.indices[keep]
                counts[layer] += torch.bincount(idx.flatten(), minlength=model.cfg.n_routed_experts)
    finally:
        model.train(was_training)
    return counts
