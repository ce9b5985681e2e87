"""Shared machinery of the course widgets: fonts, the error line, redraw and the static (kernel-free) figure.

Every widget is an ``ipywidgets.VBox`` holding its controls, an HTML status line (``.message``) and one plotly
``go.FigureWidget`` (``.figure``). A control change recomputes a *state* with ``dsv3_mini`` and writes it into the
figure in place; a ``ValueError`` from ``dsv3_mini`` (an impossible combination) is shown in ``.message`` and the
figure keeps its last valid state. ``static_figure()`` precomputes a few states into plotly frames and a slider, so a
published page without a kernel can still step through them.

Two layouts of one figure: ``new_figure()`` for the live widget, ``new_figure(stacked=True)`` for the static twin in
the book (``widgets.twin_layout``).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import ipywidgets as ipw
import numpy as np
import plotly.graph_objects as go
import torch

from .palette import VERMILLION
from .twin_layout import (
    BOOK_FONT_SIZE,
    BOOK_LINE_PX,
    BOOK_TITLE_SIZE,
    SLIDER_PX,
    lines,
    paper_y,
    wrap_html,
)

FONT_SIZE = 16  # axis labels and ticks; readable on a projector
WIDGET_WIDTH = 1000  # px; a FigureWidget inside a container does not size itself to the cell (it would be 700)
TITLE_SIZE = 18

_CSS = (
    "<style>.dsv3-widget .widget-label, .dsv3-widget .widget-readout, .dsv3-widget select, "
    ".dsv3-widget .widget-html-content {font-size: 15px;}</style>"
)


def base_layout(height: int, title: str = "", **extra: Any) -> dict[str, Any]:
    """Large fonts, white background, a title with room for two lines."""
    layout = {
        "template": "plotly_white",
        "font": {"size": FONT_SIZE, "family": "Arial, Helvetica, sans-serif", "color": "#222"},
        "title": {"text": title, "font": {"size": TITLE_SIZE}, "x": 0.01, "xanchor": "left", "yref": "container",
                  "y": 1, "yanchor": "top", "pad": {"t": 16}},
        "height": height,
        "margin": {"l": 80, "r": 30, "t": 110, "b": 70},
        "hoverlabel": {"font": {"size": FONT_SIZE}},
        "legend": {"font": {"size": FONT_SIZE - 1}},
    }
    layout.update(extra)
    return layout


def f32(x: torch.Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    """A float32 numpy array (compact in the figure JSON: plotly writes it as base64)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run torch on ``n`` threads inside the block, then restore the previous count.

    The widgets' tensors are tiny: extra OpenMP threads only add overhead, and when the cores are busy (a training
    run in another notebook) their spin-waits make a 40 ms simulation take seconds.
    """
    old = torch.get_num_threads()
    if old == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def plain(value: Any, digits: int = 4) -> Any:
    """Numpy arrays (nested in dicts/lists) -> lists of floats rounded to ``digits`` significant digits.

    plotly.js decodes base64 typed arrays in a figure's data but not inside slider arguments, so those must be
    plain JSON; rounding keeps them small.
    """
    if isinstance(value, dict):
        return {k: plain(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, digits) for v in value]
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "iub":
            return value.tolist()
        return plain(value.tolist(), digits)
    if isinstance(value, (float, np.floating)):
        return float(f"{value:.{digits}g}")
    if isinstance(value, np.integer):
        return int(value)
    return value


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"marker": {"color": c}, "x": xs}`` -> ``{"marker.color": c, "x": xs}`` (Plotly.update attribute paths)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def error_html(err: Exception) -> str:
    return (
        f"<div style='color:{VERMILLION};font-size:15px'><b>Not possible:</b> "
        f"{html.escape(str(err))}<br><i>(the plot still shows the last valid setting)</i></div>"
    )


class PlotWidget(ipw.VBox):
    """Base class. Subclasses define ``params``, ``compute``, ``trace_updates``, ``layout_updates``, ``new_figure``.

    - ``params()`` -> dict of the current control values.
    - ``compute(params)`` -> a state (anything); may raise ``ValueError`` for an impossible combination.
    - ``trace_updates(state)`` -> one dict per trace of ``new_figure()``, in order (data only).
    - ``layout_updates(state)`` -> dict for ``figure.layout.update`` (titles; never annotations).
    """

    def __init__(self, controls: Sequence[ipw.Widget], extra: Iterable[ipw.Widget] = (), columns: int = 3):
        self.message = ipw.HTML("")
        self.controls = list(controls)
        self.state: Any = None
        self.valid_params = self.params()  # the control values of the figure shown (the last valid setting)
        first = self.compute_state(self.valid_params)  # defaults must be valid: a ValueError here is a bug
        # The first state goes into the figure *before* it becomes a widget: the browser receives one complete
        # figure and no restyle messages are sent at construction.
        fig = self.new_figure()
        for trace, upd in zip(fig.data, self.trace_updates(first), strict=True):
            trace.update(upd)
        fig.layout.update(self.layout_updates(first))
        fig.update_xaxes(ticklabelstandoff=4)  # the first x and y tick labels of a panel meet at its corner
        fig.update_yaxes(ticklabelstandoff=4)
        fig.layout.width = WIDGET_WIDTH
        self.figure = go.FigureWidget(fig)
        grid = ipw.GridBox(
            self.controls,
            layout=ipw.Layout(grid_template_columns=f"repeat({columns}, minmax(260px, 1fr))", grid_gap="4px 16px"),
        )
        super().__init__([ipw.HTML(_CSS), grid, self.message, self.figure, *extra])
        self.add_class("dsv3-widget")
        self._suspended = False
        self.state = first
        self._drawn(first)
        for c in self.controls:
            c.observe(self._on_change, names="value")

    # -- to be defined by subclasses ----------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def compute(self, params: dict[str, Any]) -> Any:
        raise NotImplementedError

    def new_figure(self) -> go.Figure:
        raise NotImplementedError

    def trace_updates(self, state: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def layout_updates(self, state: Any) -> dict[str, Any]:
        return {}

    def static_states(self) -> list[tuple[str, dict[str, Any]]]:
        """(label, params) of the states that ``static_figure`` precomputes, varied around ``self.valid_params``."""
        raise NotImplementedError

    static_label = "setting"

    # -- machinery ----------------------------------------------------------------------------------------------
    def compute_state(self, params: dict[str, Any]) -> Any:
        """``compute`` on one torch thread (see ``torch_threads``)."""
        with torch_threads(1):
            return self.compute(params)

    def _on_change(self, change: dict[str, Any]) -> None:
        if not self._suspended:
            self.refresh()

    def refresh(self) -> bool:
        """Recompute from the controls and redraw. Returns False (and shows why) for an impossible combination."""
        params = self.params()
        try:
            state = self.compute_state(params)
        except ValueError as err:
            self.message.value = error_html(err)
            return False
        self.message.value = ""
        self._draw(state)
        self.valid_params = params
        return True

    def _draw(self, state: Any) -> None:
        """Write a state into the figure in place: one ``batch_update`` per group of traces that set the same keys.

        plotly 7.1's FigureWidget sends a batch as one restyle in which a key missing for some trace is sent as
        null, and the browser then *deletes* that property (a name, a colour). Grouping traces by key set avoids it.
        """
        updates = self.trace_updates(state)
        if len(updates) != len(self.figure.data):
            raise RuntimeError(f"{type(self).__name__}.trace_updates returned {len(updates)} updates for "
                               f"{len(self.figure.data)} traces")
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, upd in enumerate(updates):
            groups.setdefault(tuple(sorted(flatten(upd))), []).append(i)
        for n, indexes in enumerate(groups.values()):
            with self.figure.batch_update():
                for i in indexes:
                    self.figure.data[i].update(updates[i])
                if n == len(groups) - 1:
                    self.figure.layout.update(self.layout_updates(state))
        self.state = state
        self._drawn(state)

    def _drawn(self, state: Any) -> None:
        """Hook after a state is shown (e.g. to update widgets next to the figure)."""

    def set_values(self, **values: Any) -> bool:
        """Set several controls at once with a single redraw (e.g. ``w.set_values(experts=16, groups=4)``)."""
        self._suspended = True
        try:
            for name, value in values.items():
                getattr(self, name).value = value
        finally:
            self._suspended = False
        return self.refresh()

    def book_title(self, state: Any) -> str:
        """The static twin's title for a state (default: the live title); shorter where the live one explains more."""
        return self.layout_updates(state)["title.text"]

    def static_figure(self) -> go.Figure:
        """A plain ``go.Figure`` whose own slider steps through precomputed states (no kernel needed).

        The book's layout: ``new_figure(stacked=True)`` (one column of panels), smaller fonts, titles wrapped to the
        width of a phone, the slider below everything. Each slider step is a ``Plotly.update`` with the state's data
        and titles (unlike animation frames, an update re-fits the axes). Data are plain JSON: plotly.js decodes
        base64 typed arrays only in a figure's top-level data, not in slider arguments.
        """
        states = [(label, self.compute_state(p)) for label, p in self.static_states()]
        fig = self.new_figure(stacked=True)
        base = [flatten(plain(t.to_plotly_json())) for t in fig.data]  # to restore what a state does not set
        flats = [[flatten(plain(u)) for u in self.trace_updates(state)] for _, state in states]
        keys = sorted({k for flat in flats for upd in flat for k in upd})
        layouts = [{**self.layout_updates(state), "title.text": wrap_html(self.book_title(state))}
                   for _, state in states]
        steps = []
        for (label, _), flat, layout in zip(states, flats, layouts, strict=True):
            data = {k: [upd.get(k, b.get(k)) for upd, b in zip(flat, base, strict=True)] for k in keys}
            steps.append({"label": label, "method": "update", "args": [data, layout]})
        for trace, upd in zip(fig.data, self.trace_updates(states[0][1]), strict=True):
            trace.update(plain(upd))
        fig.layout.update(layouts[0])
        # Grow the margins, not the plotting area, so the paper coordinates that new_figure placed legends and colour
        # bars at stay where they were: the title's lines on top, the slider at the bottom.
        title_px = 16 + BOOK_LINE_PX * max(lines(layout["title.text"]) for layout in layouts)
        bottom, height = fig.layout.margin.b, fig.layout.height
        bars = [t.colorbar for t in fig.data if "colorbar" in t] + [fig.layout.coloraxis.colorbar]
        for bar in bars:  # container coordinates: keep the same distance from the bottom (which grows by the slider)
            if bar.yref == "container":
                bar.y = (bar.y * height + SLIDER_PX) / (height + title_px + SLIDER_PX)
        fig.update_layout(
            height=fig.layout.height + title_px + SLIDER_PX,
            margin={"t": fig.layout.margin.t + title_px, "b": bottom + SLIDER_PX},
            title={"font": {"size": BOOK_TITLE_SIZE}, "pad": {"t": 14}},
            font={"size": BOOK_FONT_SIZE},
            hoverlabel={"font": {"size": BOOK_FONT_SIZE}},
            sliders=[{
                "active": 0, "x": 0, "len": 1, "y": paper_y(fig, -bottom), "yanchor": "top", "pad": {"t": 0, "b": 0},
                "currentvalue": {"prefix": f"{self.static_label}: ", "font": {"size": BOOK_FONT_SIZE}},
                "font": {"size": BOOK_FONT_SIZE - 2},
                "steps": steps,
            }],
        )
        # at the corner of a panel the first x and y tick labels ("0" and "0") meet: move both off the axis lines
        fig.update_xaxes(ticklabelstandoff=4)
        fig.update_yaxes(ticklabelstandoff=4)
        fig.layout.width = None  # the width follows the page
        return fig


def book_layout(left: int = 70, right: int = 20, **extra: Any) -> dict[str, Any]:
    """``base_layout`` for a static twin whose height and top/bottom margins ``stacked_subplots`` has set."""
    layout = base_layout(0, **extra)
    del layout["height"]
    layout["margin"] = {"l": left, "r": right}
    layout["font"]["size"] = BOOK_FONT_SIZE
    layout["legend"]["font"]["size"] = BOOK_FONT_SIZE - 1
    layout.update(extra)
    return layout


def slider_style() -> dict[str, str]:
    return {"description_width": "150px"}


def wide() -> ipw.Layout:
    return ipw.Layout(width="auto")
