"""PipelineScheduleWidget: 1F1B, ZB1P and DualPipe as Gantt charts, with their bubble and memory per rank."""

from __future__ import annotations

from typing import Any

import ipywidgets as ipw
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dsv3_mini.pipeline_schedule import SCHEDULES, simulate, table2_activations, table2_bubble

from ._common import PlotWidget, base_layout, book_layout, slider_style, wide
from .palette import BLUE, GREEN, GREY, ORANGE, PURPLE, SKY
from .twin_layout import legend_below, stacked_subplots, subtitle, wrap_html

LABELS = {"1f1b": "1F1B", "zb1p": "ZB1P", "dualpipe": "DualPipe"}
KIND_NAMES = {"F": "forward F", "B": "backward B (full, or for inputs)", "W": "backward for weights W",
              "F&B": "overlapped F&B"}
KIND_COLORS = {"F": BLUE, "B": ORANGE, "W": GREEN, "F&B": PURPLE}


class PipelineScheduleWidget(PlotWidget):
    """Teaches where a pipeline's idle time goes and what DualPipe buys: each rank's chunks laid out by
    ``dsv3_mini.pipeline_schedule.simulate`` (no communication time), the bubble next to the report's Table 2
    formula, and the activations and parameters each rank holds.

    Times are relative: F, B (a full backward), W (its weight part) and the F&B overlap (F&B = overlap · (F + B);
    1 means the overlap hides nothing). The layout, not a measurement: the pipeline lesson measures the real schedules.
    """

    static_label = "schedule"

    def __init__(self, schedule: str = "dualpipe", pp: int = 8, micro_batches: int = 20):
        st, lay = slider_style(), wide()
        self.schedule = ipw.Dropdown(options=[(LABELS[s], s) for s in SCHEDULES], value=schedule,
                                     description="schedule", style=st, layout=lay)
        self.pp = ipw.IntSlider(pp, min=2, max=16, description="PP ranks", style=st, layout=lay)
        self.micro_batches = ipw.IntSlider(micro_batches, min=2, max=64, description="micro-batches", style=st,
                                           layout=lay)
        self.f = ipw.FloatSlider(1.0, min=0.25, max=3.0, step=0.25, description="F (forward)", style=st, layout=lay)
        self.b = ipw.FloatSlider(2.0, min=0.25, max=6.0, step=0.25, description="B (full backward)", style=st,
                                 layout=lay)
        self.w = ipw.FloatSlider(1.0, min=0.0, max=3.0, step=0.25, description="W (weight part of B)", style=st,
                                 layout=lay)
        self.overlap = ipw.FloatSlider(0.8, min=0.5, max=1.0, step=0.05, description="F&B / (F+B)", style=st,
                                       layout=lay)
        super().__init__([self.schedule, self.pp, self.micro_batches, self.f, self.b, self.w, self.overlap])

    def params(self) -> dict[str, Any]:
        return {"schedule": self.schedule.value, "pp": self.pp.value, "micro_batches": self.micro_batches.value,
                "F": self.f.value, "B": self.b.value, "W": self.w.value, "overlap": self.overlap.value}

    def compute(self, p: dict[str, Any]) -> dict[str, Any]:
        fb = p["overlap"] * (p["F"] + p["B"])
        tl = simulate(p["schedule"], p["pp"], p["micro_batches"], p["F"], p["B"], p["W"], fb)
        return {"params": dict(p), "timeline": tl,
                "formula": table2_bubble(p["schedule"], p["pp"], p["F"], p["B"], p["W"], fb),
                "table2_activations": table2_activations(p["schedule"], p["pp"])}

    def new_figure(self, stacked: bool = False) -> go.Figure:
        """A Gantt chart (ranks × time) above the memory of each rank."""
        titles = ("Chunks on each rank (time →)", "Held by each rank at its peak")
        if stacked:
            fig = stacked_subplots(titles, [320, 200], gap_px=110, top_px=40, bottom_px=62 + 4 * 24)
        else:
            fig = make_subplots(rows=2, cols=1, row_heights=[0.68, 0.32], vertical_spacing=0.16,
                                subplot_titles=titles)
        for kind in KIND_NAMES:
            fig.add_bar(row=1, col=1, orientation="h", name=KIND_NAMES[kind], marker={"color": KIND_COLORS[kind],
                        "line": {"color": "white", "width": 0.5}}, hovertemplate="%{hovertext}<extra></extra>")
        fig.add_bar(row=2, col=1, name="activations (micro-batches)", marker={"color": SKY},
                    hovertemplate="rank %{x}: %{y} micro-batches of activations<extra></extra>")
        fig.add_scatter(row=2, col=1, name="parameters (stages of 1/PP)", mode="lines+markers",
                        marker={"color": GREY, "size": 10, "symbol": "diamond"}, line={"color": GREY},
                        hovertemplate="rank %{x}: %{y}× a stage's parameters<extra></extra>")
        fig.update_yaxes(title_text="rank", autorange="reversed", row=1, col=1)
        fig.update_xaxes(title_text="time (units of the sliders)", row=1, col=1)
        fig.update_xaxes(title_text="rank", dtick=1, row=2, col=1)
        fig.update_yaxes(title_text="held at peak", rangemode="tozero", row=2, col=1)
        if stacked:
            fig.update_layout(book_layout(barmode="overlay", bargap=0.15))
            fig.update_layout(barmode="overlay", legend=legend_below(fig))
        else:
            fig.update_layout(base_layout(760, barmode="overlay", bargap=0.15,
                                          legend={"orientation": "h", "x": 0, "y": -0.14, "yanchor": "top"},
                                          margin={"l": 90, "r": 30, "t": 120, "b": 150}))
        return fig

    def trace_updates(self, s: dict[str, Any]) -> list[dict[str, Any]]:
        tl = s["timeline"]
        out = []
        for kind in KIND_NAMES:
            chunks = [c for c in tl.chunks if c.kind == kind]
            out.append({"x": [c.end - c.start for c in chunks], "base": [c.start for c in chunks],
                        "y": [c.rank for c in chunks],
                        "hovertext": [f"rank {c.rank}: {c.label} from {c.start:g} to {c.end:g}" for c in chunks]})
        ranks = list(range(tl.pp))
        out.append({"x": ranks, "y": tl.peak_activations})
        out.append({"x": ranks, "y": [tl.parameter_copies] * tl.pp})
        return out

    def summary(self, s: dict[str, Any]) -> str:
        tl = s["timeline"]
        return (f"bubble: simulated {max(tl.bubble):g} on the worst rank, Table 2 formula {s['formula']:g}; "
                f"{tl.bubble_fraction:.0%} of all ranks' time idle; activations ≤ {max(tl.peak_activations)} "
                f"(Table 2: {s['table2_activations']}), parameters ×{tl.parameter_copies}")

    def layout_updates(self, s: dict[str, Any]) -> dict[str, Any]:
        p = s["params"]
        return {"title.text": (f"{LABELS[p['schedule']]}: {p['pp']} ranks, {p['micro_batches']} micro-batches, "
                               f"step {s['timeline'].makespan:g}<br>" + subtitle(self.summary(s))),
                "barmode": "overlay", "yaxis.dtick": 1 if p["pp"] <= 8 else 2}

    def book_title(self, s: dict[str, Any]) -> str:
        p, tl = s["params"], s["timeline"]
        return (f"{LABELS[p['schedule']]}, W = {p['W']:g}: step {tl.makespan:g}<br>" + subtitle(
            f"bubble {max(tl.bubble):g} (Table 2: {s['formula']:g}), {tl.bubble_fraction:.0%} idle"))

    def static_states(self) -> list[tuple[str, dict[str, Any]]]:
        base = {**self.valid_params, "pp": 8, "micro_batches": 20, "F": 1.0, "B": 2.0, "overlap": 0.8}
        return [(f"{LABELS[s]} {w:g}", {**base, "schedule": s, "W": w})  # short: slider labels must fit a phone
                for w in (0.5, 1.0) for s in SCHEDULES]  # the last label is the shortest: it must fit


MEASURED_KINDS = {"F": ("forward F", BLUE), "B": ("full backward B", ORANGE), "I": ("backward for inputs", SKY),
                  "W": ("backward for weights W", GREEN)}


def measured_gantt(runs: dict[str, Any], title: str) -> go.Figure:
    """Measured timelines, one panel per run (``dsv3_mini.pipeline_run.PipelineRun``), stacked: each chunk a bar
    from its start to its end (milliseconds from the step's first chunk), one row per rank."""
    names = list(runs)
    fig = stacked_subplots([f"{n} — step {runs[n].seconds * 1000:.0f} ms, {runs[n].bubble_fraction():.0%} idle"
                            for n in names], [46 * next(iter(runs.values())).pp + 40] * len(names), gap_px=90,
                           top_px=90, bottom_px=62 + 4 * 24)
    for i, name in enumerate(names, start=1):
        for kind, (label, color) in MEASURED_KINDS.items():
            chunks = [c for c in runs[name].chunks if c["kind"] == kind]
            fig.add_bar(row=i, col=1, orientation="h", name=label, legendgroup=kind, showlegend=i == 1,
                        marker={"color": color, "line": {"color": "white", "width": 0.5}},
                        x=[1000 * (c["end"] - c["start"]) for c in chunks], base=[1000 * c["start"] for c in chunks],
                        y=[c["rank"] for c in chunks], hovertext=[f"rank {c['rank']}: {kind} stage {c['stage']} "
                                                                   f"micro-batch {c['micro_batch']}" for c in chunks],
                        hovertemplate="%{hovertext}<extra></extra>")
        fig.update_yaxes(title_text="rank", autorange="reversed", dtick=1, row=i, col=1)
        fig.update_xaxes(title_text="ms", row=i, col=1)
    fig.update_layout(book_layout(barmode="overlay", bargap=0.15, title={"text": wrap_html(title, 60)}))
    fig.update_layout(legend=legend_below(fig))
    fig.update_layout(margin={"t": max(110, (fig.layout.margin.t or 0))})  # room for the wrapped title
    return fig
