"""Headless tests of the widgets: a control change must put exactly what dsv3_mini computes into the figure."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from dsv3_mini import DeepSeekV3, preset
from dsv3_mini.balancing import max_violation, sign_update, simulate_balancing, skewed_router
from dsv3_mini.config import ModelConfig
from dsv3_mini.fp8 import FORMATS, elementwise_relative_error, fake_quantize, relative_error
from dsv3_mini.fp8_gemm import fp8_matmul
from dsv3_mini.kv_cache import bytes_per_token, cache_bytes, naive_mla_bytes_per_token
from dsv3_mini.moe import Router
from widgets import BiasBalancingWidget, FP8TileWidget, KVCacheWidget, RouterLoadWidget, YaRNWidget
from widgets._common import torch_threads
from widgets.fp8_tile import ERR_FLOOR, GEMM_K, gemm_operands

WIDGETS = [RouterLoadWidget, BiasBalancingWidget, KVCacheWidget, FP8TileWidget, YaRNWidget]


def ys(fig, i):
    return np.asarray(fig.data[i].y, dtype=np.float64)


def snapshot(fig):
    """Every trace's data arrays, to check that an invalid setting leaves the figure alone."""
    return [{k: np.array(getattr(t, k), dtype=object) for k in ("x", "y", "z") if getattr(t, k, None) is not None}
            for t in fig.data]


def assert_same_figure(before, after):
    for a, b in zip(before, after, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


# -- RouterLoadWidget -------------------------------------------------------------------------------------------------
def _expected_routing(cfg, skew, strength, tokens=256):
    router, x = skewed_router(cfg, tokens, skew, seed=0)
    with torch.no_grad():
        router.bias.copy_(sign_update(router.bias, router(x).counts, strength))
        return router(x)


def test_router_load_equals_dsv3_mini_router():
    w = RouterLoadWidget()
    w.bias_strength.value = 0.05
    w.token.value = 7
    cfg = preset("tiny").replace(n_routed_experts=16, num_experts_per_tok=4, n_group=4, topk_group=2)
    r = _expected_routing(cfg, skew=2.0, strength=0.05)
    np.testing.assert_array_equal(ys(w.figure, 0), r.counts.numpy())
    np.testing.assert_array_equal(ys(w.figure, 2), r.counts.view(4, 4).sum(1).numpy())
    assert f"MaxVio = {max_violation(r.counts):.2f}" in w.figure.layout.title.text
    chosen = [int(e) for e in w.figure.data[3].x]
    assert sorted(chosen) == sorted(r.indices[7].tolist())
    expected_w = {int(e): float(g) for e, g in zip(r.indices[7], r.weights[7], strict=True)}
    np.testing.assert_allclose(ys(w.figure, 3), [expected_w[e] for e in chosen], rtol=1e-6)
    assert ys(w.figure, 3).sum() == pytest.approx(cfg.routed_scaling_factor, rel=1e-5)


def test_router_structure_follows_controls():
    w = RouterLoadWidget()
    assert w.set_values(experts=32, groups=8, kept_groups=3, top_k=6, skew=1.0)
    cfg = preset("tiny").replace(n_routed_experts=32, num_experts_per_tok=6, n_group=8, topk_group=3)
    r = _expected_routing(cfg, skew=1.0, strength=0.0)
    np.testing.assert_array_equal(ys(w.figure, 0), r.counts.numpy())
    assert len(w.figure.data[2].y) == 8 and len(w.figure.data[3].y) == 6


@pytest.mark.parametrize(("changes", "needle"), [({"groups": 3}, "not divisible"),
                                                 ({"top_k": 16}, "num_experts_per_tok=16"),
                                                 ({"kept_groups": 5}, "topk_group=5")])
def test_router_impossible_combination_shows_message(changes, needle):
    w = RouterLoadWidget()
    before = snapshot(w.figure)
    for name, value in changes.items():
        getattr(w, name).value = value  # must not raise
    assert needle in w.message.value
    assert_same_figure(before, snapshot(w.figure))
    w.set_values(groups=4, top_k=4, kept_groups=2)
    assert w.message.value == ""


def test_router_accepts_real_hidden_states():
    g = torch.Generator().manual_seed(3)
    hidden, weight = torch.randn(40, 64, generator=g), torch.randn(8, 64, generator=g)
    w = RouterLoadWidget(hidden_states=hidden, router_weight=weight)
    assert w.experts.value == 8 and w.experts.disabled and w.skew.disabled
    w.set_values(top_k=2, groups=2, kept_groups=1)
    router = Router(preset("tiny").replace(n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1))
    with torch.no_grad():
        router.weight.copy_(weight)
        np.testing.assert_array_equal(ys(w.figure, 0), router(hidden).counts.numpy())


def test_router_is_deterministic():
    a, b = RouterLoadWidget(), RouterLoadWidget()
    for i in range(4):
        np.testing.assert_array_equal(ys(a.figure, i), ys(b.figure, i))


# -- BiasBalancingWidget ----------------------------------------------------------------------------------------------
def test_balancing_curves_equal_simulate_balancing():
    w = BiasBalancingWidget()
    w.set_values(steps=40, skew=1.5)
    w.gamma.value = 3e-3
    w.alpha.value = 0.1
    e = w.cfg.n_routed_experts
    kw = {"steps": 40, "tokens": 256, "skew": 1.5, "seed": 0}
    with torch_threads(1):  # tiny tensors: extra threads only slow this down on a busy machine
        runs = {"loss-free": simulate_balancing(w.cfg, policy="loss-free", speed=3e-3, **kw),
                "aux-loss": simulate_balancing(w.cfg, policy="aux-loss", alpha=0.1, **kw),
                "none": simulate_balancing(w.cfg, policy="none", **kw)}
    for i, pol in enumerate(("loss-free", "aux-loss")):
        load = runs[pol].load
        np.testing.assert_allclose(np.asarray(w.figure.data[i].z), (load / load.mean(1, keepdim=True)).T.numpy(),
                                   rtol=1e-6)
    for i in range(e):
        np.testing.assert_allclose(ys(w.figure, 2 + i), runs["loss-free"].bias[:, i].numpy(), rtol=1e-6, atol=1e-9)
    for j, pol in enumerate(("loss-free", "aux-loss", "none")):
        np.testing.assert_allclose(ys(w.figure, 2 + e + j), runs[pol].max_vio.numpy(), rtol=1e-6)
    # the lesson: the bias rule balances the skewed router, doing nothing does not
    assert runs["loss-free"].max_vio[-10:].mean() < 0.5 * runs["none"].max_vio[-10:].mean()


def test_balancing_invalid_setting_shows_message():
    w = BiasBalancingWidget()
    w.steps.value = 20
    before = snapshot(w.figure)
    w.steps.min = 0
    w.steps.value = 0  # simulate_balancing raises ValueError; the widget must not
    assert "steps=0" in w.message.value
    assert_same_figure(before, snapshot(w.figure))


# -- KVCacheWidget ----------------------------------------------------------------------------------------------------
def _shape_cfg(kind, layers, heads, head_dim, kv_heads, d_c, d_r):
    return ModelConfig(attention=kind, num_hidden_layers=layers, first_k_dense_replace=layers,
                       num_attention_heads=heads, num_key_value_heads=kv_heads if kind == "gqa" else None,
                       head_dim=head_dim, v_head_dim=head_dim, qk_nope_head_dim=head_dim, kv_lora_rank=d_c,
                       qk_rope_head_dim=d_r)


def test_kv_deepseek_v3_preset_shows_70272_bytes_for_mla():
    w = KVCacheWidget()
    assert w.preset.value == "DeepSeek-V3" and w.dtype.value == "bf16"
    labels = list(w.figure.data[0].x)
    per_token = dict(zip(labels, ys(w.figure, 0), strict=True))
    assert per_token["MLA"] == 70_272
    assert per_token["MLA"] == bytes_per_token(preset("deepseek-v3"), dtype_bytes=2)
    assert per_token["naive<br>MLA"] == naive_mla_bytes_per_token(preset("deepseek-v3"), 2) == 4_997_120
    assert per_token["MHA"] == bytes_per_token(_shape_cfg("mha", 61, 128, 128, None, 512, 64), 2)
    text = w.note.value + w.figure.layout.title.text
    assert "93.3%" in text and "DeepSeek 67B" in text and "98.6%" in text
    assert f"{100 * (1 - 70_272 / per_token['MHA']):.1f}%" in text


def test_kv_controls_match_kv_cache_formulas():
    w = KVCacheWidget()
    w.set_values(context=65536, batch=4, dtype="fp8")
    w.preset.value = "Llama-3-70B-like GQA"
    shape = (80, 64, 128, 8, 512, 64)
    for i, kind in enumerate(("mha", "gqa", "mqa", "mla")):
        cfg = _shape_cfg(kind, *shape)
        assert ys(w.figure, 0)[i] == bytes_per_token(cfg, dtype_bytes=1)
        assert ys(w.figure, 1)[i] == pytest.approx(cache_bytes(cfg, 65536, 4, dtype_bytes=1) / 1e9)
    assert ys(w.figure, 0)[1] == 80 * 2 * 8 * 128  # Llama-3-70B GQA: 160 KB per token in fp8
    w.heads.value = 32
    assert w.preset.value == "custom"
    assert ys(w.figure, 0)[0] == bytes_per_token(_shape_cfg("mha", 80, 32, 128, 8, 512, 64), 1)


def test_kv_measured_small_cache_equals_formula():
    w = KVCacheWidget()
    formula, measured = ys(w.figure, 2), ys(w.figure, 3)
    np.testing.assert_array_equal(formula, measured)
    # and independently: a real tiny GQA model's cache
    cfg = preset("tiny").replace(attention="gqa", num_key_value_heads=2)
    model = DeepSeekV3(cfg).eval()
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.zeros(1, 8, dtype=torch.long), cache=cache)
    assert cache.nbytes() == 8 * bytes_per_token(cfg, dtype_bytes=4) == measured[1]


def test_kv_impossible_shape_shows_message():
    w = KVCacheWidget()
    before = snapshot(w.figure)
    w.kv_heads.value = 3
    assert "not divisible" in w.message.value and "num_key_value_heads=3" in w.message.value
    assert_same_figure(before, snapshot(w.figure))
    w.kv_heads.value = 16
    assert w.message.value == "" and ys(w.figure, 0)[1] == 61 * 2 * 16 * 128 * 2


# -- FP8TileWidget ----------------------------------------------------------------------------------------------------
def test_fp8_error_map_equals_dsv3_mini():
    w = FP8TileWidget()
    w.outlier_count.value = 3
    w.granularity.value = "tile"
    x = w.input_matrix
    assert x.shape == (128, 256) and int((x.abs() == w.outlier_size.value).sum()) == 3
    err = elementwise_relative_error(x, fake_quantize(x, "tile", "e4m3"))
    np.testing.assert_allclose(np.asarray(w.figure.data[0].z), torch.log10(err.clamp_min(ERR_FLOOR)).numpy(),
                               rtol=1e-6)
    assert ys(w.figure, 2).sum() == x.numel()  # the histogram counts every element
    limit = 2.0 ** -(FORMATS["e4m3"].mantissa_bits + 1)  # 6.25%: round-to-nearest on a normal E4M3 number
    assert f"{int((err > limit * 1.001).sum()):,} of 32,768 elements" in w.figure.layout.title.text
    flushed_tile = w.state["flushed"]
    w.granularity.value = "tensor"
    err_t = elementwise_relative_error(x, fake_quantize(x, "tensor", "e4m3"))
    np.testing.assert_allclose(np.asarray(w.figure.data[0].z), torch.log10(err_t.clamp_min(ERR_FLOOR)).numpy(),
                               rtol=1e-6)
    assert w.state["flushed"] > flushed_tile  # one scale for all: the outlier flushes small values to zero
    assert w.state["damaged"] > 20 * int((err > limit * 1.001).sum())


def test_fp8_gemm_curves_equal_fp8_matmul():
    w = FP8TileWidget()
    a, b = gemm_operands(GEMM_K[-1])
    kw = {"act_block": (1, 128), "weight_block": (128, 128), "fmt": "e4m3"}
    ref = fp8_matmul(a, b, **kw)
    plain = fp8_matmul(a, b, **kw, accumulator="limited", promote_every=None)
    promoted = fp8_matmul(a, b, **kw, accumulator="limited", promote_every=128)
    assert ys(w.figure, 3)[-1] == pytest.approx(100 * relative_error(ref, plain), rel=1e-5)
    assert ys(w.figure, 4)[-1] == pytest.approx(100 * relative_error(ref, promoted), rel=1e-5)
    assert ys(w.figure, 5)[-1] == pytest.approx(100 * relative_error(a @ b.T, ref), rel=1e-5)
    assert ys(w.figure, 4)[-1] < ys(w.figure, 3)[-1] / 5  # promotion keeps the long sum accurate


def test_fp8_invalid_promotion_interval_shows_message():
    w = FP8TileWidget()
    before = snapshot(w.figure)
    w.promote_every.value = 130
    assert "promote_every=130" in w.message.value
    assert_same_figure(before, snapshot(w.figure))


# -- common -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", WIDGETS, ids=lambda c: c.__name__)
def test_static_figure_has_slider_steps_and_is_small(cls):
    w = cls()
    fig = w.static_figure()
    assert type(fig) is go.Figure
    steps = fig.layout.sliders[0].steps
    assert 4 <= len(steps) <= 8
    for step in steps:  # each step restyles every trace and retitles the figure
        data, layout = step.args
        assert step.method == "update" and "title.text" in layout
        assert data and all(len(values) == len(fig.data) for values in data.values())
    text = fig.to_json()
    assert len(text) < 1_000_000
    assert '"bdata"' not in text  # plotly.js does not decode typed arrays inside slider arguments
    assert fig.layout.font.size >= 14


@pytest.mark.parametrize("cls", WIDGETS, ids=lambda c: c.__name__)
def test_widget_is_a_container_with_figure_and_message(cls):
    w = cls()
    assert isinstance(w.figure, go.FigureWidget) and w.figure in w.children and w.message in w.children
    assert w.message.value == ""
    assert w.figure.layout.font.size >= 14
    for axis in ("xaxis", "yaxis"):
        assert w.figure.layout[axis].title.text  # every panel's axes are labelled


CONTROL_CHANGES = {RouterLoadWidget: ("bias_strength", 0.05), BiasBalancingWidget: ("gamma", 3e-3),
                   KVCacheWidget: ("dtype", "fp8"), FP8TileWidget: ("granularity", "tile"),
                   YaRNWidget: ("factor", 8)}


@pytest.mark.parametrize("cls", WIDGETS, ids=lambda c: c.__name__)
def test_redraw_messages_never_leave_a_property_undefined(cls, monkeypatch):
    """plotly 7.1 sends a batch key missing for some trace as null, and the browser then deletes that property
    (a trace's name or colour). Every restyle the widgets send must set each key for every trace it names."""
    from plotly.basedatatypes import Undefined

    w = cls()
    sent = []
    original = w.figure._send_update_msg
    monkeypatch.setattr(w.figure, "_send_update_msg",
                        lambda *a, **k: (sent.append(k.get("restyle_data", a[0] if a else {})), original(*a, **k)))
    name, value = CONTROL_CHANGES[cls]
    getattr(w, name).value = value
    assert w.message.value == "" and sent
    for restyle in sent:
        for key, values in restyle.items():
            assert all(v is not Undefined for v in values), key


@pytest.mark.parametrize("cls", WIDGETS, ids=lambda c: c.__name__)
def test_static_twin_stacks_its_panels_for_the_books_column(cls):
    """The book's twin is one column of panels (a phone has no room side by side) with titles that fit its width."""
    from widgets.twin_layout import _TAG, BOOK_TITLE_CHARS

    fig = cls().static_figure()
    for axis in fig.select_xaxes():
        assert tuple(axis.domain) == (0.0, 1.0), f"{axis.anchor}: a panel beside another"
    for step in fig.layout.sliders[0].steps:
        for line in step.args[1]["title.text"].split("<br>"):
            assert len(_TAG.sub("", line)) <= BOOK_TITLE_CHARS, line
        assert len(step.label) <= 8  # the slider's step labels share a phone's width
    assert fig.layout.width is None  # the width follows the page


def test_balancing_every_new_value_is_simulated_for_the_policies_it_affects(monkeypatch):
    """No lookup table: a new γ re-simulates loss-free, a new α aux-loss, a new skew all three; only a value seen
    before comes from the cache. The curves are the step index's y values (x is plotly's default 0, 1, 2, ...)."""
    import widgets.balancing as wb

    calls = []
    real = wb.simulate_policies
    monkeypatch.setattr(wb, "simulate_policies", lambda cfg, policies, **kw: (calls.append(policies),
                                                                              real(cfg, policies, **kw))[1])
    w = BiasBalancingWidget()
    w.steps.value = 30
    calls.clear()
    for name, value, policies in [("gamma", 2.1e-3, ("loss-free",)), ("alpha", 0.037, ("aux-loss",)),
                                  ("skew", 1.35, ("loss-free", "aux-loss", "none"))]:
        getattr(w, name).value = value
        assert calls == [policies], name
        calls.clear()
    w.gamma.value = 1e-3  # not yet simulated at skew 1.35
    assert calls == [("loss-free",)]
    calls.clear()
    w.gamma.value = 2.1e-3  # simulated with the skew change (same γ, α, skew, steps): from the cache
    assert calls == []
    e = w.cfg.n_routed_experts
    assert all(len(ys(w.figure, i)) == 30 for i in range(2, 2 + e + 3))
    assert np.asarray(w.figure.data[0].z).shape == (e, 30)
