"""--device: cpu by default; cuda and mps only where the machine has them, with a clear error otherwise; autocast runs
on the device of the batch. (No GPU here: the CUDA and MPS paths are checked for their errors only.)"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from dsv3_mini import DeepSeekV3
from dsv3_mini.checkpoint import atomic_save, read_checkpoint
from dsv3_mini.data import builtin_dataset
from dsv3_mini.devices import DEVICES, autocast_context, available_devices, check_device
from dsv3_mini.train import PRECISIONS, TrainConfig, make_optimizer, parse_args, train, train_step


def test_the_default_device_is_the_cpu_and_the_flag_takes_every_known_device():
    assert TrainConfig().device == "cpu" and check_device("cpu") == torch.device("cpu")
    assert [parse_args(["--device", d]).device for d in DEVICES] == list(DEVICES)
    assert "cpu" in available_devices()


def test_an_unknown_device_is_a_clear_error_naming_the_allowed_values(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--device", "tpu"])
    assert "--device: invalid choice: 'tpu' (choose from 'cpu', 'cuda', 'mps')" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"device='tpu' is not one of 'cpu', 'cuda', 'mps'"):
        TrainConfig(device="tpu")
    with pytest.raises(ValueError, match=r"device='tpu' is not one of 'cpu', 'cuda', 'mps'"):
        check_device("tpu")


@pytest.mark.parametrize("device", [d for d in DEVICES if d not in available_devices()])
def test_a_device_this_machine_lacks_is_a_clear_error_when_the_run_starts(device):
    TrainConfig(device=device)  # a config may name it (a checkpoint from a GPU box loads anywhere) ...
    with pytest.raises(ValueError, match=rf"device='{device}' is not available on this machine; available: 'cpu'"):
        train(TrainConfig(preset="tiny", steps=1, device=device), progress=False)  # ... a run needs it


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_autocast_runs_on_the_batch_device_in_the_chosen_precision(precision):
    torch.manual_seed(0)
    tc = TrainConfig(preset="tiny", seq_len=16, precision=precision)
    model = DeepSeekV3(tc.model_config()).train()
    tokens = torch.randint(0, model.cfg.vocab_size, (2, 17))
    s = train_step(model, make_optimizer(model, tc), tokens[:, :-1], tokens[:, 1:], tc, 1,
                   autocast=PRECISIONS[precision])
    assert s.output.logits.dtype == (PRECISIONS[precision] or torch.float32)
    assert next(model.parameters()).dtype == torch.float32  # autocast: the weights stay fp32
    with autocast_context(torch.device("cpu"), PRECISIONS[precision]):
        assert torch.is_autocast_enabled("cpu") == (precision != "fp32")


SMALL = {"preset": "tiny", "batch_size": 2, "seq_len": 16, "eval_every": 2, "eval_batches": 1, "threads": 1}


@pytest.fixture(scope="module")
def data():
    return builtin_dataset(train_bytes=20_000, val_bytes=4_000, seed=0)


def test_a_bf16_run_trains_on_the_cpu(data):
    result = train(TrainConfig(**SMALL, steps=2, precision="bf16"), progress=False, dataset=data)
    assert result.step == 2 and all(r["loss"] > 0 for r in result.history)


def test_resume_runs_on_the_device_of_the_new_command(tmp_path, data):
    """A checkpoint written on a GPU box (its config says cuda) continues on the CPU: the device is where to run, not
    what the run is."""
    tc = TrainConfig(**SMALL, steps=2, out=str(tmp_path))
    train(tc, progress=False, dataset=data)
    path = tmp_path / "checkpoint.safetensors"
    meta, tensors = read_checkpoint(path)
    atomic_save(tensors, path, {"dsv3_mini": json.dumps({**meta, "train_config": {**meta["train_config"],
                                                                                  "device": "cuda"}})})
    resumed = train(dataclasses.replace(tc, steps=3), resume=True, progress=False, dataset=data)
    assert resumed.step == 3 and next(resumed.model.parameters()).device == torch.device("cpu")
