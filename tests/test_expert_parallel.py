"""Expert parallelism over gloo processes: the sharded MoE equals the single-process MoE (outputs and every gradient),
its dispatch sends one copy per destination rank, bad input is refused before any process starts, and no process
outlives a run, even a failing one."""

import os
import time
from pathlib import Path

import pytest
import torch

from dsv3_mini import preset
from dsv3_mini.expert_parallel import compare_with_single_process, experts_per_rank, owner_of, run_ranks
from dsv3_mini.moe import MoE
from dsv3_mini.traffic import home_nodes, nodes_per_token


def _children() -> list[int]:
    """Live processes whose parent is this test process (read from /proc: nothing to install)."""
    me, kids = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            kids.append(int(stat.parent.name))
    return kids


@pytest.fixture(autouse=True)
def no_process_left():
    before = set(_children())
    yield
    left = set(_children()) - before
    assert not left, f"processes left running: {sorted(left)}"


@pytest.fixture(scope="module")
def layer():
    torch.manual_seed(0)
    cfg = preset("mini")
    moe = MoE(cfg)
    with torch.no_grad():
        moe.gate.bias.copy_(torch.linspace(-0.05, 0.05, cfg.n_routed_experts))  # a bias, as after balancing
    x = torch.randn(64, cfg.hidden_size, generator=torch.Generator().manual_seed(1))
    return moe, x


@pytest.fixture(scope="module", params=[2, 4], ids=["2 ranks", "4 ranks"])
def sharded(request, layer):
    moe, x = layer
    return request.param, compare_with_single_process(moe, x, request.param, timeout=120)


def test_output_and_gradients_equal_the_single_process_moe(sharded):
    _, result = sharded
    names = {"out", "grad_x", "grad.w1", "grad.w2", "grad.w3", "grad.gate.weight", "grad.shared.w1.weight",
             "grad.shared.w2.weight", "grad.shared.w3.weight"}
    assert set(result.max_diff) == names
    assert all(d <= 1e-6 for d in result.max_diff.values()), result.max_diff
    assert result.grads["w1"].abs().sum() > 0 and result.grad_x.abs().sum() > 0  # gradients really flowed


def test_dispatch_sends_one_copy_per_destination_rank(sharded, layer):
    world, result = sharded
    moe, x = layer
    indices = moe.gate(x).indices
    uses = nodes_per_token(indices, moe.gate.cfg.n_routed_experts, world)
    home = home_nodes(len(x), world)
    for rank, traffic in enumerate(result.traffic):
        mine = home == rank
        assert traffic.dispatch_rows.tolist() == uses[mine].sum(0).tolist()
        assert traffic.ranks_per_token.tolist() == uses[mine].sum(1).tolist()
        assert traffic.pairs == int(mine.sum()) * moe.gate.cfg.num_experts_per_tok
        assert traffic.remote_rows < traffic.pairs  # fewer rows than (token, expert) pairs: one copy per rank


def test_experts_are_owned_in_contiguous_blocks():
    assert experts_per_rank(16, 4) == 4
    assert owner_of(torch.tensor([0, 3, 4, 15]), 16, 4).tolist() == [0, 0, 1, 3]


def test_experts_not_divisible_by_ranks_is_refused_naming_both(layer):
    moe, x = layer
    with pytest.raises(ValueError, match=r"n_routed_experts=16 is not divisible by world_size=3"):
        compare_with_single_process(moe, x, 3)
    with pytest.raises(ValueError, match="world_size=0"):
        experts_per_rank(16, 0)


def _fails_on_rank_1(rank, world_size, tensors):
    if rank == 1:
        raise RuntimeError("rank 1 breaks on purpose")
    return {"x": tensors["x"]}


def test_a_failing_rank_is_reported_and_every_process_stopped():
    with pytest.raises(RuntimeError, match="rank 1 failed(.|\n)*breaks on purpose"):
        run_ranks(_fails_on_rank_1, 2, {"x": torch.zeros(1)}, timeout=60)


def _sleeps(rank, world_size, tensors):
    time.sleep(60)
    return {}


def test_a_run_past_its_deadline_is_stopped():
    with pytest.raises(TimeoutError, match="timeout=8"):
        run_ranks(_sleeps, 2, {"x": torch.zeros(1)}, timeout=8)
