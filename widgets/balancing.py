"""BiasBalancingWidget: auxiliary-loss-free balancing (the bias rule) next to a classic auxiliary loss."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import ipywidgets as ipw
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dsv3_mini.balancing import BalanceHistory, simulate_policies
from dsv3_mini.config import ModelConfig, preset

from ._common import PlotWidget, base_layout, book_layout, f32, slider_style
from .palette import BLACK, BLUE, VERMILLION, group_colors
from .twin_layout import colorbar_above, legend_below, stacked_subplots, subtitle

POLICIES = ("loss-free", "aux-loss", "none")
DEFAULT_CONFIG = preset("tiny").replace(n_routed_experts=16, num_experts_per_tok=4, n_group=4, topk_group=2)
POLICY_STYLE = {
    "loss-free": {"name": "loss-free (bias, γ)", "line": {"color": BLUE, "width": 3}},
    "aux-loss": {"name": "aux-loss (α)", "line": {"color": VERMILLION, "width": 3, "dash": "dot"}},
    "none": {"name": "none (reference)", "line": {"color": BLACK, "width": 2, "dash": "dash"}},
}


_CACHE: OrderedDict[tuple, BalanceHistory] = OrderedDict()
_CACHE_SIZE = 64


def run_policies(cfg: ModelConfig, steps: int, tokens: int, skew: float, gamma: float, alpha: float,
                 seed: int = 0) -> dict[str, BalanceHistory]:
    """{policy: BalanceHistory} of the three policies, each run cached. A policy ignores the other policy's knob (γ
    only matters for loss-free, α only for aux-loss), so its key drops it: moving γ reruns only "loss-free". The
    policies a change does affect run together, in one ``simulate_policies`` pass over the steps."""
    keys = {pol: (repr(cfg.to_dict()), pol, int(steps), int(tokens), float(skew),
                  float(gamma) if pol == "loss-free" else None, float(alpha) if pol == "aux-loss" else None, seed)
            for pol in POLICIES}
    missing = tuple(pol for pol in POLICIES if keys[pol] not in _CACHE)
    if missing:
        runs = simulate_policies(cfg, missing, steps=int(steps), tokens=int(tokens), skew=float(skew),
                                 speed=float(gamma), alpha=float(alpha), seed=seed)
        for pol, hist in runs.items():
            _CACHE[keys[pol]] = hist
    for key in keys.values():
        _CACHE.move_to_end(key)
    out = {pol: _CACHE[keys[pol]] for pol in POLICIES}
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return out


class BiasBalancingWidget(PlotWidget):
    """Teaches V3's auxiliary-loss-free balancing: after every step each expert's selection bias moves by
    ±γ towards the mean load, which evens out the load without a loss term; an auxiliary loss (weight α) gets
    there by changing the router weights instead, and "none" shows the imbalance left alone.

    Runs ``dsv3_mini.balancing.simulate_policies`` (one real router, ``tokens`` fresh skewed tokens per step,
    default 100 steps); every change of a control re-simulates the policies it affects. Differences from real
    training: only the router learns (the aux-loss policy takes SGD steps with learning rate 10 on the aux loss
    alone), there is no language-model loss, so the quality cost of a large α that motivated V3's design is not
    visible here; V3 runs γ = 0.001 for thousands of steps. MaxVio here is MaxVio_batch, one value per simulated
    step (that step's tokens), and the title averages it over the last 20% of the steps; MaxVio_global, the
    paper's measurement over a validation set, needs a trained model (``benchmarks.repro_balance``).
    """

    static_label = "bias speed γ"

    def __init__(self, config: ModelConfig | None = None, tokens: int = 256, seed: int = 0):
        self.cfg = config or DEFAULT_CONFIG
        self.tokens = tokens
        self.seed = seed
        st, lay = slider_style(), ipw.Layout(width="auto")
        common = {"style": st, "layout": lay, "continuous_update": False}
        self.gamma = ipw.FloatLogSlider(1e-3, base=10, min=-4, max=-1, step=0.25, readout_format=".1e",
                                        description="bias speed γ", **common)
        self.alpha = ipw.FloatLogSlider(1e-2, base=10, min=-4, max=0, step=0.25, readout_format=".1e",
                                        description="aux-loss weight α", **common)
        self.steps = ipw.IntSlider(100, min=10, max=400, step=10, description="steps", **common)
        self.skew = ipw.FloatSlider(2.0, min=0.0, max=4.0, step=0.25, description="input skew", **common)
        super().__init__([self.gamma, self.alpha, self.steps, self.skew], columns=2)

    def params(self) -> dict[str, Any]:
        return {"gamma": self.gamma.value, "alpha": self.alpha.value, "steps": self.steps.value,
                "skew": self.skew.value}

    def compute(self, p: dict[str, Any]) -> dict[str, Any]:
        """{"params": p, "loss-free" | "aux-loss" | "none": BalanceHistory}."""
        if not (p["gamma"] >= 0 and p["alpha"] >= 0):
            raise ValueError(f"gamma={p['gamma']} and alpha={p['alpha']} must be >= 0")
        runs = run_policies(self.cfg, p["steps"], self.tokens, p["skew"], p["gamma"], p["alpha"], self.seed)
        return {"params": dict(p), **runs}

    def new_figure(self, stacked: bool = False) -> go.Figure:
        """Two heat maps of the load, the biases and MaxVio: a 2 × 2 grid live, one column in the book."""
        e = self.cfg.n_routed_experts
        titles = ("Load over time: loss-free (bias)", "Load over time: aux-loss",
                  "Bias b per expert (loss-free; colour = group)", "MaxVio_batch per step")
        if stacked:
            # the shared colour bar lies flat above the heat maps: at a phone's width there is no room beside them
            fig = stacked_subplots(titles, [200, 200, 240, 240], top_px=140, bottom_px=62 + 3 * 24)
            cells = [(1, 1), (2, 1), (3, 1), (4, 1)]
        else:
            fig = make_subplots(rows=2, cols=2, vertical_spacing=0.2, horizontal_spacing=0.16, subplot_titles=titles)
            cells = [(1, 1), (1, 2), (2, 1), (2, 2)]
        (r1, c1), (r2, c2), (r3, c3), (r4, c4) = cells
        for row, col in cells[:2]:
            fig.add_heatmap(row=row, col=col, coloraxis="coloraxis",
                            hovertemplate="step %{x}<br>expert %{y}<br>load/mean %{z:.2f}<extra></extra>")
        for i, color in enumerate(group_colors(e, self.cfg.n_group)):
            fig.add_scatter(row=r3, col=c3, mode="lines", line={"color": color, "width": 1.5}, showlegend=False,
                            name=f"expert {i}",
                            hovertemplate=f"expert {i}<br>step %{{x}}<br>b = %{{y:.4f}}<extra></extra>")
        for pol in POLICIES:
            fig.add_scatter(row=r4, col=c4, mode="lines", **POLICY_STYLE[pol])
        for row, col in cells:
            fig.update_xaxes(title_text="training step", row=row, col=col)
        for row, col in cells[:2]:
            fig.update_yaxes(title_text="routed expert (index)", row=row, col=col)
        fig.update_yaxes(title_text="selection bias b", row=r3, col=c3)
        fig.update_yaxes(title_text="MaxVio = (max − mean) / mean", row=r4, col=c4, rangemode="tozero")
        colorscale = {"colorscale": "Cividis", "cmin": 0, "cmax": 3}
        if stacked:
            fig.update_layout(book_layout(
                coloraxis={**colorscale, "colorbar": {**colorbar_above(fig, 56),
                                                      "title": {"text": "load ÷ mean load", "side": "top"}}},
            ))
            fig.update_layout(legend=legend_below(fig))
        else:
            fig.update_layout(base_layout(
                780,
                coloraxis={**colorscale, "colorbar": {"title": {"text": "load ÷ mean load", "side": "right"},
                                                      "len": 0.42, "y": 0.8}},
                legend={"x": 1.02, "xanchor": "left", "y": 0.0, "yanchor": "bottom", "title": {"text": "policy"}},
                margin={"l": 90, "r": 230, "t": 110, "b": 70},
            ))
        return fig

    def trace_updates(self, s: dict[str, Any]) -> list[dict[str, Any]]:
        # x (the step) and the heat maps' y (the expert) are plotly's default 0, 1, 2, ...: leaving them out halves
        # the arrays that every redraw validates and sends
        out = []
        for pol in ("loss-free", "aux-loss"):
            load = s[pol].load
            out.append({"z": f32((load / load.mean(dim=1, keepdim=True)).T)})
        bias = s["loss-free"].bias
        out += [{"y": f32(bias[:, i])} for i in range(bias.shape[1])]
        out += [{"y": f32(s[pol].max_vio)} for pol in POLICIES]
        return out

    def layout_updates(self, s: dict[str, Any]) -> dict[str, Any]:
        p = s["params"]
        tail = {pol: float(s[pol].max_vio[-max(1, len(s[pol].max_vio) // 5):].mean()) for pol in POLICIES}
        return {"title.text": (
            f"Mean MaxVio_batch, last 20% of steps: loss-free {tail['loss-free']:.2f} · aux-loss {tail['aux-loss']:.2f}"
            f" · none {tail['none']:.2f}<br>" + subtitle(
                f"{self.cfg.n_routed_experts} experts, top-{self.cfg.num_experts_per_tok}, {self.tokens} tokens/step"
                f" · γ = {p['gamma']:.1e}, α = {p['alpha']:.1e}")
        )}

    def static_states(self) -> list[tuple[str, dict[str, Any]]]:
        return [(f"{g:g}", {**self.valid_params, "gamma": g}) for g in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)]
