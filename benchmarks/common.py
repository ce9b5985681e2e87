"""Shared helpers of the benchmarks: interleaved timing, statistics, the matmul peak, machine facts, result rows.

Every benchmark module has ``run(quick: bool) -> dict`` returning ``{"rows": [...], "data": {...}}``: the rows go
into the Markdown table (``row(...)``), ``data`` holds every raw number (medians, spreads, per-repetition times).
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2  # this course's machine: 2 cores; every benchmark runs torch with this many threads


class Skipped(Exception):
    """The benchmark cannot run here; its message is the reason shown in the table."""


def row(item: str, ours: str, baseline: str, goal: str, met: bool | None, note: str = "") -> dict[str, Any]:
    """One line of the results table. ``met`` is None where the item has no goal (a measurement only)."""
    return {"item": item, "ours": ours, "baseline": baseline, "goal": goal, "met": met, "note": note}


def summary(xs: list[float]) -> dict[str, float]:
    """Median and spread of repeated measurements: min, max and the interquartile range."""
    xs = sorted(xs)
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return {"median": statistics.median(xs), "min": xs[0], "max": xs[-1], "q1": q[0], "q3": q[2], "n": len(xs)}


def percentile(xs: list[float], q: float) -> float:
    """The q-quantile (0..1) of xs, nearest rank."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` takes."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleave(fns: dict[str, Callable[[], Any]], reps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time each function ``reps`` times, alternating between them (A B C A B C ...), after ``warmup`` untimed rounds.

    Alternating puts every contestant under the same machine conditions: a background job slows all of them, not
    one. Returns seconds per call, per function, in repetition order (so ratios can be paired per repetition).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return times


def paired_ratio(slow: list[float], fast: list[float]) -> dict[str, float]:
    """Speed-up of ``fast`` over ``slow`` per repetition (slow_i / fast_i), summarised."""
    return summary([s / f for s, f in zip(slow, fast, strict=True)])


def matmul_flops(n: int, dtype: torch.dtype, m: int | None = None, k: int | None = None, reps: int = 3,
                 budget: float = 2e9) -> float:
    """FLOP/s of ``torch.matmul`` for (m, k) @ (k, n) in ``dtype`` (square n × n by default); best of ``reps``.

    2·m·k·n FLOPs per product, about ``budget`` FLOPs per timing (small shapes are timed over many calls). The best
    of a few timings is the machine's ceiling for that shape.
    """
    m, k = m or n, k or n
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    inner = max(1, int(budget // (2 * m * k * n)))
    torch.matmul(a, b)
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            torch.matmul(a, b)
        best = max(best, inner * 2 * m * k * n / (time.perf_counter() - t))
    return best


PEAK_SQUARE = {False: 1024, True: 256}  # side of the square product of the matmul peak: full run, quick run


def matmul_peak(hidden: int, width: int, tokens: int, dtype: torch.dtype, quick: bool) -> dict[str, float]:
    """The matmul ceiling that MFU is measured against, in FLOP/s: a square product and the model's own shape,
    (tokens × hidden) @ (hidden × width) with ``width`` the dense FFN's. The caller takes the higher of the two."""
    budget = 1e8 if quick else 2e9
    return {"square": matmul_flops(PEAK_SQUARE[quick], dtype, budget=budget),
            "model": matmul_flops(width, dtype, m=tokens, k=hidden, budget=budget)}


def fmt_spread(s: dict[str, float], scale: float = 1.0, digits: int = 0) -> str:
    """'median (min–max)' of a summary, values multiplied by ``scale``."""
    f = f"{{:,.{digits}f}}"
    return f"{f.format(s['median'] * scale)} ({f.format(s['min'] * scale)}–{f.format(s['max'] * scale)})"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine since boot, CPU seconds of this process and its finished children).

    Their increments over a run tell how much of the CPU *other* jobs took meanwhile (``other_jobs_share``).
    """
    busy = 0.0
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    except (OSError, ValueError, IndexError):
        pass
    own = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    return busy, own


def other_jobs_share(start: tuple[float, float], wall: float) -> float | None:
    """Fraction of the machine's CPU capacity that other processes used since ``start`` (``cpu_seconds()``)."""
    busy, own = cpu_seconds()
    if not start[0] or wall <= 0:
        return None
    return max(0.0, (busy - start[0]) - (own - start[1])) / (wall * (os.cpu_count() or 1))


def machine() -> dict[str, Any]:
    """What the numbers were taken on."""
    try:
        import transformers

        tf_version = transformers.__version__
    except ImportError:
        tf_version = None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": THREADS, "torch": torch.__version__,
            "transformers": tf_version, "python": platform.python_version(), "platform": platform.platform(),
            "load_average_1min_at_start": load}


def print_ms_table(rows: list[tuple[str, dict[str, float]]], keys: list[str], digits: int) -> None:
    """A profile's Markdown table on stdout: one row per (name, {key: ms}), ``ops`` as a whole number."""
    print("| ms per step | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, r in rows:
        print(f"| {name} | " + " | ".join(f"{r.get(k, 0.0):.{0 if k == 'ops' else digits}f}" for k in keys) + " |")
