"""Time to quality: ``make train``'s run with today's trainer and with the trainer of issue 15's start.

The quality is the shipped run's: its validation loss at its last step (``checkpoints/mini/metrics.jsonl``), to the
three decimals the course prints (0.330). Both trainers run the shipped command exactly (``summary.json``'s
``command``: "mini", 900 steps of 12 × 256, seed 0, validation every 100 steps, 2 threads), one after the other in
fresh processes on the same machine; the old one is the package ``dsv3_mini`` of commit ``START`` (the last commit
before the speed work, whose numbers the issue quotes: a training step 1.07× transformers', MFU 28.6%), taken from
git history with ``git archive``. A run's time to quality is the wall clock of its training loop up to the first
validation that reaches the quality (from its metrics: step × tokens per step / the tokens per second logged at that
step, which count the validations before it), and the process's whole wall clock is reported beside it (start-up,
the last export included).

The goal (issue 15) is ≤ ½ of the old trainer's time. Both runs compute the same training (the recipe is unchanged;
only the code got faster), so this is the trainer's speed-up measured end to end, not a different recipe.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from .common import ROOT, Skipped, row

START = "02f0916"  # the last commit before issue 15's work (2026-11-23, "Benchmarks: one matmul-peak helper ...")
SHIPPED = ROOT / "checkpoints" / "mini"
GOAL = 0.5
QUICK_ARGS = ["--preset", "tiny", "--steps", "4", "--batch-size", "2", "--seq-len", "32", "--eval-every", "2",
              "--log-every", "2", "--threads", "1"]


def shipped_command() -> list[str]:
    """The trainer's arguments of the shipped run, without ``--out``."""
    args = shlex.split(json.loads((SHIPPED / "summary.json").read_text())["command"])[3:]  # after "python -m x"
    i = args.index("--out")
    return args[:i] + args[i + 2:]


def shipped_quality() -> float:
    """The shipped run's validation loss at its last step, rounded to the course's three decimals."""
    records = [json.loads(line) for line in (SHIPPED / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return round([r for r in records if r["split"] == "val"][-1]["loss"], 3)


def old_tree(into: Path) -> Path:
    """``dsv3_mini`` as it was at ``START``, unpacked under ``into``."""
    proc = subprocess.run(["git", "archive", "--format=tar", START, "dsv3_mini"], cwd=ROOT, capture_output=True,
                          timeout=60)
    if proc.returncode:
        raise Skipped(f"commit {START} is not in this checkout's git history (a shallow clone?): "
                      f"{proc.stderr.decode().strip()[:120]}")
    with tarfile.open(fileobj=BytesIO(proc.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def train_run(tree: Path, args: list[str], out: Path, timeout: float) -> dict:
    """Run ``python -m dsv3_mini.train`` from ``tree`` (its package is the one imported); metrics and wall clock."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dsv3_mini.train", *args, "--out", str(out), "--no-progress"],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(f"the trainer in {tree} failed: {proc.stderr[-2000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"wall_s": wall, "records": records}


def curve(records: list[dict], tokens_per_step: int) -> list[dict]:
    """(step, validation loss, seconds of the training loop until then) at every validation."""
    rate = {r["step"]: r["tokens_per_s"] for r in records if r["split"] == "train"}
    return [{"step": r["step"], "val_loss": r["loss"], "seconds": r["step"] * tokens_per_step / rate[r["step"]]}
            for r in records if r["split"] == "val"]


def reached(points: list[dict], quality: float) -> dict | None:
    """The first validation whose loss, to three decimals, is at most ``quality``."""
    return next((p for p in points if round(p["val_loss"], 3) <= quality), None)


def run(quick: bool = False) -> dict:
    args = QUICK_ARGS if quick else shipped_command()
    tokens_per_step = int(args[args.index("--batch-size") + 1]) * int(args[args.index("--seq-len") + 1])
    timeout = 300 if quick else 3600
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trees = {"then": old_tree(tmp / "then"), "now": ROOT}
        runs = {k: train_run(tree, args, tmp / f"out_{k}", timeout) for k, tree in trees.items()}
    points = {k: curve(r["records"], tokens_per_step) for k, r in runs.items()}
    quality = points["then"][-1]["val_loss"] if quick else shipped_quality()  # tiny: the old run's own end
    quality = round(quality, 3)
    hit = {k: reached(p, quality) for k, p in points.items()}
    ratio = hit["now"]["seconds"] / hit["then"]["seconds"] if hit["now"] and hit["then"] else None
    finals = {k: p[-1]["val_loss"] for k, p in points.items()}

    def fmt(k: str) -> str:
        h = hit[k]
        return (f"{h['seconds']:.0f} s (step {h['step']})" if h else
                f"not reached in {points[k][-1]['step']} steps (val {finals[k]:.4f})")

    rows = [row(f"Time to quality: make train's run to the shipped validation loss ({quality:.3f})",
                f"today's trainer {fmt('now')}", f"trainer at {START} (issue 15's start) {fmt('then')}",
                f"≤ {GOAL:g}× the start's", ratio is not None and ratio <= GOAL,
                (f"{ratio:.2f}× the start's time; " if ratio is not None else "") +
                f"whole processes {runs['now']['wall_s']:.0f} s vs {runs['then']['wall_s']:.0f} s; the same recipe "
                f"(same losses: final val {finals['now']:.4f} vs {finals['then']:.4f}), only the code differs; "
                "run one after the other")]
    return {"rows": rows, "data": {"command": args, "start_commit": START, "quality": quality, "curves": points,
                                   "reached": hit, "ratio": ratio,
                                   "process_wall_s": {k: r["wall_s"] for k, r in runs.items()}}}
