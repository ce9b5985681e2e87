"""Redraw latency of the course widgets: p50/p95 milliseconds per control change, printed as JSON.

Each measurement sets one control (cycling through its listed values) and times the whole redraw: the dsv3_mini
computation plus the in-place update of the FigureWidget. The balancing widget caches each policy's run, so it is
measured with a new value every time (a real recompute: γ reruns loss-free, α aux-loss, skew all three policies)
and again cycling through two values (cache hits).

    .venv/bin/python benchmarks/widget_latency.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from widgets import BiasBalancingWidget, FP8TileWidget, KVCacheWidget, RouterLoadWidget

CASES = {
    "RouterLoadWidget": (RouterLoadWidget, [("bias_strength", (0.05, 0.1)), ("token", (3, 4)), ("skew", (1.0, 2.0)),
                                            ("experts", (32, 16))]),
    "BiasBalancingWidget": (BiasBalancingWidget, [("gamma", (3e-3, 1e-3)), ("alpha", (0.1, 0.01)),
                                                  ("skew", (1.0, 2.0))]),
    "KVCacheWidget": (KVCacheWidget, [("context", (65536, 32768)), ("kv_heads", (16, 8)), ("dtype", ("fp8", "bf16"))]),
    "FP8TileWidget": (FP8TileWidget, [("outlier_size", (100.0, 1e4)), ("outlier_count", (4, 2)),
                                      ("granularity", ("tile", "tensor"))]),
}
NEW_VALUES = {  # a fresh value per measurement: no cache hit
    "gamma": [float(g) for g in np.geomspace(1.1e-4, 9e-2, 64)],
    "alpha": [float(a) for a in np.geomspace(1.1e-4, 0.9, 64)],
    "skew": [float(s) for s in np.linspace(0.05, 3.95, 64)],
}


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def measure(widget, control: str, values, repeats: int) -> dict[str, float]:
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        getattr(widget, control).value = values[i % len(values)]
        times.append(1000 * (time.perf_counter() - t))
        assert widget.message.value == "", widget.message.value
    return {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(percentile(times, 0.95), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, (cls, controls) in CASES.items():
        t = time.perf_counter()
        w = cls()
        out[name] = {"construct": {"ms": round(1000 * (time.perf_counter() - t), 1)}}
        for control, values in controls:
            measure(w, control, values, 2)  # warm-up
            if cls is BiasBalancingWidget:
                out[name][f"{control} (new value)"] = measure(w, control, NEW_VALUES[control], args.repeats)
                out[name][f"{control} (cached)"] = measure(w, control, values, args.repeats)
            else:
                out[name][control] = measure(w, control, values, args.repeats)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
