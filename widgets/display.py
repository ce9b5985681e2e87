"""How the course notebooks show plotly figures: interactive in JupyterLab, plain HTML in the published book.

Call ``setup_plotly()`` once at the top of a notebook (the book hides that cell). JupyterLab draws the plotly JSON
bundle; the book (myst-nb, no kernel) picks the ``text/html`` beside it, which expects plotly.js already on the page:
the book loads a local copy, so no page fetches a script from a CDN. In Colab the Colab renderer is used instead.

It also registers the lessons' plotly template, ``"course"``: plotly_white with tick labels set off the axis lines (so
the first x and y labels do not meet at a corner), margins that grow to fit tick labels and axis titles, and
legends and titles that stay inside the figure at a phone's width (``tests/test_book_layout.py`` checks them).
"""

from __future__ import annotations

import sys

import plotly.graph_objects as go
import plotly.io as pio

from .twin_layout import BOOK_LINE_PX, BOOK_TITLE_CHARS, BOOK_TITLE_SIZE, lines, wrap_html

RENDERER = "offline_html"
TEMPLATE = "course"


def course_template() -> go.layout.Template:
    """plotly_white with the course's axis defaults (see the module docstring)."""
    template = go.layout.Template(pio.templates["plotly_white"])
    axis = {"ticklabelstandoff": 4, "automargin": True, "title": {"standoff": 8}}
    template.layout.xaxis.update(axis)
    template.layout.yaxis.update(axis)
    template.layout.title.update(automargin=True)
    return template


def for_the_book(fig: go.Figure | dict) -> go.Figure:
    """A copy of ``fig`` for the book's text column (690 px, 360 px on a phone): a title and subplot titles longer
    than a phone's line are wrapped at spaces, the title is drawn from the top of the figure down at the twins' size,
    subplot titles are lifted clear of tick labels, and the top margin grows to fit. Data are untouched."""
    fig = go.Figure(fig)
    title = fig.layout.title.text
    if title:
        wrapped = wrap_html(title) if len(title) > BOOK_TITLE_CHARS else title
        top = fig.layout.margin.t if fig.layout.margin.t is not None else 100  # plotly's default
        need = 14 + BOOK_LINE_PX * lines(wrapped) + 36  # pad, the title's lines, room above the plot
        # from the top of the figure down: plotly's default centres a title in the margin, and a title of several
        # lines then grows upwards out of the figure
        fig.update_layout(title={"text": wrapped, "yref": "container", "y": 1, "yanchor": "top", "pad": {"t": 14},
                                 "x": 0.01, "xanchor": "left", "font": {"size": BOOK_TITLE_SIZE}},
                          margin_t=max(top, need))
        if fig.layout.height:
            fig.layout.height += max(top, need) - top
    for note in fig.layout.annotations:
        if note.yref == "paper" and note.showarrow is False and note.yanchor == "bottom":  # subplot titles
            note.yshift = 6  # clear of the panel's top tick label
            if note.text and len(note.text) > BOOK_TITLE_CHARS + 2:
                note.text = wrap_html(note.text, BOOK_TITLE_CHARS + 2)
    return fig


class _HtmlWithoutPlotlyJs(pio.base_renderers.MimetypeRenderer):
    """``text/html`` for a figure in the book's layout (``for_the_book``), without plotly.js or MathJax (the page
    provides both)."""

    def to_mimebundle(self, fig):  # noqa: D102 - plotly's renderer interface
        html = pio.to_html(for_the_book(fig), include_plotlyjs=False, include_mathjax=False, full_html=False,
                           default_height=450, validate=False)
        return {"text/html": html}


def setup_plotly() -> str:
    """Register the book's HTML renderer and the ``"course"`` template, and make ``fig.show()`` emit both bundles;
    returns the renderer in use."""
    pio.templates[TEMPLATE] = course_template()
    pio.renderers[RENDERER] = _HtmlWithoutPlotlyJs()
    pio.renderers.default = "colab" if "google.colab" in sys.modules else f"plotly_mimetype+{RENDERER}"
    return pio.renderers.default
