"""RouterLoadWidget: where DeepSeekMoE's group-limited router sends the tokens, and what the bias changes."""

from __future__ import annotations

from typing import Any

import ipywidgets as ipw
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from dsv3_mini.balancing import max_violation, sign_update, skewed_router
from dsv3_mini.config import ModelConfig, preset

from ._common import PlotWidget, base_layout, book_layout, f32, slider_style, wide
from .palette import BLACK, group_colors
from .twin_layout import legend_below, stacked_subplots, subtitle


class RouterLoadWidget(PlotWidget):
    """Teaches how V3's router picks experts: sigmoid affinities, the best ``kept_groups`` of ``groups`` groups,
    top-k inside them, and a selection-only bias that shifts load between experts without changing gating weights.

    It runs the real ``dsv3_mini.moe.Router`` on ``tokens`` inputs from ``dsv3_mini.balancing.skewed_router``
    (random centroids and Gaussian inputs pushed towards the first experts by ``skew``), one layer only. The bias
    is one step of the loss-free rule, ``b = bias_strength · sign(mean load − load)`` computed on the unbiased
    routing, not the result of a training run. For real hidden states (e.g. from a trained checkpoint) pass
    ``hidden_states`` (T, hidden) and optionally ``router_weight`` (E, hidden); then ``skew`` (and ``experts``)
    are disabled.
    """

    static_label = "bias strength"

    def __init__(self, *, hidden_states: torch.Tensor | None = None, router_weight: torch.Tensor | None = None,
                 base_config: ModelConfig | None = None, tokens: int = 256, seed: int = 0):
        self.base_config = base_config or preset("tiny")
        self.seed = seed
        self.hidden_states = None if hidden_states is None else hidden_states.detach().float()
        self.router_weight = None if router_weight is None else router_weight.detach().float()
        hidden = self.base_config.hidden_size
        if self.hidden_states is not None:
            if self.hidden_states.dim() != 2:
                raise ValueError(f"hidden_states must have shape (tokens, hidden), got {tuple(hidden_states.shape)}")
            tokens, hidden = self.hidden_states.shape
        if self.router_weight is not None and self.router_weight.shape[1] != hidden:
            raise ValueError(f"router_weight has shape {tuple(router_weight.shape)}; it needs (experts, {hidden})")
        self.hidden_size = hidden
        self.tokens = tokens
        n_exp = 16 if self.router_weight is None else self.router_weight.shape[0]
        st, lay = slider_style(), wide()
        self.experts = ipw.IntSlider(n_exp, min=2, max=max(64, n_exp), description="experts (routed)", style=st,
                                     layout=lay, disabled=self.router_weight is not None)
        self.top_k = ipw.IntSlider(4, min=1, max=16, description="top-k per token", style=st, layout=lay)
        self.groups = ipw.IntSlider(4, min=1, max=16, description="groups", style=st, layout=lay)
        self.kept_groups = ipw.IntSlider(2, min=1, max=16, description="kept groups", style=st, layout=lay)
        self.bias_strength = ipw.FloatSlider(0.0, min=0.0, max=0.2, step=0.005, readout_format=".3f",
                                             description="bias strength", style=st, layout=lay)
        self.skew = ipw.FloatSlider(2.0, min=0.0, max=4.0, step=0.25, description="input skew", style=st, layout=lay,
                                    disabled=self.hidden_states is not None)
        self.token = ipw.IntSlider(0, min=0, max=tokens - 1, description="token index", style=st, layout=lay)
        super().__init__([self.experts, self.top_k, self.groups, self.kept_groups, self.bias_strength, self.skew,
                          self.token])

    # -- model --------------------------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {"experts": self.experts.value, "top_k": self.top_k.value, "groups": self.groups.value,
                "kept_groups": self.kept_groups.value, "bias_strength": self.bias_strength.value,
                "skew": self.skew.value, "token": self.token.value}

    def config(self, p: dict[str, Any] | None = None) -> ModelConfig:
        """The validated ModelConfig for the given (default: current) control values."""
        p = p or self.params()
        return self.base_config.replace(hidden_size=self.hidden_size, n_routed_experts=p["experts"],
                                        num_experts_per_tok=p["top_k"], n_group=p["groups"],
                                        topk_group=p["kept_groups"])

    @torch.no_grad()
    def compute(self, p: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config(p)  # raises ValueError for impossible combinations
        router, x = skewed_router(cfg, self.tokens, p["skew"], seed=self.seed)
        if self.router_weight is not None:
            router.weight.copy_(self.router_weight)
        if self.hidden_states is not None:
            x = self.hidden_states
        unbiased = router(x)
        router.bias.copy_(sign_update(router.bias, unbiased.counts, p["bias_strength"]))
        r = router(x)
        e, g = cfg.n_routed_experts, cfg.n_group
        counts = r.counts.float()
        t = min(p["token"], x.shape[0] - 1)
        order = torch.argsort(r.weights[t], descending=True)
        return {
            "cfg": cfg, "counts": counts, "group_counts": counts.view(g, e // g).sum(1),
            "max_vio": max_violation(r.counts), "max_vio_unbiased": max_violation(unbiased.counts),
            "token": t, "token_experts": r.indices[t][order], "token_weights": r.weights[t][order],
            "token_scores": r.scores[t][r.indices[t][order]], "bias": router.bias.clone(),
        }

    # -- figure -------------------------------------------------------------------------------------------------
    def new_figure(self, stacked: bool = False) -> go.Figure:
        """Load per expert over load per group and one token's experts live; the three stacked in the book."""
        titles = ("Load per routed expert (colour = group)", "Load per group", "One token's chosen experts")
        if stacked:
            fig = stacked_subplots(titles, [240, 200, 220], top_px=40, bottom_px=62 + 24)
            cells = [(1, 1), (2, 1), (3, 1)]
        else:
            fig = make_subplots(rows=2, cols=2, specs=[[{"colspan": 2}, None], [{}, {}]], vertical_spacing=0.2,
                                horizontal_spacing=0.12, subplot_titles=titles)
            cells = [(1, 1), (2, 1), (2, 2)]
        (rx, cx), (rg, cg), (rt, ct) = cells
        fig.add_bar(row=rx, col=cx, name="tokens per expert", showlegend=False,
                    hovertemplate="expert %{x}<br>%{y} tokens<br>bias %{customdata:.3f}<extra></extra>")
        fig.add_scatter(row=rx, col=cx, mode="lines", name="balanced load (T·K/E)",
                        line={"color": BLACK, "dash": "dash", "width": 2})
        fig.add_bar(row=rg, col=cg, name="tokens per group", showlegend=False,
                    hovertemplate="%{x}<br>%{y} token slots<extra></extra>")
        fig.add_bar(row=rt, col=ct, name="gating weight", showlegend=False, texttemplate="%{y:.2f}",
                    textposition="outside",
                    hovertemplate="expert %{x}<br>g = %{y:.3f}<br>s = %{customdata:.3f}<extra></extra>")
        fig.update_xaxes(title_text="routed expert (index)", row=rx, col=cx)
        fig.update_yaxes(title_text="tokens routed (count)", row=rx, col=cx, rangemode="tozero")
        fig.update_xaxes(title_text="expert group", row=rg, col=cg, type="category")
        fig.update_yaxes(title_text="token slots (count)", row=rg, col=cg, rangemode="tozero")
        fig.update_xaxes(title_text="chosen expert (index), best first", row=rt, col=ct, type="category")
        fig.update_yaxes(title_text="gating weight g", row=rt, col=ct, rangemode="tozero")
        if stacked:
            fig.update_layout(book_layout())
            fig.update_layout(legend=legend_below(fig))
        else:
            fig.update_layout(base_layout(720, legend={"x": 1, "xanchor": "right", "y": 1.08, "orientation": "h"}))
        return fig

    def trace_updates(self, s: dict[str, Any]) -> list[dict[str, Any]]:
        cfg = s["cfg"]
        e, g = cfg.n_routed_experts, cfg.n_group
        colors = group_colors(e, g)
        mean = self.tokens * cfg.num_experts_per_tok / e
        experts = s["token_experts"].tolist()
        return [
            {"x": np.arange(e), "y": f32(s["counts"]), "marker": {"color": colors}, "customdata": f32(s["bias"])},
            {"x": [-0.5, e - 0.5], "y": [mean, mean]},
            {"x": [f"group {i}" for i in range(g)], "y": f32(s["group_counts"]),
             "marker": {"color": [colors[i * (e // g)] for i in range(g)]}},
            {"x": [str(i) for i in experts], "y": f32(s["token_weights"]), "customdata": f32(s["token_scores"]),
             "marker": {"color": [colors[i] for i in experts]}},
        ]

    def layout_updates(self, s: dict[str, Any]) -> dict[str, Any]:
        cfg = s["cfg"]
        return {"title.text": (
            f"{cfg.n_routed_experts} experts in {cfg.n_group} groups, keep {cfg.topk_group}, "
            f"top-{cfg.num_experts_per_tok} · MaxVio = {s['max_vio']:.2f}"
            f" (without bias {s['max_vio_unbiased']:.2f})<br>" + subtitle(
                f"token {s['token']}: weights g sum to routed_scaling_factor = {cfg.routed_scaling_factor:g}; "
                "the bias changes which experts are chosen, never g")
        )}

    def static_states(self) -> list[tuple[str, dict[str, Any]]]:
        return [(f"{b:g}", {**self.valid_params, "bias_strength": b}) for b in (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)]
