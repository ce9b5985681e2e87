"""YaRNWidget, headless: every control change puts exactly what dsv3_mini.rope computes into the figure."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import pytest

from dsv3_mini.rope import inverse_frequencies, yarn_ramp
from widgets.yarn import SHAPES, YaRNWidget


def ys(fig, i):
    return np.asarray(fig.data[i].y, dtype=np.float64)


def test_default_is_deepseek_v3_at_s_40():
    w = YaRNWidget()
    plain, _ = inverse_frequencies(64, 10000.0)
    rs = {"factor": 40, "original_max_position_embeddings": 4096}
    yarn, amplitude = inverse_frequencies(64, 10000.0, rs)
    np.testing.assert_allclose(ys(w.figure, 2), (plain / yarn).numpy(), rtol=1e-6)
    np.testing.assert_allclose(ys(w.figure, 0), 40.0, rtol=1e-6)  # linear: every pair slowed by s
    ntk = ys(w.figure, 1)
    assert ntk[0] == pytest.approx(1.0) and ntk[-1] == pytest.approx(40.0, rel=1e-5)
    assert w.state["kept"] == int((yarn_ramp(64, 10000.0, 4096) == 0).sum()) == 11
    assert w.state["sqrt_t"] == pytest.approx(amplitude) == pytest.approx(0.1 * math.log(40) + 1)
    np.testing.assert_allclose(ys(w.figure, 3), 4096 * plain.numpy() / (2 * math.pi), rtol=1e-6)
    assert "keeps 11 of 32 pairs" in w.figure.layout.title.text


def test_controls_redraw_from_the_library():
    w = YaRNWidget()
    assert w.set_values(shape="passkey model (d_R 8, 128 bytes)", factor=4, beta_fast=16, beta_slow=2)
    dim, theta, original = SHAPES["passkey model (d_R 8, 128 bytes)"]
    plain, _ = inverse_frequencies(dim, theta)
    yarn, _ = inverse_frequencies(dim, theta, {"factor": 4, "original_max_position_embeddings": original,
                                               "beta_fast": 16, "beta_slow": 2})
    np.testing.assert_allclose(ys(w.figure, 2), (plain / yarn).numpy(), rtol=1e-6)
    assert list(ys(w.figure, 4)) == [16, 16] and list(ys(w.figure, 5)) == [2, 2]
    assert w.state["ramp"] == yarn_ramp(dim, theta, original, 16, 2).tolist()


def test_betas_the_config_refuses_show_its_error_and_keep_the_figure():
    w = YaRNWidget()
    before = ys(w.figure, 2).copy()
    w.beta_slow.value = 40  # above beta_fast = 32
    assert "beta_fast=32 must be larger than beta_slow=40" in w.message.value
    np.testing.assert_array_equal(before, ys(w.figure, 2))
    w.beta_slow.value = 2
    assert w.message.value == ""


def test_static_twin_steps_through_s_in_one_column():
    from widgets.twin_layout import _TAG, BOOK_TITLE_CHARS

    fig = YaRNWidget().static_figure()
    assert type(fig) is go.Figure
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["2", "4", "8", "16", "40", "64"]
    for step in steps:
        data, layout = step.args
        assert all(len(values) == len(fig.data) for values in data.values())
        for line in layout["title.text"].split("<br>"):
            assert len(_TAG.sub("", line)) <= BOOK_TITLE_CHARS, line
    for axis in fig.select_xaxes():
        assert tuple(axis.domain) == (0.0, 1.0)
    assert '"bdata"' not in fig.to_json() and fig.layout.width is None


def test_redraw_messages_never_leave_a_property_undefined(monkeypatch):
    from plotly.basedatatypes import Undefined

    w = YaRNWidget()
    sent = []
    original = w.figure._send_update_msg
    monkeypatch.setattr(w.figure, "_send_update_msg",
                        lambda *a, **k: (sent.append(k.get("restyle_data", a[0] if a else {})), original(*a, **k)))
    w.factor.value = 8
    assert w.message.value == "" and sent
    for restyle in sent:
        for key, values in restyle.items():
            assert all(v is not Undefined for v in values), key
