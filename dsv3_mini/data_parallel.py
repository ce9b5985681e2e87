"""Data parallelism: one model on N processes, each on its slice of one global batch, with PyTorch's own engine.

``torchrun --nproc-per-node N -m dsv3_mini.train ...`` starts N copies of the trainer. Each reads its place from the
variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), joins one
process group (gloo on CPUs, NCCL on GPUs) and wraps the model in ``DistributedDataParallel`` (DDP), which averages
the gradients over the processes during the backward pass. What makes N processes compute what one process computes
at the same ``--batch-size`` (the test checks it to 1e-6):

- The batch. ``--batch-size`` stays the *global* batch and must divide by N: every rank draws the same batch from the
  same seeded generator and keeps its contiguous slice (``shard``). The slices are equal, so the mean of the N
  slice losses is the batch's loss for every term that is a mean over tokens or sequences: the main loss, the MTP
  losses (the MTP modules run inside the forward on each slice) and V3's sequence-wise balance loss. The one term
  that is not is the classic batch-wise ``balance="aux-loss"``: its f·P is a product of batch means, so each rank
  computes it on its own slice (a per-device loss) and the run differs from one process.
- The gradient. After DDP's all-reduce every rank holds the same averaged gradient, so ``clip_grad_norm_`` measures
  and clips the global norm and AdamW makes the same step everywhere: the weights never drift apart.
- The bias. V3's sign rule judges the load of the whole batch (FACTS: "load_i = tokens routed to expert i in the
  batch"). Each MoE layer's ``step_counts`` holds this rank's tokens per expert; ``sum_expert_counts`` adds them up
  over the ranks (one all-reduce for every layer, the MTP module's included) before ``balancing.apply_bias_update``.
  Every rank then applies the same update and reports the global batch's MaxVio, so the biases stay equal by
  construction (DDP's default broadcast of rank 0's buffers before each forward, a few KB of biases and counters,
  would restore them if they ever differed).
- The numbers. Logged losses are averaged over the ranks (``mean``); validation shards each validation batch the same
  way and adds up the sequence-weighted losses and the expert loads (``sum``), so all ranks hold the same history.

What stays per rank: ``model.last_routing`` (the routing of this rank's tokens, which is what the per-sequence balance
loss inside the forward needs) and the progress bar (rank 0). Files are written by rank 0 only (checkpoint, metrics,
the exported model), each to a temporary name and renamed (``checkpoint``). The ranks also agree on when to stop:
an interrupt that reaches any rank stops every rank after the same step (``any``).

Unused parameters. DDP expects a gradient for every parameter in every step, unless ``find_unused_parameters`` makes
it walk the autograd graph after each forward to find the missing ones. An expert that gets no tokens on a rank still
gets a gradient here: the routed experts are three stacked tensors (``MoE.w1``, ``w3``, ``w2``), so an idle expert
gets zero rows, not a missing gradient. The walk is needed only when ``seq_len`` is too short for an MTP module to run
(module k needs seq_len > k), and ``wrap`` turns it on in exactly that case.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .model import DeepSeekV3, ModelOutput

BACKENDS = {"cpu": "gloo", "cuda": "nccl"}  # device type -> the collective library DDP talks through


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run: ``rank`` of ``world_size``, its ``device``."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files and shows progress."""
        return self.rank == 0

    def check_batch(self, batch_size: int) -> None:
        """``ValueError`` unless the global ``batch_size`` splits into equal slices, one per rank."""
        if batch_size % self.world_size:
            raise ValueError(f"batch_size={batch_size} (the global batch) must be divisible by the {self.world_size} "
                             "processes of the run")

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a (batch, ...) tensor: rows [rank·b/N, (rank+1)·b/N) when N divides b
        (validation's last batch may be shorter: the first ranks then get one row more)."""
        return batch.tensor_split(self.world_size)[self.rank]

    def wrap(self, model: DeepSeekV3, seq_len: int) -> DistributedDataParallel:
        """``model`` (already on ``device``) under DDP, searching for unused parameters only when an MTP module cannot
        run on ``seq_len`` tokens (see the module docstring)."""
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                       find_unused_parameters=len(model.mtp) >= seq_len)

    def sum_expert_counts(self, model: DeepSeekV3) -> None:
        """Replace every MoE layer's ``step_counts`` by its sum over the ranks (one all-reduce for all layers)."""
        moes = model.moe_layers()
        if moes:
            counts = self.sum_tensor(torch.stack([m.step_counts for m in moes]))
            for m, c in zip(moes, counts, strict=True):
                m.step_counts.copy_(c)

    def sum(self, values: Sequence[float | torch.Tensor]) -> list[float]:
        """The sums over the ranks of this rank's numbers (Python floats or 0-dim tensors), in float64."""
        t = torch.stack([torch.as_tensor(v).detach().to(self.device, torch.float64) for v in values])
        dist.all_reduce(t)
        return t.tolist()

    def sum_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` (on ``device``) replaced in place by its sum over the ranks; returns it."""
        dist.all_reduce(tensor)
        return tensor

    def mean(self, values: Sequence[float | torch.Tensor]) -> list[float]:
        """The means over the ranks (of equal slices: the global batch's value of a per-slice mean)."""
        return [v / self.world_size for v in self.sum(values)]

    def mean_losses(self, output: ModelOutput) -> ModelOutput:
        """``output`` with its losses (main, each MTP, balance, total) replaced by their means over the ranks, as
        0-dim float64 tensors: the global batch's losses, for the log."""
        terms = [output.main_loss, output.loss, *output.mtp_losses]
        if output.balance_loss is not None:
            terms.append(output.balance_loss)
        main, total, *rest = (torch.tensor(v, dtype=torch.float64) for v in self.mean(terms))
        d = len(output.mtp_losses)
        return dataclasses.replace(output, main_loss=main, loss=total, mtp_losses=rest[:d],
                                   balance_loss=rest[d] if output.balance_loss is not None else None)

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is True on any rank."""
        return self.sum([float(flag)])[0] > 0


def unwrap(model: torch.nn.Module) -> DeepSeekV3:
    """The model itself, from under DDP if it is wrapped."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def local_rank() -> int:
    """This process's index on its node (torchrun's ``LOCAL_RANK``; 0 in a plain process)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Rank 0 of a data-parallel run, or a plain process."""
    return (dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))) == 0


@contextmanager
def data_parallel(device: torch.device) -> Iterator[DataParallel | None]:
    """The run's data parallelism on ``device``: None in a plain process; under torchrun (``WORLD_SIZE`` > 1) join the
    process group (``env://``: the address, port, rank and size torchrun set), yield this rank's ``DataParallel`` and
    leave the group afterwards. A group that the caller started already is used as it is, and left running."""
    started = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if started else int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield None
        return
    if device.type not in BACKENDS:
        raise ValueError(f"device={device.type!r} with {world} processes: data parallelism runs on "
                         f"{' or '.join(map(repr, BACKENDS))}")
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL's collectives run on the current GPU
    if not started:
        dist.init_process_group(BACKENDS[device.type])
    try:
        yield DataParallel(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)
    finally:
        if not started:
            dist.destroy_process_group()
