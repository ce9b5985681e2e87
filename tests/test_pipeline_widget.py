"""The pipeline-schedule widget draws what dsv3_mini.pipeline_schedule simulates, refuses impossible settings with
a message, and has a static twin for the book."""

import plotly.graph_objects as go

from dsv3_mini.pipeline_schedule import simulate, table2_bubble
from widgets import PipelineScheduleWidget


def test_gantt_bars_are_the_simulated_chunks():
    w = PipelineScheduleWidget()
    w.set_values(schedule="zb1p", pp=4, micro_batches=8, f=1.0, b=2.0, w=0.5)
    tl = simulate("zb1p", 4, 8, 1.0, 2.0, 0.5, 0.8 * 3.0)
    drawn = sorted((r, b, x) for t in w.figure.data[:4] for r, b, x in zip(t.y, t.base, t.x, strict=True))
    assert drawn == sorted((c.rank, c.start, c.end - c.start) for c in tl.chunks)
    assert list(w.figure.data[4].y) == tl.peak_activations == [4, 4, 4, 4]
    assert f"Table 2 formula {table2_bubble('zb1p', 4, 1, 2, 0.5):g}" in w.figure.layout.title.text


def test_dualpipe_shows_two_parameter_copies():
    w = PipelineScheduleWidget(schedule="dualpipe", pp=8, micro_batches=20)
    assert list(w.figure.data[5].y) == [2] * 8
    assert max(w.figure.data[4].y) == 9


def test_impossible_setting_shows_message_and_keeps_the_figure():
    w = PipelineScheduleWidget(schedule="dualpipe", pp=8, micro_batches=20)
    before = w.figure.layout.title.text
    w.pp.value = 7
    assert "pp=7 is odd" in w.message.value and w.figure.layout.title.text == before
    w.pp.value = 16
    assert "micro_batches=20" in w.message.value
    w.micro_batches.value = 32
    assert w.message.value == "" and "16 ranks" in w.figure.layout.title.text


def test_static_figure_steps_through_schedules():
    fig = PipelineScheduleWidget().static_figure()
    assert type(fig) is go.Figure
    steps = fig.layout.sliders[0].steps
    assert 4 <= len(steps) <= 8 and [s.label for s in steps][:3] == ["1F1B 0.5", "ZB1P 0.5", "DualPipe 0.5"]
    for step in steps:
        data, layout = step.args
        assert step.method == "update" and "title.text" in layout
        assert all(len(values) == len(fig.data) for values in data.values())
    text = fig.to_json()
    assert len(text) < 1_000_000 and '"bdata"' not in text


def test_axes_are_labelled():
    w = PipelineScheduleWidget()
    for axis in ("xaxis", "yaxis", "xaxis2", "yaxis2"):
        assert w.figure.layout[axis].title.text
