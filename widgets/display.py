"""How the course notebooks show plotly figures: interactive in JupyterLab, plain HTML in the published book.

Call ``setup_plotly()`` once at the top of a notebook (the book hides that cell). JupyterLab draws the plotly JSON
bundle; the book (myst-nb, no kernel) picks the ``text/html`` beside it, which expects plotly.js already on the page:
the book loads a local copy, so no page fetches a script from a CDN. In Colab the Colab renderer is used instead.
"""

from __future__ import annotations

import sys

import plotly.io as pio

RENDERER = "offline_html"


class _HtmlWithoutPlotlyJs(pio.base_renderers.MimetypeRenderer):
    """``text/html`` for a figure, without plotly.js or MathJax (the page provides both)."""

    def to_mimebundle(self, fig):  # noqa: D102 - plotly's renderer interface
        html = pio.to_html(fig, include_plotlyjs=False, include_mathjax=False, full_html=False,
                           default_height=450, validate=False)
        return {"text/html": html}


def setup_plotly() -> str:
    """Register the book's HTML renderer and make ``fig.show()`` emit both bundles; returns the renderer in use."""
    pio.renderers[RENDERER] = _HtmlWithoutPlotlyJs()
    pio.renderers.default = "colab" if "google.colab" in sys.modules else f"plotly_mimetype+{RENDERER}"
    return pio.renderers.default
