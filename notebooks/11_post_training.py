# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # 11 · Post-training: SFT and GRPO with verifiable rewards
#
# **Learning goals.** After this lesson you can
#
# 1. design a task whose answers a rule can check, and say why its format makes it learnable;
# 2. fine-tune a pre-trained model with the loss on the answer only (SFT);
# 3. build one step of **GRPO** by hand — sample a group, score it, group-relative advantages, the clipped objective
#    with the KL penalty to a frozen reference, one update — and point to each term in `dsv3_mini/grpo.py`;
# 4. run GRPO live on the course's MoE and read the measured comparison with a REINFORCE control;
# 5. say what RL does to the rest of the model: expert load, and the MTP draft that nobody trained;
# 6. say precisely how this differs from DeepSeek-V3's post-training.
#
# Prerequisites: lesson 5 (MTP and speculative decoding) and lesson 6 (the shipped mini model). Every number below is
# computed by `dsv3_mini`, live here or by `benchmarks/repro_grpo.py`, which wrote `checkpoints/sft/` and
# `checkpoints/grpo/results.json`.

# %%
import json
import math
from pathlib import Path

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from course import check_post_training
from dsv3_mini import seed_everything
from dsv3_mini.addition_task import (
    PROMPT_LEN,
    answer_text,
    completion_mask,
    completion_strings,
    exact_accuracy,
    prompt_text,
    reward,
    rewards,
    split_pairs,
)
from dsv3_mini.checkpoint import load_model
from dsv3_mini.data import decode
from dsv3_mini.grpo import (
    GRPOConfig,
    frozen_copy,
    group_advantages,
    grpo,
    grpo_loss,
    kl_estimate,
    sample_groups,
    token_logprobs,
)
from dsv3_mini.sft import sft_batch

generator = seed_everything(0, threads=1)  # one thread: the same numbers on every run
LIVE_STEPS = 60  # steps of the live GRPO run (~1.1 s per step on one idle core)
LIVE_SEED = 1  # the live run repeats the first LIVE_STEPS steps of the benchmark's run with this seed
BASE = Path("../checkpoints/mini/model.safetensors")  # the pre-trained model of lesson 6
SFT_RUN = Path("../checkpoints/sft")  # written by benchmarks/repro_grpo.py
RESULTS = json.loads(Path("../checkpoints/grpo/results.json").read_text())
COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00"]  # Okabe–Ito

# %% slideshow={"slide_type": "skip"} tags=["remove-cell"]
from widgets import setup_plotly

_ = setup_plotly()  # plotly in JupyterLab, plain HTML in the book

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1 · A task with a verifiable answer
#
# DeepSeek-V3's RL stage scores answers with **rules** wherever it can: "for mathematical problems with deterministic
# results, the model is required to provide the final answer in a designated format, enabling us to use rules to
# verify the correctness" (report §5.2.1). Our task: add two two-digit numbers, and write the sum **ones digit
# first**. The question `"\n23+48="` has the answer `"17\n"` (23 + 48 = 71, reversed).
#
# Why reversed? Written the usual way, the first digit of 71 already depends on the carry out of 3 + 8: the model
# must finish the whole sum before it writes anything. Ones digit first, every digit needs the two digits above it
# and the carry of the digit just written, in the order a left-to-right decoder computes them. Two-digit operands
# make every prompt 7 bytes long, so a batch of prompts decodes together with the KV cache.
#
# The reward is 1 for exactly the answer followed by its newline, 0 otherwise: no partial credit.

# %%
train_pairs, heldout = split_pairs()
print(f"{len(train_pairs):,} training pairs, {len(heldout)} held-out pairs (never trained on)")
print(repr(prompt_text(23, 48)), "->", repr(answer_text(23, 48)))
for completion in ["17\n", "17\nxyz", "71\n", "17", "18\n"]:
    print(f"reward({completion!r:>9}) = {reward(completion, 23, 48)}")

# %% [markdown] slideshow={"slide_type": "slide"}
# The shipped model of lesson 6 has seen sums in its corpus (`"123+45=168\n"`, usual digit order), but never this
# format. Held-out **exact accuracy** — greedy decoding, all 500 held-out pairs — is our metric throughout:

# %%
base = load_model(BASE)
sft_model = load_model(SFT_RUN / "model.safetensors")
sft_info = json.loads((SFT_RUN / "sft.json").read_text())
acc_base, acc_sft = exact_accuracy(base, heldout), exact_accuracy(sft_model, heldout)
print(f"pre-trained model: {acc_base:.1%} exact;  after SFT ({sft_info['step']} steps): {acc_sft:.1%} exact")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2 · Supervised fine-tuning, loss on the answer only
#
# SFT is next-token training on prompt → answer pairs, with one change: the targets of the **prompt** bytes are
# ignored, so the model is taught what to write, not to predict the question. `sft_batch` builds the targets; the
# step itself is pre-training's `train_step` (AdamW, schedule, clipping, MTP loss, bias rule). `python -m
# dsv3_mini.sft --steps 225 --out checkpoints/sft` makes the shipped fine-tune on one core. (A warning: on this easy
# task a longer SFT alone solves it — section 5 prints the measured control; we stop at 225 steps on purpose, so that
# RL has room to show what it does. The point of the lesson is the RL loop, which needs no answers, only a checker.)

# %%
tokens, targets = sft_batch([(23, 48), (99, 99)])
for t_row, y_row in zip(tokens.tolist(), targets.tolist(), strict=True):
    print("input :", " ".join(f"{decode([t])!r:>5}" for t in t_row))
    print("target:", " ".join(f"{decode([y])!r:>5}" if y >= 0 else "    ·" for y in y_row))

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3 · One GRPO step, built by hand
#
# **Sample a group.** For each question $q$, draw $G$ outputs $o_1, \dots, o_G$ from the current policy
# $\pi_{\theta_{old}}$ at temperature 1. All $P \cdot G$ rows decode in one batched `generate` call with the KV cache.

# %%
policy = frozen_copy(sft_model).requires_grad_(True)  # π_θ, starts as the SFT model
reference = frozen_copy(sft_model)  # π_ref: frozen, requires_grad False
G = 8
pairs = train_pairs[:4]
group = sample_groups(policy, pairs, G, temperature=1.0, generator=generator)
completions = group[:, PROMPT_LEN:]
r = rewards(completions, [p for p in pairs for _ in range(G)]).view(len(pairs), G)
for i, (a, b) in enumerate(pairs):
    texts = [repr(s.split("\n")[0]) for s in completion_strings(completions[i * G:(i + 1) * G])]
    print(f"{a}+{b}= (answer {answer_text(a, b)!r}):", " ".join(texts), " rewards", r[i].tolist())

# %% [markdown] slideshow={"slide_type": "slide"}
# **Score and compute advantages.** No critic: the group is its own baseline,
#
# $$
# A_i = \frac{r_i - \operatorname{mean}(r_1, \dots, r_G)}{\operatorname{std}(r_1, \dots, r_G)}.
# $$
#
# A right answer in a group of mostly wrong ones gets a large positive advantage; if every output has the same
# reward, all $A_i = 0$ and the group teaches nothing (the loop skips it).

# %%
A = group_advantages(r)
print("advantages per group:\n", A.numpy().round(3))

# %% [markdown] slideshow={"slide_type": "slide"}
# **The objective** (DeepSeekMath eq. 3, V3 report §5.2.2), per token $t$ of output $i$, with
# $\rho_{i,t} = \pi_\theta(o_{i,t} \mid q, o_{i,<t}) / \pi_{\theta_{old}}(o_{i,t} \mid q, o_{i,<t})$:
#
# $$
# \min\big(\rho_{i,t} A_i,\ \operatorname{clip}(\rho_{i,t}, 1-\varepsilon, 1+\varepsilon) A_i\big)
#   \;-\; \beta\, \mathbb{D}_{KL},
# $$
#
# $$
# \mathbb{D}_{KL} = \frac{\pi_{ref}}{\pi_\theta} - \log\frac{\pi_{ref}}{\pi_\theta} - 1,
# $$
#
# averaged over the tokens of each output, then over the outputs. The tokens of an output end at its newline
# (`completion_mask`). `token_logprobs` gives $\log\pi$ of each completion token; at the first update
# $\pi_\theta = \pi_{old} = \pi_{ref}$, so $\rho = 1$ and the KL is exactly 0.

# %%
keep = r.std(dim=1) > 0
rows = keep.repeat_interleave(G)
tok, adv, mask = group[rows], A[keep].flatten(), completion_mask(completions[rows])
with torch.no_grad():
    old_logp, ref_logp = token_logprobs(policy, tok), token_logprobs(reference, tok)
opt = torch.optim.AdamW(policy.parameters(), lr=3e-5, betas=(0.9, 0.95), weight_decay=0.0)
policy.train()
logp = token_logprobs(policy, tok)
loss, stats = grpo_loss(logp, old_logp, ref_logp, adv, mask, clip_eps=0.2, beta=0.04)
print(f"groups kept {int(keep.sum())} of {len(pairs)}; loss {loss.item():.4f}; KL {stats['kl']:.4f}; "
      f"clipped tokens {stats['clip_fraction']:.0%}")
opt.zero_grad()
loss.backward()
opt.step()
print("reference parameters with a gradient:", sum(p.grad is not None for p in reference.parameters()))

# %% [markdown] slideshow={"slide_type": "slide"}
# **After one update** the policy has moved: $\rho \neq 1$ and the KL to the reference is positive. The
# probabilities of the right outputs went up, those of the wrong outputs of the same group went down.

# %%
with torch.no_grad():
    new_logp = token_logprobs(policy, tok)
seq = lambda lp: (lp * mask).sum(1)  # noqa: E731  (log-probability of a whole output)
ratio = (seq(new_logp) - seq(old_logp)).exp()
kl = kl_estimate(new_logp, ref_logp)
print("advantage:       ", adv.numpy().round(2))
print("π_new/π_old:      ", ratio.numpy().round(4))
print(f"mean KL per token: {float((kl * mask).sum() / mask.sum()):.2e}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4 · A live GRPO run
#
# `dsv3_mini.grpo.grpo` is that step in a loop: $P = 32$ questions per step, $G = 8$ outputs each, two updates per
# batch (clipping bites on the second), a 10-step learning-rate warm-up to $3 \cdot 10^{-5}$, the held-out accuracy
# every 30 steps. `python -m dsv3_mini.grpo` runs the same from a shell; an interrupt keeps the last evaluated weights.
# Same seed, same numbers: these 60 steps (about a minute) are the first 60 of one of the benchmark's 150-step runs
# of section 5, step for step. That holds on the course's pinned numeric path, which `make lab` and `make test` set
# (the README says how); on another path the last bits of the matrix products differ, a sampled token now and then
# comes out differently, and the run drifts from the benchmark's (the check below then says False).

# %%
# NBVAL_IGNORE_OUTPUT
live = grpo(GRPOConfig(steps=LIVE_STEPS, seed=LIVE_SEED), model=sft_model)

# %%
# NBVAL_IGNORE_OUTPUT
# (a live training run: off the pinned numeric path its last digits differ, see above)
evals = [(h["step"], h["heldout_exact"]) for h in live.history if "heldout_exact" in h]
print("held-out exact:", ", ".join(f"step {s}: {a:.1%}" for s, a in evals))
bench_run = next(r for r in RESULTS["runs"] if r["variant"] == "grpo" and r["seed"] == LIVE_SEED)
print("the benchmark's run with the same seed, same steps:", bench_run["history"][: LIVE_STEPS + 1] == live.history)
steps = live.history[1:]
fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.14,  # stacked: legible on a phone
                    subplot_titles=("sampled reward per step", "KL to π_ref per token"))
fig.add_scatter(x=[h["step"] for h in steps], y=[h["reward"] for h in steps], line_color=COLORS[0], row=1, col=1,
                name="reward")
fig.add_scatter(x=[h["step"] for h in steps], y=[h["kl"] for h in steps], line_color=COLORS[1], row=2, col=1,
                name="KL")
fig.update_layout(height=480, showlegend=False, title=f"Live run: {LIVE_STEPS} steps, P = 32, G = 8")
fig.update_xaxes(title_text="step", row=2, col=1)
fig.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5 · The measured comparison
#
# `benchmarks/repro_grpo.py` runs, from the same SFT weights, three seeds each of GRPO, of GRPO with the routers'
# bias rule left running, and of the **REINFORCE** control: the same samples per step through the same code, with
# $A_i = r_i - \operatorname{mean}(r)$ (no division by the std), one update per batch (so $\rho = 1$, no clipping)
# and no KL term. And one control that is not RL at all: the same SFT run twice as long.

# %%
VARIANT_NAMES = {"grpo": "GRPO (bias frozen)", "grpo_bias_running": "GRPO (bias running)",
                 "reinforce": "REINFORCE control"}
final = RESULTS["heldout_exact_final"]
labels = ["pre-trained", "SFT"] + [VARIANT_NAMES[v] for v in final]
means = [RESULTS["heldout_exact_base"], RESULTS["heldout_exact_sft"]] + [final[v]["mean"] for v in final]
stds = [0.0, 0.0] + [final[v]["std"] for v in final]
fig = go.Figure(go.Bar(y=labels, x=[100 * m for m in means], error_x={"type": "data", "array": [100 * s for s in stds]},
                       orientation="h", marker_color=COLORS[: len(labels)]))
fig.update_layout(height=380, xaxis_title="held-out exact accuracy (%)", yaxis={"autorange": "reversed"},
                  title=f"After {RESULTS['rl_steps']} RL steps<br>(mean ± std over {final['grpo']['n']} seeds)")
fig.show()
for v, g in RESULTS["gain_points"].items():
    print(f"{VARIANT_NAMES[v]:<20} {g['mean']:+.1f} ± {g['std']:.1f} points over SFT")
control = RESULTS["sft_twice_as_long"]
print(f"\ncontrol: SFT alone for {control['steps']} steps (twice ours) reaches {control['heldout_exact']:.1%} held-out "
      f"exact in {control['seconds']:.0f} s")

# %%
fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.08,  # stacked: legible on a phone
                    subplot_titles=("held-out exact", "sampled reward", "MaxVio of the step"))
for k, v in enumerate(final):
    runs = [run for run in RESULTS["runs"] if run["variant"] == v]
    for j, run in enumerate(runs):
        ev = [h for h in run["history"] if "heldout_exact" in h]
        st = run["history"][1:]
        common = {"line_color": COLORS[k + 2], "legendgroup": v, "opacity": 0.8}
        fig.add_scatter(x=[h["step"] for h in ev], y=[h["heldout_exact"] for h in ev], name=VARIANT_NAMES[v],
                        showlegend=j == 0, row=1, col=1, **common)
        fig.add_scatter(x=[h["step"] for h in st], y=[h["reward"] for h in st], showlegend=False, row=2, col=1,
                        **common)
        fig.add_scatter(x=[h["step"] for h in st], y=[h["max_vio"] for h in st], showlegend=False, row=3, col=1,
                        **common)
fig.update_layout(height=720, legend={"orientation": "v", "x": 0, "y": -0.1, "yanchor": "top"},
                  margin={"b": 130})
fig.update_xaxes(title_text="RL step", row=3, col=1)
fig.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 6 · What RL does to the MoE and to the MTP draft
#
# **Expert load.** Every RL batch is digits, `+`, `=` and newlines: a narrow slice of what the routers were balanced
# on. The step's MaxVio (bottom panel above) is far above pre-training's, whatever the bias rule does; the run with
# the rule *running* lets the biases chase that narrow load, the default keeps them frozen.
#
# **The MTP draft.** RL's loss runs through the main model's output tokens only; the MTP module (lesson 5) is never
# in it, so it keeps drafting for the SFT model while the model it must agree with moves. Speculative decoding's
# acceptance falls. The fix: a few steps on the MTP loss alone (every other weight frozen) on text the RL policy
# writes itself (`dsv3_mini.mtp_retune.retune_mtp`).

# %%
m = RESULTS["mtp_acceptance"]
fig = go.Figure(go.Bar(x=["SFT", "after GRPO", "after MTP re-tune"],
                       y=[100 * m["sft"], 100 * m["after_grpo"]["mean"], 100 * m["after_retune"]["mean"]],
                       error_y={"type": "data", "array": [0, 100 * m["after_grpo"]["std"],
                                                          100 * m["after_retune"]["std"]]},
                       marker_color=[COLORS[0], COLORS[5], COLORS[2]]))
fig.update_layout(height=320, yaxis_title="MTP drafts accepted (%)", title="Greedy speculative decoding, held-out")
fig.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 7 · How this differs from DeepSeek-V3
#
# - **Scale and data.** V3's SFT uses ~1.5M instances across domains, reasoning data distilled from R1; ours is
#   one synthetic task (the training pairs counted in section 1). V3's RL mixes rule-based rewards (math, code)
#   with a **reward model** elsewhere; ours is rule-based only.
# - **The objective is the same** (the clipped ratio, the group baseline, the KL estimator, no critic), with
#   $\beta = 0.04$ (DeepSeekMath's value), $\varepsilon = 0.2$ (the usual PPO value) and $G = 8$ outputs of at most
#   4 tokens each; DeepSeekMath sampled 64 outputs per question, V3 publishes none of these, and samples long
#   reasoning traces where ours are four bytes.
# - **Where the gain comes from.** We stopped SFT early on purpose. The control of section 5 (the same SFT, twice
#   as long) shows that on this task more SFT is the cheaper way up: it sees the answers, RL only a checker. RL
#   earns its place where there is nothing to imitate — V3's RL targets behaviour its SFT data cannot show. The
#   measured gains above are what our budget buys, not a claim about GRPO at scale.
# - **The routers** keep their bias rule during V3's RL — the report does not say; we measured both settings above.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Exercises
#
# Replace the `...` with an expression, run the cell, and the checker from `course.check_post_training` compares
# it with what the library computes. A collapsed solution follows each exercise.
#
# **Exercise 1.** A group of $G = 8$ outputs has rewards `[1, 0, 0, 1, 0, 0, 0, 0]`. What is the advantage $A_i$ of
# one of the two right outputs? (Use the unbiased std, as `torch.std` does.)

# %%
my_answer = ...  # your expression here

check_post_training.check_advantage(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
rw = torch.tensor([1.0, 0, 0, 1, 0, 0, 0, 0])
solution = float((rw[0] - rw.mean()) / rw.std())
print(check_post_training.check_advantage(solution))

# %% [markdown]
# **Exercise 2.** The policy gives a sampled token probability 0.2 and the reference gives it 0.5. What is that
# token's $\mathbb{D}_{KL}$ term (the estimator above)? Why is it always $\ge 0$?

# %%
my_answer = ...  # your expression here

check_post_training.check_kl(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
x = 0.5 / 0.2
solution = x - math.log(x) - 1
print(check_post_training.check_kl(solution))
print("x − log x − 1 ≥ 0 for every x > 0, with equality only at x = 1 (π_θ = π_ref)")

# %% [markdown]
# **Exercise 3.** By how many percentage points did the MTP draft's acceptance fall after GRPO (mean over seeds,
# before the re-tune)? Read it from `RESULTS["mtp_acceptance"]`.

# %%
my_answer = ...  # your expression here

check_post_training.check_acceptance_drop(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
solution = 100 * (RESULTS["mtp_acceptance"]["sft"] - RESULTS["mtp_acceptance"]["after_grpo"]["mean"])
print(check_post_training.check_acceptance_drop(solution))

# %% [markdown]
# **Discussion.** The REINFORCE control divides by nothing, re-uses no sample and has no KL term. Which of GRPO's
# three changes would you expect to matter most with rewards this sparse (most groups all 0 or all 1), and how would
# you measure it with `GRPOConfig`?
