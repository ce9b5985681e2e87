"""Where a run computes: the CPU (the default, and the only device this repository's tests run on), a CUDA GPU, or
Apple's MPS.

``check_device("cuda")`` turns a ``--device`` value into a ``torch.device`` and says clearly when the name is unknown
or the device is not on this machine. ``autocast_context(device, dtype)`` is the mixed-precision context of the
forward pass on that device's type: bf16 on a GPU is what V3's FP8 recipe is measured against (report §3.3),
``None`` is plain fp32.
Moving a model to the CPU is a no-op, so the default path computes exactly what it did before devices existed.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

from .config import check_choice

DEVICES = ("cpu", "cuda", "mps")


def available_devices() -> tuple[str, ...]:
    """The names of ``DEVICES`` that this machine has (always "cpu")."""
    present = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    return tuple(d for d in DEVICES if present[d])


def check_device(name: str, local_rank: int = 0) -> torch.device:
    """The ``torch.device`` for ``--device name``; under data parallelism each process of a node takes the GPU of its
    ``local_rank`` (``cuda:0``, ``cuda:1``, ...). ``ValueError`` naming the allowed values if the name is unknown or the
    device is not available here."""
    check_choice("device", name, DEVICES)
    here = available_devices()
    if name not in here:
        raise ValueError(f"device={name!r} is not available on this machine; available: {', '.join(map(repr, here))}")
    if name == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"device='cuda' for local rank {local_rank}: only {torch.cuda.device_count()} GPU(s)")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """``torch.autocast`` on ``device``'s type in ``dtype`` (e.g. ``torch.bfloat16``); no context at all for None."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def cpu_bf16_capped(device: torch.device, dtype: torch.dtype | None) -> str | None:
    """Why bf16 autocast on this CPU would run without its bf16 matrix code, or None when it would not.

    The course's ``make`` targets export ``ONEDNN_MAX_CPU_ISA=AVX2`` (with ``ATEN_CPU_CAPABILITY`` and ``MKL_CBWR``)
    so that lessons print the same digits on every x86-64 CPU. fp32 loses nothing by it, but a CPU with AVX-512 BF16
    or AMX then multiplies bf16 by oneDNN's generic code: in the committed ``make bench`` run (item ``mfu``) the bf16
    matmul peak was 2.8 GFLOP/s with the cap against 981 without it, and 226 in fp32.
    """
    if device.type != "cpu" or dtype != torch.bfloat16:
        return None
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if not cap or "AVX512" in cap or "AMX" in cap or cap == "ALL":
        return None
    if not cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        return None  # no bf16 matrix code to turn off
    return (f"ONEDNN_MAX_CPU_ISA={cap} (the course's Makefile sets it for reproducible digits) turns off this CPU's "
            "bf16 matrix code: bf16 matmuls run on a slow generic path, slower than fp32. For speed, run bf16 from "
            "a shell without it (unset ATEN_CPU_CAPABILITY MKL_CBWR ONEDNN_MAX_CPU_ISA).")


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        return set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return set()
