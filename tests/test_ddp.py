"""Data parallelism: `torchrun --nproc-per-node 2 -m dsv3_mini.train` on gloo at global batch B trains what one process
trains at batch B (losses, validation, MaxVio and router biases within 1e-6), each rank computes on its half of the
batch, rank 0 alone writes the files (each renamed into place), and no process outlives the test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from dsv3_mini import DeepSeekV3
from dsv3_mini.checkpoint import read_checkpoint
from dsv3_mini.data import builtin_dataset
from dsv3_mini.data_parallel import DataParallel, data_parallel
from dsv3_mini.pipeline_run import HOST, free_port
from dsv3_mini.train import TrainConfig, parse_args, train

ROOT = Path(__file__).resolve().parents[1]
RANKS, BATCH, STEPS, TIMEOUT = 2, 4, 4, 240.0
ARGS = ["--preset", "tiny", "--steps", str(STEPS), "--batch-size", str(BATCH), "--seq-len", "64", "--eval-every", "2",
        "--eval-batches", "2", "--log-every", "1", "--train-bytes", "100000", "--threads", "1", "--no-progress"]
MARK = "DSV3_DDP_TEST"  # an environment variable every process the test starts inherits: how leftovers are found
TOKENS: list[str] = []
WRITTEN = {"checkpoint.safetensors", "checkpoint.json", "metrics.jsonl", "model.safetensors", "summary.json"}

# Each worker runs `python -m dsv3_mini.train ...` (runpy, as -m does) behind a probe that logs, as JSON lines in
# <log dir>/rank<R>.jsonl, its pid, every file it renames into place (the last step of every write the trainer makes)
# and the batch size of every forward pass.
PROBE = """
import json, os, runpy, sys
import dsv3_mini.model
log_path = os.path.join(sys.argv[1], "rank" + os.environ["RANK"] + ".jsonl")
def log(**entry):
    with open(log_path, "a") as f:
        f.write(json.dumps(entry) + "\\n")
log(pid=os.getpid())
real_replace, real_forward = os.replace, dsv3_mini.model.DeepSeekV3.forward
def replace(src, dst, *args, **kwargs):
    log(renamed=os.fspath(dst), source=os.fspath(src))
    return real_replace(src, dst, *args, **kwargs)
def forward(self, tokens, *args, **kwargs):
    log(forward=tokens.shape[0], training=self.training)
    return real_forward(self, tokens, *args, **kwargs)
os.replace, dsv3_mini.model.DeepSeekV3.forward = replace, forward
sys.argv = ["dsv3_mini.train", *sys.argv[2:]]
runpy.run_module("dsv3_mini.train", run_name="__main__", alter_sys=True)
"""


def _marked(token: str) -> list[int]:
    """Pids of running (not zombie) processes that carry ``MARK=token`` in their environment."""
    needle = f"{MARK}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            running = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            if running and needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _stop(proc: subprocess.Popen, token: str) -> None:
    """Stop torchrun (its session: it forwards the signal to its workers), then kill whatever still carries the mark."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 15
    while (left := _marked(token)) and time.monotonic() < deadline:
        for pid in left:  # workers live in sessions of their own, out of torchrun's group
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def torchrun(out: Path, logs: Path, nproc: int = RANKS) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node nproc`` of the trainer (with the probe) on 127.0.0.1 and a free port, bounded by
    ``TIMEOUT``; every process it started is stopped before this returns, whatever happened."""
    token = uuid.uuid4().hex
    TOKENS.append(token)
    logs.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr", HOST,
           "--master-port", str(free_port()), "--no-python", sys.executable, "-c", PROBE, str(logs), *ARGS,
           "--out", str(out)]
    env = {**os.environ, MARK: token, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        _stop(proc, token)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _log(logs: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (logs / f"rank{rank}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run twice: 2 gloo processes under torchrun, and one process (in this one)."""
    root = tmp_path_factory.mktemp("ddp")
    started = time.perf_counter()
    ddp = torchrun(root / "ddp", root / "logs")
    ddp_seconds = time.perf_counter() - started
    assert ddp.returncode == 0, ddp.stderr[-4000:]
    tc = parse_args([*ARGS, "--out", str(root / "single")])
    single = train(tc, progress=False, dataset=builtin_dataset(train_bytes=tc.train_bytes, seed=tc.seed))
    print(f"torchrun, {RANKS} processes, {STEPS} steps: {ddp_seconds:.1f} s")
    return {"root": root, "ddp": ddp, "single": single}


@pytest.fixture(autouse=True)
def nothing_left_running():
    yield
    assert all(not _marked(token) for token in TOKENS)


def _numbers(record: dict) -> list[float]:
    """A metrics record's numbers, in key order (tokens/s is a speed, not a result)."""
    out = []
    for key in sorted(set(record) - {"tokens_per_s", "step", "split"}):
        value = record[key]
        out.extend(value if isinstance(value, list) else [] if value is None else [value])
    return out


def test_two_gloo_processes_train_what_one_process_trains(runs):
    ddp_history = [json.loads(line) for line in (runs["root"] / "ddp" / "metrics.jsonl").read_text().splitlines()]
    single_history = runs["single"].history
    assert [(r["step"], r["split"]) for r in ddp_history] == [(r["step"], r["split"]) for r in single_history]
    for got, want in zip(ddp_history, single_history, strict=True):
        assert _numbers(got) == pytest.approx(_numbers(want), rel=1e-6, abs=1e-6), (got, want)
    _, ddp_tensors = read_checkpoint(runs["root"] / "ddp" / "checkpoint.safetensors")
    _, single_tensors = read_checkpoint(runs["root"] / "single" / "checkpoint.safetensors")
    biases = [k for k in single_tensors if k.endswith("gate.bias")]
    assert len(biases) == 3 and any(single_tensors[k].abs().max() > 0 for k in biases), "the biases must have moved"
    for k in biases:
        assert (ddp_tensors[k] - single_tensors[k]).abs().max() <= 1e-6, k


def test_each_rank_trains_on_its_half_of_the_global_batch(runs):
    logs = runs["root"] / "logs"
    for rank in range(RANKS):
        training = [e["forward"] for e in _log(logs, rank) if e.get("training")]
        assert training == [BATCH // RANKS] * STEPS, rank


def test_only_rank_0_writes_and_every_file_is_renamed_into_place(runs):
    logs, out = runs["root"] / "logs", runs["root"] / "ddp"
    renamed = {rank: [e for e in _log(logs, rank) if "renamed" in e] for rank in range(RANKS)}
    assert all(not renamed[rank] for rank in range(1, RANKS)), renamed
    assert {Path(e["renamed"]).name for e in renamed[0]} == WRITTEN
    assert all(e["source"] == e["renamed"] + ".tmp" for e in renamed[0])
    assert not list(out.glob("*.tmp"))
    meta, _ = read_checkpoint(out / "checkpoint.safetensors")
    assert meta["step"] == STEPS and meta["train_config"]["batch_size"] == BATCH
    assert (out / "metrics.jsonl").read_text().count("\n") == len(runs["single"].history)  # one writer: no doubles


def test_no_process_outlives_the_run(runs):
    logs = runs["root"] / "logs"
    pids = [e["pid"] for rank in range(RANKS) for e in _log(logs, rank) if "pid" in e]
    assert len(pids) == RANKS and not _marked(TOKENS[0])
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_global_batch_that_does_not_split_evenly_is_a_clear_error():
    with pytest.raises(ValueError, match=r"batch_size=3 \(the global batch\) must be divisible by the 2 processes"):
        DataParallel(rank=0, world_size=2, device=torch.device("cpu")).check_batch(3)


def test_ranks_take_contiguous_slices_and_validation_may_be_uneven():
    rows = torch.arange(5)
    shards = [DataParallel(rank=r, world_size=2, device=torch.device("cpu")).shard(rows).tolist() for r in range(2)]
    assert shards == [[0, 1, 2], [3, 4]]


def test_an_idle_expert_still_gets_a_gradient_so_ddp_need_not_search_for_unused_ones():
    """One sequence of 8 tokens leaves experts without tokens; the stacked expert tensors still get a gradient."""
    torch.manual_seed(0)
    tc = TrainConfig(preset="tiny", seq_len=8)
    model = DeepSeekV3(tc.model_config()).train()
    tokens = torch.randint(0, model.cfg.vocab_size, (1, 9))
    model(tokens[:, :-1], targets=tokens[:, 1:]).loss.backward()
    assert any((m.last_routing.counts == 0).any() for m in model.moe_layers()), "some expert must sit idle"
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_ddp_searches_for_unused_parameters_only_when_an_mtp_module_cannot_run():
    dist.init_process_group("gloo", init_method=f"tcp://{HOST}:{free_port()}", rank=0, world_size=1)
    try:
        model = DeepSeekV3(TrainConfig(preset="tiny").model_config())
        dp = DataParallel(rank=0, world_size=1, device=torch.device("cpu"))
        assert not dp.wrap(model, seq_len=2).find_unused_parameters  # MTP depth 1 runs on 2 tokens
        assert dp.wrap(model, seq_len=1).find_unused_parameters
        with data_parallel(torch.device("cpu")) as parallel:  # one process: no data parallelism at all
            assert parallel is None
        assert dist.is_initialized(), "a group the caller started is left running"
    finally:
        dist.destroy_process_group()
