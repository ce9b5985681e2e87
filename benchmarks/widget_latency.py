"""Redraw latency of the course widgets: p50/p95 milliseconds per control change.

Each measurement sets one control (cycling through its listed values) and times the whole redraw: the dsv3_mini
computation plus the in-place update of the FigureWidget. The balancing widget caches each policy's run, so it is
measured with a new value every time (a real recompute: γ reruns loss-free, α aux-loss, skew all three policies)
and again cycling through two values (cache hits). The table row of a widget pools all its controls (for the
balancing widget, the real recomputes only).

    .venv/bin/python -m benchmarks.widget_latency [--repeats 10]    # prints the JSON of one run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import widgets

from .common import percentile, row

CONTROLS = {
    "RouterLoadWidget": [("bias_strength", (0.05, 0.1)), ("token", (3, 4)), ("skew", (1.0, 2.0)),
                         ("experts", (32, 16))],
    "BiasBalancingWidget": [("gamma", (3e-3, 1e-3)), ("alpha", (0.1, 0.01)), ("skew", (1.0, 2.0))],
    "KVCacheWidget": [("context", (65536, 32768)), ("kv_heads", (16, 8)), ("dtype", ("fp8", "bf16"))],
    "FP8TileWidget": [("outlier_size", (100.0, 1e4)), ("outlier_count", (4, 2)), ("granularity", ("tile", "tensor"))],
    "DeploymentWidget": [("context", (65536, 32768)), ("batch", (8, 1)), ("weights", ("bf16", "fp8"))],
    "PipelineScheduleWidget": [("micro_batches", (40, 32)), ("pp", (16, 8)), ("schedule", ("zb1p", "1f1b", "dualpipe")),
                               ("w", (0.5, 1.0))],
}
GOALS_MS = {"PipelineScheduleWidget": 100,  # p95 goals from the issues (issue 17: the pipeline widget)
            "BiasBalancingWidget": 100}  # issue 15: real recomputes only
NEW_VALUES = {  # a fresh value per measurement: no cache hit
    "gamma": [float(g) for g in np.geomspace(1.1e-4, 9e-2, 64)],
    "alpha": [float(a) for a in np.geomspace(1.1e-4, 0.9, 64)],
    "skew": [float(s) for s in np.linspace(0.05, 3.95, 64)],
}
CACHED = "BiasBalancingWidget"


def measure(widget, control: str, values, repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` redraws, each setting ``control`` to the next of ``values``."""
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        getattr(widget, control).value = values[i % len(values)]
        times.append(1000 * (time.perf_counter() - t))
        if widget.message.value:
            raise RuntimeError(f"{type(widget).__name__}.{control}: {widget.message.value}")
    return times


def stats(times: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(percentile(times, 0.95), 2), "n": len(times)}


def measure_all(repeats: int, names: list[str] | None = None) -> dict:
    out = {}
    for name in names or list(CONTROLS):
        t = time.perf_counter()
        w = getattr(widgets, name)()
        entry: dict = {"construct_ms": round(1000 * (time.perf_counter() - t), 1), "controls": {}}
        pooled = []
        for control, values in CONTROLS[name]:
            measure(w, control, values, 2)  # warm-up
            if name == CACHED:
                fresh = measure(w, control, NEW_VALUES[control], repeats)
                entry["controls"][f"{control} (new value)"] = stats(fresh)
                entry["controls"][f"{control} (cached)"] = stats(measure(w, control, values, repeats))
                pooled += fresh
            else:
                times = measure(w, control, values, repeats)
                entry["controls"][control] = stats(times)
                pooled += times
        entry["all"] = stats(pooled)
        out[name] = entry
    return out


def run(quick: bool = False) -> dict:
    repeats = 2 if quick else 10
    data = measure_all(repeats, ["KVCacheWidget"] if quick else None)
    rows = []
    for name, entry in data.items():
        p50, p95 = entry["all"]["p50_ms"], entry["all"]["p95_ms"]
        feel = "under 0.1 s: feels instant" if p95 < 100 else "under 1 s: keeps the flow" if p95 < 1000 else "over 1 s"
        what = "real recomputes" if name == CACHED else "all controls"
        goal = GOALS_MS.get(name)
        rows.append(row(f"Widget redraw {name}, p50 / p95", f"{p50:,.0f} / {p95:,.0f} ms", "—",
                        f"p95 < {goal} ms" if goal else "—", None if goal is None else p95 < goal,
                        f"{what}, {entry['all']['n']} changes; p95 {feel}"))
    return {"rows": rows, "data": {"repeats": repeats, "widgets": data}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    print(json.dumps(measure_all(args.repeats), indent=2))


if __name__ == "__main__":
    main()
