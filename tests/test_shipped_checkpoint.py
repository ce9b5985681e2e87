"""The shipped result of the mini run (checkpoints/mini/): small, complete, and its recorded numbers reproduce.

The run itself is `make train` (about 12 minutes on 2 cores), not a test; these checks take seconds.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import pytest
import torch

from dsv3_mini import DeepSeekV3, seed_everything
from dsv3_mini.analysis import domain_expert_mutual_information, routing_by_domain
from dsv3_mini.checkpoint import load_model
from dsv3_mini.data import builtin_dataset
from dsv3_mini.train import evaluate

RUN = Path(__file__).resolve().parents[1] / "checkpoints" / "mini"
MAX_BYTES = 20 * 2**20


@pytest.fixture(scope="module")
def summary() -> dict:
    return json.loads((RUN / "summary.json").read_text())


@pytest.fixture(scope="module")
def model() -> DeepSeekV3:
    return load_model(RUN / "model.safetensors")


def test_shipped_files_are_there_and_small():
    for name in ("model.safetensors", "metrics.jsonl", "summary.json", "README.md"):
        assert (RUN / name).is_file(), f"checkpoints/mini/{name} is missing: run `make train` and commit its output"
    size = (RUN / "model.safetensors").stat().st_size
    assert size <= MAX_BYTES, f"model.safetensors is {size:,} bytes, over the {MAX_BYTES:,} the repository allows"


def test_made_by_the_projects_own_command(summary):
    makefile = (RUN.parents[1] / "Makefile").read_text()
    mini_run = next(line.split(":=", 1)[1].split() for line in makefile.splitlines() if line.startswith("MINI_RUN"))
    command = shlex.split(summary["command"])
    assert command[:3] == ["python", "-m", "dsv3_mini.train"]
    assert command[3:] == [*mini_run, "--out", "checkpoints/mini"], "the shipped run is not what `make train` runs"
    readme = (RUN / "README.md").read_text()
    assert summary["command"] in readme, "the README beside the checkpoint must show the exact command"


def test_recomputed_validation_loss_matches_the_recorded_one(model, summary):
    assert summary["dataset"] == "builtin(seed=0)"
    ev = summary["eval"]
    val = evaluate(model, builtin_dataset(seed=0), ev["batch_size"], ev["seq_len"], ev["batches"])
    assert val["loss"] == pytest.approx(summary["val_loss"], rel=1e-4, abs=1e-5)
    assert val["mtp_losses"] == pytest.approx(summary["val_mtp_losses"], rel=1e-4, abs=1e-5)


def test_far_below_the_unigram_baseline_and_balanced(summary):
    assert summary["unigram_baseline"] == pytest.approx(builtin_dataset(seed=0).unigram_baseline(), rel=1e-9)
    assert summary["val_loss"] < summary["unigram_baseline"] / 4
    assert max(summary["max_vio_global"]) < 0.3, "the loss-free bias should keep every MoE layer near balance"


def test_metrics_record_the_whole_curve(summary):
    rows = [json.loads(line) for line in (RUN / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    steps = [r["step"] for r in train]
    assert steps == sorted(set(steps)) and steps[-1] == summary["step"]
    assert [r["step"] for r in val][-1] == summary["step"]
    assert all(math.isfinite(r["loss"]) for r in train)
    assert train[0]["loss"] > 5 * val[-1]["loss"], "the loss should fall a long way over the run"
    assert val[0]["loss"] > val[-1]["loss"]


def test_routing_specialises_by_domain(model):
    data = builtin_dataset(seed=0)
    trained = domain_expert_mutual_information(routing_by_domain(model, data, max_batches=4))
    seed_everything(0)
    untrained = domain_expert_mutual_information(routing_by_domain(DeepSeekV3(model.cfg), data, max_batches=4))
    assert torch.all(trained > untrained), (trained, untrained)
    assert trained.mean() > 2 * untrained.mean(), (trained, untrained)
