"""FP8TileWidget: why DeepSeek-V3 scales FP8 per 1×128 tile / 128×128 block and promotes its accumulator."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import ipywidgets as ipw
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from dsv3_mini.fp8 import elementwise_relative_error, fake_quantize, rounding_limit
from dsv3_mini.fp8_gemm import gemm_errors

from ._common import PlotWidget, base_layout, book_layout, f32, slider_style, wide
from .palette import BLACK, BLUE, GREY, ORANGE, VERMILLION
from .twin_layout import colorbar_above, legend_below, stacked_subplots, subtitle

GRANULARITIES = {  # label -> block argument of dsv3_mini.fp8
    "per tensor": "tensor",
    "per row (token)": "row",
    "1×128 tile (V3 activations)": "tile",
    "128×128 block (V3 weights)": "block",
}
STATIC_LABELS = {"tensor": "tensor", "row": "row", "tile": "1×128", "block": "128×128"}  # short: a phone's slider
SIZES = {"64 × 256": (64, 256), "128 × 256": (128, 256), "128 × 512": (128, 512), "256 × 512": (256, 512)}
GEMM_K = (128, 256, 512, 1024, 2048, 4096)
GEMM_MN = 8  # the GEMM operands are (8, K) @ (8, K).T
ERR_FLOOR = 1e-6  # exact elements are drawn at this error (log scale)
HIST_EDGES = np.linspace(-6.0, 1.0, 29)  # log10(relative error) bins of width 0.25
Z_MIN = -3.0  # heatmap colour range in log10(relative error): 0.1% .. 100%
DARK, LIGHT = "#0B1F4D", "#8DB3D6"  # errors within FP8 rounding: blues; beyond it: Okabe-Ito orange -> vermillion


def error_colorscale(fmt: str) -> list[list[Any]]:
    """Blues up to the format's rounding limit, then a sharp step to orange and vermillion (damage)."""
    t = (np.log10(rounding_limit(fmt)) - Z_MIN) / -Z_MIN
    return [[0.0, DARK], [t, LIGHT], [t + 1e-3, ORANGE], [1.0, VERMILLION]]


def make_matrix(rows: int, cols: int, outlier_size: float, outlier_count: int, seed: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard-normal (rows, cols) activations with ``outlier_count`` entries set to ±``outlier_size``.

    Returns (x, outlier flat indices). Positions are a prefix of one fixed permutation: adding an outlier keeps
    the others where they were.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g)
    pos = torch.randperm(rows * cols, generator=g)[:outlier_count]
    signs = torch.where(torch.arange(outlier_count) % 2 == 0, 1.0, -1.0)
    x.view(-1)[pos] = outlier_size * signs
    return x, pos


def gemm_operands(k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian GEMM operands a (8, K) and b (8, K) for the accumulation panel (no outliers)."""
    g = torch.Generator().manual_seed(seed + k)
    return torch.randn(GEMM_MN, k, generator=g), torch.randn(GEMM_MN, k, generator=g)


@lru_cache(maxsize=32)
def gemm_curves(fmt: str, accumulator_bits: int, promote_every: int, seed: int = 0) -> dict[str, list[float]]:
    """``dsv3_mini.fp8_gemm.gemm_errors`` in % for the operands of each K of ``GEMM_K``, one list per error.

    Cached: the first call for a setting takes a few hundred ms.
    """
    errors = [gemm_errors(*gemm_operands(k, seed), fmt=fmt, accumulator_bits=accumulator_bits,
                          promote_every=promote_every) for k in GEMM_K]
    return {name: [100 * e[name] for e in errors] for name in errors[0]}


class FP8TileWidget(PlotWidget):
    """Teaches fine-grained FP8 scaling: one scale per tensor lets a single outlier push every other value of the
    tensor towards zero, while V3's 1×128 tiles (activations) and 128×128 blocks (weights) confine the damage to
    the outlier's own tile; and why V3 promotes partial sums to FP32 every 128 elements of a GEMM.

    Uses ``dsv3_mini.fp8`` (real ``float8`` casts on the CPU) and ``dsv3_mini.fp8_gemm``. The matrix is synthetic
    Gaussian activations with planted outliers; the GEMM panel always uses V3's scaling and outlier-free Gaussian
    operands, and its 14-bit truncating accumulator is the simulation of ``fp8_matmul``, not measured H800 hardware.
    ``static_figure()`` uses at most a 64 × 256 matrix (smaller than one 128×128 block in rows) to stay under 1 MB.
    """

    static_label = "granularity"

    def __init__(self, seed: int = 0):
        self.seed = seed
        st, lay = slider_style(), wide()
        self.fmt = ipw.Dropdown(options=[("E4M3 (V3)", "e4m3"), ("E5M2", "e5m2")], value="e4m3",
                                description="format", style=st, layout=lay)
        self.granularity = ipw.Dropdown(options=list(GRANULARITIES.items()), value="tensor",
                                        description="scaling granularity", style=st, layout=lay)
        self.size = ipw.Dropdown(options=list(SIZES.items()), value=(128, 256), description="matrix (rows × cols)",
                                 style=st, layout=lay)
        self.outlier_size = ipw.FloatLogSlider(1e4, base=10, min=0, max=6, step=0.5, readout_format=".0e",
                                               description="outlier size", style=st, layout=lay)
        self.outlier_count = ipw.IntSlider(2, min=0, max=32, description="outlier count", style=st, layout=lay)
        self.accumulator_bits = ipw.IntSlider(14, min=8, max=23, description="accumulator bits", style=st,
                                              layout=lay, continuous_update=False)
        self.promote_every = ipw.BoundedIntText(128, min=1, max=4096, description="promote every (K)", style=st,
                                                layout=lay)
        super().__init__([self.fmt, self.granularity, self.size, self.outlier_size, self.outlier_count,
                          self.accumulator_bits, self.promote_every])

    def params(self) -> dict[str, Any]:
        return {"fmt": self.fmt.value, "block": self.granularity.value, "size": tuple(self.size.value),
                "outlier_size": float(self.outlier_size.value), "outlier_count": self.outlier_count.value,
                "accumulator_bits": self.accumulator_bits.value, "promote_every": self.promote_every.value}

    @property
    def input_matrix(self) -> torch.Tensor:
        """The matrix currently shown (for tests and notebooks)."""
        return self.state["x"]

    def compute(self, p: dict[str, Any]) -> dict[str, Any]:
        gemm = gemm_curves(p["fmt"], p["accumulator_bits"], p["promote_every"], self.seed)
        rows, cols = p["size"]
        x, pos = make_matrix(rows, cols, p["outlier_size"], p["outlier_count"], self.seed)
        x_hat = fake_quantize(x, p["block"], p["fmt"])
        err = elementwise_relative_error(x, x_hat)
        log_err = torch.log10(err.clamp_min(ERR_FLOOR))
        counts, _ = np.histogram(log_err.numpy(), bins=HIST_EDGES)
        return {"params": dict(p), "x": x, "log_err": log_err, "hist": counts, "outliers": pos, "gemm": gemm,
                "flushed": int(((x_hat == 0) & (x != 0)).sum()),
                "damaged": int((err > rounding_limit(p["fmt"]) * 1.001).sum())}

    def new_figure(self, stacked: bool = False) -> go.Figure:
        """The error map over the histogram and the GEMM curves live; the three stacked in one column in the book."""
        titles = ("Relative error of each element after the FP8 round trip", "Error histogram (all elements)",
                  "GEMM (V3 scaling): accumulation error")
        if stacked:
            fig = stacked_subplots(titles, [260, 220, 240], top_px=150, bottom_px=62 + 4 * 24)
            cells = [(1, 1), (2, 1), (3, 1)]
        else:
            fig = make_subplots(rows=2, cols=2, specs=[[{"colspan": 2}, None], [{}, {}]], vertical_spacing=0.17,
                                horizontal_spacing=0.16, row_heights=[0.55, 0.45], subplot_titles=titles)
            cells = [(1, 1), (2, 1), (2, 2)]
        (rm, cm), (rh, ch), (rg, cg) = cells
        colorbar = (colorbar_above(fig, 56) if stacked
                    else {"title": {"side": "right"}, "len": 0.5, "y": 0.78})
        fig.add_heatmap(row=rm, col=cm, zmin=Z_MIN, zmax=0, colorbar=colorbar,
                        hovertemplate="row %{y}, col %{x}<br>log₁₀ error %{z:.2f}<extra></extra>")
        fig.add_scatter(row=rm, col=cm, mode="markers", name="outliers",
                        marker={"symbol": "circle-open", "size": 16, "color": BLACK, "line": {"width": 3}})
        fig.add_bar(row=rh, col=ch, name="elements", showlegend=False, marker={"color": BLUE},
                    hovertemplate="log₁₀ error %{x:.2f}<br>%{y} elements<extra></extra>")
        fig.add_scatter(row=rg, col=cg, mode="lines+markers", name="no promotion",
                        line={"color": VERMILLION, "width": 3}, marker={"symbol": "x", "size": 10})
        fig.add_scatter(row=rg, col=cg, mode="lines+markers", name="promote to FP32",
                        line={"color": BLUE, "width": 3}, marker={"symbol": "circle", "size": 9})
        fig.add_scatter(row=rg, col=cg, mode="lines", name="input rounding (vs exact)",
                        line={"color": GREY, "width": 2, "dash": "dash"})
        fig.update_xaxes(title_text="column (channel)", row=rm, col=cm, range=[-0.5, None])
        fig.update_yaxes(title_text="row (token)", row=rm, col=cm, autorange="reversed")
        fig.update_xaxes(title_text="relative error (log scale)", row=rh, col=ch, tickvals=[-6, -4, -2, 0],
                         ticktext=["≤ 10⁻⁶", "0.01%", "1%", "100%"])
        fig.update_yaxes(title_text="elements (count, log)", row=rh, col=ch, type="log", dtick=1)
        fig.update_xaxes(title_text="inner dimension K (elements)", row=rg, col=cg, type="log", tickvals=list(GEMM_K))
        fig.update_yaxes(title_text="relative error (%)", row=rg, col=cg, type="log", dtick=1)
        if stacked:
            fig.update_layout(book_layout(left=80))
            fig.update_layout(legend=legend_below(fig))
        else:
            fig.update_layout(base_layout(860, legend={"x": 1.02, "xanchor": "left", "y": 0.0, "yanchor": "bottom"},
                                          margin={"l": 90, "r": 250, "t": 110, "b": 70}))
        return fig

    def trace_updates(self, s: dict[str, Any]) -> list[dict[str, Any]]:
        rows, cols = s["x"].shape
        pos = s["outliers"]
        centers = (HIST_EDGES[:-1] + HIST_EDGES[1:]) / 2
        g, p = s["gemm"], s["params"]
        bits, fmt = p["accumulator_bits"], p["fmt"]
        limit = rounding_limit(fmt)
        return [
            {"z": f32(s["log_err"]), "x": np.arange(cols), "y": np.arange(rows), "colorscale": error_colorscale(fmt),
             "colorbar": {"tickvals": [-3, -2, np.log10(limit), 0],
                          "ticktext": ["0.1%", "1%", f"{100 * limit:g}%", "100%"],
                          "title": {"text": f"relative error (FP8 rounding: {100 * limit:g}%)"}}},
            {"x": (pos % cols).numpy(), "y": (pos // cols).numpy()},
            {"x": f32(centers), "y": s["hist"].astype(np.int32),
             "marker": {"color": [ORANGE if c > np.log10(limit) else BLUE for c in centers]}},
            {"x": list(GEMM_K), "y": f32(g["no_promotion"]), "name": f"{bits}-bit acc., no promotion"},
            {"x": list(GEMM_K), "y": f32(g["promotion"]), "name": f"{bits}-bit, to FP32 every {p['promote_every']}"},
            {"x": list(GEMM_K), "y": f32(g["quantization"])},
        ]

    def layout_updates(self, s: dict[str, Any]) -> dict[str, Any]:
        p = s["params"]
        label = next(k for k, v in GRANULARITIES.items() if v == p["block"])
        return {
            "title.text": (
                f"{p['fmt'].upper()}, {label}: {s['damaged']:,} of {s['x'].numel():,} elements lose more than FP8 "
                f"rounding ({100 * rounding_limit(p['fmt']):g}%), {s['flushed']:,} flushed to 0<br>" + subtitle(
                    f"{p['outlier_count']} outliers of size {p['outlier_size']:g} (circled) are stored almost "
                    "exactly; the damage (orange) falls on small values sharing their scale")
            ),
            "xaxis.range": [-0.5, s["x"].shape[1] - 0.5],
        }

    def static_states(self) -> list[tuple[str, dict[str, Any]]]:
        p = dict(self.valid_params)
        if p["size"][0] * p["size"][1] > 64 * 256:
            p["size"] = (64, 256)  # four heatmaps of 128 × 256 would exceed 1 MB of JSON
        return [(STATIC_LABELS[block], {**p, "block": block}) for block in GRANULARITIES.values()]
