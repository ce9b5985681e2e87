"""DeepSeek's own DualPipe (PyPI ``dualpipe``, github.com/deepseek-ai/DualPipe) on CPU processes, unmodified.

The package is the schedule DeepSeek trained V3 with (report §3.2.1, Figure 5). It assumes CUDA in two places, and
this adapter changes only those, from our side, for the duration of a call (nothing is forked or copied):

1. ``dualpipe.comm.build_from_tensor_shapes`` allocates the p2p receive buffers with ``device="cuda"``;
   ``CPUDualPipe.step`` swaps in ``cpu_receive_buffers`` (the same empty tensors, on the CPU) while it runs.
2. ``DualPipe.__init__`` asserts that the first module lives on ``torch.cuda.current_device()``; a CPU-only torch
   cannot even answer that. ``CPUDualPipe.__init__`` checks that the modules are on the CPU itself, then lets the
   package's check see "cpu" as the current device while the parent constructor runs.

Everything else — the eight steps of ``DualPipe.step``, its p2p with ``batch_isend_irecv``, the two directions — is
the package's code running on gloo. ``record_chunks(pipe)`` wraps the package's compute methods of one instance to
time each chunk (F, B or input-only B, W) without changing what they do.

What CPU processes cannot show: the package overlaps a forward and a backward chunk only if the modules define
``overlaped_forward_backward`` (DeepSeek's kernels do, with communication on separate SMs); ours do not, so an F&B
chunk runs its forward and backward one after the other. Its W chunks pop weight gradients that custom layers
stored in ``dualpipe.WeightGradStore``; our ``nn.Linear`` layers compute weight gradients inside B, so the W chunks
are empty and B is a full backward.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from unittest import mock

import dualpipe
import dualpipe.comm
import torch
from torch import nn

CPU = torch.device("cpu")


def cpu_receive_buffers() -> list[torch.Tensor]:
    """The package's receive buffers (shapes and dtype from ``dualpipe.set_p2p_tensor_*``), allocated on the CPU."""
    comm = dualpipe.comm
    return [torch.empty(s, dtype=comm.TENSOR_DTYPE, device=CPU, requires_grad=True) for s in comm.TENSOR_SHAPES]


@contextmanager
def _cpu_receive_buffers():
    with mock.patch.object(dualpipe.comm, "build_from_tensor_shapes", cpu_receive_buffers):
        yield


class CPUDualPipe(dualpipe.DualPipe):
    """``dualpipe.DualPipe`` for CPU modules on a gloo process group. Same arguments, same ``step``.

    ``modules``: (the stage this rank runs in the forward direction, the stage it runs in the reverse direction);
    for PP ranks, rank r holds stages r and PP−1−r of the same model layout (report §3.2.1).
    """

    def __init__(self, modules: tuple[nn.Module, nn.Module], **kwargs):
        devices = {p.device for m in modules for p in m.parameters()}
        if devices != {CPU}:
            raise ValueError("CPUDualPipe runs CPU modules; the modules' parameters are on "
                             f"{sorted(map(str, devices))}")
        with mock.patch.object(torch.cuda, "current_device", lambda: "cpu"):
            super().__init__(modules, **kwargs)

    def step(self, *inputs, **kwargs):
        with _cpu_receive_buffers():
            return super().step(*inputs, **kwargs)


def record_chunks(pipe: dualpipe.DualPipe, clock=time.perf_counter) -> list[dict]:
    """Time every compute chunk ``pipe`` runs; returns the (growing) list of records.

    Each record: ``{"kind": "F" | "B" | "I" | "W", "direction": 0 | 1, "micro_batch": int, "start": s, "end": s}``
    ("I": a backward with the package's zero-bubble split enabled, i.e. for inputs; "B": a full backward).
    Direction 0 enters at rank 0. W records carry the micro-batch of the oldest "I" they complete (FIFO, as the
    package's ``WeightGradStore``).
    """
    records: list[dict] = []
    pending: list[tuple[int, int]] = []
    forward, backward, weight = pipe._forward_compute_chunk, pipe._backward_compute_chunk, pipe._weight_chunk

    def direction(phase: int) -> int:
        return phase ^ pipe.is_in_second_half

    def timed_forward(phase: int) -> None:
        d = direction(phase)
        mb, t = pipe.current_f_chunk_id[d], clock()
        forward(phase)
        records.append({"kind": "F", "direction": d, "micro_batch": mb, "start": t, "end": clock()})

    def timed_backward(phase: int, enable_zb: bool = False) -> None:
        d = direction(phase)
        mb, t = pipe.current_b_chunk_id[d], clock()
        backward(phase, enable_zb)
        if enable_zb:
            pending.append((d, mb))
        records.append({"kind": "I" if enable_zb else "B", "direction": d, "micro_batch": mb, "start": t,
                        "end": clock()})

    def timed_weight() -> None:
        pipe._commit_and_wait_comm()  # waiting for p2p is not W's work (the package's own call is then a no-op)
        t = clock()
        weight()
        d, mb = pending.pop(0) if pending else (-1, -1)
        records.append({"kind": "W", "direction": d, "micro_batch": mb, "start": t, "end": clock()})

    pipe._forward_compute_chunk = timed_forward
    pipe._backward_compute_chunk = timed_backward
    pipe._weight_chunk = timed_weight
    return records
