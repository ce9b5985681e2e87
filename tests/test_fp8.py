"""Tests for dsv3_mini.fp8, the FP8 training path: formats, fine-grained quantisation, FP8Linear and apply_fp8."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dsv3_mini import DeepSeekV3, preset
from dsv3_mini.fp8 import (
    ACTIVATION_TILE,
    FORMATS,
    WEIGHT_BLOCK,
    FP8Linear,
    apply_fp8,
    cast_unscaled,
    dequantize,
    elementwise_relative_error,
    fake_quantize,
    fp8_linear,
    get_format,
    quantize,
    relative_error,
    resolve_block,
    rounding_limit,
    scale_grid_shape,
    snr_db,
    tile_error_map,
)


def _scale_per_element(scale, block, shape):
    """Broadcast a (grid_rows, grid_cols) scale back to every element of a 2-D tensor."""
    br, bc = resolve_block(block, shape)
    full = scale.repeat_interleave(br, dim=0).repeat_interleave(bc, dim=1)
    return full[: shape[0], : shape[1]]


# --- formats and dtypes -------------------------------------------------------------------------


def test_formats_table_matches_the_report():
    assert FORMATS["e4m3"].dtype == torch.float8_e4m3fn
    assert FORMATS["e4m3"].max == 448.0 and FORMATS["e4m3"].mantissa_bits == 3
    assert FORMATS["e5m2"].dtype == torch.float8_e5m2
    assert FORMATS["e5m2"].max == 57344.0 and FORMATS["e5m2"].mantissa_bits == 2
    for f in FORMATS.values():  # agree with torch's own description of the dtype
        assert torch.finfo(f.dtype).max == f.max
        assert torch.finfo(f.dtype).smallest_normal == 2.0**f.min_normal_exponent


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_q_is_a_real_float8_tensor(fmt):
    x = torch.randn(3, 300)
    q, scale = quantize(x, "tile", fmt)
    assert q.dtype == FORMATS[fmt].dtype
    assert q.element_size() == 1
    assert q.shape == x.shape
    assert scale.dtype == torch.float32


@pytest.mark.parametrize(
    ("shape", "block", "grid"),
    [
        ((300, 500), None, (1, 1)),
        ((300, 500), "tensor", (1, 1)),
        ((300, 500), "row", (300, 1)),
        ((300, 500), (1, 500), (300, 1)),
        ((300, 500), "tile", (300, 4)),
        ((300, 500), (1, 128), (300, 4)),
        ((300, 500), "block", (3, 4)),
        ((300, 500), (128, 128), (3, 4)),
        ((2, 150, 500), "tile", (300, 4)),  # leading dims are flattened into rows
        ((500,), "tile", (1, 4)),  # 1-D is one row
    ],
)
def test_scale_shape_per_granularity(shape, block, grid):
    q, scale = quantize(torch.randn(shape), block)
    assert tuple(scale.shape) == grid
    assert q.shape == shape
    assert dequantize(q, scale, block).shape == shape


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_scale_is_block_amax_over_format_max(fmt):
    x = torch.randn(130, 200) * torch.logspace(-3, 3, 200)
    _, scale = quantize(x, (64, 96), fmt)
    for i in range(scale.shape[0]):
        for j in range(scale.shape[1]):
            amax = x[i * 64 : (i + 1) * 64, j * 96 : (j + 1) * 96].abs().max()
            assert scale[i, j].item() == pytest.approx(amax.item() / FORMATS[fmt].max, rel=1e-6)


def test_v3_granularities_are_one_scale_per_1x128_tile_and_128x128_block():
    assert ACTIVATION_TILE == (1, 128) and WEIGHT_BLOCK == (128, 128)
    assert resolve_block("tile", (512, 512)) == ACTIVATION_TILE
    assert resolve_block("block", (512, 512)) == WEIGHT_BLOCK
    assert scale_grid_shape((256, 512)) == (256, 4)  # the default block is the activation tile
    layer = FP8Linear(256, 256)
    assert layer.act_block == ACTIVATION_TILE and layer.weight_block == WEIGHT_BLOCK


def test_rounding_limit_is_half_an_ulp_of_the_mantissa():
    assert rounding_limit("e4m3") == 0.0625  # 2^-4: 3 mantissa bits
    assert rounding_limit("e5m2") == 0.125  # 2^-3: 2 mantissa bits
    assert rounding_limit(get_format("e4m3")) == 0.0625
    with pytest.raises(ValueError, match="fmt='fp8' is not one of"):
        rounding_limit("fp8")


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_rounding_limit_bounds_the_error_of_values_near_their_tiles_amax(fmt):
    """Values within a factor 8 of the amax stay normal after scaling, so only rounding (<= half an ulp) hits them."""
    x = torch.linspace(1.0, 8.0, 1280).reshape(10, 128)
    err = elementwise_relative_error(x, fake_quantize(x, "tile", fmt))
    assert err.max().item() <= rounding_limit(fmt)
    assert err.max().item() > rounding_limit(fmt) / 2  # and the bound is nearly reached


# --- round-trip error bound (hypothesis) --------------------------------------------------------


@st.composite
def _tensors_with_wide_dynamic_range(draw):
    """Small 2-D tensors whose elements span ~2^35 in magnitude, so normals, subnormals and
    flush-to-zero all occur inside one tile."""
    rows = draw(st.integers(1, 5))
    cols = draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    mantissa = torch.rand(rows, cols, generator=g) * 2 - 1
    exponent = torch.randint(-30, 6, (rows, cols), generator=g).float()
    x = mantissa * torch.exp2(exponent)
    x[torch.rand(rows, cols, generator=g) < 0.05] = 0.0  # some exact zeros too
    return x


@settings(max_examples=30, deadline=None)
@given(
    x=_tensors_with_wide_dynamic_range(),
    block=st.sampled_from([(1, 128), (128, 128), (1, 7), (3, 5), "tensor", "row"]),
    fmt=st.sampled_from(["e4m3", "e5m2"]),
)
def test_round_trip_error_is_within_half_an_fp8_ulp(x, block, fmt):
    """|x - x_hat| <= max(|x| 2^-(m+1), scale * subnormal_step / 2), up to float32 rounding.

    Normal range: half an ulp is at most |x| 2^-(m+1).  Subnormal range (|x/scale| below the
    smallest normal): the spacing is fixed at subnormal_step = 2^(min_exp - m), so half of it,
    times the scale, bounds the error (this also covers values flushed to zero).
    """
    f = FORMATS[fmt]
    q, scale = quantize(x, block, fmt)
    x_hat = dequantize(q, scale, block)
    s = _scale_per_element(scale, block, tuple(x.shape)).double()
    xd, err = x.double(), (x.double() - x_hat.double()).abs()
    m = f.mantissa_bits
    bound = torch.maximum(xd.abs() * 2.0 ** -(m + 1), s * f.subnormal_step / 2)
    fp32_slack = 4 * 2.0**-24 * xd.abs()  # x/scale and q*scale are each one fp32 rounding
    assert torch.all(err <= bound + fp32_slack)
    # Coarser corollary: the error never exceeds the tile's amax times 2^-(m+1).
    amax = s * f.max
    assert torch.all(err <= amax * 2.0 ** -(m + 1) * (1 + 2.0**-20))


# --- outliers, formats, padding -----------------------------------------------------------------


def test_outlier_only_changes_its_own_tile():
    x = torch.randn(4, 512)
    x_out = x.clone()
    x_out[1, 300] = 1e4  # tile (row 1, cols 256..383)
    own_tile = torch.zeros_like(x, dtype=torch.bool)
    own_tile[1, 256:384] = True

    clean = fake_quantize(x, "tile")
    dirty = fake_quantize(x_out, "tile")
    assert torch.equal(clean[~own_tile], dirty[~own_tile])  # bit-identical elsewhere


def test_outlier_costs_precision_inside_its_tile():
    # E4M3 with subnormals spans ~2^18, so a 1e4 outlier barely hurts N(0, 1) neighbours;
    # at 1e5 they are pushed into the subnormals (few bits left) and the error grows.
    x = torch.randn(4, 512)
    x_out = x.clone()
    x_out[1, 300] = 1e5
    neighbours = torch.zeros_like(x, dtype=torch.bool)
    neighbours[1, 256:384] = True
    neighbours[1, 300] = False
    err_clean = relative_error(x[neighbours], fake_quantize(x, "tile")[neighbours])
    err_dirty = relative_error(x[neighbours], fake_quantize(x_out, "tile")[neighbours])
    assert err_dirty > 3 * err_clean


def test_outlier_hurts_everything_with_per_tensor_scaling():
    x = torch.randn(4, 512)
    x_out = x.clone()
    x_out[1, 300] = 1e5  # see test_outlier_costs_precision_inside_its_tile for why 1e5
    others = torch.ones_like(x, dtype=torch.bool)
    others[1, 256:384] = False  # look only at tiles that do not contain the outlier
    err_clean = relative_error(x[others], fake_quantize(x, "tensor")[others])
    err_dirty = relative_error(x[others], fake_quantize(x_out, "tensor")[others])
    assert err_dirty > 3 * err_clean
    err_tiled = relative_error(x[others], fake_quantize(x_out, "tile")[others])
    assert err_tiled == pytest.approx(relative_error(x[others], fake_quantize(x, "tile")[others]))


def test_tile_error_map_has_scale_grid_shape_and_per_tile_values():
    x = torch.randn(3, 300)
    x[2, :128] = 0.0
    emap = tile_error_map(x, "tile")
    _, scale = quantize(x, "tile")
    assert emap.shape == scale.shape
    assert emap[2, 0].item() == 0.0  # all-zero tile
    x_hat = fake_quantize(x, "tile")
    assert emap[1, 2].item() == pytest.approx(relative_error(x[1, 256:], x_hat[1, 256:]), rel=1e-5)


def test_e5m2_round_trip_is_coarser_than_e4m3_on_gaussian_data():
    x = torch.randn(64, 512)
    err_e4m3 = relative_error(x, fake_quantize(x, "tile", "e4m3"))
    err_e5m2 = relative_error(x, fake_quantize(x, "tile", "e5m2"))
    assert err_e5m2 > 1.5 * err_e4m3  # one mantissa bit fewer: about twice the error
    assert err_e4m3 < 0.05


def test_without_scaling_e4m3_cannot_represent_1000_but_e5m2_can():
    thousand = torch.tensor([1000.0])
    assert cast_unscaled(thousand, "e4m3").item() == 448.0  # saturates at its max
    assert cast_unscaled(thousand, "e5m2").item() == 1024.0  # nearest E5M2 value
    # The raw torch casts agree: E4M3 is far off (saturated or NaN), E5M2 within its precision.
    raw_e4m3 = thousand.to(torch.float8_e4m3fn).float().item()
    raw_e5m2 = thousand.to(torch.float8_e5m2).float().item()
    assert not abs(raw_e4m3 - 1000.0) <= 1000.0 * 2**-4
    assert abs(raw_e5m2 - 1000.0) <= 1000.0 * 2**-3


def test_shapes_that_are_not_multiples_of_the_block_round_trip():
    x = torch.randn(130, 200)
    q, scale = quantize(x, "block")
    assert q.shape == (130, 200) and scale.shape == (2, 2)
    x_hat = dequantize(q, scale, "block")
    assert relative_error(x, x_hat) < 0.05
    # The ragged corner block (rows 128..129, cols 128..199) is scaled by its own amax only.
    assert scale[1, 1].item() == pytest.approx(x[128:, 128:].abs().max().item() / 448.0, rel=1e-6)


@pytest.mark.parametrize("block", ["tile", "block", "tensor", "row"])
def test_all_zero_blocks_give_zeros_not_nan(block):
    x = torch.randn(130, 200)
    x[:128, :128] = 0.0
    x[129] = 0.0
    x_hat = fake_quantize(x, block)
    assert torch.isfinite(x_hat).all()
    assert torch.all(x_hat[:128, :128] == 0) and torch.all(x_hat[129] == 0)
    zeros = torch.zeros(5, 7)
    q, scale = quantize(zeros, block)
    assert torch.all(scale == 0) and torch.all(q.float() == 0)
    assert torch.equal(dequantize(q, scale, block), zeros)


def test_fake_quantize_keeps_input_dtype():
    x = torch.randn(4, 256, dtype=torch.bfloat16)
    assert fake_quantize(x).dtype == torch.bfloat16


# --- argument checking --------------------------------------------------------------------------


@pytest.mark.parametrize("block", [(0, 128), (1, -1), (1, 2, 3), (128,), "blocks", (1.5, 2), 7])
def test_impossible_block_raises_value_error_naming_block(block):
    with pytest.raises(ValueError, match=r"block=.*tensor.*row.*tile.*block"):
        quantize(torch.randn(4, 256), block)


def test_unknown_format_raises_value_error_naming_fmt():
    with pytest.raises(ValueError, match=r"fmt='e3m4' is not one of 'e4m3', 'e5m2'"):
        quantize(torch.randn(4, 256), fmt="e3m4")
    with pytest.raises(ValueError, match="fmt="):
        FP8Linear(8, 8, fmt="fp8")



def test_mismatched_scale_shape_raises_value_error():
    q, scale = quantize(torch.randn(4, 256), "tile")
    with pytest.raises(ValueError, match="scale"):
        dequantize(q, scale, "block")



# --- FP8Linear ----------------------------------------------------------------------------------


def test_fp8_linear_from_linear_copies_weights_and_is_close_to_nn_linear():
    linear = nn.Linear(256, 192)
    fp8 = FP8Linear.from_linear(linear)
    assert torch.equal(fp8.weight, linear.weight) and torch.equal(fp8.bias, linear.bias)
    assert fp8.weight.data_ptr() != linear.weight.data_ptr()  # a copy, not shared storage
    x = torch.randn(2, 10, 256)
    with torch.no_grad():
        ref, out = linear(x), fp8(x)
    assert out.shape == (2, 10, 192)
    assert 1e-4 < relative_error(ref, out) < 0.06


def test_fp8_linear_without_bias_and_repr():
    fp8 = FP8Linear.from_linear(nn.Linear(128, 64, bias=False), fmt="e5m2")
    assert fp8.bias is None and "e5m2" in repr(fp8)
    assert fp8(torch.randn(3, 128)).shape == (3, 64)


def test_fp8_linear_gradients_are_straight_through():
    """dL/dx = g @ W_q and dL/dW = g^T @ x_q: a plain linear layer on the fake-quantised operands."""
    fp8 = FP8Linear(256, 160)
    x = torch.randn(6, 256, requires_grad=True)
    g = torch.randn(6, 160)
    fp8(x).backward(g)

    w_q = fake_quantize(fp8.weight.detach(), "block")
    x_q = fake_quantize(x.detach(), "tile")
    torch.testing.assert_close(x.grad, g @ w_q)
    torch.testing.assert_close(fp8.weight.grad, g.T @ x_q)
    torch.testing.assert_close(fp8.bias.grad, g.sum(0))
    assert not torch.equal(x.grad, g @ fp8.weight.detach())  # the quantised weight really is used


def test_fp8_linear_function_matches_module():
    fp8 = FP8Linear(128, 32)
    x = torch.randn(5, 128)
    torch.testing.assert_close(fp8(x), fp8_linear(x, fp8.weight, fp8.bias), rtol=0, atol=0)


# --- metrics ------------------------------------------------------------------------------------


def test_metrics_on_known_values():
    x = torch.ones(100)
    x_hat = x * 1.1
    assert relative_error(x, x_hat) == pytest.approx(0.1)
    assert snr_db(x, x_hat) == pytest.approx(20.0)
    assert snr_db(x, x) == math.inf
    assert relative_error(torch.zeros(4), torch.zeros(4)) == 0.0
    err = elementwise_relative_error(torch.tensor([2.0, -4.0, 0.0]), torch.tensor([2.5, -4.0, 1e-6]), eps=1e-3)
    torch.testing.assert_close(err, torch.tensor([0.25, 0.0, 1e-3]))


# --- the model switch ---------------------------------------------------------------------------


def test_apply_fp8_converts_linear_layers_and_keeps_sensitive_parts():
    model = DeepSeekV3(preset("tiny"))
    params_before = {n: p for n, p in model.named_parameters()}
    converted = apply_fp8(model)
    assert "layers.0.attn.wq_a" in converted and "layers.0.ffn.w1" in converted
    assert "layers.1.ffn.experts" in converted and "layers.1.ffn.shared.w2" in converted
    assert "mtp.0.proj" in converted
    assert not any(n.startswith(("embed", "head")) or ".gate" in n or "norm" in n or "wkv_b" in n for n in converted)
    assert type(model.head) is torch.nn.Linear and type(model.layers[0].attn.wkv_b) is torch.nn.Linear
    # parameters are shared, not copied: an optimizer made before the switch still trains the model
    assert all(p is params_before[n] for n, p in model.named_parameters())


def test_fp8_model_is_close_to_full_precision_but_not_equal():
    torch.manual_seed(0)
    model = DeepSeekV3(preset("tiny")).eval()
    tokens = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        full = model(tokens).logits
        apply_fp8(model)
        fp8 = model(tokens).logits
    rel = ((fp8 - full).norm() / full.norm()).item()
    assert 0 < rel < 0.1


def test_fp8_model_trains():
    torch.manual_seed(0)
    model = DeepSeekV3(preset("tiny"))
    apply_fp8(model)
    tokens = torch.randint(0, 256, (2, 16))
    model(tokens, targets=tokens.roll(-1, 1)).loss.backward()
    assert model.layers[0].attn.wq_a.weight.grad.abs().sum() > 0
    assert model.layers[1].ffn.w1.grad.abs().sum() > 0


def test_apply_fp8_rejects_an_unknown_format():
    with pytest.raises(ValueError, match="fmt="):
        apply_fp8(DeepSeekV3(preset("tiny")), fmt="e3m4")
