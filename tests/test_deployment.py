"""The deployment planner and the training bill against numbers computed by hand from the report's configuration
(FACTS.md: 671,026,419,200 parameters, 70,272 cache bytes per token, 36.6B active)."""

import math

import pytest

from dsv3_mini import preset
from dsv3_mini.deployment import (
    COST_CAVEAT,
    DEPLOYMENTS,
    GPU,
    Deployment,
    mha_equivalent,
    plan,
    training_bill,
    weight_bytes,
)
from dsv3_mini.kv_cache import bytes_per_token
from widgets import DeploymentWidget

TOTAL = 671_026_419_200
EMBED = HEAD = 129_280 * 7_168  # 926,679,040 each
NORMS = 61 * 2 * 7_168 + 7_168
ROUTERS = 58 * (256 * 7_168 + 256)
KEPT = EMBED + HEAD + NORMS + ROUTERS  # kept in BF16
QUANT = TOTAL - KEPT
EXPERT = 3 * 7_168 * 2_048  # 44,040,192


def test_v3_weights_at_fp8_with_block_scales_by_hand():
    w = weight_bytes()
    assert (w.kept, w.quantized) == (KEPT, QUANT)
    assert w.scales == 4 * math.ceil(QUANT / (128 * 128))
    assert w.bytes == QUANT + w.scales + 2 * KEPT == 673_150_450_384  # ≈ 673 GB
    assert weight_bytes(weights="bf16").bytes == 2 * TOTAL


def test_kv_cache_mla_vs_the_mha_it_replaces_by_hand():
    p = plan(context=131_072, batch=1)
    assert p.kv_bytes == 131_072 * 70_272
    assert p.kv_bytes_mha == 131_072 * 61 * 2 * 128 * 128 * 2  # 3,997,696 bytes per token
    assert bytes_per_token(mha_equivalent(preset("deepseek-v3"))) == 3_997_696
    assert plan(context=1000, batch=3, cache="fp8").kv_bytes == 3 * 1000 * 35_136


def test_gpus_needed_hold_the_weights_and_split_the_experts():
    # (673.15 + 2.30) GB / (141 GB × 0.9) = 5.3 → 6 GPUs, and 256 experts split evenly first at 8
    assert plan(gpu="H200").gpus == 8
    # / (80 × 0.9) = 9.4 → 10 → 16 (two nodes of H100)
    assert plan(gpu="H100").gpus == 16
    assert plan(gpu="H200", weights="bf16").gpus == 16  # 1,342 GB / 126.9 = 10.6 → 11 → 16


def test_decode_bound_at_batch_one_by_hand():
    context = 32_768
    p = plan(gpu="H200", context=context)
    always = 61 * 187_107_328 + 3 * 396_361_728 + 58 * EXPERT  # attention, dense FFN, shared experts
    routed = 58 * 8 * EXPERT  # batch 1 touches exactly K = 8 experts per layer
    step = (always + routed) * (1 + 4 / 16384) + 2 * (HEAD + ROUTERS + NORMS) + context * 70_272
    assert p.step_bytes == pytest.approx(step, rel=1e-12)
    assert p.tokens_per_s == pytest.approx(8 * 4.8e12 / step, rel=1e-12)
    assert p.tokens_per_s_mha < p.tokens_per_s


def test_bigger_batches_touch_more_experts_but_raise_throughput():
    one, many = plan(batch=1, context=4096), plan(batch=64, context=4096)
    touched = 256 * (1 - (1 - 8 / 256) ** 64)  # ≈ 222 of 256 experts per layer, under uniform routing
    extra_experts = 58 * (touched - 8) * EXPERT * (1 + 4 / 16384)
    assert many.step_bytes - one.step_bytes == pytest.approx(extra_experts + 63 * 4096 * 70_272, rel=1e-9)
    assert many.tokens_per_s > 3 * one.tokens_per_s


def test_published_deployment_units():
    prefill, decode = DEPLOYMENTS["prefill"], DEPLOYMENTS["decode"]
    assert (prefill.gpus, prefill.experts_per_gpu(), prefill.experts_per_token()) == (32, 9, 8)  # 8 + 1 redundant
    assert (decode.gpus, decode.experts_per_gpu(), decode.experts_per_token()) == (320, 1, 9)
    assert prefill.expert_bytes_per_gpu() == pytest.approx(9 * 58 * EXPERT * (1 + 4 / 16384))


def test_training_bill_by_hand():
    bill = training_bill(utilisation=0.4)
    flops = 6 * 36_625_618_432 * 14.8e12
    assert bill.active_params == 36_625_618_432 and bill.flops == pytest.approx(flops)
    assert bill.gpu_hours == pytest.approx(flops / (0.4 * 989.5e12) / 3600)
    assert bill.implied_utilisation == pytest.approx(flops / (989.5e12 * 2_788_000 * 3600))
    assert bill.reported_cost_usd == 5_576_000
    assert "excluding the costs associated with prior research and ablation" in COST_CAVEAT


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match=r"gpus=4 × gpu='H100' \(80 GB\).*too small for the 673.2 GB of fp8 weights"):
        plan(gpu="H100", gpus=4)
    with pytest.raises(ValueError, match=r"n_routed_experts=256 is not divisible by gpus=6"):
        plan(gpus=6)
    with pytest.raises(ValueError, match="gpu memory is too small"):
        plan(gpu=GPU("tiny", 1, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="weights='int4'"):
        plan(weights="int4")
    with pytest.raises(ValueError, match="cache='fp16'"):
        plan(cache="fp16")
    with pytest.raises(ValueError, match="context=0"):
        plan(context=0)
    with pytest.raises(ValueError, match="gpu='B300'"):
        plan(gpu="B300")
    with pytest.raises(ValueError, match="utilisation=1.5"):
        training_bill(utilisation=1.5)
    with pytest.raises(ValueError, match=r"n_routed_experts \+ extra_slots = 257 is not divisible by ep=32"):
        Deployment("odd", nodes=4, tp=4, dp=8, ep=32, extra_slots=1, shared_as_routed=False).experts_per_gpu()


def test_deployment_widget_draws_the_planner_and_explains_impossible_settings():
    w = DeploymentWidget()
    p = plan(gpu="H200", context=32_768)
    assert list(w.figure.data[0].y) == pytest.approx([p.weights.bytes / 1e9] * 2)
    assert list(w.figure.data[1].y) == pytest.approx([p.kv_bytes / 1e9, p.kv_bytes_mha / 1e9])
    assert list(w.figure.data[3].y) == pytest.approx([p.tokens_per_s, p.tokens_per_s_mha])
    assert "on 8 × H200" in w.figure.layout.title.text
    assert w.set_values(gpu="H100", context=131_072, batch=4)
    assert "on 16 × H100" in w.figure.layout.title.text
    assert not w.set_values(gpus=8)  # 8 H100 do not hold 673 GB of FP8 weights
    assert "gpus=8" in w.message.value and "too small" in w.message.value
    assert "on 16 × H100" in w.figure.layout.title.text  # the last valid setting stays
    fig = w.static_figure()
    assert len(fig.layout.sliders[0].steps) == 4 and len(fig.to_json()) < 60_000
