"""Looking inside a trained model: which experts each domain of the corpus is routed to."""

from __future__ import annotations

import torch

from .data import Dataset
from .model import DeepSeekV3


@torch.no_grad()
def routing_by_domain(model: DeepSeekV3, dataset: Dataset, batch_size: int = 16, seq_len: int = 256,
                      max_batches: int | None = 8) -> torch.Tensor:
    """Fraction of each domain's routed slots that go to each expert, per MoE layer of the main model.

    Returns (layers, domains, experts); each (layer, domain) row sums to 1 (domains absent from the data give 0).
    """
    was_training = model.training
    model.eval()
    moes = model.moe_layers(include_mtp=False)
    n_dom = len(dataset.domain_names)
    counts = torch.zeros(len(moes), n_dom, model.cfg.n_routed_experts)
    for tokens, _, domains in dataset.val_batches(batch_size, seq_len, max_batches):
        model(tokens)
        dom = domains.flatten()
        for layer, moe in enumerate(moes):
            idx = moe.last_routing.indices  # (T, K)
            flat_dom = dom[:, None].expand_as(idx).flatten()
            counts[layer].index_put_((flat_dom, idx.flatten()), torch.ones(idx.numel()), accumulate=True)
    model.train(was_training)
    return counts / counts.sum(-1, keepdim=True).clamp_min(1)


def domain_expert_mutual_information(
    fractions: torch.Tensor, domain_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mutual information (nats) between a token's domain and its expert, per layer, from ``routing_by_domain``.

    0 when every domain uses the experts alike; up to ln(#domains) when experts separate the domains perfectly.
    Domains are weighted equally unless ``domain_weights`` is given.
    """
    layers, n_dom, _ = fractions.shape
    w = torch.full((n_dom,), 1.0 / n_dom) if domain_weights is None else domain_weights / domain_weights.sum()
    joint = fractions * w[None, :, None]  # p(domain, expert)
    p_expert = joint.sum(1, keepdim=True)
    ratio = torch.where(joint > 0, joint / (w[None, :, None] * p_expert).clamp_min(1e-12), torch.ones(()))
    return (joint * ratio.log()).sum(dim=(1, 2))
