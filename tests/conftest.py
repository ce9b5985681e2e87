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
