import pytest
import torch

from dsv3_mini import DeepSeekV3, preset, seed_everything


@pytest.fixture(autouse=True)
def _seeded():
    seed_everything(0, threads=2)


@pytest.fixture
def tiny_model():
    return DeepSeekV3(preset("tiny")).eval()


def randomize_biases(model, scale=0.05, seed=1):
    """Give every router a nonzero selection bias (as after some balancing steps)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for moe in model.moe_layers():
            moe.gate.bias.copy_((torch.rand(moe.gate.bias.shape, generator=g) * 2 - 1) * scale)


def pytest_report_header(config):
    """Which numeric path this run takes: the lessons' committed outputs were made on the AVX2 one (see Makefile)."""
    import os

    pinned = {k: os.environ.get(k) for k in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")}
    line = f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}; {pinned}"
    if None in pinned.values():
        line += " (not the Makefile's pinned AVX2 path: nbval may see other last digits; run `make test`)"
    return line
