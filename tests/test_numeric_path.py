"""The pinned numeric path (Makefile, conftest.py) that makes the lessons' committed outputs the same on every x86-64
CPU: both places name the same variables and values, and this run is on it."""

import importlib.util
import platform
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def root_conftest_pins() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PINNED


def test_makefile_and_conftest_pin_the_same_path():
    exported = dict(re.findall(r"^export (\w+) := (\S+)$", (ROOT / "Makefile").read_text(), re.M))
    assert exported == root_conftest_pins()
    assert set(exported) == {"ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA"}
    from benchmarks import mfu

    assert set(mfu.PINS) == set(exported)  # what the MFU item removes to measure off the pinned path


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the pin names x86-64 code paths")
def test_this_run_uses_torch_avx2_kernels():
    assert torch.backends.cpu.get_cpu_capability() == "AVX2"


def test_bf16_on_a_capped_cpu_is_named_and_the_trainer_warns(monkeypatch, tmp_path):
    from dsv3_mini import devices
    from dsv3_mini.train import TrainConfig, train

    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    message = devices.cpu_bf16_capped(cpu, torch.bfloat16)
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in message and "unset" in message
    assert devices.cpu_bf16_capped(cpu, None) is None  # fp32 loses nothing by the pin
    assert devices.cpu_bf16_capped(torch.device("meta"), torch.bfloat16) is None  # not a CPU
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"avx2"})
    assert devices.cpu_bf16_capped(cpu, torch.bfloat16) is None  # no bf16 matrix code to turn off
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert devices.cpu_bf16_capped(cpu, torch.bfloat16) is None  # not capped
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    tc = TrainConfig(preset="tiny", steps=1, batch_size=2, seq_len=16, precision="bf16", threads=1)
    with pytest.warns(RuntimeWarning, match="bf16 matrix code"):
        train(tc, progress=False)
