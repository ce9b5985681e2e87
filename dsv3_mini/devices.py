"""Where a run computes: the CPU (the default, and the only device this repository's tests run on), a CUDA GPU, or
Apple's MPS.

``check_device("cuda")`` turns a ``--device`` value into a ``torch.device`` and says clearly when the name is unknown
or the device is not on this machine. ``autocast_context(device, dtype)`` is the mixed-precision context of the
forward pass on that device's type: bf16 on a GPU is what V3's FP8 recipe is measured against (report §3.3),
``None`` is plain fp32.
Moving a model to the CPU is a no-op, so the default path computes exactly what it did before devices existed.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

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
