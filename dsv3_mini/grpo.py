"""GRPO: reinforcement learning with verifiable rewards and the group as its own baseline (V3 report §5.2.2).

How one step works (DeepSeekMath eq. 3, the objective V3 uses):
1. **Sample a group.** For each of P training questions q, draw G outputs o_1..o_G from the current policy (π_old)
   at temperature ~1: one batched ``generate`` call of P·G rows with the KV cache.
2. **Score.** r_i = 1 if o_i is the exact answer (``addition_task.reward``), else 0: a rule, no reward model.
3. **Advantages.** A_i = (r_i − mean(r)) / std(r) over the group: no critic model, the other samples of the same
   question are the baseline. A group whose rewards are all equal teaches nothing (every A_i = 0) and is skipped.
4. **The objective**, per token t of output i, with ρ = π_θ(o_i,t | q, o_i,<t) / π_old(o_i,t | q, o_i,<t):
       min(ρ·A_i, clip(ρ, 1 − ε, 1 + ε)·A_i) − β·D_KL,   D_KL = π_ref/π_θ − log(π_ref/π_θ) − 1
   (the unbiased, always ≥ 0 estimator of KL(π_θ‖π_ref)); averaged over the tokens of each output, then over the
   outputs. π_ref is the frozen SFT model: it never receives a gradient.
5. **Update.** ``inner_updates`` AdamW steps on that objective with the same samples (the first has ρ = 1; clipping
   bites from the second on), then π_old ← π_θ for the next step.

``algorithm="reinforce"`` is the control at equal samples, through the same code: A_i = r_i − mean(r) (no division
by the std), one update per batch (so ρ = 1 and the clip never acts) and β = 0 (no KL).
The MoE routers' bias rule keeps running during RL (``bias_rule="running"``: the counts of each update's forward pass
move the biases, as in pre-training) or is frozen (``"frozen"``). ``python -m dsv3_mini.grpo`` runs the loop from a
shell (flags from ``GRPOConfig``); an interrupt stops after the current step and keeps the last good weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .addition_task import (
    MAX_NEW_TOKENS,
    PROMPT_LEN,
    Pair,
    completion_mask,
    exact_accuracy,
    prompt_tokens,
    rewards,
    split_pairs,
)
from .balancing import apply_bias_update, max_violation
from .checkpoint import atomic_write_text, export_model, load_model
from .cli import command_parser, config_from_args, run_command, setting
from .config import check_choice, check_positive
from .generate import generate
from .interrupt import deferred_interrupt
from .model import DeepSeekV3
from .utils import seed_everything

ALGORITHMS = ("grpo", "reinforce")
BIAS_RULES = ("running", "frozen")
SFT_MODEL = "checkpoints/sft/model.safetensors"


@dataclass
class GRPOConfig:
    """One RL run on the addition task, starting from (and regularised towards) the SFT model."""

    init: str = setting(SFT_MODEL, "the starting policy, also the frozen reference π_ref (a model.safetensors)")
    algorithm: str = setting("grpo", "grpo, or the reinforce control (r − mean r, no clip, no KL)",
                             choices=ALGORITHMS)
    steps: int = setting(150, "RL steps (one group of samples per prompt each)")
    prompts_per_step: int = setting(32, "P: training questions per step")
    group_size: int = setting(8, "G: sampled outputs per question")
    temperature: float = setting(1.0, "sampling temperature of the group")
    lr: float = setting(3e-5, "AdamW learning rate, after the warm-up")
    warmup_steps: int = setting(10, "steps of linear learning-rate warm-up (AdamW's first updates are the largest)")
    clip_eps: float = setting(0.2, "ε of clip(ρ, 1 − ε, 1 + ε)")
    beta: float = setting(0.04, "β, the weight of the KL penalty to π_ref")
    inner_updates: int = setting(2, "AdamW updates per batch of samples (ρ = 1 on the first)")
    bias_rule: str = setting("frozen", "the routers' bias rule during RL", choices=BIAS_RULES)
    keep_equal_groups: bool = setting(False, "also train on groups whose rewards are all equal (A = 0)")
    eval_every: int = setting(30, "held-out exact accuracy every this many steps, and after the last")
    plain_order: bool = setting(False, "answers in the usual digit order (must match the SFT model's)")
    seed: int = setting(0, "seed of the prompts and of the sampler")
    threads: int | None = setting(1, "torch threads")
    out: str | None = setting(None, "directory for model.safetensors and grpo.json")

    def __post_init__(self) -> None:
        check_choice("algorithm", self.algorithm, ALGORITHMS)
        check_choice("bias_rule", self.bias_rule, BIAS_RULES)
        check_positive(self, "steps", "prompts_per_step", "inner_updates", "eval_every", "threads")
        if self.group_size < 2:
            raise ValueError(f"group_size={self.group_size} must be >= 2 (a group is its own baseline)")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 (RL samples; 0 would be greedy)")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps={self.warmup_steps} must be >= 0")
        if self.lr <= 0 or self.clip_eps <= 0 or self.beta < 0:
            raise ValueError(f"lr={self.lr} and clip_eps={self.clip_eps} must be > 0, beta={self.beta} >= 0")

    def objective_settings(self) -> tuple[bool, int, float, float]:
        """(normalise by std, inner updates, ε, β) of the algorithm: the control drops std, re-use, clip and KL."""
        if self.algorithm == "reinforce":
            return False, 1, float("inf"), 0.0
        return True, self.inner_updates, self.clip_eps, self.beta


# -- the pieces of the objective -------------------------------------------------------------------------------------

def group_advantages(r: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """(P, G) rewards -> (P, G) advantages: A_i = (r_i − mean r) / std r per group (unbiased std, as torch.std).

    ``normalize=False`` gives r_i − mean r (REINFORCE with the mean as baseline). A group whose rewards are all equal
    gets A = 0 (no division by a zero std).
    """
    if r.dim() != 2 or r.shape[1] < 2:
        raise ValueError(f"rewards must be (prompts, group) with group >= 2; got shape {tuple(r.shape)}")
    centred = r - r.mean(dim=1, keepdim=True)
    if not normalize:
        return centred
    std = r.std(dim=1, keepdim=True)
    return torch.where(std > 0, centred / std.clamp_min(1e-12), torch.zeros_like(centred))


def token_logprobs(model: DeepSeekV3, tokens: torch.Tensor, prompt_len: int = PROMPT_LEN) -> torch.Tensor:
    """(batch, seq) prompt + completion -> (batch, seq − prompt_len): log π(o_t | q, o_<t) of each completion token."""
    if not 0 < prompt_len < tokens.shape[1]:
        raise ValueError(f"prompt_len={prompt_len} must be between 1 and seq - 1 = {tokens.shape[1] - 1}")
    logits = model(tokens[:, :-1]).logits[:, prompt_len - 1:].float()
    return logits.log_softmax(-1).gather(-1, tokens[:, prompt_len:, None]).squeeze(-1)


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token D_KL = π_ref/π_θ − log(π_ref/π_θ) − 1 (DeepSeekMath eq. 4): ≥ 0, and 0 where π_θ = π_ref."""
    log_ratio = ref_logp - logp
    return log_ratio.exp() - log_ratio - 1


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, clip_eps: float = 0.2, beta: float = 0.04) -> tuple[torch.Tensor, dict[str, float]]:
    """The negated GRPO objective of (batch, T) per-token log-probs and (batch,) advantages; ``mask`` (batch, T)
    marks each output's tokens. Returns (loss to minimise, stats: mean KL per token, share of clipped tokens)."""
    ratio = (logp - old_logp).exp()  # ρ
    a = advantages[:, None]
    surrogate = torch.minimum(ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a)
    kl = kl_estimate(logp, ref_logp)
    per_token = surrogate - beta * kl
    m = mask.float()
    lengths = m.sum(dim=1).clamp_min(1)
    objective = ((per_token * m).sum(dim=1) / lengths).mean()  # tokens of each output, then the outputs
    clipped = ((ratio - ratio.clamp(1 - clip_eps, 1 + clip_eps)).abs() > 0).float()
    stats = {"kl": float(((kl.detach() * m).sum(dim=1) / lengths).mean()),
             "clip_fraction": float((clipped * m).sum() / m.sum().clamp_min(1))}
    return -objective, stats


def sample_groups(policy: DeepSeekV3, pairs: list[Pair], group_size: int, temperature: float,
                  generator: torch.Generator) -> torch.Tensor:
    """(P·G, PROMPT_LEN + MAX_NEW_TOKENS) tokens: G sampled outputs of each prompt (rows p·G .. p·G + G − 1)."""
    was_training = policy.training
    policy.eval()
    prompts = prompt_tokens(pairs).repeat_interleave(group_size, dim=0)
    out = generate(policy, prompts, MAX_NEW_TOKENS, temperature=temperature, generator=generator)
    policy.train(was_training)
    return out


def router_step(model: DeepSeekV3, running: bool) -> float:
    """After an update: MaxVio of the update's expert counts (the worst main MoE layer); then either the bias rule
    moves the biases (``running``, as in pre-training) or the counts are dropped and the biases stay (frozen)."""
    vio = max(max_violation(m.step_counts) for m in model.moe_layers(include_mtp=False))
    if running:
        apply_bias_update(model)
    else:
        for m in model.moe_layers():
            m.step_counts.zero_()
    return vio


# -- the loop -----------------------------------------------------------------------------------------------------

@dataclass
class GRPOResult:
    model: DeepSeekV3
    history: list[dict[str, Any]]  # one record per step: reward, KL, MaxVio, groups kept, held-out accuracy
    step: int
    interrupted: bool = False


def grpo_step(policy: DeepSeekV3, ref: DeepSeekV3, opt: torch.optim.Optimizer, pairs: list[Pair],
              cfg: GRPOConfig, generator: torch.Generator) -> dict[str, Any]:
    """One RL step on the questions ``pairs``: sample, score, advantages, ``inner_updates`` updates. Returns stats."""
    normalize, updates, eps, beta = cfg.objective_settings()
    g, rev = cfg.group_size, not cfg.plain_order
    tokens = sample_groups(policy, pairs, g, cfg.temperature, generator)
    r = rewards(tokens[:, PROMPT_LEN:], [p for p in pairs for _ in range(g)], rev).view(len(pairs), g)
    adv = group_advantages(r, normalize)
    keep = torch.ones(len(pairs), dtype=torch.bool) if cfg.keep_equal_groups else r.std(dim=1) > 0
    record: dict[str, Any] = {"reward": float(r.mean()), "groups_kept": int(keep.sum()), "kl": None,
                              "clip_fraction": None, "max_vio": None, "loss": None}
    if not keep.any():
        return record  # no group holds a signal: nothing to learn from this batch
    rows = keep.repeat_interleave(g)
    tokens, adv, mask = tokens[rows], adv[keep].flatten(), completion_mask(tokens[rows, PROMPT_LEN:])
    with torch.no_grad():
        policy.eval()
        old = token_logprobs(policy, tokens)  # π_old: the policy that drew the samples
        ref_logp = token_logprobs(ref, tokens)
    policy.train()
    vios, stats = [], {}
    for _ in range(updates):
        loss, stats = grpo_loss(token_logprobs(policy, tokens), old, ref_logp, adv, mask, eps, beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        vios.append(router_step(policy, cfg.bias_rule == "running"))
    policy.eval()
    record.update(loss=loss.item(), max_vio=max(vios), **stats)
    return record


def frozen_copy(model: DeepSeekV3) -> DeepSeekV3:
    """π_ref: a copy of ``model`` with ``requires_grad`` False everywhere, in eval mode."""
    ref = DeepSeekV3(model.cfg)
    ref.load_state_dict(model.state_dict())
    return ref.requires_grad_(False).eval()


def grpo(cfg: GRPOConfig, progress: bool = True, model: DeepSeekV3 | None = None) -> GRPOResult:
    """Run ``cfg.steps`` RL steps from ``cfg.init`` (or a copy of ``model``), one thread by default.

    The held-out exact accuracy (greedy, ``addition_task.split_pairs``'s held-out pairs, never trained on) is
    recorded at step 0, every ``eval_every`` steps and after the last. With ``cfg.out`` the weights and the history
    are written at every evaluation, atomically: an interrupt leaves the last good pair on disk.
    """
    threads = torch.get_num_threads()
    try:
        generator = seed_everything(cfg.seed, cfg.threads)
        start = load_model(cfg.init) if model is None else frozen_copy(model).requires_grad_(True)
        policy, ref = start.eval(), frozen_copy(start)
        opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
        train_pairs, heldout = split_pairs()
        rng, rev = random.Random(cfg.seed), not cfg.plain_order
        history = [{"step": 0, "heldout_exact": exact_accuracy(policy, heldout, rev)}]
        step, interrupted = 0, False
        bar = tqdm(total=cfg.steps, disable=not progress, desc=cfg.algorithm.upper(), unit="step")
        with deferred_interrupt() as stop:
            while step < cfg.steps:
                if stop[0]:
                    interrupted = True
                    break
                step += 1
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
                record = {"step": step, **grpo_step(policy, ref, opt, rng.sample(train_pairs, cfg.prompts_per_step),
                                                    cfg, generator)}
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    record["heldout_exact"] = exact_accuracy(policy, heldout, rev)
                    if cfg.out:
                        save_run(policy, cfg, history + [record], step)
                history.append(record)
                bar.update(1)
                bar.set_postfix(reward=f"{record['reward']:.2f}")
        bar.close()
        return GRPOResult(model=policy.eval(), history=history, step=step, interrupted=interrupted)
    finally:
        torch.set_num_threads(threads)


def save_run(model: DeepSeekV3, cfg: GRPOConfig, history: list[dict[str, Any]], step: int) -> None:
    """``cfg.out``/model.safetensors (bf16) and grpo.json (config, step, history), each written atomically."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    export_model(model, out / "model.safetensors")
    text = json.dumps({"config": dataclasses.asdict(cfg), "step": step, "history": history}, indent=1)
    atomic_write_text(text + "\n", out / "grpo.json")


def main(argv: list[str] | None = None) -> int:
    return run_command(command_parser(GRPOConfig, "python -m dsv3_mini.grpo", __doc__.split("\n\n")[0]), argv, _run)


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(GRPOConfig, args)
    t0 = time.perf_counter()
    result = grpo(cfg, progress=not args.no_progress)
    acc = [h["heldout_exact"] for h in result.history if "heldout_exact" in h]
    print(f"{cfg.algorithm}: {result.step} steps in {time.perf_counter() - t0:.0f} s; held-out exact "
          f"{acc[0]:.1%} -> {acc[-1]:.1%}" + (f"; wrote {cfg.out}" if cfg.out else ""))
    if result.interrupted:
        print(f"Interrupted after step {result.step}; {cfg.out or 'nothing'} keeps the last evaluated weights.",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
