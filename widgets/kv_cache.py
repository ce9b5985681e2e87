"""KVCacheWidget: how many bytes per token MHA, GQA, MQA and MLA keep, and what that means for a long context."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import ipywidgets as ipw
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from dsv3_mini import DeepSeekV3
from dsv3_mini.config import ModelConfig, preset
from dsv3_mini.kv_cache import bytes_per_token, cache_bytes, formula_and_measured_bytes, naive_mla_bytes_per_token

from ._common import PlotWidget, base_layout, book_layout, slider_style, torch_threads, wide
from .palette import BLUE, GREEN, GREY, ORANGE, PURPLE, SKY
from .twin_layout import legend_below, stacked_subplots, subtitle

KINDS = ("mha", "gqa", "mqa", "mla")
KIND_LABELS = {"mha": "MHA", "gqa": "GQA", "mqa": "MQA", "mla": "MLA"}
KIND_COLORS = {"mha": ORANGE, "gqa": PURPLE, "mqa": GREEN, "mla": BLUE}
DTYPES = {"fp32": 4, "bf16": 2, "fp8": 1}
# Shapes only; d_c and d_R of the non-DeepSeek presets are V3's, i.e. "what if this model used V3's MLA".
PRESETS: dict[str, dict[str, Any]] = {
    "DeepSeek-V3": {"layers": 61, "heads": 128, "head_dim": 128, "kv_heads": 8, "d_c": 512, "d_r": 64},
    "Llama-3-70B-like GQA": {"layers": 80, "heads": 64, "head_dim": 128, "kv_heads": 8, "d_c": 512, "d_r": 64},
    "plain MHA (Llama-2-7B-like)": {"layers": 32, "heads": 32, "head_dim": 128, "kv_heads": 32, "d_c": 512,
                                    "d_r": 64},
}
PRESET_KIND = {"DeepSeek-V3": "mla", "Llama-3-70B-like GQA": "gqa", "plain MHA (Llama-2-7B-like)": "mha"}
REPORTED_V2_VS_67B = 93.3  # DeepSeek-V2 paper: V2's KV cache vs DeepSeek 67B (a different, dense model)
MEASURED_TOKENS = 8


def kv_configs(layers: int, heads: int, head_dim: int, kv_heads: int, d_c: int, d_r: int) -> dict[str, ModelConfig]:
    """One validated ModelConfig per attention kind with the given shape (dense FFN: the cache ignores the FFN).

    MLA's per-head widths (qk_nope_head_dim, v_head_dim) are set to ``head_dim`` so that the naive MLA cache
    (expanded keys and values) and same-shape MHA are comparable. Raises ValueError for impossible shapes.
    """
    common = {"num_hidden_layers": layers, "first_k_dense_replace": layers, "num_attention_heads": heads,
              "head_dim": head_dim, "v_head_dim": head_dim, "qk_nope_head_dim": head_dim, "kv_lora_rank": d_c,
              "qk_rope_head_dim": d_r}
    return {
        "mha": ModelConfig(attention="mha", **common),
        "gqa": ModelConfig(attention="gqa", num_key_value_heads=kv_heads, **common),
        "mqa": ModelConfig(attention="mqa", **common),
        "mla": ModelConfig(attention="mla", **common),
    }


@lru_cache(maxsize=1)
def measured_small_caches(tokens: int = MEASURED_TOKENS) -> dict[str, tuple[int, int]]:
    """{kind: ``formula_and_measured_bytes``} of the "tiny" model of each attention kind, ``tokens`` tokens, batch 1,
    fp32: formula = tokens × ``bytes_per_token(cfg, 4)``, measured = ``KVCache.nbytes()`` after a real forward pass.
    """
    out = {}
    gen = torch.Generator().manual_seed(0)
    for kind in KINDS:
        cfg = preset("tiny").replace(attention=kind, num_key_value_heads=2 if kind == "gqa" else None)
        torch.manual_seed(0)
        model = DeepSeekV3(cfg).eval()
        out[kind] = formula_and_measured_bytes(model, torch.randint(0, cfg.vocab_size, (1, tokens), generator=gen))
    return out


def _fmt_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


class KVCacheWidget(PlotWidget):
    """Teaches why MLA's cache is small: per token and layer it keeps the latent c_KV (d_c) and one shared RoPE
    key (d_R), 576 numbers in V3, where MHA keeps 2·heads·head_dim, GQA 2·kv_heads·head_dim and MQA 2·head_dim.

    All numbers come from ``dsv3_mini.kv_cache`` on ModelConfigs built from the controls; the right panel measures
    a real cache of the tiny model. Only the cache is counted (no weights, activations or paging overhead), and
    the GQA/MQA/MHA bars for DeepSeek-V3 are hypothetical same-shape variants, not models that exist.
    """

    static_label = "context (tokens)"

    def __init__(self, preset_name: str = "DeepSeek-V3"):
        st, lay = slider_style(), wide()
        self.preset = ipw.Dropdown(options=[*PRESETS, "custom"], value=preset_name, description="preset", style=st,
                                   layout=lay)
        self.context = ipw.IntSlider(32768, min=1024, max=163840, step=1024, description="context (tokens)",
                                     style=st, layout=lay)
        self.batch = ipw.IntSlider(1, min=1, max=128, description="batch (sequences)", style=st, layout=lay)
        self.dtype = ipw.Dropdown(options=list(DTYPES), value="bf16", description="cache dtype", style=st, layout=lay)
        self.layers = ipw.IntSlider(61, min=1, max=128, description="layers", style=st, layout=lay)
        self.heads = ipw.IntSlider(128, min=1, max=128, description="query heads", style=st, layout=lay)
        self.head_dim = ipw.IntSlider(128, min=16, max=256, step=16, description="head dim d_h", style=st, layout=lay)
        self.kv_heads = ipw.IntSlider(8, min=1, max=128, description="KV heads (GQA)", style=st, layout=lay)
        self.d_c = ipw.IntSlider(512, min=16, max=2048, step=16, description="latent d_c (MLA)", style=st, layout=lay)
        self.d_r = ipw.IntSlider(64, min=8, max=256, step=8, description="RoPE key d_R (MLA)", style=st, layout=lay)
        self.note = ipw.HTML("")
        with torch_threads(1):
            self._measured = measured_small_caches()
        if preset_name != "custom":
            for name, value in PRESETS[preset_name].items():
                getattr(self, name).value = value
        super().__init__([self.preset, self.context, self.batch, self.dtype, self.layers, self.heads, self.head_dim,
                          self.kv_heads, self.d_c, self.d_r], extra=[self.note])

    # -- controls -----------------------------------------------------------------------------------------------
    def _on_change(self, change: dict[str, Any]) -> None:
        if self._suspended:
            return
        self._suspended = True
        try:
            if change["owner"] is self.preset and change["new"] in PRESETS:
                for name, value in PRESETS[change["new"]].items():
                    getattr(self, name).value = value
            elif change["owner"] is not self.preset:
                shape = {name: getattr(self, name).value for name in PRESETS["DeepSeek-V3"]}
                self.preset.value = next((n for n, v in PRESETS.items() if v == shape), "custom")
        finally:
            self._suspended = False
        self.refresh()

    def params(self) -> dict[str, Any]:
        return {name: getattr(self, name).value for name in
                ("preset", "context", "batch", "dtype", "layers", "heads", "head_dim", "kv_heads", "d_c", "d_r")}

    # -- model --------------------------------------------------------------------------------------------------
    def compute(self, p: dict[str, Any]) -> dict[str, Any]:
        cfgs = kv_configs(p["layers"], p["heads"], p["head_dim"], p["kv_heads"], p["d_c"], p["d_r"])
        nbytes = DTYPES[p["dtype"]]
        per_token = {k: bytes_per_token(c, dtype_bytes=nbytes) for k, c in cfgs.items()}
        total = {k: cache_bytes(c, p["context"], p["batch"], dtype_bytes=nbytes) for k, c in cfgs.items()}
        naive = naive_mla_bytes_per_token(cfgs["mla"], dtype_bytes=nbytes)
        return {"params": dict(p), "per_token": per_token, "total": total, "naive_mla": naive,
                "saving_vs_mha": 100 * (1 - per_token["mla"] / per_token["mha"]),
                "saving_vs_naive": 100 * (1 - per_token["mla"] / naive), "measured": self._measured}

    # -- figure -------------------------------------------------------------------------------------------------
    def new_figure(self, stacked: bool = False) -> go.Figure:
        """Three bar charts: side by side live, stacked in the book."""
        titles = ("Bytes per token (all layers)", "Whole cache", "Formula = reality (tiny model)")
        if stacked:
            fig = stacked_subplots(titles, [240, 240, 220], gap_px=125, top_px=40, bottom_px=62 + 2 * 24)
            cells = [(1, 1), (2, 1), (3, 1)]
        else:
            fig = make_subplots(rows=1, cols=3, column_widths=[0.42, 0.31, 0.27], horizontal_spacing=0.09,
                                subplot_titles=titles)
            cells = [(1, 1), (1, 2), (1, 3)]
        (rp, cp), (rt, ct), (rm, cm) = cells
        fig.add_bar(row=rp, col=cp, name="per token", showlegend=False, textposition="outside", cliponaxis=False,
                    hovertemplate="%{x}: %{y:,} bytes per token<extra></extra>")
        fig.add_bar(row=rt, col=ct, name="total", showlegend=False, textposition="outside", cliponaxis=False,
                    hovertemplate="%{x}: %{y:.3f} GB<extra></extra>")
        fig.add_bar(row=rm, col=cm, name="formula", marker={"color": SKY},
                    hovertemplate="%{x} formula: %{y:,} bytes<extra></extra>")
        fig.add_bar(row=rm, col=cm, name="measured", marker={"color": GREY, "pattern": {"shape": "/"}},
                    hovertemplate="%{x} measured: %{y:,} bytes<extra></extra>")
        fig.update_xaxes(title_text="attention kind", row=rp, col=cp)
        fig.update_yaxes(title_text="bytes per token", row=rp, col=cp, rangemode="tozero")
        fig.update_xaxes(title_text="attention kind", row=rt, col=ct)
        fig.update_yaxes(title_text="cache size (GB = 10⁹ bytes)" if not stacked else "cache (GB = 10⁹ B)",
                         row=rt, col=ct, rangemode="tozero")
        fig.update_xaxes(title_text=f"{MEASURED_TOKENS} tokens, fp32", row=rm, col=cm)
        top = max(max(pair) for pair in self._measured.values())
        fig.update_yaxes(title_text="cache bytes", row=rm, col=cm, range=[0, 1.4 * top])  # headroom for the legend
        if stacked:
            # bar labels a size smaller: five bars share a phone's width
            fig.update_layout(book_layout(barmode="group", uniformtext={"minsize": 11, "mode": "show"}))
            fig.update_traces(textfont_size=11, selector={"type": "bar"})
            fig.update_layout(legend={**legend_below(fig), "orientation": "h"})
        else:
            fig.update_layout(base_layout(620, barmode="group",
                                          legend={"x": 1, "xanchor": "right", "y": 1.0,
                                                  "bgcolor": "rgba(255,255,255,0.8)"},
                                          uniformtext={"minsize": 14, "mode": "show"},
                                          margin={"l": 90, "r": 30, "t": 150, "b": 90}))
        return fig

    def trace_updates(self, s: dict[str, Any]) -> list[dict[str, Any]]:
        labels = [KIND_LABELS[k] for k in KINDS] + ["naive<br>MLA"]
        colors = [KIND_COLORS[k] for k in KINDS] + [GREY]
        per_token = [s["per_token"][k] for k in KINDS] + [s["naive_mla"]]
        total = [s["total"][k] / 1e9 for k in KINDS]
        formula = [s["measured"][k][0] for k in KINDS]
        measured = [s["measured"][k][1] for k in KINDS]
        return [
            {"x": labels, "y": per_token, "text": [_fmt_bytes(b) for b in per_token], "marker": {"color": colors}},
            {"x": labels[:4], "y": total, "text": [_fmt_bytes(b * 1e9) for b in total],
             "marker": {"color": colors[:4]}},
            {"x": labels[:4], "y": formula},
            {"x": labels[:4], "y": measured},
        ]

    def comparison_text(self, s: dict[str, Any]) -> str:
        """MLA vs same-shape MHA and vs naive MLA (computed), then the reported 93.3% (labelled as such)."""
        p = s["params"]
        return (
            f"MLA: d_c + d_R = {p['d_c'] + p['d_r']} numbers per layer vs 2·{p['heads']}·{p['head_dim']} = "
            f"{2 * p['heads'] * p['head_dim']} for same-shape MHA → <b>{s['saving_vs_mha']:.1f}% smaller</b> "
            f"(computed),<br>and {s['saving_vs_naive']:.1f}% smaller than naive MLA (caching the expanded K and V).<br>"
            f"The often-quoted <b>{REPORTED_V2_VS_67B}%</b> is DeepSeek-V2 vs DeepSeek 67B, a different dense model"
            " (as reported), not MLA vs MHA of the same shape."
        )

    def layout_updates(self, s: dict[str, Any]) -> dict[str, Any]:
        p = s["params"]
        used = PRESET_KIND.get(p["preset"])
        which = f"{p['preset']} (uses {KIND_LABELS[used]})" if used else "custom shape"
        return {"title.text": (
            f"{which} · {p['dtype']} · {p['context']:,} tokens × batch {p['batch']}: MLA "
            f"{_fmt_bytes(s['total']['mla'])} vs MHA {_fmt_bytes(s['total']['mha'])}<br>"
            + subtitle(self.comparison_text(s))
        )}

    def book_title(self, s: dict[str, Any]) -> str:
        """The live title without the paragraph under it (the lesson says it), so it fits a phone."""
        p = s["params"]
        return (f"{p['dtype']} · {p['context']:,} tokens × batch {p['batch']}: MLA {_fmt_bytes(s['total']['mla'])} "
                f"vs MHA {_fmt_bytes(s['total']['mha'])}<br>" + subtitle(
                    f"{p['preset']}; MLA caches {s['saving_vs_mha']:.1f}% less than same-shape MHA (computed)"))

    def _drawn(self, state: Any) -> None:
        self.note.value = f"<div style='font-size:15px'>{self.comparison_text(state)}</div>"

    def static_states(self) -> list[tuple[str, dict[str, Any]]]:
        return [(f"{c // 1024}K", {**self.valid_params, "context": c}) for c in (4096, 16384, 32768, 65536, 131072)]
