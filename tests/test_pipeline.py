"""Real schedules on gloo processes equal the single-process step; DeepSeek's DualPipe runs through the adapter;
bad input gets a clear error; no process outlives a test."""

import multiprocessing
import os
import socket

import dualpipe.comm
import pytest
import torch

from dsv3_mini.dualpipe_adapter import CPUDualPipe, _cpu_receive_buffers, cpu_receive_buffers
from dsv3_mini.pipeline import build_model, compare_grads, make_batch, pipeline_config, reference_step, split_stages
from dsv3_mini.pipeline_run import SCHEDULES, run_pipeline, run_pipelines
from dsv3_mini.pipeline_schedule import dualpipe_order

CASES = [(s, pp, 2 * pp) for pp in (2, 4) for s in SCHEDULES]  # 2·PP micro-batches: enough for every schedule
_RUNS = {}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(autouse=True)
def nothing_left_running():
    yield
    assert multiprocessing.active_children() == []
    for runs in _RUNS.values():
        for run in runs.values():
            assert run.pids and all(_gone(pid) for pid in run.pids)


def _run(schedule, pp, m):
    """All schedules of one PP run in one set of processes (they start once), cached for the module."""
    if (pp, m) not in _RUNS:
        _RUNS[(pp, m)] = run_pipelines(list(SCHEDULES), pp, m)
    return _RUNS[(pp, m)][schedule]


@pytest.mark.parametrize(("schedule", "pp", "m"), CASES)
def test_schedule_equals_single_process_step(schedule, pp, m):
    run = _run(schedule, pp, m)
    cfg = pipeline_config()
    tokens, targets = make_batch(cfg, m)
    losses, grads = reference_step(cfg, tokens, targets, m)
    diff = compare_grads(run.grads, grads)
    if schedule == "dualpipe":  # the loss is divided before the backward and two copies are summed: ≤ 1e-6
        assert run.losses == pytest.approx(losses, rel=1e-6)
        assert diff["max_rel_diff"] <= 1e-6
    else:  # PyTorch's schedules do the reference's arithmetic in its order
        assert run.losses == losses
        assert diff["bitwise"], diff
    assert any(g.abs().sum() > 0 for g in run.grads.values())


@pytest.mark.parametrize(("pp", "m"), [(2, 4), (4, 8)])
def test_simulated_dualpipe_order_is_what_the_package_runs(pp, m):
    run = _run("dualpipe", pp, m)
    for r in range(pp):
        simulated = [(w.what, w.direction, w.micro_batch) for chunk in dualpipe_order(pp, m, r) for w in chunk]
        assert run.order(r) == simulated


@pytest.mark.parametrize(("schedule", "pp", "m"), [("1f1b", 4, 8), ("zbv", 4, 8)])
def test_every_rank_records_its_chunks(schedule, pp, m):
    run = _run(schedule, pp, m)
    stages = 2 if schedule == "zbv" else 1
    for r in range(pp):
        kinds = [k for k, _, _ in run.order(r)]
        assert kinds.count("F") == m * stages
        assert kinds.count("B") + kinds.count("I") == m * stages
    if schedule == "zbv":
        assert run.mean_time("W") > 0 and run.mean_time("I") > 0
    assert 0 < run.bubble_fraction() < 1
    name, formula = run.table2()
    assert name == {"1f1b": "1f1b", "zbv": "zb1p"}[schedule] and formula > 0


def test_layers_not_divisible_by_stages_is_refused():
    with pytest.raises(ValueError, match="num_hidden_layers=6 is not divisible by the number of stages 4"):
        run_pipeline("1f1b", 4, 8, cfg=pipeline_config(layers=6))


def test_too_few_micro_batches_for_dualpipe_is_refused():
    with pytest.raises(ValueError, match="micro_batches=6: DualPipe needs an even number ≥ 2·pp = 8"):
        run_pipeline("dualpipe", 4, 6)
    with pytest.raises(ValueError, match="micro_batches=2: dualpipev on pp=2 needs at least 4"):
        run_pipeline("dualpipev", 2, 2)


def test_port_in_use_is_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ValueError, match=f"port={port} on 127.0.0.1 is already in use"):
            run_pipeline("1f1b", 2, 4, port=port)


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="schedule='interleaved'"):
        run_pipeline("interleaved", 2, 4)


def test_timeout_stops_every_process():
    with pytest.raises(TimeoutError, match="did not finish in 1 s; the processes were stopped"):
        run_pipeline("1f1b", 2, 4, timeout=1.0)
    assert multiprocessing.active_children() == []


def test_package_receive_buffers_need_cuda_without_the_adapter():
    dualpipe.comm.set_p2p_tensor_shapes([(1, 4, 8)])
    dualpipe.comm.set_p2p_tensor_dtype(torch.float32)
    with pytest.raises((AssertionError, RuntimeError)):
        dualpipe.comm.build_from_tensor_shapes()
    with _cpu_receive_buffers():
        (buf,) = dualpipe.comm.build_from_tensor_shapes()
    assert buf.device.type == "cpu" and buf.shape == (1, 4, 8) and buf.dtype == torch.float32 and buf.requires_grad
    assert dualpipe.comm.build_from_tensor_shapes is not cpu_receive_buffers  # restored after the block


def test_adapter_refuses_modules_off_the_cpu():
    stages = split_stages(build_model(pipeline_config()), 2)
    with pytest.raises(ValueError, match="CPUDualPipe runs CPU modules"):
        CPUDualPipe((stages[0].to("meta"), stages[1]))
