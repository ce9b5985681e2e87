"""The FP8 GEMM and its accumulator, simulated on the CPU (DeepSeek-V3 report, §3.3.2 and §3.5.2, Figure 7b).

An FP8 GEMM ``a @ b.T`` with ``a`` (M, K) and ``b`` (N, K) sums K products per output element.  The products of two FP8
numbers are exact; the *sum* is where precision goes.  What the report found on the H800 (§3.3.2, "Increasing
Accumulation Precision", and the hardware section §3.5.2): the tensor cores accumulate in fixed point, aligning the
mantissa products (32 of them in the report's example) to the largest exponent by right-shifting, and keep only the
highest ~14 bits, truncating the rest; so the low bits of small addends are lost.  The report's preliminary test, two
random matrices with K = 4096, gave a *maximum* relative error of nearly 2%.

V3's fix is **promotion to CUDA cores**: every N_C = 128 elements of K the tensor cores' partial sum is copied to an
FP32 register on the CUDA cores, multiplied by the two scales of its tile and block, and added to a full-precision
accumulator.  The limited accumulator then never holds a sum of more than 128 products, and the error no longer grows
with K.  The report's reason for 128: it is 4 WGMMAs (Hopper's warpgroup matrix-multiply instructions), the minimal
interval that improves precision significantly without introducing substantial overhead.

This module simulates both, on top of the quantisation of ``dsv3_mini.fp8``:

- :func:`round_mantissa` rounds float32 values to ``bits`` mantissa bits: the limited accumulator's register;
- :func:`limited_accumulate_matmul` is ``a @ w.T`` through that register, promoted to FP32 every ``promote_every`` (=
  N_C) elements of K, or never (``promote_every=None``);
- :func:`fp8_matmul` quantises ``a`` per 1x128 activation tile and ``b`` per 128x128 weight block, then accumulates
  either exactly in FP32 or in the limited accumulator;
- :func:`gemm_errors` separates the errors of one FP8 GEMM: the accumulation error without and with promotion, and the
  error of the FP8 inputs themselves.

The 14 bits and the truncation of shifted-out bits follow the report's description of the H800; they are a model of the
hardware, not a measurement of it, and a simpler one: our register is a float with 14 mantissa bits that truncates the
running sum after every ``chunk`` (4) products, each chunk summed in fp32, where the H800 aligns a group of
products to their largest exponent in fixed point.  Our errors are norm-based (``||y - y_ref|| / ||y_ref||``, see
``dsv3_mini.fp8.relative_error``), not the report's maximum relative error, so they show the same trend with K, not
the same number.  Shapes follow ``nn.Linear``: ``a`` (M, K) activations, ``b`` (N, K) a weight as
``nn.Linear.weight`` stores it, outputs (M, N) float32.
"""

from __future__ import annotations

import torch

from .fp8 import ACTIVATION_TILE, WEIGHT_BLOCK, _allowed, dequantize, quantize, relative_error

__all__ = ["ACCUMULATOR_BITS", "N_C", "fp8_matmul", "gemm_errors", "limited_accumulate_matmul", "round_mantissa"]

ACCUMULATOR_BITS = 14  # mantissa bits an H800 tensor core keeps while accumulating an FP8 GEMM
N_C = 128  # elements of K between two promotions of the partial sum to FP32 (V3's choice: 4 WGMMAs)
ACCUMULATORS = ("fp32", "limited")
ROUNDINGS = ("nearest", "truncate")


def round_mantissa(x: torch.Tensor, bits: int, rounding: str = "nearest") -> torch.Tensor:
    """Round float32 ``x`` to ``bits`` explicit mantissa bits (0..23), keeping the fp32 exponent.

    ``rounding="nearest"`` is round-to-nearest-even; ``"truncate"`` rounds toward zero (drops the low bits), which is
    what an accumulator that aligns and shifts out low bits does.  inf/NaN pass through unchanged.

    Works on the bit pattern: a float32 has 23 mantissa bits, we clear the low ``23 - bits`` of them (after adding half
    an ulp for round-to-nearest).
    """
    if not 0 <= bits <= 23:
        raise ValueError(f"bits={bits!r} must be an int in 0..23")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding={rounding!r} is not one of {_allowed(ROUNDINGS)}")
    x = x.float()
    drop = 23 - bits
    if drop == 0:
        return x.clone()
    i = x.contiguous().view(torch.int32)
    if rounding == "nearest":
        # Add 0111..1 plus the lowest kept bit: ties go to the even neighbour.
        # A carry out of the mantissa correctly bumps the exponent.
        lowest_kept = (i >> drop) & 1
        i = i + ((1 << (drop - 1)) - 1) + lowest_kept
    i = i & ~((1 << drop) - 1)
    out = i.view(torch.float32)
    return torch.where(torch.isfinite(x), out, x)


def _check_promote(promote_every, chunk: int) -> None:
    if chunk <= 0:
        raise ValueError(f"chunk={chunk!r} must be a positive int")
    if promote_every is not None and (promote_every <= 0 or promote_every % chunk != 0):
        raise ValueError(f"promote_every={promote_every!r} must be None or a positive multiple of chunk={chunk}")


def limited_accumulate_matmul(a: torch.Tensor, w: torch.Tensor, *, bits: int = ACCUMULATOR_BITS,
                              promote_every: int | None = N_C, chunk: int = 4,
                              rounding: str = "truncate") -> torch.Tensor:
    """``a @ w.T`` with a tensor-core-like accumulator of ``bits`` mantissa bits.

    a: (M, K), w: (N, K) -> (M, N) float32.

    K is walked in chunks of ``chunk`` elements.  Each chunk's small dot product is computed exactly enough (in fp32)
    and added to the running partial sum, which is then rounded to ``bits`` mantissa bits: one rounding per chunk, not
    per element, so the loop runs K/chunk times instead of K.

    ``promote_every=None``: the whole K reduction stays in the limited accumulator, so its rounding error grows with K.
    ``promote_every=128`` (V3's N_C): every 128 elements the partial sum is added to an FP32 accumulator and reset, so
    the limited accumulator never sees a long sum.
    """
    _check_promote(promote_every, chunk)
    a, w = a.float(), w.float()
    m, k = a.shape
    n = w.shape[0]
    fp32_acc = torch.zeros(m, n)
    partial = torch.zeros(m, n)
    for start in range(0, k, chunk):
        stop = min(start + chunk, k)
        partial = round_mantissa(partial + a[:, start:stop] @ w[:, start:stop].T, bits, rounding)
        if promote_every is not None and stop % promote_every == 0:
            fp32_acc += partial  # promotion: a full-precision add on the CUDA cores
            partial = torch.zeros(m, n)
    return fp32_acc + partial


def fp8_matmul(a: torch.Tensor, b: torch.Tensor, *, act_block=ACTIVATION_TILE, weight_block=WEIGHT_BLOCK,
               fmt: str = "e4m3", accumulator: str = "fp32", promote_every: int | None = N_C,
               accumulator_bits: int = ACCUMULATOR_BITS, chunk: int = 4, rounding: str = "truncate") -> torch.Tensor:
    """Simulated FP8 GEMM in the layout of ``nn.Linear``: returns ``a @ b.T``.

    Args:
        a: activations (M, K), quantised per ``act_block`` (1x128 tiles).
        b: weight (N, K) exactly as ``nn.Linear.weight`` stores it, quantised per
           ``weight_block`` (128x128 blocks).  Output is (M, N) float32.
        accumulator: "fp32" = exact product of the dequantised operands in fp32;
           "limited" = the H800 tensor-core accumulator (§3.3.2, "Increasing Accumulation Precision"; §3.5.2):
           ``accumulator_bits`` mantissa bits, see :func:`limited_accumulate_matmul` for ``promote_every``, ``chunk``
           and ``rounding``.  ``promote_every`` is ignored for "fp32".

    Scales are folded into the operands before accumulating.  V3 instead multiplies them in at promotion time; within
    one N_C=128 interval both scales are constant, so the two orders differ only by fp32 rounding, and the relative
    error of a floating-point accumulator does not depend on scale.

    Default ``rounding="truncate"`` (bits shifted out are dropped) gives a biased error that grows about linearly with
    K, as the report describes (its "nearly 2%" at K = 4096 is a maximum error; :func:`gemm_errors` measures a norm);
    ``"nearest"`` gives a much smaller, random-walk error.
    """
    if accumulator not in ACCUMULATORS:
        raise ValueError(f"accumulator={accumulator!r} is not one of {_allowed(ACCUMULATORS)}")
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need a (M, K) and b (N, K) with the same K, got {tuple(a.shape)} and {tuple(b.shape)}")
    a_hat = dequantize(*quantize(a, act_block, fmt), act_block)
    b_hat = dequantize(*quantize(b, weight_block, fmt), weight_block)
    if accumulator == "fp32":
        return a_hat @ b_hat.T
    return limited_accumulate_matmul(
        a_hat, b_hat, bits=accumulator_bits, promote_every=promote_every, chunk=chunk, rounding=rounding
    )


def gemm_errors(a: torch.Tensor, b: torch.Tensor, *, fmt: str = "e4m3", accumulator_bits: int = ACCUMULATOR_BITS,
                promote_every: int = N_C) -> dict[str, float]:
    """Relative errors (fractions, see :func:`relative_error`) of one FP8 GEMM ``a @ b.T`` with V3's scaling.

    a: (M, K), b: (N, K), quantised per 1x128 tile and 128x128 block as in :func:`fp8_matmul`.

    - "no_promotion" / "promotion": the limited accumulator (``accumulator_bits``, ``promote_every=None`` or the given
      interval) vs FP32 accumulation of the same FP8 operands: the accumulation error alone;
    - "quantization": FP32 accumulation of the FP8 operands vs the exact product of the originals: the error of rounding
      the inputs to FP8, which no accumulator can undo.
    """
    ref = fp8_matmul(a, b, fmt=fmt, accumulator="fp32")
    limited = {"fmt": fmt, "accumulator": "limited", "accumulator_bits": accumulator_bits}
    promoted = fp8_matmul(a, b, **limited, promote_every=promote_every)
    plain = fp8_matmul(a, b, **limited, promote_every=None)
    return {"no_promotion": relative_error(ref, plain), "promotion": relative_error(ref, promoted),
            "quantization": relative_error(a @ b.T, ref)}
