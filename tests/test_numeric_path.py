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


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the pin names x86-64 code paths")
def test_this_run_uses_torch_avx2_kernels():
    assert torch.backends.cpu.get_cpu_capability() == "AVX2"
