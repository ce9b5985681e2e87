"""YaRNWidget: how linear interpolation, NTK-aware scaling and YaRN slow each RoPE pair, and which pairs YaRN keeps."""

from __future__ import annotations

import math
from typing import Any

import ipywidgets as ipw
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dsv3_mini.config import preset
from dsv3_mini.rope import inverse_frequencies, yarn_ramp

from ._common import PlotWidget, base_layout, book_layout, f32, slider_style, wide
from .palette import BLACK, GREEN, GREY, ORANGE, SKY, VERMILLION
from .twin_layout import legend_below, stacked_subplots, subtitle

METHODS = ("linear", "ntk", "yarn")
LABELS = {"linear": "linear (PI)", "ntk": "NTK-aware", "yarn": "YaRN"}
COLORS = {"linear": ORANGE, "ntk": SKY, "yarn": GREEN}
# RoPE shapes: (d_R, theta, original context) of DeepSeek-V3 and of lesson 10's passkey model
SHAPES = {"DeepSeek-V3 (d_R 64, 4K)": (64, 10000.0, 4096), "passkey model (d_R 8, 128 bytes)": (8, 10000.0, 128)}
FACTORS = (1, 2, 4, 8, 16, 32, 40, 64)


class YaRNWidget(PlotWidget):
    """Teaches what each method does to the frequencies θ_j = theta^(−2j/d) at scale s: left, the slow-down
    θ_j / θ'_j of every pair (linear: s for all; NTK-aware: 1 for the fastest, s for the slowest; YaRN: 1 for the
    pairs that turn more than β_fast times within the original context, s below β_slow turns, a ramp between);
    right, those turns per pair against the two β lines, coloured by what YaRN does. Every number comes from
    ``dsv3_mini.rope``; a setting the config refuses (β_fast <= β_slow) is shown as the error it raises.
    """

    static_label = "s"

    def __init__(self, shape: str = "DeepSeek-V3 (d_R 64, 4K)"):
        st, lay = slider_style(), wide()
        self.shape = ipw.Dropdown(options=list(SHAPES), value=shape, description="RoPE of", style=st, layout=lay)
        self.factor = ipw.SelectionSlider(options=FACTORS, value=40, description="scale s", style=st, layout=lay)
        self.beta_fast = ipw.IntSlider(32, min=1, max=128, description="β_fast (turns)", style=st, layout=lay)
        self.beta_slow = ipw.IntSlider(1, min=1, max=64, description="β_slow (turns)", style=st, layout=lay)
        super().__init__([self.shape, self.factor, self.beta_fast, self.beta_slow], columns=2)

    def params(self) -> dict[str, Any]:
        return {"shape": self.shape.value, "factor": self.factor.value, "beta_fast": self.beta_fast.value,
                "beta_slow": self.beta_slow.value}

    def compute(self, p: dict[str, Any]) -> dict[str, Any]:
        dim, theta, original = SHAPES[p["shape"]]
        yarn = {"rope_type": "yarn", "factor": p["factor"], "original_max_position_embeddings": original,
                "beta_fast": p["beta_fast"], "beta_slow": p["beta_slow"]}
        preset("tiny").replace(qk_rope_head_dim=dim, rope_theta=theta, rope_scaling=yarn)  # validates, or raises
        plain, _ = inverse_frequencies(dim, theta)
        slowdown = {}
        for method in METHODS:
            scaled, _ = inverse_frequencies(dim, theta, {**yarn, "rope_type": method} if method == "yarn" else
                                            {"rope_type": method, "factor": p["factor"]})
            slowdown[method] = (plain / scaled).tolist()
        ramp = yarn_ramp(dim, theta, original, p["beta_fast"], p["beta_slow"])
        _, amplitude = inverse_frequencies(dim, theta, yarn)
        turns = (original * plain / (2 * math.pi)).tolist()
        return {"params": dict(p), "pairs": list(range(dim // 2)), "slowdown": slowdown, "ramp": ramp.tolist(),
                "turns": turns, "sqrt_t": amplitude, "kept": int((ramp == 0).sum()), "full": int((ramp == 1).sum()),
                "original": original}

    def new_figure(self, stacked: bool = False) -> go.Figure:
        titles = ("Slow-down θ_j / θ'_j of each pair", "Turns of each pair within the original context")
        if stacked:
            fig = stacked_subplots(titles, [240, 240], top_px=40, bottom_px=62 + 5 * 22)
            cells = [(1, 1), (2, 1)]
        else:
            fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=titles)
            cells = [(1, 1), (1, 2)]
        (r1, c1), (r2, c2) = cells
        for method in METHODS:
            fig.add_scatter(row=r1, col=c1, name=LABELS[method], mode="lines+markers",
                            line={"color": COLORS[method], "width": 3 if method == "yarn" else 2})
        fig.add_bar(row=r2, col=c2, name="turns (green kept, grey ramp, red interpolated)", showlegend=False)
        fig.add_scatter(row=r2, col=c2, name="β_fast", mode="lines", line={"color": BLACK, "dash": "dash"})
        fig.add_scatter(row=r2, col=c2, name="β_slow", mode="lines", line={"color": BLACK, "dash": "dot"})
        for r, c in cells:
            fig.update_xaxes(title_text="pair j (fast → slow)", row=r, col=c)
        fig.update_yaxes(title_text="θ_j / θ'_j", type="log", row=r1, col=c1)
        fig.update_yaxes(title_text="turns", type="log", row=r2, col=c2)
        if stacked:
            fig.update_layout(book_layout())
            fig.update_layout(legend=legend_below(fig))
        else:
            fig.update_layout(base_layout(560, legend={"x": 0.01, "y": 0.98, "bgcolor": "rgba(255,255,255,0.8)"},
                                          margin={"l": 80, "r": 30, "t": 130, "b": 70}))
        return fig

    def trace_updates(self, s: dict[str, Any]) -> list[dict[str, Any]]:
        pairs = s["pairs"]
        colors = [GREEN if r == 0 else VERMILLION if r == 1 else GREY for r in s["ramp"]]
        ends = [pairs[0] - 0.5, pairs[-1] + 0.5]
        p = s["params"]
        return [*({"x": pairs, "y": f32(s["slowdown"][m])} for m in METHODS),
                {"x": pairs, "y": f32(s["turns"]), "marker": {"color": colors}},
                {"x": ends, "y": [p["beta_fast"]] * 2}, {"x": ends, "y": [p["beta_slow"]] * 2}]

    def layout_updates(self, s: dict[str, Any]) -> dict[str, Any]:
        return {"title.text": self.book_title(s) + "<br>" + subtitle(
            "YaRN keeps the pairs that turn more than β_fast times within the original context (their angles were "
            "all seen),<br>divides by s those below β_slow turns, and ramps between; √t multiplies cos and sin.")}

    def book_title(self, s: dict[str, Any]) -> str:
        n, p = len(s["pairs"]), s["params"]
        ramped = n - s["kept"] - s["full"]
        return (f"s = {p['factor']}, {s['original']:,} original positions: YaRN keeps {s['kept']} of {n} pairs, "
                f"ramps {ramped}, interpolates {s['full']}; √t = {s['sqrt_t']:.3f}")

    def static_states(self) -> list[tuple[str, dict[str, Any]]]:
        return [(str(f), {**self.valid_params, "factor": f}) for f in (2, 4, 8, 16, 40, 64)]
