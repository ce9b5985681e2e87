"""Redundant experts: replication goes to the busiest experts, packing balances ranks, the shipped model's skewed
loads get closer to max/mean = 1, and impossible layouts are refused naming the fields."""

import pytest
import torch

from course.paths import SHIPPED_RUN
from dsv3_mini.checkpoint import load_model
from dsv3_mini.data import builtin_dataset
from dsv3_mini.placement import balanced, contiguous, expert_loads, pack, replicate


def test_redundant_slots_go_to_the_largest_load_per_copy():
    load = torch.tensor([100.0, 10, 10, 10, 60, 10, 10, 10])
    assert replicate(load, 1).tolist() == [2, 1, 1, 1, 1, 1, 1, 1]
    assert replicate(load, 2).tolist() == [2, 1, 1, 1, 2, 1, 1, 1]  # 60 > 100 / 2
    assert replicate(load, 3).tolist() == [3, 1, 1, 1, 2, 1, 1, 1]  # 100 / 2 = 50 > 60 / 2 = 30


def test_packing_fills_every_rank_equally_and_balances_by_hand():
    rank = pack(torch.tensor([8.0, 7, 6, 5, 4, 3, 2, 1]), 2)
    assert torch.bincount(rank).tolist() == [4, 4]
    # heaviest first to the lightest rank with room: 8→0, 7→1, 6→1, 5→0, 4→0, 3→1, 2→1, 1→0 : 18 and 18
    assert rank.tolist() == [0, 1, 1, 0, 0, 1, 1, 0]


def test_hand_example_max_over_mean_before_and_after():
    load = torch.tensor([100.0, 10, 10, 10, 60, 10, 10, 10])  # mean rank load over 2 ranks: 110
    assert contiguous(load, 2).rank_load.tolist() == [130, 90]
    assert contiguous(load, 2).max_over_mean == pytest.approx(130 / 110)
    after = balanced(load, 2, redundant=2)  # 10 slots: 50, 50, 30, 30, 10 × 6
    assert sorted(after.rank_load.tolist()) == [110, 110]
    assert after.copies.sum() == 10 and after.max_over_mean == pytest.approx(1.0)


def test_redundant_experts_balance_the_shipped_models_skewed_loads():
    model = load_model(SHIPPED_RUN / "model.safetensors")
    loads = expert_loads(model, builtin_dataset(seed=0), batch_size=4, max_batches=2, domain=0)  # arithmetic only
    assert loads.shape == (model.cfg.num_moe_layers, model.cfg.n_routed_experts)
    for layer in loads:
        before, after = contiguous(layer, 4).max_over_mean, balanced(layer, 4, redundant=4).max_over_mean
        assert after < before and after < 1.1 < before


def test_impossible_layouts_are_refused_naming_the_fields():
    load = torch.ones(16)
    with pytest.raises(ValueError, match=r"16 \+ 1 = 17 slots are not divisible by ranks=4"):
        balanced(load, 4, redundant=1)
    with pytest.raises(ValueError, match="redundant=-1"):
        balanced(load, 4, redundant=-1)
    with pytest.raises(ValueError, match="ranks=0"):
        contiguous(load, 0)
    with pytest.raises(ValueError, match="negative"):
        contiguous(-load, 4)
