"""Node-limited routing's traffic: measured on the shipped model, then V3's arithmetic at full scale.

Why the group limit exists (V3 report §2.1.2, §3.2.2): with expert parallelism a token's hidden state travels to
every *node* that hosts one of its experts. Between nodes it crosses InfiniBand (IB, 50 GB/s per GPU), inside a node
NVLink (160 GB/s). V3 puts the 256 experts in 8 groups, one group per node, and lets a token use at most M = 4
groups (``topk_group``), chosen by the sum of the top K_r / M = 2 affinities in each group. A token then costs at
most 4 IB copies, however many experts it uses there, and the copy that lands on a node is fanned out over NVLink:
    experts a token can afford for the IB cost of M nodes ≈ M · (NVLink / IB) = 4 · 3.2 = 12.8 ≈ 13.
DeepSeek-V3 uses 8 (``num_experts_per_tok``) and keeps the rest as headroom.

Two parts:
- ``measured_traffic``: the shipped mini model's own routers on real validation tokens, re-routed under other
  limits (``n_group``, ``topk_group``); per token, the distinct destination nodes, the copies that leave the token's
  node, and their bytes (FP8 dispatch with 1×128 scales, BF16 combine, as in §3.3.3). Each layer's input is the one
  the trained model produces (it was trained with 4 groups and M = 2); a re-routed layer's output is not fed on.
- ``full_scale``: V3's 256 experts on 64 GPUs in 8 nodes, routed by the real ``Router`` on uniformly random
  affinities (a stand-in: V3's real routing is not uniform), with the bytes and the IB / NVLink time per MoE layer
  with and without the node limit. The time counts transfers only (no latency, no overlap with compute).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import ModelConfig, preset
from .data import Dataset
from .model import DeepSeekV3
from .moe import Router, Routing

FORMATS = ("fp8", "bf16", "fp32")
FP8_TILE = 128  # one FP32 scale per 1×128 activation tile travels with FP8 rows (§3.3.2)
IB_GBPS = 50.0  # InfiniBand per GPU, GB/s (§3.2.2)
NVLINK_GBPS = 160.0  # NVLink per GPU, GB/s (§3.2.2)
# (n_group, topk_group) of the mini model's 16 experts: (1, 1) is unrestricted top-K; the model trained with (4, 2)
MINI_SETTINGS = ((1, 1), (2, 1), (4, 1), (4, 2), (4, 3), (8, 2), (8, 4))


def row_bytes(hidden: int, fmt: str) -> int:
    """Bytes of one token row of ``hidden`` numbers on the wire: FP8 adds one FP32 scale per 128 numbers."""
    if fmt == "fp8":
        return hidden + 4 * math.ceil(hidden / FP8_TILE)
    if fmt == "bf16":
        return 2 * hidden
    if fmt == "fp32":
        return 4 * hidden
    raise ValueError(f"fmt={fmt!r} is not one of {', '.join(map(repr, FORMATS))}")


def limited_router(router: Router, n_group: int, topk_group: int) -> Router:
    """A copy of ``router`` (same centroids and bias) that selects under another group limit.

    ``ModelConfig`` validates the pair: ``topk_group`` larger than ``n_group`` (or too few experts left for K) raises
    a ``ValueError`` naming the field.
    """
    cfg = router.cfg.replace(n_group=n_group, topk_group=topk_group)
    other = Router(cfg)
    other.load_state_dict(router.state_dict())
    return other


def home_nodes(tokens: int, nodes: int) -> torch.Tensor:
    """The node each token lives on: contiguous blocks, as ``expert_parallel`` splits tokens over ranks."""
    home = torch.empty(tokens, dtype=torch.long)
    for n, block in enumerate(torch.arange(tokens).chunk(nodes)):
        home[block] = n
    return home


def nodes_per_token(indices: torch.Tensor, n_experts: int, nodes: int) -> torch.Tensor:
    """(T, N) bool: which nodes host at least one of each token's experts (expert e lives on node e // (E/N))."""
    if n_experts % nodes:
        raise ValueError(f"n_routed_experts={n_experts} is not divisible by nodes={nodes}")
    owner = indices // (n_experts // nodes)
    return torch.zeros(indices.shape[0], nodes, dtype=torch.bool).scatter_(1, owner, True)


@dataclass(frozen=True)
class TrafficRow:
    """Per-token averages of one routing limit over all tokens and MoE layers.

    ``mean_nodes``/``max_nodes``: distinct destination nodes; ``remote_copies``: those other than the token's own
    node (what crosses IB); ``pair_copies``: remote (token, expert) pairs, what a dispatch sending one copy per
    expert would send; bytes are per token for dispatch (FP8) + combine (BF16) of the remote copies;
    ``kept_affinity``: Σ of the chosen affinities relative to unrestricted top-K (what the limit gives up);
    ``same_as_trained``: fraction of tokens whose expert set equals the shipped model's own routing.
    """

    n_group: int
    topk_group: int
    mean_nodes: float
    max_nodes: int
    remote_copies: float
    pair_copies: float
    bytes_per_token: float
    pair_bytes_per_token: float
    kept_affinity: float
    same_as_trained: float


@torch.no_grad()
def moe_inputs(model: DeepSeekV3, dataset: Dataset, batch_size: int = 12, seq_len: int = 256,
               max_batches: int = 1) -> list[torch.Tensor]:
    """The input u of every MoE layer of the main model, (T, hidden) each, on fixed validation windows."""
    moes = model.moe_layers(include_mtp=False)
    seen: list[list[torch.Tensor]] = [[] for _ in moes]
    hooks = [m.register_forward_pre_hook(lambda _m, args, i=i: seen[i].append(args[0].reshape(-1, args[0].shape[-1])))
             for i, m in enumerate(moes)]
    was_training = model.training
    model.eval()
    try:
        for tokens, _, _ in dataset.val_batches(batch_size, seq_len, max_batches):
            model(tokens)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [torch.cat(s) for s in seen]


@torch.no_grad()
def measured_traffic(model: DeepSeekV3, inputs: list[torch.Tensor], nodes: int = 4,
                     settings: tuple[tuple[int, int], ...] = MINI_SETTINGS, dispatch: str = "fp8",
                     combine: str = "bf16") -> list[TrafficRow]:
    """One ``TrafficRow`` per (n_group, topk_group) of ``settings``: the model's routers re-run on ``inputs``
    (from ``moe_inputs``), experts placed on ``nodes`` nodes in contiguous blocks."""
    cfg = model.cfg
    per_copy = row_bytes(cfg.hidden_size, dispatch) + row_bytes(cfg.hidden_size, combine)
    routers = [m.gate for m in model.moe_layers(include_mtp=False)]
    scores = [r.affinities(u) for r, u in zip(routers, inputs, strict=True)]
    own = [r.select(s).indices.sort(-1).values for r, s in zip(routers, scores, strict=True)]
    free = [limited_router(r, 1, 1).select(s) for r, s in zip(routers, scores, strict=True)]
    rows = []
    for g, m in settings:
        n_nodes, remote, pairs, kept, same = [], [], [], [], []
        for r, s, o, f in zip(routers, scores, own, free, strict=True):
            routing = limited_router(r, g, m).select(s)
            hit = nodes_per_token(routing.indices, cfg.n_routed_experts, nodes)
            home = home_nodes(hit.shape[0], nodes)
            n_nodes.append(hit.sum(1))
            remote.append(hit.sum(1) - hit.gather(1, home[:, None])[:, 0].long())
            owner = routing.indices // (cfg.n_routed_experts // nodes)
            pairs.append((owner != home[:, None]).sum(1))
            kept.append(_chosen_affinity(s, routing) / _chosen_affinity(s, f))
            same.append((routing.indices.sort(-1).values == o).all(1).float())
        n_nodes_t, remote_t, pairs_t = torch.cat(n_nodes).float(), torch.cat(remote).float(), torch.cat(pairs).float()
        rows.append(TrafficRow(
            n_group=g, topk_group=m, mean_nodes=n_nodes_t.mean().item(), max_nodes=int(n_nodes_t.max()),
            remote_copies=remote_t.mean().item(), pair_copies=pairs_t.mean().item(),
            bytes_per_token=remote_t.mean().item() * per_copy, pair_bytes_per_token=pairs_t.mean().item() * per_copy,
            kept_affinity=torch.cat(kept).mean().item(), same_as_trained=torch.cat(same).mean().item()))
    return rows


def _chosen_affinity(scores: torch.Tensor, routing: Routing) -> torch.Tensor:
    return scores.gather(1, routing.indices).sum(1)


# -- full scale ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FullScaleTraffic:
    """V3's MoE all-to-all per GPU for one regime (node-limited or not), per token and per MoE layer.

    ``ib_copies``: distinct remote nodes per token (one IB copy each, landing on the GPU with the sender's in-node
    index); ``nvlink_copies``: destination GPUs whose in-node index differs from the sender's (forwarded over NVLink);
    ``*_bytes``: dispatch (FP8) + combine (BF16) per token; ``*_ms``: transfer time for ``tokens_per_gpu`` tokens.
    """

    node_limited: bool
    mean_nodes: float
    max_nodes: int
    ib_copies: float
    nvlink_copies: float
    ib_bytes: float
    nvlink_bytes: float
    ib_ms: float
    nvlink_ms: float
    tokens_per_gpu: int

    @property
    def layer_ms(self) -> float:
        """IB and NVLink transfers run at the same time (forwarding is pipelined): the slower one sets the time."""
        return max(self.ib_ms, self.nvlink_ms)


def experts_for_cost_of_nodes(nodes: int, ib_gbps: float = IB_GBPS, nvlink_gbps: float = NVLINK_GBPS) -> float:
    """Experts a token can reach for the IB time of ``nodes`` copies: each node forwards NVLink/IB ≈ 3.2 copies."""
    return nodes * nvlink_gbps / ib_gbps


def expected_nodes_uniform(n_experts: int, k: int, nodes: int) -> float:
    """E[distinct nodes] when K of E experts are chosen uniformly: N · (1 − C(E − E/N, K) / C(E, K))."""
    return nodes * (1 - math.comb(n_experts - n_experts // nodes, k) / math.comb(n_experts, k))


@torch.no_grad()
def full_scale(cfg: ModelConfig | None = None, node_limited: bool = True, nodes: int = 8, gpus_per_node: int = 8,
               tokens_per_gpu: int = 4096, samples: int = 8192, ib_gbps: float = IB_GBPS,
               nvlink_gbps: float = NVLINK_GBPS, seed: int = 0) -> FullScaleTraffic:
    """V3's dispatch + combine traffic per GPU (default ``preset("deepseek-v3")``: 256 experts, 64 GPUs, 8 nodes).

    ``samples`` tokens with uniformly random affinities are routed by the real ``Router``: with the config's group
    limit (``node_limited``) or plain top-K. ``tokens_per_gpu`` (an assumption: times scale linearly with it) turns
    bytes per token into milliseconds per MoE layer.
    """
    cfg = cfg or preset("deepseek-v3")
    gpus = nodes * gpus_per_node
    if cfg.n_routed_experts % gpus:
        raise ValueError(f"n_routed_experts={cfg.n_routed_experts} is not divisible by nodes × gpus_per_node = {gpus}")
    if node_limited and cfg.n_group != nodes:
        raise ValueError(f"n_group={cfg.n_group} must equal nodes={nodes} for node-limited routing (a group per node)")
    router = Router(cfg if node_limited else cfg.replace(n_group=1, topk_group=1))
    gen = torch.Generator().manual_seed(seed)
    routing = router.select(torch.rand(samples, cfg.n_routed_experts, generator=gen))
    gpu = routing.indices // (cfg.n_routed_experts // gpus)  # (T, K) destination GPU of each expert
    sender = torch.randint(0, gpus, (samples,), generator=gen)  # the token's own GPU
    hit_nodes = torch.zeros(samples, nodes, dtype=torch.bool).scatter_(1, gpu // gpus_per_node, True)
    hit_gpus = torch.zeros(samples, gpus, dtype=torch.bool).scatter_(1, gpu, True)
    ib = hit_nodes.sum(1) - hit_nodes.gather(1, (sender // gpus_per_node)[:, None])[:, 0].long()
    local = torch.arange(gpus) % gpus_per_node
    nv = (hit_gpus & (local[None, :] != (sender % gpus_per_node)[:, None])).sum(1)
    per_copy = row_bytes(cfg.hidden_size, "fp8") + row_bytes(cfg.hidden_size, "bf16")
    ib_bytes, nv_bytes = ib.float().mean().item() * per_copy, nv.float().mean().item() * per_copy
    return FullScaleTraffic(
        node_limited=node_limited, mean_nodes=hit_nodes.sum(1).float().mean().item(),
        max_nodes=int(hit_nodes.sum(1).max()), ib_copies=ib.float().mean().item(),
        nvlink_copies=nv.float().mean().item(), ib_bytes=ib_bytes, nvlink_bytes=nv_bytes,
        ib_ms=1e3 * tokens_per_gpu * ib_bytes / (ib_gbps * 1e9),
        nvlink_ms=1e3 * tokens_per_gpu * nv_bytes / (nvlink_gbps * 1e9), tokens_per_gpu=tokens_per_gpu)
