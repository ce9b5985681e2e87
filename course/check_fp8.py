"""Checkers for lesson 4 (FP8 training): tile scales, scale counts, the format choice and FP32 promotion."""

from __future__ import annotations

import inspect
import math

import torch

from dsv3_mini.config import preset
from dsv3_mini.fp8 import apply_fp8, quantize, scale_grid_shape
from dsv3_mini.fp8_gemm import fp8_matmul

from .verdict import Verdict, check_choice, check_number

TILE_AMAX = 3.5  # exercise 1: the largest magnitude in one 1×128 activation tile
ACTIVATION_SHAPE = (256, 512)  # exercise 2: (tokens, channels)


def expected_tile_scale(amax: float = TILE_AMAX) -> float:
    """The E4M3 scale ``quantize`` gives a 1×128 tile whose largest magnitude is ``amax``."""
    tile = torch.linspace(-1.0, 1.0, 128)
    tile[7] = -amax  # the sign does not matter: the scale uses |x|
    _, scale = quantize(tile, "tile", "e4m3")
    return scale.item()


def check_tile_scale(answer: object) -> Verdict:
    """Exercise 1: the E4M3 scale of a tile whose largest magnitude is 3.5."""
    return check_number(answer, expected_tile_scale(), "the scale maps the tile's largest magnitude onto the "
                        "largest finite E4M3 value", rel_tol=1e-6)


def check_activation_scales(answer: object) -> Verdict:
    """Exercise 2: how many scales a 256×512 activation has with 1×128 tiles."""
    return check_number(answer, math.prod(scale_grid_shape(ACTIVATION_SHAPE, "tile")),
                        "one scale per token (row) for every 128 channels (columns)", unit="scales")


def check_gradient_format(answer: object) -> Verdict:
    """Exercise 3: the format DeepSeek-V3 uses for gradients (E4M3 on all tensors; ``apply_fp8``'s default)."""
    expected = inspect.signature(apply_fp8).parameters["fmt"].default
    return check_choice(answer, expected, ("e4m3", "e5m2"),
                        "gradients need range, but a per-tile scale already supplies range; which format then "
                        "gives more precision?")


def check_promotions(answer: object) -> Verdict:
    """Exercise 4: FP32 promotions per output element of a GEMM with K = DeepSeek-V3's hidden size."""
    k = preset("deepseek-v3").hidden_size
    n_c = inspect.signature(fp8_matmul).parameters["promote_every"].default
    return check_number(answer, k // n_c, "the partial sum moves to FP32 once every N_C elements of K",
                        unit="promotions")
