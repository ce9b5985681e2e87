"""Expert parallelism for real: the routed experts of one MoE layer sharded over N processes, tokens moved by
``all_to_all``.

How expert parallelism (EP) works (V3 report §3.2.2; DeepEP is DeepSeek's CUDA version of the same two steps):

1. Every rank holds some of the tokens (attention ran data-parallel) and a copy of the router; it holds only
   E / N of the routed experts: rank r owns experts r·E/N … (r+1)·E/N − 1 (``owner_of``).
2. **Dispatch.** The router picks K experts per token. A token is sent *once* to each rank that owns at least one of
   its experts (not once per expert), with the local ids and gating weights g of the experts it uses there. One
   ``all_to_all`` moves every rank's rows to every other rank; the split sizes are exchanged first.
3. **Compute.** Each rank runs its own experts on the rows it received and sums g_i · FFN_i(u) over the experts of
   that token it owns: one partial sum per received row.
4. **Combine.** A second ``all_to_all`` sends the partial sums back along the reverse path; the token's home rank
   adds them up, plus the shared expert (replicated, run locally):
       h'_t = u_t + FFN_shared(u_t) + Σ_{ranks r} Σ_{i selected on r} g_i,t FFN_i(u_t)          (eq. 12)
   The sum is the same as in ``dsv3_mini.moe.MoE``, only grouped by rank: outputs and gradients agree (tested).

``_AllToAll`` carries gradients: the backward of a dispatch is a combine of the gradients, and vice versa.

Where this differs from DeepSeek-V3: ranks are CPU processes talking over loopback TCP (gloo), not GPUs over
NVLink and InfiniBand, so time here says nothing about V3's; rows travel in fp32, where V3 dispatches FP8 and
combines in BF16 (``dsv3_mini.traffic`` does that arithmetic); one rank plays one node. What the processes do show
exactly: which bytes go where, and that sharding changes no number. ``run_ranks`` starts the processes (loopback,
a free port, a deadline) and stops every one of them, also when one fails.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from .config import ModelConfig
from .moe import MoE, Routing

DEFAULT_TIMEOUT = 120.0  # seconds for a whole multi-process run (start-up of 4 processes is ~5 s on 2 cores)


def experts_per_rank(n_experts: int, world_size: int) -> int:
    """E / N; a ``ValueError`` naming both when the experts do not split evenly."""
    if world_size < 1:
        raise ValueError(f"world_size={world_size} must be a positive number of ranks")
    if n_experts % world_size:
        divisors = [d for d in range(1, n_experts + 1) if n_experts % d == 0]
        raise ValueError(f"n_routed_experts={n_experts} is not divisible by world_size={world_size} "
                         f"(allowed world_size: {divisors})")
    return n_experts // world_size


def owner_of(indices: torch.Tensor, n_experts: int, world_size: int) -> torch.Tensor:
    """The rank that owns each expert id (same shape as ``indices``): contiguous blocks of E / N experts."""
    return indices // experts_per_rank(n_experts, world_size)


class _AllToAll(torch.autograd.Function):
    """``all_to_all_single`` with a gradient: rows split by ``send``, received by ``recv``; backward swaps them."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, send: list[int], recv: list[int]) -> torch.Tensor:
        ctx.send, ctx.recv = send, recv
        out = x.new_empty((sum(recv), *x.shape[1:]))
        dist.all_to_all_single(out, x.contiguous(), output_split_sizes=recv, input_split_sizes=send)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        back = grad.new_empty((sum(ctx.send), *grad.shape[1:]))
        dist.all_to_all_single(back, grad.contiguous(), output_split_sizes=ctx.send, input_split_sizes=ctx.recv)
        return back, None, None


@dataclass
class Traffic:
    """What one EP forward sent, from the point of view of one rank (all counts are rows of ``hidden`` numbers).

    ``dispatch_rows[r]``: token rows this rank sent to rank r (its own rank included: that copy never leaves the
    process); ``pairs``: (token, expert) pairs routed, K per token — the rows a dispatch *without* the one-copy-per-
    rank rule would send; ``ranks_per_token`` (T,): distinct destination ranks of each token.
    """

    dispatch_rows: torch.Tensor
    pairs: int
    ranks_per_token: torch.Tensor
    rank: int

    @property
    def remote_rows(self) -> int:
        """Rows that crossed to another rank (the combine sends exactly as many back)."""
        return int(self.dispatch_rows.sum() - self.dispatch_rows[self.rank])


class ExpertParallelMoE(nn.Module):
    """One rank's part of a ``MoE``: the router and shared expert (replicated), the routed experts it owns.

    ``forward(x)``: x (T_local, hidden) -> (T_local, hidden), this rank's tokens only; every rank of the process group
    must call it together (the two all_to_all calls are collective). Built from a full ``MoE`` by ``shard``; the
    expert weights are copies, so gradients land on this rank's ``w1``/``w2``/``w3`` of shape (E/N, …).
    """

    def __init__(self, cfg: ModelConfig, rank: int, world_size: int):
        super().__init__()
        per = experts_per_rank(cfg.n_routed_experts, world_size)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in 0..{world_size - 1}")
        self.cfg, self.rank, self.world_size, self.per_rank = cfg, rank, world_size, per
        full = MoE(cfg)
        self.gate, self.shared = full.gate, full.shared
        self.w1 = nn.Parameter(full.w1.detach()[rank * per:(rank + 1) * per].clone())
        self.w3 = nn.Parameter(full.w3.detach()[rank * per:(rank + 1) * per].clone())
        self.w2 = nn.Parameter(full.w2.detach()[rank * per:(rank + 1) * per].clone())
        self.last_routing: Routing | None = None
        self.last_traffic: Traffic | None = None

    @classmethod
    def shard(cls, moe: MoE, rank: int, world_size: int) -> ExpertParallelMoE:
        """This rank's part of ``moe``: the same router weights and bias, shared expert, and its block of experts."""
        ep = cls(moe.gate.cfg, rank, world_size)
        lo, hi = rank * ep.per_rank, (rank + 1) * ep.per_rank
        with torch.no_grad():
            ep.gate.load_state_dict(moe.gate.state_dict())
            if moe.shared is not None:
                ep.shared.load_state_dict(moe.shared.state_dict())
            for name in ("w1", "w3", "w2"):
                getattr(ep, name).copy_(getattr(moe, name)[lo:hi])
        return ep.to(moe.w1.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, K, n, per = x.shape[0], self.cfg.num_experts_per_tok, self.world_size, self.per_rank
        routing = self.gate(x)
        self.last_routing = routing
        owner = routing.indices // per  # (T, K): destination rank of each chosen expert
        # one row per (token, destination rank), ordered by rank: the one-copy-per-rank dispatch
        uses = torch.zeros(T, n, dtype=torch.bool).scatter_(1, owner, True)  # (T, N)
        dest, token = uses.t().nonzero(as_tuple=True)  # sorted by destination rank, then token
        send = torch.bincount(dest, minlength=n)
        recv = torch.empty_like(send)
        dist.all_to_all_single(recv, send)  # how many rows each rank will receive from each
        send_l, recv_l = send.tolist(), recv.tolist()
        # per sent row, the K slots: local expert id where the expert lives on the destination, else -1; weight or 0
        here = owner[token] == dest[:, None]  # (rows, K)
        local_id = torch.where(here, routing.indices[token] % per, -1)
        w = routing.weights[token] * here  # the gating weights g travel with the token (and carry a gradient)
        rows = _AllToAll.apply(torch.cat([x.index_select(0, token), w.to(x.dtype)], dim=1), send_l, recv_l)
        ids = torch.empty(sum(recv_l), K, dtype=torch.long)
        dist.all_to_all_single(ids, local_id.contiguous(), output_split_sizes=recv_l, input_split_sizes=send_l)
        partial = self._local_experts(rows[:, :-K], ids, rows[:, -K:])
        back = _AllToAll.apply(partial, recv_l, send_l)  # combine: the partial sums return to the tokens' ranks
        out = torch.zeros_like(x).index_add_(0, token, back)
        if self.shared is not None:
            out = out + self.shared(x)
        self.last_traffic = Traffic(dispatch_rows=send, pairs=T * K, ranks_per_token=uses.sum(1), rank=self.rank)
        return out

    def _local_experts(self, u: torch.Tensor, ids: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Σ_i g_i · FFN_i(u) over the local experts each received row uses: u (R, hidden), ids/g (R, K)."""
        row, slot = (ids >= 0).nonzero(as_tuple=True)
        expert = ids[row, slot]
        order = expert.argsort(stable=True)  # group the (row, expert) pairs by expert: one matmul per expert
        row, slot, expert = row[order], slot[order], expert[order]
        xs = u.index_select(0, row)
        outs = []
        for e, chunk in enumerate(xs.split(torch.bincount(expert, minlength=self.per_rank).tolist())):
            if len(chunk):
                outs.append(F.linear(F.silu(F.linear(chunk, self.w1[e])) * F.linear(chunk, self.w3[e]), self.w2[e]))
        if not outs:
            return torch.zeros_like(u)
        weighted = torch.cat(outs) * g[row, slot, None]
        return torch.zeros_like(u).index_add_(0, row, weighted)


# -- processes -----------------------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(fn: Callable, rank: int, world_size: int, port: int, payload: bytes, extra: dict, queue: Any,
            timeout: float) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout))
        try:
            result = fn(rank, world_size, load_tensors(payload), **extra)
        finally:
            dist.destroy_process_group()
        queue.put((rank, "ok", save_tensors({k: v.detach().contiguous() for k, v in result.items()})))
    except BaseException:  # report any failure to the parent, which stops the other ranks
        queue.put((rank, "error", traceback.format_exc()))


def run_ranks(fn: Callable, world_size: int, tensors: dict[str, torch.Tensor], timeout: float = DEFAULT_TIMEOUT,
              **extra: Any) -> list[dict[str, torch.Tensor]]:
    """Run ``fn(rank, world_size, tensors, **extra)`` in ``world_size`` gloo processes; return each rank's dict.

    ``fn`` must be a module-level function (processes are *spawned*: they import it) returning a dict of tensors.
    Tensors travel both ways as safetensors bytes. Loopback only, a free port, at most ``timeout`` seconds; every
    process is joined, or terminated and then killed, before this returns or raises (``RuntimeError`` naming the
    rank and its traceback when a rank fails, ``TimeoutError`` past the deadline).
    """
    if world_size < 1:
        raise ValueError(f"world_size={world_size} must be a positive number of ranks")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    payload = save_tensors({k: v.detach().contiguous() for k, v in tensors.items()})
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(fn, r, world_size, port, payload, extra, queue, timeout), daemon=True)
             for r in range(world_size)]
    results: dict[int, dict[str, torch.Tensor]] = {}
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.start()
        while len(results) < world_size:
            try:
                rank, status, body = queue.get(timeout=0.2)
            except Exception:  # queue.Empty: nothing yet; check for the deadline and for ranks that died silently
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{world_size} ranks did not finish within timeout={timeout} s") from None
                dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0) and r not in results]
                if dead:
                    raise RuntimeError(f"rank {dead[0]} exited with code {procs[dead[0]].exitcode}") from None
                continue
            if status != "ok":
                raise RuntimeError(f"rank {rank} failed:\n{body}")
            results[rank] = load_tensors(body)
        for p in procs:
            p.join(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
        queue.close()
        queue.join_thread()
    return [results[r] for r in range(world_size)]


# -- the comparison with the single-process MoE --------------------------------------------------------------------
def _moe_from(tensors: dict[str, torch.Tensor], cfg: ModelConfig) -> MoE:
    moe = MoE(cfg)
    moe.load_state_dict({k[len("moe."):]: v for k, v in tensors.items() if k.startswith("moe.")}, strict=False)
    return moe.to(tensors["x"].dtype)


def _ep_rank(rank: int, world_size: int, t: dict[str, torch.Tensor], cfg: dict) -> dict[str, torch.Tensor]:
    """One rank: shard the MoE, forward its tokens, backward ``(out · grad_out).sum()``, sum replicated gradients."""
    ep = ExpertParallelMoE.shard(_moe_from(t, ModelConfig.from_dict(cfg)), rank, world_size)
    mine = torch.arange(t["x"].shape[0]).chunk(world_size)[rank]  # contiguous token blocks, one per rank
    x = t["x"][mine].clone().requires_grad_(True)
    out = ep(x)
    (out * t["grad_out"][mine]).sum().backward()
    grads = {}
    for name, p in ep.named_parameters():
        if name not in ("w1", "w2", "w3"):  # replicated weights: their gradient is the sum over ranks (as in DP)
            dist.all_reduce(p.grad)
        grads[f"grad.{name}"] = p.grad
    tr = ep.last_traffic
    return {"out": out.detach(), "grad_x": x.grad, **grads, "dispatch_rows": tr.dispatch_rows,
            "ranks_per_token": tr.ranks_per_token, "indices": ep.last_routing.indices}


@dataclass
class EPResult:
    """A sharded run gathered back: outputs (T, hidden), gradients under the names of ``MoE.named_parameters``,
    each rank's ``Traffic``, and the largest difference from the single-process ``MoE`` on the same tokens."""

    out: torch.Tensor
    grad_x: torch.Tensor
    grads: dict[str, torch.Tensor]
    traffic: list[Traffic]
    max_diff: dict[str, float]


def compare_with_single_process(moe: MoE, x: torch.Tensor, world_size: int, seed: int = 0,
                                timeout: float = DEFAULT_TIMEOUT) -> EPResult:
    """Run ``moe`` on x (T, hidden) sharded over ``world_size`` processes (tokens split in contiguous blocks), then
    alone; forward and backward of ``(out · grad_out).sum()`` with a fixed grad_out (N(0, 1) / T). ``max_diff`` holds
    max |Δ| of the output, the input gradient and every parameter gradient (≤ 1e-6 in fp32: tested)."""
    experts_per_rank(moe.gate.cfg.n_routed_experts, world_size)  # fail here, in the caller, not inside a process
    if x.dim() != 2 or x.shape[0] < world_size:
        raise ValueError(f"x has shape {tuple(x.shape)}; expected (tokens >= world_size={world_size}, hidden)")
    # the upstream gradient of loss = mean over tokens of out · r, r ~ N(0, 1): gradients of a per-token mean
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype) / x.shape[0]
    tensors = {"x": x, "grad_out": grad_out, **{f"moe.{k}": v for k, v in moe.state_dict().items()}}
    ranks = run_ranks(_ep_rank, world_size, tensors, timeout=timeout, cfg=moe.gate.cfg.to_dict())
    out = torch.cat([r["out"] for r in ranks])
    grad_x = torch.cat([r["grad_x"] for r in ranks])
    grads = {n: (torch.cat([r[f"grad.{n}"] for r in ranks]) if n in ("w1", "w2", "w3") else ranks[0][f"grad.{n}"])
             for n, _ in moe.named_parameters()}
    traffic = [Traffic(dispatch_rows=r["dispatch_rows"], pairs=r["indices"].numel(),
                       ranks_per_token=r["ranks_per_token"], rank=i) for i, r in enumerate(ranks)]
    ref = MoE(moe.gate.cfg).to(x.dtype)
    ref.load_state_dict(moe.state_dict())
    xr = x.clone().requires_grad_(True)
    ref_out = ref(xr[None])[0]
    (ref_out * grad_out).sum().backward()
    diff = {"out": (out - ref_out.detach()).abs().max().item(), "grad_x": (grad_x - xr.grad).abs().max().item()}
    diff.update({f"grad.{n}": (grads[n] - p.grad).abs().max().item() for n, p in ref.named_parameters()})
    return EPResult(out=out, grad_x=grad_x, grads=grads, traffic=traffic, max_diff=diff)
