"""Node-limited routing's traffic: the measured table comes from the shipped routers on validation data, the group
limit bounds the destination nodes, and V3's full-scale arithmetic matches hand computation."""

import math

import pytest
import torch

from course.paths import SHIPPED_RUN
from dsv3_mini import preset
from dsv3_mini.checkpoint import load_model
from dsv3_mini.data import builtin_dataset
from dsv3_mini.moe import Router
from dsv3_mini.traffic import (
    expected_nodes_uniform,
    experts_for_cost_of_nodes,
    full_scale,
    limited_router,
    measured_traffic,
    moe_inputs,
    nodes_per_token,
    row_bytes,
)


@pytest.fixture(scope="module")
def shipped():
    model = load_model(SHIPPED_RUN / "model.safetensors")
    return model, moe_inputs(model, builtin_dataset(seed=0), batch_size=4, seq_len=256, max_batches=1)


@pytest.fixture(scope="module")
def rows(shipped):
    model, inputs = shipped
    return {(r.n_group, r.topk_group): r for r in measured_traffic(model, inputs, nodes=4)}


def test_the_group_limit_bounds_the_nodes_a_token_reaches(rows):
    for (groups, m), r in rows.items():
        if groups == 4:  # one group per node: at most M nodes
            assert r.max_nodes <= m
    assert rows[(4, 1)].max_nodes == 1 and rows[(1, 1)].max_nodes == 4


def test_fewer_nodes_send_fewer_bytes_but_the_same_expert_pairs(rows):
    free, limited = rows[(1, 1)], rows[(4, 2)]
    assert limited.mean_nodes < free.mean_nodes and limited.bytes_per_token < free.bytes_per_token
    assert limited.pair_copies == pytest.approx(free.pair_copies, rel=0.05)  # per-expert copies hardly change
    assert rows[(4, 1)].bytes_per_token < rows[(4, 2)].bytes_per_token < rows[(4, 3)].bytes_per_token


def test_the_trained_limit_reproduces_the_shipped_routing(rows, shipped):
    model, _ = shipped
    assert (model.cfg.n_group, model.cfg.topk_group) == (4, 2)
    assert rows[(4, 2)].same_as_trained == 1.0
    assert rows[(1, 1)].kept_affinity == 1.0 and rows[(4, 1)].kept_affinity < rows[(4, 2)].kept_affinity < 1.0


def test_bytes_per_row_count_fp8_scales():
    assert row_bytes(7168, "fp8") == 7168 + 4 * 56
    assert row_bytes(192, "fp8") == 192 + 4 * 2
    assert row_bytes(7168, "bf16") == 14336
    with pytest.raises(ValueError, match="fmt='int4'"):
        row_bytes(8, "int4")


def test_thirteen_experts_for_the_cost_of_four_nodes():
    v3 = preset("deepseek-v3")
    assert experts_for_cost_of_nodes(v3.topk_group) == pytest.approx(12.8)
    assert round(experts_for_cost_of_nodes(v3.topk_group)) == 13


def test_full_scale_node_limit_caps_ib_copies_and_time():
    limited, free = full_scale(node_limited=True, samples=4096), full_scale(node_limited=False, samples=4096)
    assert limited.max_nodes == 4 and free.max_nodes == 8
    # uniform routing without a limit: 8 · (1 − C(224, 8) / C(256, 8)) ≈ 5.29 nodes
    assert free.mean_nodes == pytest.approx(8 * (1 - math.comb(224, 8) / math.comb(256, 8)), abs=0.05)
    assert free.mean_nodes == pytest.approx(expected_nodes_uniform(256, 8, 8), abs=0.05)
    per_copy = 7392 + 14336
    assert limited.ib_bytes == pytest.approx(limited.ib_copies * per_copy)
    assert limited.ib_ms == pytest.approx(1e3 * 4096 * limited.ib_bytes / 50e9)
    assert limited.nvlink_ms == pytest.approx(1e3 * 4096 * limited.nvlink_bytes / 160e9)
    assert limited.layer_ms < free.layer_ms


def test_m_larger_than_the_groups_is_refused_naming_the_field():
    router = Router(preset("mini"))
    with pytest.raises(ValueError, match=r"topk_group=5 is larger than n_group=4"):
        limited_router(router, 4, 5)
    with pytest.raises(ValueError, match="nodes=3"):
        nodes_per_token(torch.zeros(2, 4, dtype=torch.long), 16, 3)
    with pytest.raises(ValueError, match="n_group=4 must equal nodes=8"):
        full_scale(preset("mini").replace(n_routed_experts=64, n_group=4), samples=8)
