"""GRPO (V3 report §5.2.2, DeepSeekMath eq. 3): group-relative advantages, the clipped objective with the KL estimator
to a frozen reference, the control, the loop on the shipped SFT model, the command line; and the MTP re-tune."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import pytest
import torch

import dsv3_mini.grpo as grpo_module
from dsv3_mini import DeepSeekV3, preset
from dsv3_mini.addition_task import PROMPT_LEN, split_pairs
from dsv3_mini.checkpoint import load_model
from dsv3_mini.grpo import (
    GRPOConfig,
    frozen_copy,
    group_advantages,
    grpo,
    grpo_loss,
    grpo_step,
    kl_estimate,
    main,
    sample_groups,
    token_logprobs,
)
from dsv3_mini.mtp_retune import mtp_acceptance, retune_mtp

ROOT = Path(__file__).resolve().parents[1]
SFT = ROOT / "checkpoints" / "sft" / "model.safetensors"
log = math.log


def test_advantages_match_hand_worked_values():
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    # group 1: mean 0.25, unbiased std sqrt((0.75² + 3·0.25²)/3) = 0.5; group 2: mean 0.5, std sqrt(4·0.25/3)
    expected = torch.tensor([[1.5, -0.5, -0.5, -0.5], [0.5, 0.5, -0.5, -0.5]])
    expected[1] /= math.sqrt(1 / 3)
    assert torch.allclose(group_advantages(r), expected)
    assert torch.allclose(group_advantages(r, normalize=False), torch.tensor([[0.75, -0.25, -0.25, -0.25],
                                                                              [0.5, 0.5, -0.5, -0.5]]))


def test_all_equal_rewards_give_zero_advantages():
    assert torch.equal(group_advantages(torch.ones(2, 8)), torch.zeros(2, 8))
    assert torch.equal(group_advantages(torch.zeros(1, 4), normalize=False), torch.zeros(1, 4))


def test_loss_matches_hand_worked_values():
    logp = torch.tensor([[log(0.5), log(0.25)]])
    old = torch.tensor([[log(0.4), log(0.25)]])  # ρ = 1.25 (beyond 1 + ε), then 1
    ref = torch.tensor([[log(0.5), log(0.5)]])  # D_KL: 1 − 0 − 1 = 0, then 2 − ln 2 − 1
    mask = torch.ones(1, 2, dtype=torch.bool)
    kl2 = 2 - log(2) - 1
    loss, stats = grpo_loss(logp, old, ref, torch.tensor([1.0]), mask, clip_eps=0.2, beta=0.04)
    assert loss.item() == pytest.approx(-((1.2 - 0) + (1.0 - 0.04 * kl2)) / 2)  # A > 0: ρ clipped to 1.2
    assert stats["kl"] == pytest.approx(kl2 / 2) and stats["clip_fraction"] == pytest.approx(0.5)
    loss, _ = grpo_loss(logp, old, ref, torch.tensor([-1.0]), mask, clip_eps=0.2, beta=0.04)
    assert loss.item() == pytest.approx(-((-1.25) + (-1.0 - 0.04 * kl2)) / 2)  # A < 0: min keeps ρ·A = −1.25


def test_loss_averages_tokens_of_each_output_then_outputs():
    logp = torch.zeros(2, 3)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    loss, _ = grpo_loss(logp, logp, logp, torch.tensor([2.0, -1.0]), mask, beta=0.0)
    assert loss.item() == pytest.approx(-(2.0 + -1.0) / 2)  # each output's mean is its A; not (3·2 − 1)/4


def test_kl_estimator_is_zero_at_the_reference_and_positive_elsewhere():
    logp = torch.log(torch.tensor([0.1, 0.5, 0.9]))
    assert torch.equal(kl_estimate(logp, logp), torch.zeros(3))
    ref = torch.log(torch.tensor([0.9, 0.4, 0.1]))
    assert (kl_estimate(logp, ref) > 0).all()
    assert kl_estimate(logp, ref)[1].item() == pytest.approx(0.8 - log(0.8) - 1)


def _tiny_batch():
    model = DeepSeekV3(preset("tiny")).eval()
    pairs = split_pairs()[0][:3]
    tokens = sample_groups(model, pairs, 4, 1.0, torch.Generator().manual_seed(0))
    return model, tokens


def test_clipped_tokens_give_no_gradient():
    model, tokens = _tiny_batch()
    model.train()
    logp = token_logprobs(model, tokens)
    old = logp.detach() - 1.0  # ρ = e ≈ 2.7 everywhere, far beyond 1 + ε
    loss, _ = grpo_loss(logp, old, logp.detach(), torch.ones(len(tokens)), torch.ones_like(logp, dtype=torch.bool))
    loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_equal_rewards_give_zero_policy_gradient():
    model, tokens = _tiny_batch()
    model.train()
    logp = token_logprobs(model, tokens)
    adv = group_advantages(torch.ones(3, 4)).flatten()
    loss, _ = grpo_loss(logp, logp.detach(), logp.detach(), adv, torch.ones_like(logp, dtype=torch.bool), beta=0.04)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(not g.any() for g in grads)


def test_reference_model_gets_no_gradient_and_kl_is_zero_when_policy_is_reference():
    model, tokens = _tiny_batch()
    ref = frozen_copy(model)
    assert not any(p.requires_grad for p in ref.parameters())
    with torch.no_grad():
        ref_logp = token_logprobs(ref, tokens)
    model.train()
    logp = token_logprobs(model, tokens)
    assert torch.equal(logp.detach(), ref_logp)
    loss, stats = grpo_loss(logp, logp.detach(), ref_logp, torch.randn(len(tokens)),
                            torch.ones_like(logp, dtype=torch.bool), beta=1.0)
    assert stats["kl"] == 0.0
    loss.backward()
    assert all(p.grad is None for p in ref.parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.parameters())


def test_logprobs_score_the_completion_tokens():
    model, tokens = _tiny_batch()
    with torch.no_grad():
        lp = token_logprobs(model, tokens)
        full = model(tokens).logits.log_softmax(-1)
    assert lp.shape == (12, tokens.shape[1] - PROMPT_LEN)
    assert torch.allclose(lp[:, 0], full[torch.arange(12), PROMPT_LEN - 1, tokens[:, PROMPT_LEN]])


def test_a_batch_without_signal_changes_nothing():
    model, _ = _tiny_batch()  # a random model answers nothing right: every group's rewards are all 0
    before = [p.clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    record = grpo_step(model, frozen_copy(model), opt, split_pairs()[0][:4], GRPOConfig(group_size=4),
                       torch.Generator().manual_seed(0))
    assert record["groups_kept"] == 0 and record["reward"] == 0.0 and record["loss"] is None
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_reinforce_control_drops_std_clip_reuse_and_kl():
    assert GRPOConfig(algorithm="reinforce").objective_settings() == (False, 1, float("inf"), 0.0)
    assert GRPOConfig().objective_settings() == (True, 2, 0.2, 0.04)


@pytest.mark.parametrize("changes, field", [
    ({"algorithm": "ppo"}, "algorithm"), ({"bias_rule": "sometimes"}, "bias_rule"), ({"group_size": 1}, "group_size=1"),
    ({"temperature": 0.0}, "temperature=0.0"), ({"steps": 0}, "steps=0"), ({"beta": -1.0}, "beta=-1.0"),
    ({"warmup_steps": -1}, "warmup_steps=-1"), ({"threads": 0}, "threads=0"),
])
def test_bad_config_names_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        GRPOConfig(**changes)


def test_cli_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--algorithm", "ppo"])
    assert e.value.code == 2 and capsys.readouterr().err.startswith("error: argument --algorithm: invalid choice")
    assert main(["--group-size", "1"]) == 2
    assert "group_size=1 must be >= 2" in capsys.readouterr().err


@pytest.fixture(scope="module")
def sft_model():
    if not SFT.is_file():
        pytest.fail(f"{SFT} is missing: `python -c 'from benchmarks import repro_grpo; repro_grpo.run()'` writes it")
    return load_model(SFT)


def test_short_run_on_the_sft_model_learns_from_its_groups_and_is_deterministic(sft_model, tmp_path):
    cfg = GRPOConfig(steps=4, prompts_per_step=8, eval_every=4, out=str(tmp_path))
    a = grpo(cfg, progress=False, model=sft_model)
    b = grpo(GRPOConfig(steps=4, prompts_per_step=8, eval_every=4), progress=False, model=sft_model)
    assert a.history == b.history
    steps = a.history[1:]
    assert all(0 < h["groups_kept"] <= 8 for h in steps)  # the SFT model's groups hold rewards of both kinds
    assert all(h["kl"] >= 0 for h in steps) and steps[-1]["kl"] > 0  # the policy moved away from π_ref
    assert any(not torch.equal(p, q) for p, q in zip(a.model.parameters(), sft_model.parameters(), strict=True))
    saved = json.loads((tmp_path / "grpo.json").read_text())
    assert saved["step"] == 4 and saved["history"] == a.history
    assert load_model(tmp_path / "model.safetensors").cfg == sft_model.cfg


class _StopAfter(list):
    """The interrupt flag of ``deferred_interrupt``, raised after it has been read ``n`` times (as after Ctrl-C)."""

    def __init__(self, n: int):
        super().__init__([False])
        self.reads, self.n = 0, n

    def __getitem__(self, i):
        self.reads += 1
        return self.reads > self.n


def test_an_interrupt_stops_after_the_step_and_keeps_the_last_evaluated_weights(sft_model, tmp_path, monkeypatch):
    @contextlib.contextmanager
    def interrupted_after_two_steps():
        yield _StopAfter(2)

    monkeypatch.setattr(grpo_module, "deferred_interrupt", interrupted_after_two_steps)
    result = grpo(GRPOConfig(steps=5, prompts_per_step=4, eval_every=1, out=str(tmp_path)), progress=False,
                  model=sft_model)
    assert result.interrupted and result.step == 2
    saved = json.loads((tmp_path / "grpo.json").read_text())
    assert saved["step"] == 2 and saved["history"] == result.history
    on_disk = load_model(tmp_path / "model.safetensors").state_dict()  # the weights of step 2, in bf16
    assert all(torch.equal(on_disk[k], v.to(torch.bfloat16).float()) for k, v in result.model.state_dict().items()
               if v.is_floating_point())


def test_mtp_retune_moves_only_the_mtp_module(sft_model):
    torch.set_num_threads(1)  # batch-1 speculative decoding is slow on two contended threads
    model = frozen_copy(sft_model).requires_grad_(True)
    before = {n: p.clone() for n, p in model.named_parameters()}
    losses = retune_mtp(model, split_pairs()[0][:64], steps=3, batch_size=16)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("mtp.") for n in changed)
    assert len(losses) == 3 and all(p.requires_grad for p in model.parameters())
    assert 0.0 <= mtp_acceptance(model, split_pairs()[1][:5]) <= 1.0
