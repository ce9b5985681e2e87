"""Checkpoint IO: what the trainer writes to disk and how a model comes back from it. Safetensors and JSON only.

Files in a run's ``--out`` folder:
- ``checkpoint.safetensors``: model, optimizer moments and RNG state as tensors; the run's config, step and
  optimizer step as JSON in the file's metadata (one file, written to a temporary name and renamed: an interrupt
  never leaves a broken checkpoint). ``checkpoint.json`` repeats that JSON for people to read.
- ``metrics.jsonl``: one JSON object per log line (``split`` "train" or "val"), written by ``dsv3_mini.train``.
- ``model.safetensors`` + ``summary.json`` at the end: the weights alone in bfloat16 (small enough to ship) and the
  validation loss of exactly those weights.

Tensor names: ``model.<parameter or buffer>`` (both files), ``optim.exp_avg.<parameter>`` and
``optim.exp_avg_sq.<parameter>`` (AdamW's first and second moments), ``rng.data`` (the batch sampler's generator)
and ``rng.torch`` (torch's global generator). The JSON under the metadata key ``"dsv3_mini"`` carries ``format``
(``FORMAT_VERSION``), ``model_config`` (``ModelConfig.to_dict()``) and, in a training checkpoint, ``step``,
``train_config`` and ``optim_steps`` (AdamW's step count per parameter).
No pickle anywhere: only safetensors and JSON are read back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import ModelConfig
from .model import DeepSeekV3

FORMAT_VERSION = 1


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """A safetensors file written to ``<path>.tmp`` and renamed: readers see the old file or the new one, never half.

    Tensors on a GPU are copied to the CPU first, so a file is the same whichever device trained it."""
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.to("cpu").contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def atomic_write_text(text: str, path: Path) -> None:
    """A text file written to ``<path>.tmp`` and renamed (as ``atomic_save``)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(path: Path, model: DeepSeekV3, opt: torch.optim.Optimizer, train_config: dict[str, Any],
                    step: int, generator: torch.Generator) -> None:
    """Model, AdamW moments, RNG states and the run's JSON in one safetensors file, written atomically.

    ``train_config`` is the run's settings as JSON-able values (``dataclasses.asdict`` of a ``TrainConfig``).
    """
    names = {id(p): n for n, p in model.named_parameters()}
    tensors = {f"model.{k}": v.detach() for k, v in model.state_dict().items()}
    optim_steps = {}
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p)
            if state:
                n = names[id(p)]
                tensors[f"optim.exp_avg.{n}"] = state["exp_avg"]
                tensors[f"optim.exp_avg_sq.{n}"] = state["exp_avg_sq"]
                optim_steps[n] = float(state["step"])
    tensors["rng.data"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"format": FORMAT_VERSION, "step": step, "model_config": model.cfg.to_dict(),
            "train_config": train_config, "optim_steps": optim_steps}
    text = json.dumps(meta, indent=1)
    atomic_save(tensors, path, {"dsv3_mini": text})
    atomic_write_text(text, path.with_suffix(".json"))


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a checkpoint or exported model; safetensors + JSON only."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {str(path)!r}")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("dsv3_mini", "null"))
        if not meta or meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{str(path)!r} is not a dsv3_mini file of format {FORMAT_VERSION}")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return meta, tensors


def load_model(path: str | Path) -> DeepSeekV3:
    """A model (fp32, eval mode) from a training checkpoint or an exported ``model.safetensors``."""
    meta, tensors = read_checkpoint(path)
    model = DeepSeekV3(ModelConfig.from_dict(meta["model_config"]))
    state = {k[len("model."):]: v.float() for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model.eval()


def export_model(model: DeepSeekV3, path: Path) -> None:
    """The weights alone, in bfloat16 (half the bytes), for shipping; load with ``load_model``."""
    tensors = {f"model.{k}": v.detach().to(torch.bfloat16) if v.is_floating_point() else v
               for k, v in model.state_dict().items()}
    meta = {"format": FORMAT_VERSION, "model_config": model.cfg.to_dict(), "dtype": "bfloat16"}
    atomic_save(tensors, path, {"dsv3_mini": json.dumps(meta)})


def restore_checkpoint(path: Path, model: DeepSeekV3, opt: torch.optim.Optimizer, generator: torch.Generator) -> int:
    """Put a training checkpoint back in place: weights, AdamW moments, both RNG states; returns its step.

    ``model`` and ``opt`` are built from the checkpoint's own ``train_config`` first (``dsv3_mini.train`` does), so
    that every parameter has its slot; the run then continues as if it had never stopped. The AdamW moments go to the
    device of their parameter (the file holds CPU tensors).
    """
    meta, tensors = read_checkpoint(path)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    for n, p in model.named_parameters():
        if n in meta["optim_steps"]:
            opt.state[p] = {"step": torch.tensor(meta["optim_steps"][n]),
                            "exp_avg": tensors[f"optim.exp_avg.{n}"].to(p.device, copy=True),
                            "exp_avg_sq": tensors[f"optim.exp_avg_sq.{n}"].to(p.device, copy=True)}
    generator.set_state(tensors["rng.data"])
    torch.set_rng_state(tensors["rng.torch"])
    return int(meta["step"])
