"""Where the lessons find the shipped run: ``checkpoints/mini/`` of this repository (written by ``make train``).

``DSV3_MINI_RUN`` overrides it, for a course installed from a wheel (which holds code, not checkpoints).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHIPPED_RUN = Path(os.environ.get("DSV3_MINI_RUN", REPO / "checkpoints" / "mini"))
BENCH_RESULTS = Path(os.environ.get("DSV3_MINI_BENCH", REPO / "benchmarks" / "results" / "bench.json"))
POST_TRAINING_RESULTS = REPO / "checkpoints" / "grpo" / "results.json"  # benchmarks/repro_grpo.py writes it
