import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dsv3_mini import DeepSeekV3, preset, seed_everything
from dsv3_mini.checkpoint import load_model, read_checkpoint
from dsv3_mini.config import BALANCE_POLICIES
from dsv3_mini.data import builtin_dataset
from dsv3_mini.train import TrainConfig, evaluate, learning_rate, make_optimizer, train, train_step

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"preset": "tiny", "batch_size": 4, "seq_len": 64, "eval_every": 8, "eval_batches": 2, "log_every": 4,
         "save_every": 8, "train_bytes": 100_000}


@pytest.fixture(scope="module")
def dataset():
    return builtin_dataset(train_bytes=100_000, seed=0)


def test_training_lowers_the_loss_and_logs_metrics(tmp_path, dataset):
    result = train(TrainConfig(**SMALL, steps=40, out=str(tmp_path)), progress=False, dataset=dataset)
    train_rows = [r for r in result.history if r["split"] == "train"]
    val_rows = [r for r in result.history if r["split"] == "val"]
    assert train_rows[-1]["loss"] < train_rows[0]["loss"] - 0.5
    assert val_rows[-1]["loss"] < val_rows[0]["loss"]
    assert len(train_rows[-1]["max_vio"]) == 3 and train_rows[-1]["tokens_per_s"] > 0
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == result.history
    assert not list(tmp_path.glob("*.tmp")), "no temporary file is left behind"


def test_resume_continues_exactly(tmp_path, dataset):
    a, b = tmp_path / "a", tmp_path / "b"
    common = {**SMALL, "decay_steps": 24}
    train(TrainConfig(**common, steps=16, out=str(a)), progress=False, dataset=dataset)
    resumed = train(TrainConfig(**common, steps=24, out=str(a)), resume=True, progress=False, dataset=dataset)
    straight = train(TrainConfig(**common, steps=24, out=str(b)), progress=False, dataset=dataset)

    def losses(history):
        return [(r["step"], r["split"], r["loss"]) for r in history]

    assert losses(resumed.history) == losses(straight.history)
    for (k, v), (_, w) in zip(resumed.model.state_dict().items(), straight.model.state_dict().items(), strict=True):
        assert torch.equal(v, w), k


def test_train_step_is_the_loops_body(dataset):
    """train() is train_step on the batches of the run's generator: the same weights and logged numbers, bit for bit."""
    tc = TrainConfig(**SMALL, steps=6)
    result = train(tc, progress=False, dataset=dataset)
    seed_everything(tc.seed, tc.threads)
    model = DeepSeekV3(tc.model_config()).train()
    opt, generator = make_optimizer(model, tc), torch.Generator().manual_seed(tc.seed)
    for step in range(1, tc.steps + 1):
        tokens, targets, _ = dataset.get_batch("train", tc.batch_size, tc.seq_len, generator)
        s = train_step(model, opt, tokens, targets, tc, step)
    last = [r for r in result.history if r["split"] == "train"][-1]
    assert (last["loss"], last["lr"], last["grad_norm"], last["max_vio"]) == (
        s.output.main_loss.item(), s.lr, s.grad_norm, s.max_vio)
    for k, v in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_checkpoint_is_safetensors_with_json_and_loads_without_pickle(tmp_path, dataset):
    result = train(TrainConfig(**SMALL, steps=8, out=str(tmp_path)), progress=False, dataset=dataset)
    meta, tensors = read_checkpoint(tmp_path / "checkpoint.safetensors")
    assert meta["step"] == 8 and meta["model_config"]["name"] == "tiny"
    assert json.loads((tmp_path / "checkpoint.json").read_text()) == meta
    assert any(k.startswith("optim.exp_avg.") for k in tensors) and "rng.data" in tensors
    model = load_model(tmp_path / "checkpoint.safetensors")
    for k, v in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_a_broken_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "checkpoint.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(Exception, match="(?i)not a dsv3_mini file|header|safetensor|invalid|deserializ"):
        read_checkpoint(bad)
    with pytest.raises(ValueError, match="no checkpoint"):
        read_checkpoint(tmp_path / "missing.safetensors")


def test_schedule_warms_up_then_decays():
    tc = TrainConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-4)
    assert learning_rate(5, tc) == pytest.approx(5e-4)
    assert learning_rate(10, tc) == pytest.approx(1e-3)
    assert learning_rate(100, tc) == pytest.approx(1e-4)
    assert learning_rate(55, tc) == pytest.approx(5.5e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"preset": "deepseek-v3"}, "calculators only"), ({"balance": "aux"}, "balance='aux'"),
     ({"steps": 0}, "steps=0"), ({"mtp_depth": -1}, "--mtp-depth -1"), ({"lr": -1.0}, "lr=-1.0")],
)
def test_bad_train_config_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "dsv3_mini.train", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, **kw)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--balance", "aux"], f"--balance: invalid choice: 'aux' (choose from {', '.join(map(repr, BALANCE_POLICIES))})"),
     (["--steps", "x"], "--steps: invalid int value: 'x'"),
     (["--mtp-depth", "-2"], "--mtp-depth -2 must be 0"),
     (["--data", "/no/such/file.txt"], "--data '/no/such/file.txt' is not a readable file"),
     (["--resume", "--out", "/tmp/dsv3-no-such-run"], "--resume needs a checkpoint")],
)
def test_cli_bad_flags_give_one_line_errors(args, message):
    proc = _cli(*args)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {proc.stderr.strip()[7:]}"]
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_cli_interrupt_keeps_a_usable_checkpoint(tmp_path):
    args = ["--preset", "tiny", "--steps", "100000", "--batch-size", "2", "--seq-len", "32", "--log-every", "1",
            "--train-bytes", "50000", "--out", str(tmp_path), "--no-progress", "--save-every", "100000"]
    proc = subprocess.Popen([sys.executable, "-m", "dsv3_mini.train", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Interrupted after step" in err and "Traceback" not in err
    meta, _ = read_checkpoint(tmp_path / "checkpoint.safetensors")
    assert 3 <= meta["step"] < 100000
    load_model(tmp_path / "checkpoint.safetensors")
    resumed = _cli("--resume", "--out", str(tmp_path), "--steps", str(meta["step"] + 2), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr


def test_evaluate_reports_mtp_and_global_max_violation(dataset):
    out = evaluate(DeepSeekV3(preset("tiny")), dataset, batch_size=4, seq_len=64, max_batches=2)
    assert out["loss"] > 0 and len(out["mtp_losses"]) == 1 and len(out["max_vio_global"]) == 2


def test_train_restores_the_thread_count():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        tc = TrainConfig(preset="tiny", steps=2, batch_size=2, seq_len=16, eval_every=2, eval_batches=1, threads=1)
        train(tc, progress=False, dataset=builtin_dataset(train_bytes=20_000, val_bytes=4_000, seed=0))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
