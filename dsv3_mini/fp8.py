"""FP8 training, simulated on the CPU (DeepSeek-V3 technical report, Section 3.3).

DeepSeek-V3 runs its big linear layers (attention projections, FFN and expert matrices) in FP8 and keeps the sensitive
parts (embedding, output head, MoE gates, norms, the attention operators) in BF16/FP32: the mixed-precision framework
of Section 3.3.1 (Figure 6).  This module is the training path: how a tensor becomes FP8, and how a linear layer trains
on FP8 values.  Three steps, each in plain PyTorch:

1. **One format, E4M3, everywhere** (Section 3.3.2, "Mantissa over Exponents").  It has 3 mantissa bits and a max of
   448; E5M2 is the wider (57,344) but coarser (2 mantissa bits) alternative.  ``torch.float8_e4m3fn`` /
   ``torch.float8_e5m2`` do real FP8 rounding on the CPU, so every ``quantize`` here is a real cast. Round-to-nearest
   loses at most half an ulp, 2^-(m+1) of a normal value (:func:`rounding_limit`: 6.25% for E4M3).
2. **Fine-grained scaling** (Section 3.3.2, Figure 7a).  Activations get one scale per :data:`ACTIVATION_TILE` (1x128:
   one token, 128 channels); weights one per :data:`WEIGHT_BLOCK` (128x128).  ``scale = amax / fmt_max`` and ``q =
   cast(x / scale)``, so an outlier only costs precision inside its own tile.  The amax is *online*, of the tile or
   block at the moment it is used (Section 3.3.2), not *delayed* from earlier steps' amax history; so is ours.  Why
   1x128 tiles for activations (Appendix B.2): block-wise quantised activation gradients made a 16B-parameter MoE
   diverge (token-correlated outliers, the report suspects); V3 uses 1x128 tiles forward, 128x1 for the backward.
3. **FP8 linear layers with FP32 master weights** (Sections 3.3.1 and 3.3.3).  The forward GEMM sees fake-quantised
   operands (:func:`fp8_linear`, :class:`FP8Linear`); gradients pass straight through the rounding; :func:`apply_fp8`
   switches a model's linear layers (those the report runs in FP8, and the MTP projection) to it.  V3 keeps master
   weights and gradients in FP32 and AdamW's moments in BF16 (Section 3.3.3); our moments are FP32.

Not simulated, from Section 3.3.3: V3 caches in FP8 the activations a linear layer's backward needs (the input of the
linear after attention in a custom E5M6 with power-of-2 scales; of the MoE's SwiGLU only the input, its output is
recomputed), dispatches tokens to experts in FP8 and combines in BF16.  Here autograd keeps FP32 activations, nothing
is recomputed, and nothing is communicated (``dsv3_mini.traffic`` counts FP8 dispatch and BF16 combine bytes).

The GEMM itself, and why V3 promotes its partial sums to FP32 every N_C = 128 elements, is ``dsv3_mini.fp8_gemm``.

Shapes.  ``quantize`` works on a 2-D tensor ``(rows, cols)``.  A 1-D tensor is treated as one row ``(1, cols)``; a
tensor with more dims has its leading dims flattened into rows, ``(prod(shape[:-1]), shape[-1])``, exactly like the
tokens fed to a Linear layer.  The returned ``q`` always has the input's shape.

Block names (the ``block`` argument), for an input viewed as ``(rows, cols)``: "tensor" = (rows, cols), per-tensor
scaling (also ``block=None``); "row" = (1, cols), per token; "tile" = (1, 128), V3's activations
(``ACTIVATION_TILE``); "block" = (128, 128), V3's weights (``WEIGHT_BLOCK``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .moe import MoE, Router

__all__ = ["ACTIVATION_TILE", "BLOCK_NAMES", "FORMATS", "FP8Format", "FP8Linear", "WEIGHT_BLOCK", "apply_fp8",
           "cast_unscaled", "dequantize", "elementwise_relative_error", "fake_quantize", "fake_quantize_ste",
           "fp8_linear", "get_format", "quantize", "relative_error", "resolve_block", "rounding_limit",
           "scale_grid_shape", "snr_db", "tile_error_map"]

ACTIVATION_TILE = (1, 128)  # one scale per token and 128 channels (Figure 7a)
WEIGHT_BLOCK = (128, 128)  # one scale per 128 output x 128 input channels (Figure 7a)


# --- Formats ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FP8Format:
    """One 8-bit float format.

    ``max`` is the largest finite value, ``mantissa_bits`` the number of stored (explicit) mantissa bits,
    ``min_normal_exponent`` the exponent of the smallest normal number (2**-6 for E4M3, 2**-14 for E5M2).
    """

    name: str
    dtype: torch.dtype
    max: float
    mantissa_bits: int
    min_normal_exponent: int

    @property
    def subnormal_step(self) -> float:
        """Spacing of the subnormal numbers (= the smallest positive value)."""
        return 2.0 ** (self.min_normal_exponent - self.mantissa_bits)


FORMATS: dict[str, FP8Format] = {
    "e4m3": FP8Format("e4m3", torch.float8_e4m3fn, 448.0, 3, -6),
    "e5m2": FP8Format("e5m2", torch.float8_e5m2, 57344.0, 2, -14),
}

BLOCK_NAMES = ("tensor", "row", "tile", "block")
_NAMED_BLOCKS = {"tile": ACTIVATION_TILE, "block": WEIGHT_BLOCK}


def _allowed(values) -> str:
    return ", ".join(repr(v) for v in values)


def get_format(fmt: str | FP8Format) -> FP8Format:
    """Look up a format by name ("e4m3" or "e5m2"); raises ValueError otherwise."""
    if isinstance(fmt, FP8Format):
        return fmt
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r} is not one of {_allowed(FORMATS)}")
    return FORMATS[fmt]


def rounding_limit(fmt: str | FP8Format) -> float:
    """Largest relative error of round-to-nearest on a normal FP8 number: half an ulp, 2^-(mantissa bits + 1).

    6.25% for E4M3, 12.5% for E5M2.  An element above it lost more than FP8 rounding: it fell into the subnormal range
    or was flushed to zero because its scale is set by a much larger value.
    """
    return 2.0 ** -(get_format(fmt).mantissa_bits + 1)


# --- Blocks: how a 2-D tensor is cut into tiles that share one scale --------------------------------------------------


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    """View x as (rows, cols): 1-D -> one row, N-D -> leading dims flattened."""
    if x.dim() == 0:
        raise ValueError(f"x must have at least 1 dimension, got a scalar of shape {tuple(x.shape)}")
    return x.reshape(-1, x.shape[-1])


def resolve_block(block, shape: tuple[int, int]) -> tuple[int, int]:
    """Turn a ``block`` argument into ``(block_rows, block_cols)`` for a 2-D ``shape``.

    Accepts ``None``/"tensor", "row", "tile", "block" or a pair of positive ints. Block sizes larger than the tensor are
    clipped to it (the scale grid is the same, and we avoid padding a 1x10 tensor to 128x128).
    """
    rows, cols = shape
    if block is None or block == "tensor":
        br, bc = rows, cols
    elif block == "row":
        br, bc = 1, cols
    elif isinstance(block, str):
        if block not in _NAMED_BLOCKS:
            raise ValueError(f"block={block!r} is not one of {_allowed(BLOCK_NAMES)} (or None, or a pair of ints)")
        br, bc = _NAMED_BLOCKS[block]
    else:
        try:
            br, bc = (int(b) for b in block)
            is_ints = all(int(b) == b for b in block)
        except (TypeError, ValueError):
            is_ints = False
        if not is_ints or br <= 0 or bc <= 0:
            raise ValueError(
                f"block={block!r} must be None, one of {_allowed(BLOCK_NAMES)}, "
                "or a pair (block_rows, block_cols) of positive ints"
            )
    # max(.., 1) keeps empty tensors from producing a zero-sized block.
    return max(min(br, rows), 1), max(min(bc, cols), 1)


def scale_grid_shape(shape: tuple[int, ...], block=ACTIVATION_TILE) -> tuple[int, int]:
    """Shape of the scale tensor for an input of ``shape``: (ceil(rows/br), ceil(cols/bc))."""
    rows = math.prod(shape[:-1]) if len(shape) > 1 else 1
    cols = shape[-1]
    br, bc = resolve_block(block, (rows, cols))
    return -(-rows // br), -(-cols // bc)


def _to_tiles(x2d: torch.Tensor, br: int, bc: int) -> torch.Tensor:
    """(rows, cols) -> (grid_rows, br, grid_cols, bc), zero-padding the ragged edge.

    Zeros are a safe padding: they never change a tile's amax (or its error).
    """
    rows, cols = x2d.shape
    pad_r, pad_c = -rows % br, -cols % bc
    x2d = F.pad(x2d, (0, pad_c, 0, pad_r))
    return x2d.reshape(x2d.shape[0] // br, br, x2d.shape[1] // bc, bc)


def _from_tiles(tiles: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Inverse of :func:`_to_tiles`: back to (rows, cols), dropping the padding."""
    gr, br, gc, bc = tiles.shape
    return tiles.reshape(gr * br, gc * bc)[:rows, :cols]


# --- Quantise / dequantise --------------------------------------------------------------------------------------------


def cast_unscaled(x: torch.Tensor, fmt: str = "e4m3") -> torch.Tensor:
    """Round x to FP8 *without* any scaling and return it as float32.

    Values beyond the format's max saturate to +-max (E4M3 has no infinity), so ``cast_unscaled(1000.0, "e4m3") == 448``
    while E5M2 gives 1024.  This is the "why do we need a scale at all" demo; :func:`quantize` never overflows.
    """
    f = get_format(fmt)
    return x.float().clamp(-f.max, f.max).to(f.dtype).float()


def quantize(x: torch.Tensor, block=ACTIVATION_TILE, fmt: str = "e4m3") -> tuple[torch.Tensor, torch.Tensor]:
    """Fine-grained FP8 quantisation (report Section 3.3.2, Figure 7a).

    Args:
        x: float tensor ``(rows, cols)`` (1-D = one row; N-D = leading dims are rows).
        block: granularity, see the module docstring (default 1x128 activation tiles).
        fmt: "e4m3" (V3's choice) or "e5m2".

    Returns:
        ``q``: a real ``float8`` tensor with x's shape.
        ``scale``: float32 ``(ceil(rows/br), ceil(cols/bc))`` with ``scale = amax / fmt_max`` per block, so that ``x ~=
        q * scale``.  An all-zero block has scale 0 and q 0.
    """
    f = get_format(fmt)
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    x2d = _as_rows(x).float()
    rows, cols = x2d.shape
    br, bc = resolve_block(block, (rows, cols))

    tiles = _to_tiles(x2d, br, bc)
    amax = tiles.abs().amax(dim=(1, 3))  # (grid_rows, grid_cols)
    scale = amax / f.max
    # All-zero tile: divide by 1 instead of 0 (0/1 = 0, no NaN).
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    scaled = tiles / safe[:, None, :, None]
    # |scaled| <= max up to one float32 rounding; clamp so the cast can never overflow.
    scaled = scaled.clamp(-f.max, f.max)
    q = _from_tiles(scaled, rows, cols).to(f.dtype)
    return q.reshape(x.shape), scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, block=ACTIVATION_TILE) -> torch.Tensor:
    """Undo :func:`quantize`: float32 ``q * scale`` with q's shape.

    ``block`` must be the one used for quantising (it cannot be inferred from ``scale`` alone); a mismatching ``scale``
    shape raises ValueError.
    """
    q2d = _as_rows(q).float()
    rows, cols = q2d.shape
    br, bc = resolve_block(block, (rows, cols))
    tiles = _to_tiles(q2d, br, bc)
    expected = (tiles.shape[0], tiles.shape[2])
    if tuple(scale.shape) != expected:
        raise ValueError(
            f"scale has shape {tuple(scale.shape)} but block={block!r} on q of shape {tuple(q.shape)} needs {expected}"
        )
    out = tiles * scale.float()[:, None, :, None]
    return _from_tiles(out, rows, cols).reshape(q.shape)


def fake_quantize(x: torch.Tensor, block=ACTIVATION_TILE, fmt: str = "e4m3") -> torch.Tensor:
    """``dequantize(quantize(x))`` returned in x's dtype: x with FP8 rounding error baked in."""
    q, scale = quantize(x, block, fmt)
    return dequantize(q, scale, block).to(x.dtype)


# --- FP8 Linear layer (fake quantisation + straight-through gradients) ------------------------------------------------


class _FakeQuantSTE(torch.autograd.Function):
    """Forward: fake-quantise.  Backward: pass the gradient straight through.

    Rounding has zero gradient almost everywhere, so training would stall; the straight-through estimator pretends the
    quantiser is the identity.
    """

    @staticmethod
    def forward(ctx, x, block, fmt):
        return fake_quantize(x, block, fmt)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def fake_quantize_ste(x: torch.Tensor, block=ACTIVATION_TILE, fmt: str = "e4m3") -> torch.Tensor:
    """:func:`fake_quantize` with a straight-through (identity) gradient."""
    return _FakeQuantSTE.apply(x, block, fmt)


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, fmt: str = "e4m3",
               act_block=ACTIVATION_TILE, weight_block=WEIGHT_BLOCK) -> torch.Tensor:
    """``F.linear`` with FP8 fake-quantised inputs: x (..., in), weight (out, in) -> (..., out).

    Activations are quantised per 1x128 tile (per token; leading dims of x are tokens), the weight per 128x128 block,
    then the product runs in x's dtype. Bias stays in high precision.  Gradients are straight-through: dL/dx equals the
    gradient of a plain linear layer whose weight is the fake-quantised weight, and dL/dW equals that of a plain linear
    layer fed the fake-quantised input.  (V3 also runs the backward GEMMs in FP8; we do not quantise gradients.)
    """
    x_q = fake_quantize_ste(x, act_block, fmt)
    w_q = fake_quantize_ste(weight, weight_block, fmt)
    return F.linear(x_q, w_q, bias)


class FP8Linear(nn.Linear):
    """Drop-in ``nn.Linear`` whose forward is :func:`fp8_linear`.

    Parameters stay in full precision (V3 keeps FP32 master weights); only the forward GEMM sees FP8-rounded values.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, fmt: str = "e4m3",
                 act_block=ACTIVATION_TILE, weight_block=WEIGHT_BLOCK, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        get_format(fmt)  # fail early on a bad name
        resolve_block(act_block, (1, in_features))
        resolve_block(weight_block, (out_features, in_features))
        self.fmt = fmt
        self.act_block = act_block
        self.weight_block = weight_block

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs) -> FP8Linear:
        """Build an FP8Linear with a *copy* of ``linear``'s weight and bias (kwargs: fmt, blocks)."""
        w = linear.weight
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, device=w.device, dtype=w.dtype,
                  **kwargs)
        with torch.no_grad():
            new.weight.copy_(w)
            if linear.bias is not None:
                new.bias.copy_(linear.bias)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fp8_linear(
            x, self.weight, self.bias, fmt=self.fmt, act_block=self.act_block, weight_block=self.weight_block
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fmt={self.fmt!r}"


# --- Error metrics (for widgets and tests) ----------------------------------------------------------------------------


def relative_error(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """``||x - x_hat|| / ||x||`` (Frobenius norm); 0.0 when x is all zeros."""
    x, x_hat = x.double(), x_hat.double()
    norm = x.norm().item()
    if norm == 0.0:
        return 0.0
    return (x - x_hat).norm().item() / norm


def snr_db(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Signal-to-noise ratio ``10 log10(||x||^2 / ||x - x_hat||^2)`` in dB; inf when exact."""
    x, x_hat = x.double(), x_hat.double()
    noise = (x - x_hat).pow(2).sum().item()
    signal = x.pow(2).sum().item()
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def elementwise_relative_error(x: torch.Tensor, x_hat: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``|x - x_hat| / max(|x|, eps)`` per element (float32, x's shape)."""
    x, x_hat = x.float(), x_hat.float()
    return (x - x_hat).abs() / x.abs().clamp_min(eps)


def tile_error_map(x: torch.Tensor, block=ACTIVATION_TILE, fmt: str = "e4m3") -> torch.Tensor:
    """Per-tile relative round-trip error, float32 of the scale grid's shape.

    Entry (i, j) is ``||x_t - x_hat_t|| / ||x_t||`` for tile (i, j) (0 for an all-zero tile). Beware with outliers: the
    norm of an outlier's tile is the outlier's own, and the outlier is stored almost exactly (it sets the scale), so
    that tile looks *good* although its other values lost most of their precision; ``elementwise_relative_error`` shows
    the damage element by element.
    """
    x2d = _as_rows(x).float()
    x_hat = fake_quantize(x2d, block, fmt).float()
    br, bc = resolve_block(block, tuple(x2d.shape))
    err = (_to_tiles(x2d - x_hat, br, bc)).double().pow(2).sum(dim=(1, 3)).sqrt()
    norm = _to_tiles(x2d, br, bc).double().pow(2).sum(dim=(1, 3)).sqrt()
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))
    return torch.where(norm > 0, err / safe, torch.zeros_like(err)).float()


# --- The model switch: FP8 where the report uses it, full precision elsewhere -----------------------------------------


def apply_fp8(model: nn.Module, fmt: str = "e4m3", act_block=ACTIVATION_TILE, weight_block=WEIGHT_BLOCK) -> list[str]:
    """Run the model's linear layers in simulated FP8, in place; returns the names of what now runs in FP8.

    FP8 (as in V3, Section 3.3.1): attention projections, dense FFNs, shared and routed experts (also inside each MTP
    module's block). Kept in full precision (as in V3): embedding, output head, MoE gates, norms, the attention core.
    The MTP module's 2d -> d projection (``mtp.<k>.proj``) is named neither among V3's FP8 GEMMs nor among its
    higher-precision exceptions in Section 3.3.1; we convert it like every other linear layer, our choice. ``wkv_b``
    (W_UK, W_UV) is applied inside our attention core by einsum (expanding keys and values, or absorbed into queries
    and outputs), not as a linear layer, so it also stays in full precision here. Parameters are shared, not copied,
    so an optimizer made earlier keeps working.
    """
    get_format(fmt)
    converted = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if type(child) is not nn.Linear or child_name in ("head", "wkv_b") or isinstance(module, Router):
                continue
            fp8 = FP8Linear(child.in_features, child.out_features, child.bias is not None, fmt=fmt,
                            act_block=act_block, weight_block=weight_block, device=child.weight.device)
            fp8.weight, fp8.bias = child.weight, child.bias
            setattr(module, child_name, fp8)
            converted.append(full)
        if isinstance(module, MoE):
            module.linear = partial(fp8_linear, fmt=fmt, act_block=act_block, weight_block=weight_block)
            converted.append(f"{name}.experts" if name else "experts")
    return sorted(converted)
