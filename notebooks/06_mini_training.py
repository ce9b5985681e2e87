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
# # 6 · The mini end-to-end training run
#
# **Learning goals.** After this lesson you can
#
# 1. describe the course's training data — four generated domains, read as bytes — and the loss a model must beat
#    to have learnt anything beyond byte frequencies (the unigram baseline);
# 2. train a real DeepSeek-V3-shaped model (MLA, DeepSeekMoE with loss-free balancing, MTP) on a laptop CPU, next to
#    a dense model with the same active parameters, and read its training history;
# 3. read the shipped 15-minute run: its loss curves, how the router bias drove MaxVio down, and a validation loss
#    you recompute yourself from the shipped weights;
# 4. look inside the trained model: which experts each domain uses, how much the router knows about the domain
#    (mutual information), what it writes, whether its sums are right, and how often its MTP drafts are accepted;
# 5. say precisely how this mini model and run differ from DeepSeek-V3's.
#
# Every number below is computed by `dsv3_mini`, either live in this notebook or from the files `make train` wrote
# into `checkpoints/mini/`.

# %%
import json
import math
import time
from collections import Counter
from pathlib import Path

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from course import check_training
from dsv3_mini import DeepSeekV3, count_params, preset, seed_everything
from dsv3_mini.analysis import domain_expert_mutual_information, routing_by_domain
from dsv3_mini.balancing import max_violation
from dsv3_mini.checkpoint import load_model
from dsv3_mini.data import DOMAINS, builtin_dataset, decode, encode
from dsv3_mini.generate import generate, speculative_generate
from dsv3_mini.train import TrainConfig, evaluate, train
from widgets import RouterLoadWidget

_ = seed_everything(0)  # the same numbers on every run

LIVE_STEPS = 40  # steps of each live run (~0.4 s per step on one idle core); raise for a longer run
LIVE_BATCH, LIVE_SEQ = 8, 128  # windows per step and bytes per window of the live runs
RUN = Path("../checkpoints/mini")  # the shipped run, written by `make train`
COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00"]  # Okabe–Ito

# %% slideshow={"slide_type": "skip"} tags=["remove-cell"]
from widgets import setup_plotly

_ = setup_plotly()  # plotly in JupyterLab, plain HTML in the book

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1 · The data: four domains, read as bytes
#
# Nothing is downloaded. `builtin_dataset(seed=0)` *generates* a corpus from a seed: short documents of four kinds,
# randomly interleaved — **arithmetic** with correct answers, a small **Python-like code** domain, **SQL** schema
# migrations, and templated **English** narration. A Mixture-of-Experts has something to specialise on, and every
# byte carries the label of the domain it came from, so we can later ask which experts each domain uses.
# The training split has 2 MB; the validation split (100 kB) is generated from its own documents.

# %%
data = builtin_dataset(seed=0)
print(f"{data.source}: {len(data.train):,} training bytes, {len(data.val):,} validation bytes")
share = torch.bincount(data.train_domains, minlength=len(DOMAINS)) / len(data.train_domains)
for name, s in zip(DOMAINS, share.tolist(), strict=True):
    print(f"  {name:<11} {s:6.1%} of the training bytes")

# %% [markdown]
# A sample of each domain: the first validation bytes with that domain's label.

# %%
for d, name in enumerate(DOMAINS):
    text = decode(data.val[data.val_domains == d][:170])
    print(f"── {name} " + "─" * (60 - len(name)))
    print(text[: text.rfind("\n") + 1])

# %% [markdown]
# **The tokenizer is the identity on bytes.** A text is its UTF-8 bytes, so a token is an integer 0…255, the
# vocabulary has 256 entries, and nothing has to be trained or downloaded. The price: a sequence is several times
# longer than with DeepSeek-V3's byte-level BPE of 129,280 tokens, so the model must spend capacity on spelling.

# %%
ids = encode("12+7=19\n")
print("encode('12+7=19\\n') ->", ids.tolist())
print("decode back         ->", repr(decode(ids)))
print("vocabulary of the mini model:", preset("mini").vocab_size)

# %% [markdown]
# **The bar to beat.** A model that ignores context and predicts every byte with its frequency $\hat p(b)$ in the
# training split (add-one smoothed) scores, on the $N$ validation bytes $x_1 \dots x_N$, the cross-entropy
#
# $$
# H_\text{unigram} = -\frac{1}{N}\sum_{i=1}^{N} \ln \hat p(x_i), \qquad
# \hat p(b) = \frac{c_b + 1}{\sum_{b'=0}^{255} (c_{b'} + 1)},
# $$
#
# in nats per byte ($c_b$ = count of byte $b$ in the training split). A model that guesses uniformly scores
# $\ln 256$. Everything a trained model does below that bar, it learnt from context.

# %%
baseline = data.unigram_baseline()
print(f"unigram baseline: {baseline:.4f} nats/byte (perplexity {math.exp(baseline):.1f})")
print(f"uniform guess:    {math.log(256):.4f} nats/byte (perplexity 256)")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2 · A live training run, MoE next to dense
#
# `dsv3_mini.train.train` is the whole training loop in one readable function. Each step it draws `batch_size`
# random windows of `seq_len` bytes, runs the model and minimises
#
# $$
# \mathcal{L} = \mathcal{L}_\text{main} + \frac{\lambda}{D}\sum_{k=1}^{D} \mathcal{L}^{k}_\text{MTP}
#   + \alpha \sum_{i=1}^{N_r} f_i P_i
# $$
#
# (next-byte cross-entropy, the MTP loss of lesson 5 with $\lambda = 0.3$, $D = 1$, and the tiny sequence-wise
# balance loss of lesson 3 with $\alpha = 10^{-4}$) with AdamW, a linear warm-up and a cosine decay of the learning
# rate, and gradient clipping. After the optimizer step, every router's bias takes one step of the loss-free rule
# $b_i \leftarrow b_i + \gamma\,\mathrm{sign}(\bar{c} - c_i)$ on that step's expert loads $c_i$ ($\gamma = 0.001$).
#
# We train two models for `LIVE_STEPS` steps on the same batches: the `mini` preset, and `mini-dense`, the same model
# with every MoE layer replaced by a dense SwiGLU as wide as the experts a token uses (1 shared + 4 routed experts of
# width 96 → one FFN of width 480). They *use* the same number of parameters per token; the MoE *stores* more.
#
# The live runs use one thread (`threads=1`), which makes them repeat bit for bit. With more threads, one gradient
# in the MoE layer is summed in an order that varies from run to run; the differences start in the last bit, but
# routing is a discrete choice, so a token that flips to another expert turns them into visibly different curves.

# %%
for name in ("mini", "mini-dense"):
    c = count_params(preset(name))
    print(f"{name:<11} total {c.total:>9,}   active per token {c.active:>9,}   "
          f"(+ MTP module {c.mtp:,})")


# %%
def live_config(name):
    """The live run: small batches, one validation at the end, a log line every 2 steps, one thread."""
    return TrainConfig(preset=name, steps=LIVE_STEPS, batch_size=LIVE_BATCH, seq_len=LIVE_SEQ,
                       log_every=2, eval_every=LIVE_STEPS, eval_batches=2, threads=1)


threads = torch.get_num_threads()
runs, seconds = {}, {}
for name in ("mini", "mini-dense"):
    t0 = time.perf_counter()
    runs[name] = train(live_config(name), progress=False, dataset=data)
    seconds[name] = time.perf_counter() - t0
torch.set_num_threads(threads)  # threads=1 set it for the whole process; give the other cells their cores back

# %% [markdown]
# How long that took on this machine (it varies from run to run):

# %%
# NBVAL_IGNORE_OUTPUT
for name, s in seconds.items():
    tokens = LIVE_STEPS * LIVE_BATCH * LIVE_SEQ
    print(f"{name:<11} {s:5.1f} s for {LIVE_STEPS} steps ({tokens / s:,.0f} tokens/s)")

# %% [markdown]
# `train` returns a `TrainResult`: the trained `model`, the `step` it reached, and the `history`, one dictionary
# per log line — `split` "train" (every `log_every` steps: loss, MTP losses, balance loss, learning rate, gradient
# norm, MaxVio of each MoE layer's batch) or "val" (every `eval_every` steps and at the end: the validation loss and
# MaxVio over the validation windows).

# %%
for name, r in runs.items():
    train_rows = [h for h in r.history if h["split"] == "train"]
    val_rows = [h for h in r.history if h["split"] == "val"]
    print(f"{name:<11} step {r.step}, interrupted={r.interrupted}: train loss {train_rows[0]['loss']:.3f} "
          f"(step {train_rows[0]['step']}) -> {train_rows[-1]['loss']:.3f}; validation {val_rows[-1]['loss']:.3f}")
print("\na train record has:", ", ".join(train_rows[-1]))
print("a val record has:  ", ", ".join(val_rows[-1]))

# %% slideshow={"slide_type": "slide"}
fig = go.Figure()
for (name, r), color in zip(runs.items(), COLORS, strict=False):
    rows = [h for h in r.history if h["split"] == "train"]
    fig.add_scatter(x=[h["step"] for h in rows], y=[round(h["loss"], 4) for h in rows], name=f"{name} (train)",
                    mode="lines+markers", line=dict(color=color))
fig.add_hline(y=baseline, line=dict(color="#555555", dash="dash"),
              annotation_text="unigram baseline", annotation_position="top right")
fig.update_layout(title=f"The live runs: {LIVE_STEPS} steps of {LIVE_BATCH} × {LIVE_SEQ} bytes",
                  xaxis_title="training step", yaxis_title="training loss (nats/byte)",
                  template="course", font=dict(size=14), legend=dict(x=0.6, y=0.95))
fig.show()

# %% [markdown]
# Within a few dozen steps both models pass the unigram baseline: they have started to use context. A run this short
# cannot tell the MoE and the dense model apart — on the same batches their curves lie on top of each other, and the
# router has barely started to specialise. The comparison that means something needs equal *long* runs; for
# example `python -m dsv3_mini.train --preset mini-dense --steps 900 --batch-size 12 --seq-len 256 --out runs/dense`
# next to the shipped run (and the wall clock: on a CPU the MoE's loop over experts costs time that a GPU's
# parallel expert kernels would hide).
#
# **Longer runs.** Raise `LIVE_STEPS` at the top, or run the course's full run in a terminal: `make train`
# (`--preset mini --steps 900 --batch-size 12 --seq-len 256`, about 12 minutes on 2 idle cores). Its output is what
# section 3 reads.
#
# **Interrupting is safe.** Kernel → Interrupt (or Ctrl-C in a terminal) during `train` does not raise in the
# middle of a step: the trainer turns the interrupt into a flag, finishes the current step, saves a checkpoint if
# the run has an `out` directory, prints a note, and *returns* normally with `interrupted=True`, the model and the
# history up to that step. Nothing is lost; with `out=...`, `train(config, resume=True)` continues where it
# stopped, with the same optimizer state and the same sequence of batches as an uninterrupted run.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3 · The shipped run
#
# `make train` wrote three files that the repository ships (`checkpoints/mini/`): `model.safetensors`, the trained
# weights in bfloat16; `metrics.jsonl`, the training history, one JSON line per record, as above; and
# `summary.json`, with the exact command, the validation loss of exactly the shipped weights and the settings
# used to measure it.

# %%
summary = json.loads((RUN / "summary.json").read_text())
metrics = [json.loads(line) for line in (RUN / "metrics.jsonl").read_text().splitlines() if line.strip()]
train_log = [m for m in metrics if m["split"] == "train"]
val_log = [m for m in metrics if m["split"] == "val"]
print("command:", summary["command"])
print(f"{len(train_log)} training records, {len(val_log)} validation records, last step {summary['step']}")
print(f"validation loss {summary['val_loss']:.4f} nats/byte, MTP {summary['val_mtp_losses'][0]:.4f}; "
      f"unigram baseline {summary['unigram_baseline']:.4f} (same as ours: {summary['unigram_baseline'] == baseline})")
print(f"the validation loss is {summary['unigram_baseline'] / summary['val_loss']:.1f}× below the baseline")

# %% slideshow={"slide_type": "slide"}
fig = go.Figure()
fig.add_scatter(x=[m["step"] for m in train_log], y=[round(m["loss"], 4) for m in train_log],
                name="training batch", mode="lines", line=dict(color=COLORS[0]))
fig.add_scatter(x=[m["step"] for m in val_log], y=[round(m["loss"], 4) for m in val_log],
                name="validation", mode="lines+markers", line=dict(color=COLORS[5], width=3))
fig.add_scatter(x=[m["step"] for m in val_log], y=[round(m["mtp_losses"][0], 4) for m in val_log],
                name="validation, MTP module (t+2)", mode="lines+markers", line=dict(color=COLORS[2], dash="dot"))
fig.add_scatter(x=[0, summary["step"]], y=[summary["unigram_baseline"]] * 2, name="unigram baseline",
                mode="lines", line=dict(color="#555555", dash="dash"))
fig.update_layout(title="The shipped run: loss (log scale)", xaxis_title="training step",
                  yaxis=dict(title="cross-entropy (nats/byte)", type="log", tickvals=[0.2, 0.3, 0.5, 1, 2, 4]),
                  template="course", font=dict(size=14), legend=dict(x=0.55, y=0.8))
fig.show()

# %% [markdown]
# The loss falls steeply for the first hundred steps and then slowly; at the end the model is about ten times below
# the unigram baseline. Training and validation losses stay together — the corpus is generated from templates, so
# there is little to overfit in 900 steps.
#
# **The loss-free bias at work.** Lesson 3's imbalance metric, per MoE layer,
# $\mathrm{MaxVio} = (\max_i c_i - \bar c)/\bar c$, recorded two ways: on each training batch (the load the bias
# rule reacts to; the MTP module has its own MoE layer, the fourth line) and over all validation windows
# ("global"). At the start some experts take several times their share; the bias, which never gets a gradient,
# moves by $\gamma = 0.001$ per step and pulls the loads together.

# %% slideshow={"slide_type": "slide"}
moe_blocks = [i for i in range(preset("mini").num_hidden_layers) if i >= preset("mini").first_k_dense_replace]
names = [f"block {i}" for i in moe_blocks] + ["MTP module"]
fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,  # stacked: legible on a phone
                    subplot_titles=("training batch (every 10 steps)", "validation, global (every 100 steps)"))
for j, (name, color) in enumerate(zip(names, COLORS, strict=False)):
    fig.add_scatter(x=[m["step"] for m in train_log], y=[round(m["max_vio"][j], 4) for m in train_log],
                    name=name, legendgroup=name, mode="lines", line=dict(color=color, width=1.5), row=1, col=1)
    if j < len(moe_blocks):
        fig.add_scatter(x=[m["step"] for m in val_log], y=[round(m["max_vio_global"][j], 4) for m in val_log],
                        name=name, legendgroup=name, showlegend=False, mode="lines+markers",
                        line=dict(color=color, width=3), row=2, col=1)
fig.update_yaxes(type="log", tickvals=[0.03, 0.1, 0.3, 1, 3], title_text="MaxVio (log scale)")
fig.update_xaxes(title_text="training step", row=2, col=1)
fig.update_layout(title="Load imbalance per MoE layer during the shipped run", template="course",
                  font=dict(size=14), height=640, legend=dict(orientation="h", y=-0.15))
fig.show()
for j, b in enumerate(moe_blocks):
    print(f"block {b}: MaxVio_global {val_log[0]['max_vio_global'][j]:.2f} at step {val_log[0]['step']} "
          f"-> {summary['max_vio_global'][j]:.3f} at the end")

# %% [markdown]
# The loss-free balancing paper reports MaxVio$_\text{global}$ = 0.04 for its 1B model with this rule (0.72 with an
# auxiliary loss instead); ours ends at a similar level. The bias itself is in the shipped weights (it is a buffer of
# each router). Since each step moves it by at most $\gamma$, no entry can exceed $\gamma \times$ steps $= 0.9$:

# %%
model = load_model(RUN / "model.safetensors")  # fp32 copy of the bf16 weights, in eval mode
gamma = model.cfg.bias_update_speed
for b, moe in zip(moe_blocks, model.moe_layers(include_mtp=False), strict=True):
    bias = moe.gate.bias
    print(f"block {b}: bias from {bias.min():+.3f} to {bias.max():+.3f} "
          f"(bound γ·steps = {gamma * summary['step']:.1f})")

# %% [markdown]
# **Recompute the recorded validation loss.** `summary.json` says which validation windows were used (`eval`); the
# same call to `evaluate` on the loaded weights must give the same number.

# %%
ev = summary["eval"]
val = evaluate(model, data, ev["batch_size"], ev["seq_len"], ev["batches"])
print(f"evaluated on {ev['batches']} batches of {ev['batch_size']} × {ev['seq_len']} bytes")
print(f"recorded:   {summary['val_loss']:.4f} nats/byte, MTP {summary['val_mtp_losses'][0]:.4f}")
print(f"recomputed: {val['loss']:.4f} nats/byte, MTP {val['mtp_losses'][0]:.4f}")
print("match (|difference| < 1e-5):", abs(val["loss"] - summary["val_loss"]) < 1e-5)

# %% [markdown]
# **Where the remaining loss is.** That number averages four very different domains. Per domain, on the first
# validation batch (every byte labelled), and for arithmetic split into the answers (the bytes after `=`) and the
# rest of the line:

# %%
tokens, targets, token_domains = next(data.val_batches(ev["batch_size"], ev["seq_len"]))
with torch.no_grad():
    logits = model(tokens).logits
nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(tokens)
pos = torch.arange(tokens.shape[1]).expand_as(tokens)
last_eq = torch.where(tokens == ord("="), pos, -1).cummax(dim=1).values  # position of the latest "="
last_nl = torch.where(tokens == ord("\n"), pos, -1).cummax(dim=1).values  # ... and of the latest newline
in_answer = last_eq > last_nl  # the next byte belongs to the answer of an arithmetic line (or ends it)
for d, name in enumerate(DOMAINS):
    mask = token_domains == d
    print(f"{name:<11} {nll[mask].mean():.3f} nats/byte over {int(mask.sum()):>5,} bytes")
arith = token_domains == DOMAINS.index("arithmetic")
print(f"  arithmetic answers: {nll[arith & in_answer].mean():.3f} nats/byte, "
      f"the rest of the line: {nll[arith & ~in_answer].mean():.3f}")
print(f"  (a uniformly random digit costs at least ln 10 = {math.log(10):.3f} nats)")

# %% [markdown]
# Code, SQL and English, generated from templates, cost a fraction of a nat per byte. Arithmetic costs far more, for
# two different reasons. The question's digits are random: no model can pay less than $\ln 10$ for a uniformly
# random digit. The answer, on the other hand, is fully determined by the question, so a model that could calculate
# would pay almost nothing for it. Ours pays much more than that: it has not learnt to calculate (section 4 checks
# this directly).

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4 · Inside the trained model
#
# ### Do experts specialise by domain?
#
# `routing_by_domain` runs validation windows through the model and counts, for every MoE layer, where each domain's
# routed slots go: a (layer, domain, expert) table whose rows sum to 1. Each token picks 4 of 16 experts, so a
# domain that used all experts alike would show 1/16 ≈ 0.06 everywhere. The dotted lines mark the 4 expert groups
# (a token may use at most 2 of them).

# %%
ROUTING = dict(batch_size=16, seq_len=256, max_batches=4)  # 16,384 validation bytes
frac = routing_by_domain(model, data, **ROUTING)
seed_everything(0)
untrained = DeepSeekV3(model.cfg).eval()  # the same configuration, freshly initialised
frac_untrained = routing_by_domain(untrained, data, **ROUTING)
print("shape (MoE layers, domains, experts):", tuple(frac.shape))

# %% slideshow={"slide_type": "slide"}
n_exp = frac.shape[-1]
fig = make_subplots(rows=len(moe_blocks), cols=1, vertical_spacing=0.08, shared_xaxes=True,
                    subplot_titles=[f"block {b}" for b in moe_blocks])
for layer in range(len(moe_blocks)):
    fig.add_heatmap(z=frac[layer].numpy().round(3), x=list(range(n_exp)), y=list(DOMAINS), row=layer + 1, col=1,
                    coloraxis="coloraxis",
                    hovertemplate="%{y} → expert %{x}: %{z:.1%} of its slots<extra></extra>")
    for g in range(1, model.cfg.n_group):
        fig.add_vline(x=g * n_exp // model.cfg.n_group - 0.5, line=dict(color="white", dash="dot", width=2),
                      row=layer + 1, col=1)
fig.update_xaxes(title_text="routed expert", row=len(moe_blocks), col=1)
fig.update_layout(title="Where each domain's tokens go: fraction of routed slots",
                  coloraxis=dict(colorscale="Viridis", colorbar=dict(title="fraction")),
                  template="course", font=dict(size=14), height=720)
fig.show()

# %% [markdown]
# Bright cells are experts a domain relies on. A number summarises the whole table: the **mutual information**
# between a token's domain $D$ and the expert $E$ it is routed to (domains weighted equally),
#
# $$
# I(D; E) = \sum_{d, e} p(d, e) \ln \frac{p(d, e)}{p(d)\, p(e)},
# $$
#
# zero when every domain uses the experts alike, at most $\ln 4 \approx 1.386$ nats when the experts separate the
# four domains perfectly. The untrained model of the same configuration is the control: its router is random, so
# whatever it "knows" about the domain comes from the byte statistics alone.

# %%
mi = domain_expert_mutual_information(frac)
mi_untrained = domain_expert_mutual_information(frac_untrained)
print(f"{'':<9}{'trained':>10}{'untrained':>11}   (nats; max ln 4 = {math.log(4):.3f})")
for b, m, u in zip(moe_blocks, mi.tolist(), mi_untrained.tolist(), strict=True):
    print(f"block {b}:{m:>10.3f}{u:>11.3f}")
print(f"trained / untrained, averaged over the layers: {mi.mean() / mi_untrained.mean():.1f}×\n")
top4 = frac.topk(4, dim=-1).values.sum(-1)  # (layers, domains): share of the 4 most used experts
print(f"share of a domain's slots on its 4 favourite experts ({4 / n_exp:.0%} if spread evenly):")
print(f"{'':<11}" + "".join(f"{'block ' + str(b):>10}" for b in moe_blocks))
for d, name in enumerate(DOMAINS):
    print(f"{name:<11}" + "".join(f"{v:>10.0%}" for v in top4[:, d].tolist()))

# %% [markdown]
# The trained router knows several times more about the domain than the untrained one, yet it is far from the
# $\ln 4$ of perfect separation: every domain still spreads its tokens over many experts, and the same experts
# serve several domains. The specialisation is partial and strongest for arithmetic, the domain whose bytes look
# least like the others (exercise 3 measures it). Expert specialisation in MoE models is usually like this —
# by kinds of token and context rather than clean topics.
#
# ### The router on real hidden states
#
# Lesson 2's router widget, now fed with what the trained model's last MoE layer actually sees: the normalised
# hidden states of 512 validation bytes (captured with a forward hook), and that layer's trained centroids
# $\mathbf{e}_i$. The widget starts from a zero bias and its `bias strength` control applies *one* step of the
# balancing rule, as in lesson 2 — the bias learnt in training is not used there; the cell after the figure
# compares the two.

# %%
WIDGET_BLOCK = moe_blocks[-1]
captured = {}
moe = model.layers[WIDGET_BLOCK].ffn
hook = moe.register_forward_hook(lambda module, args, out: captured.update(x=args[0]))
tokens, _, _ = next(data.val_batches(batch_size=2, seq_len=256))
with torch.no_grad():
    model(tokens)
hook.remove()
hidden = captured["x"].reshape(-1, model.cfg.hidden_size)  # (512, 192): the router's input
print("hidden states:", tuple(hidden.shape), " router centroids:", tuple(moe.gate.weight.shape))

# %% [markdown]
# In JupyterLab the controls above are live; the figure below is the static twin used by the published book.

# %% slideshow={"slide_type": "slide"} tags=["remove-output"]
w = RouterLoadWidget(hidden_states=hidden, router_weight=moe.gate.weight, base_config=model.cfg)
w

# %% slideshow={"slide_type": "slide"} tags=["remove-input"]
w.static_figure().show()

# %% [markdown]
# The numbers behind the widget's default setting, and the same tokens routed by the real router *with the bias it
# learnt in training*:

# %%
s = w.state
with torch.no_grad():
    learnt = moe.gate(hidden)
mean_load = len(hidden) * model.cfg.num_experts_per_tok / model.cfg.n_routed_experts
print(f"balanced load: {mean_load:.0f} tokens per expert")
print("zero bias (widget):  ", [int(c) for c in s["counts"]], f"MaxVio {s['max_vio']:.3f}")
print("learnt bias (model): ", learnt.counts.tolist(), f"MaxVio {max_violation(learnt.counts):.3f}")

# %% [markdown]
# This is the loss-free bias earning its keep. The trained centroids on their own would send some experts about
# three times their share and leave others nearly idle; the learnt bias, which changes only *which* experts are
# chosen (never the gating weights), brings the same tokens close to balance. A few hundred bytes hold only a few
# documents, so some imbalance remains; over the whole validation split the recorded MaxVio$_\text{global}$ of this
# layer is the last value in the MaxVio table above.
#
# ### What it writes
#
# Greedy decoding (`generate`, temperature 0) from the start of one validation document per domain: the prompt is
# the newline that ends the previous document and the first 5 bytes of this one; the model writes 60 more.

# %%
N_NEW = 60
dom = data.val_domains
starts = ((dom[1:] != dom[:-1]).nonzero().flatten() + 1).tolist()  # where the domain changes: a document starts
prompts = {}
for d, name in enumerate(DOMAINS):
    first = next(s for s in starts if dom[s] == d)
    prompts[name] = data.val[first - 1:first + 5]  # the previous document's newline + 5 bytes
# the four prompts have the same length, so one batched call decodes them together
samples = dict(zip(DOMAINS, generate(model, torch.stack(list(prompts.values())), N_NEW), strict=True))
for name, out in samples.items():
    print(f"── {name}: prompt {decode(prompts[name])!r}, continued:")
    print(decode(out)[1:])

# %% [markdown]
# **Are its sums right?** Arithmetic documents are one line `a op b=result` with the correct result ($a < 1000$,
# $b < 100$, op one of + − ×). Take the validation split's arithmetic lines, give the model everything up to `=`
# (after a newline, as in the corpus), let it write until the newline, and compare with the line's own answer —
# exactly, and more leniently: does the answer have the right length, the right last digit?

# %%
N_PROBLEMS = 200  # validation problems to try
lines = decode(data.val[dom == DOMAINS.index("arithmetic")]).splitlines()[:N_PROBLEMS]
by_length = {}  # questions of the same length decode together in one batch
for line in lines:
    question, answer = line.split("=")
    by_length.setdefault(len(question), []).append((question, answer))
results = []  # (op, question, answer, written)
for n, group in sorted(by_length.items()):
    batch = torch.stack([encode("\n" + q + "=") for q, _ in group])
    written = generate(model, batch, 7)[:, n + 2:]  # "\n" + question + "=" is n + 2 bytes
    for (q, a), w in zip(group, written, strict=True):
        op = next(c for c in "+-*" if c in q)  # a and b are never negative
        results.append((op, q, a, decode(w).split("\n")[0]))
written_for = {q: w for _, q, _, w in results}
for line in lines[:6]:  # the first problems of the split
    q, a = line.split("=")
    print(f"{q}={written_for[q]:<7} ({'right' if written_for[q] == a else 'the answer is ' + a})")
print(f"\n{'':<8}{'problems':>9}{'exact':>8}{'length':>8}{'last digit':>12}{'guess':>8}")
for op in "+-*":
    rows = [(a, w) for o, _, a, w in results if o == op]
    exact = sum(a == w for a, w in rows) / len(rows)
    length = sum(len(a) == len(w) for a, w in rows) / len(rows)  # the right number of characters
    last = sum(a[-1:] == w[-1:] for a, w in rows) / len(rows)
    guess = Counter(a[-1] for a, _ in rows).most_common(1)[0][1] / len(rows)  # always the commonest last digit
    print(f"a {op} b {len(rows):>9}{exact:>8.0%}{length:>8.0%}{last:>12.0%}{guess:>8.0%}")
exact_all = sum(a == w for _, _, a, w in results) / len(results)
print(f"all {len(results)} problems: {exact_all:.1%} exactly right")

# %% [markdown]
# The model has learnt the *form* of arithmetic — one line, an `=`, a number of about the right length, a newline —
# but not the arithmetic: hardly any answer is exact, and the last digit, which for + and − depends only on the last
# digits of $a$ and $b$, is right no more often than a constant guess of the commonest last digit of that operation
# would be ("guess"); only for × does it do a little better. Arithmetic is 7% of the corpus, every problem is new,
# and the answer is written most significant digit first, so the model must emit the leading digit before it has
# "carried" anything. For a 3.6M-parameter byte model after 2.8M bytes, the templates of the other domains are far
# easier to learn than addition.
#
# ### MTP drafts on real text
#
# Lesson 5 uses the MTP module as a draft model: it proposes the token after next, the main model verifies it, and
# greedy speculative decoding returns exactly the greedy output in fewer main-model forward passes. On the four
# prompts above:

# %%
accepted = drafted = forwards = new = 0
for name, p in prompts.items():
    out, st = speculative_generate(model, p, N_NEW)
    assert torch.equal(out, samples[name]), "speculative decoding must equal greedy decoding"
    print(f"{name:<11} {st.accepted:>2}/{st.drafted} drafts accepted ({st.acceptance_rate:.0%}), "
          f"{st.tokens_per_forward:.2f} tokens per forward")
    accepted, drafted = accepted + st.accepted, drafted + st.drafted
    forwards, new = forwards + st.forward_passes, new + st.new_tokens
print(f"all four equal greedy decoding; pooled: acceptance {accepted / drafted:.1%}, "
      f"{new / forwards:.2f} tokens per main-model forward")

# %% [markdown]
# DeepSeek-V3 reports 85–90% acceptance of its second-token drafts and about 1.8× the tokens per second. Our drafts
# are accepted more often because our text is templated: once a template is recognised, the next two bytes are
# nearly certain. The acceptance rate measures how predictable the text is as much as how good the draft model is;
# lesson 5 measures it per domain and asks what a saved forward pass is worth on a CPU.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5 · How our mini model differs from the real one
#
# > **How our mini model differs from the real one.** The architecture is the same code path — MLA with decoupled
# > RoPE, DeepSeekMoE with a shared expert, sigmoid gates, group-limited top-k and the selection-only bias, the
# > sequence-wise balance loss, one MTP module — but everything around it is scaled down:
# > - **size**: 4 blocks (1 dense, 3 MoE) of width 192 with 16 routed experts, top-4 — about 3.6M parameters
# >   instead of 671B (below);
# > - **vocabulary**: 256 bytes instead of a 129,280-token byte-level BPE, so sequences are longer and the model
# >   spells;
# > - **data**: 2 MB of generated, templated text in four domains instead of 14.8T tokens of real multilingual
# >   text, code and mathematics;
# > - **steps and tokens**: 900 steps of 12 × 256 bytes (exercise 2 counts the tokens) instead of a 14.8T-token
# >   pre-training run, two context extensions and post-training; no YaRN;
# > - **precision and hardware**: fp32 on 2 CPU cores, experts run one after another in a loop, instead of FP8 mixed
# >   precision on 2,048 H800 GPUs with experts spread over devices and DualPipe; the shipped weights are stored in
# >   bf16;
# > - **schedule**: warm-up + cosine decay over the run and $\gamma = 0.001$ throughout; V3 sets $\gamma = 0$ and
# >   $\lambda = 0.1$ for the last part of its run and uses a different learning-rate schedule.

# %%
ours, v3 = preset("mini"), preset("deepseek-v3")
c_ours, c_v3 = count_params(ours), count_params(v3)
rows = [("blocks (dense + MoE)", f"{ours.first_k_dense_replace} + {ours.num_moe_layers}",
         f"{v3.first_k_dense_replace} + {v3.num_moe_layers}"),
        ("hidden size", f"{ours.hidden_size:,}", f"{v3.hidden_size:,}"),
        ("routed experts, top-k", f"{ours.n_routed_experts}, {ours.num_experts_per_tok}",
         f"{v3.n_routed_experts}, {v3.num_experts_per_tok}"),
        ("vocabulary", f"{ours.vocab_size:,}", f"{v3.vocab_size:,}"),
        ("total parameters", f"{c_ours.total:,}", f"{c_v3.total:,}"),
        ("active per token", f"{c_ours.active:,}", f"{c_v3.active:,}"),
        ("MTP module", f"{c_ours.mtp:,}", f"{c_v3.mtp:,}")]
print(f"{'':<24}{'mini (ours)':>14}{'DeepSeek-V3':>22}")
for name, a, b in rows:
    print(f"{name:<24}{a:>14}{b:>22}")
print(f"\nDeepSeek-V3 is {c_v3.total / c_ours.total:,.0f}× larger in total, "
      f"{c_v3.active / c_ours.active:,.0f}× in active parameters")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Exercises
#
# Replace the `...` with an expression, run the cell, and the checker from `course.check_training` compares
# it with what the library computes. A collapsed solution follows each exercise.
#
# **Exercise 1.** The baseline above is in nats per byte (natural logarithm). Information is often counted in
# **bits** (base-2 logarithm). What is the unigram baseline in bits per byte? (`baseline` holds it in nats.)

# %%
my_answer = ...  # your expression here

check_training.check_unigram_bits(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
solution = baseline / math.log(2)
print(check_training.check_unigram_bits(solution))
print(f"{solution:.3f} bits per byte: a byte carries 8 bits, the unigram model needs {solution / 8:.0%} of them")

# %% [markdown]
# **Exercise 2.** How many training tokens (bytes) did the shipped run process in total? Read the steps, the batch
# size and the sequence length from `summary["command"]`.

# %%
my_answer = ...  # your expression here

check_training.check_tokens_seen(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
args = summary["command"].split()
solution = (int(args[args.index("--steps") + 1]) * int(args[args.index("--batch-size") + 1])
            * int(args[args.index("--seq-len") + 1]))
print(check_training.check_tokens_seen(solution))
print(f"{solution:,} tokens: {solution / len(data.train):.2f} passes over the training split; "
      f"DeepSeek-V3 saw 14.8T, {14.8e12 / solution:,.0f}× more")

# %% [markdown]
# **Exercise 3.** Which domain has the most **concentrated** routing? Measure it from `frac`, the heat map's data:
# for each domain and MoE layer take the entropy $-\sum_e p_e \ln p_e$ of its row (low = few experts take most of
# its slots), average over the 3 layers, and answer with the name of the domain with the lowest value
# (one of `"arithmetic"`, `"code"`, `"sql"`, `"english"`).

# %%
my_answer = ...  # your expression here

check_training.check_concentrated_domain(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
entropy = torch.special.entr(frac).sum(-1).mean(0)  # (domains,); entr(p) = -p ln p, 0 for p = 0
solution = DOMAINS[int(entropy.argmin())]
print(check_training.check_concentrated_domain(solution))
for name, h in zip(DOMAINS, entropy.tolist(), strict=True):
    print(f"{name:<11} {h:.3f} nats (uniform over 16 experts: {math.log(16):.3f}; "
          f"4 fixed experts: {math.log(4):.3f})")

# %% [markdown]
# **Discussion.** The MoE and the dense model use the same number of parameters per token. To claim that the MoE is
# *better*, what would you compare — loss at an equal number of steps, of tokens, or of seconds? Which of these does
# a 2-core CPU favour, which does a GPU cluster favour, and why did DeepSeek-V3 choose the MoE anyway?
#
# Next: lesson 7, the machine room: the same model trained by a pipeline of processes, and DualPipe.
