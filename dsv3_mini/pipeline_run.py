"""Real pipeline schedules on gloo CPU processes: spawn, run one training step, time every chunk, stop.

``run_pipeline(schedule, pp, micro_batches)`` starts ``pp`` processes (loopback 127.0.0.1, a free port or the one
given, one torch thread each), runs one training step of the mini model cut into stages (``pipeline.py``) and
returns a ``PipelineRun``: the per-micro-batch losses, the gradients by parameter name (summed over the ranks that
hold a copy), and every rank's chunk records ``(kind, stage, micro_batch, start, end)``. Schedules:

- ``"gpipe"``, ``"1f1b"``: ``torch.distributed.pipelining.ScheduleGPipe`` / ``Schedule1F1B``, one stage per rank;
- ``"zbv"``: ``ScheduleZBVZeroBubble`` (zero bubble, backward split into input (I) and weight (W) chunks), two
  stages per rank in a V: rank r holds stages r and 2·PP−1−r;
- ``"dualpipev"``: ``ScheduleDualPipeV``, PyTorch's DualPipe "V" (same two-stages-per-rank layout);
- ``"dualpipe"``: DeepSeek's own ``dualpipe`` package through ``dualpipe_adapter``: PP stages, each rank holds stage
  r for the micro-batches entering at rank 0 and stage PP−1−r for those entering at the last rank (two copies of the
  parameters; their gradients are summed, as V3's all-reduce over the pair would).

Every child is stopped by the parent even on failure or timeout (terminate, then kill), and errors are raised in the
parent with the child's traceback. ``python -m dsv3_mini.pipeline_run --schedule 1f1b --pp 2`` runs one from a shell.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import multiprocessing as mp
import os
import socket
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import dualpipe
import torch
import torch.distributed as dist
from torch.distributed import pipelining as pp_lib

from .config import ModelConfig
from .dualpipe_adapter import CPUDualPipe, record_chunks
from .pipeline import (
    STAGES_PER_RANK,
    build_model,
    check_pipeline_config,
    loss_fn,
    make_batch,
    pipeline_config,
    split_stages,
)
from .pipeline_schedule import check_setting, table2_bubble

SCHEDULES = tuple(STAGES_PER_RANK)
HOST = "127.0.0.1"
_TORCH_SCHEDULES = {"gpipe": "ScheduleGPipe", "1f1b": "Schedule1F1B", "zbv": "ScheduleZBVZeroBubble",
                    "dualpipev": "ScheduleDualPipeV"}


@dataclass
class PipelineRun:
    """One pipelined step. ``chunks``: one dict per chunk (rank, kind F|B|I|W, stage, micro_batch, start, end in
    seconds from the earliest chunk); ``losses`` per micro-batch in micro-batch order; ``grads`` by parameter name."""

    schedule: str
    pp: int
    micro_batches: int
    losses: list[float]
    grads: dict[str, torch.Tensor]
    chunks: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the step (first chunk start to last chunk end)
    pids: list[int] = field(default_factory=list)  # the worker processes (all stopped when the run returns)

    def mean_time(self, kind: str) -> float:
        """Mean seconds of the chunks of ``kind`` ("F", "B", "I" or "W"; 0.0 if there are none)."""
        ts = [c["end"] - c["start"] for c in self.chunks if c["kind"] == kind]
        return sum(ts) / len(ts) if ts else 0.0

    def bubble_fraction(self) -> float:
        """Idle share of the ranks' time in the step: 1 − Σ chunk time / (PP · step time)."""
        busy = sum(c["end"] - c["start"] for c in self.chunks)
        return 1.0 - busy / (self.pp * self.seconds)

    def bubbles(self) -> list[float]:
        """Each rank's idle seconds inside the step (step time − its chunks' time)."""
        return [self.seconds - sum(c["end"] - c["start"] for c in self.chunks if c["rank"] == r)
                for r in range(self.pp)]

    def order(self, rank: int) -> list[tuple[str, int, int]]:
        """``rank``'s chunks in the order they ran: (kind, direction or stage, micro-batch)."""
        key = "direction" if self.schedule == "dualpipe" else "stage"
        return [(c["kind"], c[key], c["micro_batch"]) for c in self.chunks if c["rank"] == rank]

    def table2(self) -> tuple[str, float]:
        """The Table 2 row nearest to this schedule and its bubble in seconds with the measured F, B, W.

        GPipe and 1F1B → 1F1B's (PP−1)(F+B); ZBV → ZB1P's (PP−1)(F+B−2W) (ZBV is a different zero-bubble schedule,
        so it is a comparison, not a prediction); DualPipeV and DualPipe → DualPipe's (PP/2−1)(F&B+B−3W) with
        F&B = F + B (nothing overlaps on a CPU). B is a full backward: a measured B, or I + W when it was split.
        """
        f, w = self.mean_time("F"), self.mean_time("W")
        b = self.mean_time("B") if not any(c["kind"] == "I" for c in self.chunks) else self.mean_time("I") + w
        row = {"gpipe": "1f1b", "1f1b": "1f1b", "zbv": "zb1p", "dualpipev": "dualpipe", "dualpipe": "dualpipe"}
        name = row[self.schedule]
        return name, table2_bubble(name, self.pp, f, b, w, f + b)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def check_port(port: int) -> None:
    """``ValueError`` if ``port`` is not a usable port number or something on 127.0.0.1 already listens on it."""
    if not isinstance(port, int) or not 1024 <= port <= 65535:
        raise ValueError(f"port={port!r} must be an integer in 1024..65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ValueError(f"port={port} on {HOST} is already in use; pass port=None for a free one") from e
            raise


def run_pipeline(schedule: str, pp: int = 2, micro_batches: int = 4, cfg: ModelConfig | None = None,
                 micro_batch_size: int = 1, seq_len: int = 16, seed: int = 0, port: int | None = None,
                 timeout: float = 120.0) -> PipelineRun:
    """Run one training step of ``schedule`` on ``pp`` gloo processes (see the module docstring)."""
    return run_pipelines([schedule], pp, micro_batches, cfg, micro_batch_size, seq_len, seed, port,
                         timeout)[schedule]


def run_pipelines(schedules: list[str], pp: int = 2, micro_batches: int = 4, cfg: ModelConfig | None = None,
                  micro_batch_size: int = 1, seq_len: int = 16, seed: int = 0, port: int | None = None,
                  timeout: float = 120.0) -> dict[str, PipelineRun]:
    """One step of each schedule, one after the other in the same ``pp`` processes (they start only once; each
    step begins from the same seeded weights). Returns {schedule: PipelineRun}. ``timeout`` bounds the whole call."""
    cfg = cfg or pipeline_config()
    for schedule in schedules:
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule={schedule!r} is not one of {', '.join(map(repr, SCHEDULES))}")
        check_pipeline_config(cfg, pp * STAGES_PER_RANK[schedule])
        if schedule == "dualpipe":
            check_setting("dualpipe", pp, micro_batches)
        elif micro_batches < pp * STAGES_PER_RANK[schedule]:
            raise ValueError(f"micro_batches={micro_batches}: {schedule} on pp={pp} needs at least "
                             f"{pp * STAGES_PER_RANK[schedule]} (one per stage)")
    port = free_port() if port is None else port
    check_port(port)
    spec = {"schedules": list(schedules), "pp": pp, "micro_batches": micro_batches, "cfg": cfg,
            "mbs": micro_batch_size, "seq_len": seq_len, "seed": seed, "port": port, "timeout": timeout}
    with tempfile.TemporaryDirectory(prefix="dsv3-pipeline-") as out:
        pids = _spawn(spec, Path(out), timeout)
        results = [torch.load(Path(out) / f"rank{r}.pt", weights_only=False) for r in range(pp)]
    runs = {}
    for schedule in schedules:
        runs[schedule] = _merge(schedule, pp, micro_batches, [r[schedule] for r in results])
        runs[schedule].pids = pids
    return runs


def _spawn(spec: dict, out: Path, timeout: float) -> list[int]:
    """Start the ranks, wait at most ``timeout`` seconds, and stop every one of them whatever happens."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, spec, str(out)), name=f"pipeline-rank{r}", daemon=True)
             for r in range(spec["pp"])]
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        while any(p.is_alive() for p in procs):
            failed = [p for p in procs if p.exitcode not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        errors = sorted(out.glob("rank*.error"))
        if errors:
            raise RuntimeError(f"pipeline {'/'.join(spec['schedules'])} failed on {errors[0].stem}:\n"
                               f"{errors[0].read_text()}")
        if any(p.is_alive() for p in procs):
            raise TimeoutError(f"pipeline {'/'.join(spec['schedules'])} on {spec['pp']} processes did not finish in "
                               f"{timeout:.0f} s; the processes were stopped")
        bad = [(p.name, p.exitcode) for p in procs if p.exitcode != 0]
        if bad:
            raise RuntimeError(f"pipeline {'/'.join(spec['schedules'])}: processes exited abnormally: {bad}")
        return [p.pid for p in procs]
    finally:
        started = [p for p in procs if p.pid is not None]
        for p in started:
            if p.is_alive():
                p.terminate()
        for p in started:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
            p.close()


def _worker(rank: int, spec: dict, out: str) -> None:
    """One rank: join the group, build its stages, run the step, save losses, gradients and chunk times."""
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    torch.set_num_threads(1)
    # ZBV / DualPipeV's split backward writes weight gradients with transposed strides; torch warns about speed only
    warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
    try:
        dist.init_process_group("gloo", init_method=f"tcp://{HOST}:{spec['port']}", rank=rank,
                                world_size=spec["pp"], timeout=datetime.timedelta(seconds=spec["timeout"]))
        try:
            result = {name: _run_rank(rank, dict(spec, schedule=name)) for name in spec["schedules"]}
        finally:
            dist.destroy_process_group()
        torch.save(result, Path(out) / f"rank{rank}.pt")
    except BaseException:
        (Path(out) / f"rank{rank}.error").write_text(traceback.format_exc())
        raise SystemExit(1) from None


def _run_rank(rank: int, spec: dict) -> dict:
    cfg, pp, m, sched = spec["cfg"], spec["pp"], spec["micro_batches"], spec["schedule"]
    tokens, targets = make_batch(cfg, m, spec["mbs"], spec["seq_len"], spec["seed"])
    model = build_model(cfg, spec["seed"])
    dist.barrier()
    if sched == "dualpipe":
        return _run_dualpipe(rank, pp, m, model, tokens, targets)
    n_stages = pp * STAGES_PER_RANK[sched]
    stages = split_stages(model, n_stages)
    mine = [rank] if n_stages == pp else [rank, 2 * pp - 1 - rank]  # the V: stages r and 2·PP−1−r
    records: list[dict] = []
    pipe_stages = []
    for s in mine:
        ps = pp_lib.PipelineStage(stages[s], s, n_stages, torch.device("cpu"))
        _time_stage(ps, s, records)
        pipe_stages.append(ps)
    cls = getattr(pp_lib, _TORCH_SCHEDULES[sched])
    if n_stages == pp:
        schedule = cls(pipe_stages[0], n_microbatches=m, loss_fn=loss_fn)
    else:
        schedule = cls(pipe_stages, n_microbatches=m, loss_fn=loss_fn)
    losses: list[torch.Tensor] = []
    holds_first = 0 in mine
    holds_last = n_stages - 1 in mine
    args = (tokens,) if holds_first else ()
    kwargs = {"target": targets, "losses": losses} if holds_last else {}
    schedule.step(*args, **kwargs)  # warm-up: the first step also infers shapes and exchanges metadata
    model.zero_grad(set_to_none=True)
    losses.clear()
    records.clear()
    dist.barrier()  # the measured step starts together on every rank
    schedule.step(*args, **kwargs)
    grads: dict[str, torch.Tensor] = {}
    for s in mine:
        grads.update(stages[s].named_grads())
    return {"losses": [x.item() for x in losses] if holds_last else None, "grads": grads, "chunks": records,
            "rank": rank}


def _time_stage(ps, stage: int, records: list[dict]) -> None:
    """Wrap a PipelineStage's three compute methods to record when each chunk ran."""
    fwd, bwd, wgt = ps.forward_one_chunk, ps.backward_one_chunk, ps.backward_weight_one_chunk

    def forward_one_chunk(mb, *a, **k):
        t = time.perf_counter()
        out = fwd(mb, *a, **k)
        records.append({"kind": "F", "stage": stage, "micro_batch": mb, "start": t, "end": time.perf_counter()})
        return out

    def backward_one_chunk(mb, *a, full_backward=True, **k):
        t = time.perf_counter()
        out = bwd(mb, *a, full_backward=full_backward, **k)
        records.append({"kind": "B" if full_backward else "I", "stage": stage, "micro_batch": mb, "start": t,
                        "end": time.perf_counter()})
        return out

    def backward_weight_one_chunk(mb, *a, **k):
        t = time.perf_counter()
        out = wgt(mb, *a, **k)
        records.append({"kind": "W", "stage": stage, "micro_batch": mb, "start": t, "end": time.perf_counter()})
        return out

    ps.forward_one_chunk = forward_one_chunk
    ps.backward_one_chunk = backward_one_chunk
    ps.backward_weight_one_chunk = backward_weight_one_chunk


def _run_dualpipe(rank: int, pp: int, m: int, model, tokens: torch.Tensor, targets: torch.Tensor) -> dict:
    """DeepSeek's DualPipe: the first half of the micro-batches enter at rank 0, the second half at the last rank
    (labels travel to the rank that computes that direction's loss, as in the package's example)."""
    stages = split_stages(model, pp)
    pipe = CPUDualPipe((stages[rank], stages[pp - 1 - rank]))
    dualpipe.set_p2p_tensor_shapes([(tokens.shape[0] // m, tokens.shape[1], model.cfg.hidden_size)])
    dualpipe.set_p2p_tensor_dtype(torch.float32)
    records = record_chunks(pipe)
    half_x, half_y = tokens.chunk(2), targets.chunk(2)

    def criterion(logits, y):
        return loss_fn(logits, y) / m  # the mean over all micro-batches

    for _ in range(2):  # a warm-up step, as for PyTorch's schedules, then the measured one
        model.zero_grad(set_to_none=True)
        records.clear()
        dist.barrier()
        if rank == 0:
            loss, _ = pipe.step(half_x[0], num_chunks=m, criterion=criterion, labels=(half_y[1],))
        elif rank == pp - 1:
            loss, _ = pipe.step(half_x[1], num_chunks=m, criterion=criterion, labels=(half_y[0],))
        else:
            loss, _ = pipe.step(num_chunks=m)
    grads: dict[str, torch.Tensor] = {}
    for s in {rank, pp - 1 - rank}:
        grads.update(stages[s].named_grads())  # rank r and PP−1−r hold copies; the parent sums them
    for r in records:
        r["stage"] = rank if r["direction"] == 0 else pp - 1 - rank
    losses = None if loss is None else [float(x) * m for x in loss]
    return {"losses": losses, "grads": grads, "chunks": records, "rank": rank}


def _merge(sched: str, pp: int, m: int, results: list[dict]) -> PipelineRun:
    if sched == "dualpipe":  # rank PP−1 holds direction 0's losses (first half), rank 0 direction 1's
        losses = results[pp - 1]["losses"] + results[0]["losses"]
    else:
        losses = next(r["losses"] for r in results if r["losses"] is not None)
    grads: dict[str, torch.Tensor] = {}
    for r in results:
        for n, g in r["grads"].items():
            grads[n] = grads[n] + g if n in grads else g
    chunks = [dict(c, rank=r["rank"]) for r in results for c in r["chunks"]]
    t0 = min(c["start"] for c in chunks)
    for c in chunks:
        c["start"] -= t0
        c["end"] -= t0
    chunks.sort(key=lambda c: (c["start"], c["rank"]))
    seconds = max(c["end"] for c in chunks)
    return PipelineRun(sched, pp, m, losses, grads, chunks, seconds)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="One pipelined training step of the mini model on gloo processes.")
    ap.add_argument("--schedule", choices=SCHEDULES, default="1f1b")
    ap.add_argument("--pp", type=int, default=2)
    ap.add_argument("--micro-batches", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args(argv)
    run = run_pipeline(a.schedule, a.pp, a.micro_batches, timeout=a.timeout)
    print(f"{a.schedule} on {a.pp} processes: losses {[round(x, 4) for x in run.losses]}, "
          f"step {run.seconds * 1000:.0f} ms, bubble {run.bubble_fraction():.0%}")


if __name__ == "__main__":
    main()
