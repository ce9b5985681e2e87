"""DeploymentWidget: what it takes to serve DeepSeek-V3 — memory, GPUs and a decode speed bound, MLA vs MHA."""

from __future__ import annotations

from typing import Any

import ipywidgets as ipw
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dsv3_mini.config import preset
from dsv3_mini.deployment import FORMATS, GPUS, plan

from ._common import PlotWidget, base_layout, book_layout, slider_style, wide
from .palette import BLACK, BLUE, GREY, ORANGE
from .twin_layout import legend_below, stacked_subplots, subtitle

GPU_COUNTS = ("fewest", 8, 16, 32, 64, 128, 256)
KINDS = ("MLA (V3)", "MHA (same shape)")


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB"


class DeploymentWidget(PlotWidget):
    """Teaches what serving V3 needs: weight bytes at a precision, the KV cache of a context and batch (MLA, and the
    MHA it replaces), the GPUs that hold both, and how fast decoding could be if it were limited only by reading
    memory.

    Everything comes from ``dsv3_mini.deployment.plan`` on ``preset("deepseek-v3")``: GPU figures are datasheet
    values; the speed is an upper bound (each step reads the weights it uses and the whole cache once, split
    perfectly over the GPUs, no communication); "fewest" GPUs is the smallest count that holds weights + cache in
    90% of each GPU's memory and splits the 256 experts evenly.
    """

    static_label = "context (tokens)"

    def __init__(self, gpu: str = "H200"):
        st, lay = slider_style(), wide()
        self.cfg = preset("deepseek-v3")
        self.gpu = ipw.Dropdown(options=list(GPUS), value=gpu, description="GPU", style=st, layout=lay)
        self.gpus = ipw.Dropdown(options=list(GPU_COUNTS), value="fewest", description="GPUs", style=st, layout=lay)
        self.weights = ipw.Dropdown(options=list(FORMATS), value="fp8", description="weights", style=st, layout=lay)
        self.cache = ipw.Dropdown(options=list(FORMATS), value="bf16", description="KV cache", style=st, layout=lay)
        self.context = ipw.IntSlider(32768, min=1024, max=131072, step=1024, description="context (tokens)",
                                     style=st, layout=lay)
        self.batch = ipw.IntSlider(1, min=1, max=256, description="batch (sequences)", style=st, layout=lay)
        super().__init__([self.gpu, self.gpus, self.weights, self.cache, self.context, self.batch])

    def params(self) -> dict[str, Any]:
        return {name: getattr(self, name).value for name in ("gpu", "gpus", "weights", "cache", "context", "batch")}

    def compute(self, p: dict[str, Any]) -> dict[str, Any]:
        gpus = None if p["gpus"] == "fewest" else p["gpus"]
        result = plan(self.cfg, weights=p["weights"], cache=p["cache"], context=p["context"], batch=p["batch"],
                      gpu=p["gpu"], gpus=gpus)
        return {"params": dict(p), "plan": result}

    def new_figure(self, stacked: bool = False) -> go.Figure:
        """Memory (weights + cache against what the GPUs hold) and the decode bound; side by side live, stacked in
        the book."""
        titles = ("Memory: weights + KV cache", "Decode bound (memory bandwidth)")
        if stacked:
            fig = stacked_subplots(titles, [260, 220], gap_px=110, top_px=40, bottom_px=62 + 3 * 24)
            (r1, c1), (r2, c2) = (1, 1), (2, 1)
        else:
            fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=titles)
            (r1, c1), (r2, c2) = (1, 1), (1, 2)
        fig.add_bar(row=r1, col=c1, name="weights", marker={"color": GREY},
                    hovertemplate="%{x}: weights %{y:,.1f} GB<extra></extra>")
        fig.add_bar(row=r1, col=c1, name="KV cache", marker={"color": BLUE},
                    hovertemplate="%{x}: KV cache %{y:,.1f} GB<extra></extra>")
        fig.add_scatter(row=r1, col=c1, name="usable memory of the GPUs", mode="lines+markers",
                        line={"color": BLACK, "dash": "dash"}, hovertemplate="%{y:,.0f} GB usable<extra></extra>")
        fig.add_bar(row=r2, col=c2, name="tokens/s", showlegend=False, marker={"color": [BLUE, ORANGE]},
                    textposition="outside", cliponaxis=False,
                    hovertemplate="%{x}: at most %{y:,.0f} tokens/s<extra></extra>")
        fig.update_yaxes(title_text="GB (10⁹ bytes)", row=r1, col=c1, rangemode="tozero")
        fig.update_yaxes(title_text="tokens/s (upper bound)", row=r2, col=c2, rangemode="tozero")
        if stacked:
            fig.update_layout(book_layout(barmode="stack"))
            fig.update_layout(legend=legend_below(fig))
        else:
            fig.update_layout(base_layout(560, barmode="stack",
                                          legend={"orientation": "h", "x": 0, "y": -0.12, "yanchor": "top"},
                                          margin={"l": 90, "r": 30, "t": 130, "b": 110}))
        return fig

    def trace_updates(self, s: dict[str, Any]) -> list[dict[str, Any]]:
        pl = s["plan"]
        usable = pl.gpus * pl.usable_bytes_per_gpu / 1e9
        rates = [pl.tokens_per_s, pl.tokens_per_s_mha]
        return [
            {"x": list(KINDS), "y": [pl.weights.bytes / 1e9] * 2},
            {"x": list(KINDS), "y": [pl.kv_bytes / 1e9, pl.kv_bytes_mha / 1e9]},
            {"x": list(KINDS), "y": [usable, usable]},
            {"x": list(KINDS), "y": rates, "text": [f"{r:,.0f}" for r in rates]},
        ]

    def _mha_gpus(self, s: dict[str, Any]) -> str:
        n = s["plan"].gpus_mha
        return f"{n}" if n else "no count of"

    def layout_updates(self, s: dict[str, Any]) -> dict[str, Any]:
        p, pl = s["params"], s["plan"]
        return {"title.text": (
            f"DeepSeek-V3 · {p['weights']} weights {_gb(pl.weights.bytes)} + {p['cache']} cache "
            f"{_gb(pl.kv_bytes)} ({p['context']:,} tokens × {p['batch']}) on {pl.gpus} × {p['gpu']}<br>" + subtitle(
                f"MLA's cache is {pl.kv_bytes_mha / pl.kv_bytes:.1f}× smaller than MHA's; with MHA it needs "
                f"{self._mha_gpus(s)} GPUs (fewest); decoding at most {pl.tokens_per_s:,.0f} tokens/s "
                "(memory bandwidth)")
        )}

    def book_title(self, s: dict[str, Any]) -> str:
        p, pl = s["params"], s["plan"]
        return (f"{p['context']:,} tokens × {p['batch']}: {_gb(pl.total_bytes)} on {pl.gpus} × {p['gpu']}<br>"
                + subtitle(f"{p['weights']} weights, {p['cache']} cache; with MHA's cache {self._mha_gpus(s)} GPUs"))

    def static_states(self) -> list[tuple[str, dict[str, Any]]]:
        return [(f"{c // 1024}K", {**self.valid_params, "context": c}) for c in (4096, 32768, 65536, 131072)]
