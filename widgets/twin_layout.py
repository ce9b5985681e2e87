"""How the widgets' static twins fit the book's text column: 690 px on a desktop, 360 px on a phone.

The live widget is drawn 1000 px wide for a notebook or a projector (panels side by side, large fonts); its static twin
lives in the book, so it stacks its panels in one column (``stacked_subplots``), wraps its titles (``wrap_html``),
and puts legends (``legend_below``), colour bars (``colorbar_above``) and the slider above or below the panels, at
positions given in pixels and converted to plotly's paper coordinates (``paper_y``). ``widgets.display`` wraps the
lessons' own figure titles the same way. ``tests/test_book_layout.py`` checks in Chromium that no two texts of a
figure overlap at either width.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

SUBTITLE_SIZE = 15  # the second line of a title: what the numbers mean
# The static twin in the book: a phone column is ~360 px wide, so fonts are a size smaller and title lines shorter.
BOOK_FONT_SIZE = 14
BOOK_TITLE_SIZE = 15
BOOK_SUBTITLE_SIZE = 13
BOOK_TITLE_CHARS = 44  # characters per title line that fit 360 px at BOOK_TITLE_SIZE (Arial, ~7.5 px a character)
BOOK_LINE_PX = 20  # height of one title line
PANEL_GAP_PX = 100  # between stacked panels: tick labels, the axis title and the next panel's title
SLIDER_PX = 110  # the slider's current value, rail and step labels


def subtitle(text: str) -> str:
    """The smaller second line of a widget's title."""
    return f"<span style='font-size:{SUBTITLE_SIZE}px'>{text}</span>"


_TAG = re.compile(r"(<br>|<[^>]+>)")
_TAG_NAME = re.compile(r"<(\w+)")


def _closing(open_tags: list[str]) -> str:
    """``["<span style=..>", "<b>"]`` -> ``"</b></span>"``."""
    return "".join("</" + _TAG_NAME.match(t).group(1) + ">" for t in reversed(open_tags))


def wrap_html(text: str, width: int = BOOK_TITLE_CHARS) -> str:
    """Re-wrap plotly's pseudo-HTML ``text`` so that no line has more than ``width`` visible characters.

    Breaks at spaces only; a ``<br>`` inside ``<span>`` / ``<b>`` / ``<i>`` closes the open tags and reopens them on
    the next line, so a line keeps its style. The second line's size becomes ``BOOK_SUBTITLE_SIZE``.
    """
    text = text.replace(f"font-size:{SUBTITLE_SIZE}px", f"font-size:{BOOK_SUBTITLE_SIZE}px")
    out: list[str] = []
    open_tags: list[str] = []
    n = 0
    for token in _TAG.split(text):
        if not token:
            continue
        if token == "<br>":
            out.append(token)
            n = 0
        elif token.startswith("</"):
            open_tags.pop()
            out.append(token)
        elif token.startswith("<"):
            open_tags.append(token)
            out.append(token)
        else:
            for word in re.split(r"( )", token):
                if word == " " and n == 0:
                    continue  # no space at the start of a line
                if word != " " and n > 0 and n + len(word) > width:
                    if out and out[-1] == " ":
                        out.pop()
                    out.append(f"{_closing(open_tags)}<br>{''.join(open_tags)}")
                    n = 0
                out.append(word)
                n += len(word)
    return "".join(out)


def lines(text: str) -> int:
    """How many lines plotly draws for ``text``."""
    return text.count("<br>") + 1


def stacked_subplots(titles: Sequence[str], panel_px: Sequence[int], gap_px: int = PANEL_GAP_PX,
                     top_px: int = 120, bottom_px: int = 80) -> go.Figure:
    """One column of panels for the book: panel ``i`` is ``panel_px[i]`` high, ``gap_px`` apart, under a title
    margin of ``top_px`` and above a bottom margin of ``bottom_px`` (legend, slider). Sets the figure's height."""
    plot = sum(panel_px) + gap_px * (len(panel_px) - 1)
    fig = make_subplots(rows=len(panel_px), cols=1, subplot_titles=[wrap_html(t, 46) for t in titles],
                        row_heights=list(panel_px), vertical_spacing=gap_px / plot)
    fig.update_layout(height=plot + top_px + bottom_px, margin={"t": top_px, "b": bottom_px})
    fig.update_annotations(font_size=BOOK_FONT_SIZE + 1, yshift=6)  # clear of a top tick label ("0")
    return fig


def paper_y(fig: go.Figure, px: float) -> float:
    """The paper coordinate ``px`` pixels above the bottom of the plotting area (negative: below it)."""
    m = fig.layout.margin
    return px / (fig.layout.height - m.t - m.b)


def colorbar_above(fig: go.Figure, px: float) -> dict[str, Any]:
    """A horizontal colour bar whose bottom is ``px`` above the plotting area, full width.

    In container coordinates: a colour bar above the plot in paper coordinates makes plotly push the margins, which
    moves a multi-line title out of the figure. ``static_figure`` keeps it in place when it grows the margins.
    """
    m = fig.layout.margin
    return {"orientation": "h", "thickness": 14, "x": 0.5, "xanchor": "center", "len": 1, "yref": "container",
            "y": (fig.layout.height - m.t + px) / fig.layout.height, "yanchor": "bottom",
            "title": {"side": "top"}}


def legend_below(fig: go.Figure, px: int = 62) -> dict[str, Any]:
    """A vertical legend ``px`` below the plotting area (under the last panel's axis title), left-aligned."""
    return {"x": 0, "xanchor": "left", "y": paper_y(fig, -px), "yanchor": "top", "orientation": "v",
            "title": {"text": ""}, "bgcolor": "rgba(0,0,0,0)"}
