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
# # 5 · Multi-token prediction and speculative decoding
#
# **Learning goals.** After this lesson you can
#
# 1. write down DeepSeek-V3's multi-token prediction (MTP) module and say what it sees and what it predicts at each
#    position, without an off-by-one;
# 2. explain why its modules are *sequential* (each keeps the causal chain) rather than parallel heads;
# 3. read the training loss $\mathcal{L} = \mathcal{L}_\text{main} + \frac{\lambda}{D}\sum_k \mathcal{L}^k_\text{MTP}$
#    off the model's output;
# 4. use the MTP module as a draft model for speculative decoding, and check that greedy speculative decoding returns
#    exactly the tokens of plain greedy decoding;
# 5. measure the acceptance rate and the tokens produced per main-model forward pass on a trained model, and say why
#    a saved forward pass is not automatically saved time on a CPU;
# 6. read the report's MTP ablation and what the same comparison measures at mini scale.
#
# Every number below is computed by `dsv3_mini`: the model, its losses and the two decoders. The report's numbers
# are quoted from its §2.2 and §5.4.3 ([arXiv 2412.19437](https://arxiv.org/abs/2412.19437)).

# %%
import json
import time
from pathlib import Path

import plotly.graph_objects as go
import torch

from course import check_mtp
from course.bench_results import bench_data, run_date
from dsv3_mini import DeepSeekV3, count_params, preset, seed_everything
from dsv3_mini.checkpoint import load_model
from dsv3_mini.data import builtin_dataset, decode, encode
from dsv3_mini.generate import generate, speculative_generate
from dsv3_mini.model import cross_entropy

# the same numbers on every run; one thread, because decoding multiplies tiny matrices one token at a time, and
# there a second thread costs more in coordination than it saves
_ = seed_everything(0, threads=1)

N_NEW = 48  # tokens to generate per prompt; raise for longer runs
PROMPTS_PER_DOMAIN = 3  # validation prompts per domain; raise for a steadier acceptance rate
CHECKPOINT = Path("../checkpoints/mini")  # the trained mini model (lesson 6 shows how it was trained)


# %% slideshow={"slide_type": "skip"} tags=["remove-cell"]
from widgets import setup_plotly

_ = setup_plotly()  # plotly in JupyterLab, plain HTML in the book

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Predicting one more token, sequentially
#
# A language model is trained on *next-token prediction*: at position $i$ its last hidden state $\mathbf{h}^0_i$
# goes through the output head and is scored against the next token $t_{i+1}$. DeepSeek-V3 adds $D$ **MTP
# modules** ($D = 1$ in V3) that each predict one token further. Module $k$ at position $i$ takes two inputs, the
# previous depth's hidden state $\mathbf{h}^{k-1}_i$ (depth 0 is the main model) and the embedding of the token
# $t_{i+k}$, normalises both, concatenates them and projects back to the model width with a matrix
# $M_k \in \mathbb{R}^{d \times 2d}$:
#
# $$
# \mathbf{h}'^{k}_i = M_k\,\big[\mathrm{RMSNorm}(\mathbf{h}^{k-1}_i)\,;\ \mathrm{RMSNorm}(\mathrm{Emb}(t_{i+k}))\big],
# \qquad
# \mathbf{h}^{k}_{1:T-k} = \mathrm{TRM}_k\big(\mathbf{h}'^{k}_{1:T-k}\big),
# \qquad
# P^{k}_{i+k+1} = \mathrm{OutHead}\big(\mathbf{h}^{k}_i\big).
# $$
#
# $\mathrm{TRM}_k$ is one ordinary (causal) transformer block, and the embedding and the output head are **shared**
# with the main model, so a module adds only one projection and one block: little beside V3's 61 blocks, a large
# share of a model with 3 blocks. Module $k$ at position $i$ predicts $t_{i+k+1}$, the token $k+1$ steps ahead.
#
# Why feed it $t_{i+k}$? [Gloeckle et al. (2024)](https://arxiv.org/abs/2404.19737) put $D$ *parallel* heads on the
# trunk: head $k$ guesses $t_{i+k+1}$ from $\mathbf{h}_i$ alone, without knowing the tokens in between. V3's modules
# are *sequential*: depth $k$ builds on depth $k-1$ and is told the token that comes before the one it predicts,
# so every prediction keeps the complete causal chain, and its job is the familiar one, "predict the next token",
# a few positions further along. Here is a tiny untrained model with $D = 2$ modules, to look at the shapes.

# %%
tiny = preset("tiny").replace(num_nextn_predict_layers=2)
model = DeepSeekV3(tiny).eval()
module = model.mtp[0]
d = tiny.hidden_size
print(f"hidden size d = {d}; M_1 (module.proj) maps 2d = {2 * d} -> d: weight",
      tuple(module.proj.weight.shape))
print("TRM_1 is a", type(module.block).__name__, "with a", type(module.block.ffn).__name__, "FFN")
n_mtp = sum(p.numel() for p in model.mtp.parameters())
n_all = sum(p.numel() for p in model.parameters())
print(f"{len(model.mtp)} MTP modules: {n_mtp:,} of the model's {n_all:,} parameters")
shared = [n for n, _ in model.mtp.named_parameters() if "embed" in n or n.startswith("head")]
print("embedding or head parameters inside the MTP modules:", shared or "none (shared)")
v3 = count_params(preset("deepseek-v3"))
print(f"DeepSeek-V3's one MTP module: {v3.mtp / 1e9:.1f}B beside {v3.total / 1e9:.0f}B "
      f"({v3.mtp / v3.total:.1%})")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Who sees what: the alignment
#
# Off-by-one errors and *target leakage* (a module that can see the token it is scored on) hide in the indices, and
# a leaking model trains to a suspiciously low loss. So let us line them up on a short byte string (our tokens are
# bytes). For each position $i$: the main head's target, what the depth-1 module reads, and what it is scored on.
# Before printing the table, we check that these are exactly the targets the library scores: its losses equal the
# cross-entropy against the shifted streams.

# %%
text = "12+34=46\n"
stream = encode(text)[None]  # (1, 9): a document of 9 bytes
tokens, targets = stream[:, :-1], stream[:, 1:]  # the model reads 8 bytes, each scored on the next
with torch.no_grad():
    out = model(tokens, targets=targets)
    mtp_logits = model.mtp_logits(tokens, out.hidden_states)  # depth k: (1, 8 - k, vocab)

assert torch.equal(cross_entropy(out.logits, stream[:, 1:]), out.main_loss)  # main: t_{i+1}
assert torch.equal(cross_entropy(mtp_logits[0], stream[:, 2:]), out.mtp_losses[0])  # depth 1: t_{i+2}
assert torch.equal(cross_entropy(mtp_logits[1], stream[:, 3:]), out.mtp_losses[1])  # depth 2: t_{i+3}
print("logits per depth:", [tuple(lg.shape[:2]) for lg in [out.logits, *mtp_logits]])


def show(t):
    """A byte as a readable character ('\\n' for a newline)."""
    return repr(chr(int(t)))[1:-1]


b = stream[0]
print(f"\n{'i':>2}  {'t_i':>4} | {'main target':>13} | {'MTP-1 reads':>11}  {'MTP-1 target':>14}")
for i in range(tokens.shape[1]):
    mtp_in = f"Emb({show(b[i + 1])})" if i < mtp_logits[0].shape[1] else "-"
    mtp_out = f"t_{i + 2} = {show(b[i + 2])}" if i < mtp_logits[0].shape[1] else "(no target)"
    print(f"{i:>2}  {show(b[i]):>4} | {f't_{i + 1} = {show(b[i + 1])}':>13} | {mtp_in:>11}  {mtp_out:>14}")

# %% [markdown]
# Read the row of `=`: the main head must guess the first digit of the answer, `4`. The MTP module at the same
# position is *told* that digit (it reads $\mathrm{Emb}(t_{i+1})$) and must guess the second, `6`. The last position
# has no MTP target inside the window, which is why depth $k$ has $T-k$ positions.
#
# A leak test makes "never sees its target" concrete: change the token the depth-1 module is scored on at position
# $i$, and its predictions up to position $i$ must not move; change the token it reads, and they must.

# %%
i = 5  # the position of '='
with torch.no_grad():
    base = model.mtp_logits(tokens, model(tokens).hidden_states)[0]
    for j, role in [(i + 2, "its target"), (i + 1, "its input")]:
        changed = stream.clone()
        changed[0, j] = encode("9")[0]  # replace one digit of the answer by '9'
        x = changed[:, :-1]
        moved = model.mtp_logits(x, model(x).hidden_states)[0]
        diff = (moved[:, : i + 1] - base[:, : i + 1]).abs().max().item()
        verdict = f"yes, by up to {diff:.2f}" if diff > 1e-5 else "no (at most rounding noise, < 1e-5)"
        print(f"t_{j} ({role}) '{show(stream[0, j])}' -> '9': "
              f"do the depth-1 logits at positions 0..{i} move? {verdict}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The training loss
#
# Each depth is scored like the main model, with a cross-entropy over the positions that have a target:
# $\mathcal{L}^k_\text{MTP} = -\frac{1}{T-k}\sum_{i} \log P^k_{i+k+1}[t_{i+k+1}]$ (the report writes the mean over $T$
# positions). The modules' losses are averaged and weighted by $\lambda$:
#
# $$
# \mathcal{L}_\text{MTP} = \frac{\lambda}{D}\sum_{k=1}^{D} \mathcal{L}^k_\text{MTP},
# \qquad
# \mathcal{L} = \mathcal{L}_\text{main} + \mathcal{L}_\text{MTP}\ (+\ \text{the balance term of lesson 3}).
# $$
#
# V3 used $\lambda = 0.3$ for its first 10T training tokens and $0.1$ for the remaining 4.8T. The model returns
# every part: `main_loss`, one entry per depth in `mtp_losses`, `balance_loss` and their sum `loss`, the number an
# optimiser steps on.

# %%
lam, D = tiny.mtp_loss_weight, len(model.mtp)
print(f"main loss:    {out.main_loss.item():.4f} (an untrained model: about ln 256 = "
      f"{torch.tensor(256.0).log().item():.4f})")
for k, loss_k in enumerate(out.mtp_losses, start=1):
    print(f"MTP depth {k}:  {loss_k.item():.4f}")
print(f"balance term: {out.balance_loss.item():.6f}")
rebuilt = out.main_loss + lam / D * sum(out.mtp_losses) + out.balance_loss
print(f"loss = main + {lam}/{D} * sum(MTP) + balance = {rebuilt.item():.4f};"
      f" the model's loss: {out.loss.item():.4f}")
assert torch.allclose(rebuilt, out.loss)

# %% [markdown]
# Why train on it at all? The report credits MTP with a denser training signal (each position is scored more than
# once) and with making $\mathbf{h}^0_i$ carry information about more than the next token. At inference the modules
# can simply be dropped; the main model works alone. Or they can be put to work (next section).
#
# ### What the report measured, and what we measure
#
# The ablation (§4.5.1, Table 4) trains two MoE models with and without one MTP module — a small one with 15.7B total
# parameters on 1.33T tokens and a large one with 228.7B on 540B tokens — drops the module at inference so both cost
# the same, and finds the MTP models better on most benchmarks. `make bench` runs that comparison on `mini`
# (`benchmarks/repro_mtp.py`): the main model's next-token validation loss with λ = 0.3 vs without MTP, 3 seeds, the
# same initial weights and batches; at two budgets, and once at equal wall clock, because an MTP step costs more.

# %%
mtp = bench_data("repro_mtp")
print(f"{run_date('repro_mtp')}:")
print("main model's validation loss (nats/byte), mean ± std of 3 seeds")
for key, what in (("equal_steps", "120 steps each"), ("equal_steps_long", "900 steps each"),
                  ("equal_time", f"equal wall clock: 120 vs {mtp['equal_time_steps']} steps")):
    d = mtp[key]
    print(f"  {what:<34} MTP {d['mtp']['mean']:.4f}±{d['mtp']['std']:.4f}  no MTP {d['no_mtp']['mean']:.4f}"
          f"±{d['no_mtp']['std']:.4f}  Δ {d['difference']['mean']:+.4f}±{d['difference']['std']:.4f}")
print(f"an MTP step costs {mtp['time_ratio']:.2f}× a step without MTP")
n_mini = count_params(preset("mini")).total
print(f"Table 4's models have {15.7e9 / n_mini:,.0f}× and {228.7e9 / n_mini:,.0f}× the parameters of ours "
      f"({n_mini:,})")

# %% [markdown]
# What the mini runs say, read with the seeds in mind:
#
# * **At 120 steps** the sign of the difference changes from seed to seed and the spread is larger than the mean:
#   no verdict. This early, the loss falls steeply and a run's luck with its batches matters more than MTP.
# * **At 900 steps** (the shipped run's length) the model trained with MTP is ahead on average — the report's
#   direction — but by less than the seed-to-seed spread of the difference: a trend, not a result, at 3 seeds.
# * **At equal wall clock** the model without MTP wins clearly. An MTP step costs about a third more here (printed
#   above), and early in training a third more steps is worth far more than a denser signal. The report's ablation
#   compares at equal *tokens*, with models trained for hundreds of billions of tokens, where one step's extra cost
#   buys the same tokens a better training signal; it does not claim a wall-clock gain in training.
#
# So at our scale MTP's training benefit is at most small and needs long runs to show; the report's Table 4 is a
# statement about models thousands of times bigger than ours (printed above). The second use of the module,
# drafting tokens at inference, is one we can measure directly: it is the rest of this lesson.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Speculative decoding: the MTP module drafts, the main model verifies
#
# Plain greedy decoding makes one forward pass of the main model per new token. But after a forward pass we hold
# $\mathbf{h}^0_i$ and the next token $t_{i+1}$, exactly the inputs of the depth-1 module, which then proposes a
# **draft** for $t_{i+2}$ at the price of one block. The next forward of the main model takes *two* tokens,
# $[t_{i+1}, \text{draft}]$, and its two outputs are
#
# 1. the main model's own choice for $t_{i+2}$. If it equals the draft, the draft is **accepted** (greedy
#    acceptance); otherwise the main model's choice replaces it;
# 2. when the draft was accepted, the main model's choice for $t_{i+3}$, for free.
#
# Every kept token is the main model's own argmax, so the output is **exactly** what plain greedy decoding would
# produce; only the number of forward passes changes ([Leviathan et al., 2023](https://arxiv.org/abs/2211.17192)
# keep even the sampling distribution exact with a rejection rule; we stay greedy). A verification pass yields one
# token for sure and a second one with probability $p$, the acceptance rate:
#
# $$
# \text{tokens per main-model forward} \approx 1 + p .
# $$
#
# The report measures $p$ = 85–90% for V3's second token and about 1.8× more tokens per second. First, the
# exactness on a model that has learnt nothing: `speculative_generate` must return what `generate` returns.

# %%
untrained = DeepSeekV3(preset("mini")).eval()
prompt = encode("The old sailor walked to ")
tokens_spec, stats = speculative_generate(untrained, prompt, N_NEW)
tokens_greedy = generate(untrained, prompt, N_NEW, temperature=0.0)
assert torch.equal(tokens_spec, tokens_greedy)
print("speculative == greedy:", torch.equal(tokens_spec, tokens_greedy))
print(f"continuation (untrained, bytes as text): {decode(tokens_spec[len(prompt):])!r}")
print(stats)
print(f"acceptance {stats.acceptance_rate:.1%}, {stats.tokens_per_forward:.3f} tokens per main-model forward")

# %% [markdown]
# `SpeculativeStats` counts the main model's forward passes, the prefill over the prompt included. A forward hook on
# the model counts the same calls independently, for both decoders:

# %%
calls = []
hook = untrained.register_forward_hook(lambda *_: calls.append(1))
generate(untrained, prompt, N_NEW, temperature=0.0)
n_greedy = len(calls)
calls.clear()
speculative_generate(untrained, prompt, N_NEW)
n_spec = len(calls)
hook.remove()
print(f"plain greedy: {n_greedy} forward passes for {N_NEW} tokens; "
      f"speculative: {n_spec} (stats say {stats.forward_passes})")

# %% [markdown]
# The untrained model's drafts are almost never accepted, so speculative decoding only adds the cost of drafting.
# A draft is worth something only when the MTP module has learnt to agree with the main model.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## A trained model
#
# The `mini` preset (4 blocks, 16 routed experts, one MTP module) was trained on the course's generated corpus with
# the MTP loss on (lesson 6 shows the run). Its `summary.json` records the validation losses of exactly the shipped
# weights, in nats per byte.

# %%
summary = json.loads((CHECKPOINT / "summary.json").read_text())
trained = load_model(CHECKPOINT / "model.safetensors")
print(f"trained for {summary['step']} steps on {summary['dataset']}")
print(f"validation loss: main {summary['val_loss']:.3f}, MTP depth 1 {summary['val_mtp_losses'][0]:.3f}, "
      f"unigram baseline {summary['unigram_baseline']:.3f} nats/byte")

# %% [markdown]
# The MTP module's loss is about the same as the main model's, although it predicts one token further. That is the
# sequential design at work: knowing $t_{i+1}$, predicting $t_{i+2}$ is again a next-token problem. Here is what
# both heads of the trained model predict on an arithmetic line from the validation split, in the layout of the
# table above (✓ = equals the text).

# %%
data = builtin_dataset(seed=0)
val, dom = data.val, data.val_domains
line_start = int((dom == data.domain_names.index("arithmetic")).nonzero()[0])
line_end = line_start + decode(val[line_start:line_start + 40]).index("\n") + 1
context = val[max(0, line_start - 48):line_end + 2][None]  # text before the line, the line, 2 bytes more
with torch.no_grad():
    h = trained(context)
    main_pred = h.logits.argmax(-1)[0]  # position i -> t_{i+1}
    mtp_pred = trained.mtp_logits(context, h.hidden_states)[0].argmax(-1)[0]  # position i -> t_{i+2}
c = context[0]
first = context.shape[1] - 2 - (line_end - line_start)  # where the line starts in the context
print(f"{'i':>3}  {'t_i':>4} | {'main: t_(i+1)':>13} | {'MTP-1 reads':>11}  {'MTP-1: t_(i+2)':>14}")
for i in range(first, context.shape[1] - 2):
    ok1 = "✓" if main_pred[i] == c[i + 1] else " "
    ok2 = "✓" if mtp_pred[i] == c[i + 2] else " "
    print(f"{i:>3}  {show(c[i]):>4} | {show(main_pred[i]):>11} {ok1} | "
          f"{'Emb(' + show(c[i + 1]) + ')':>11}  {show(mtp_pred[i]):>12} {ok2}")

# %% [markdown]
# Now speculative decoding on prompts from the **validation split** (text the model never trained on). Each prompt
# is 40 bytes of text followed by the first 8 bytes of a new document of one domain; the model continues it. For
# every prompt we check the exactness against plain greedy decoding again, and run the untrained model on the same
# prompt for contrast.

# %%
CONTEXT, HEAD = 40, 8
doc_starts = ((dom[1:] != dom[:-1]).nonzero().flatten() + 1).tolist()  # where the domain changes
prompts = []
for d_id, name in enumerate(data.domain_names):
    picked = [s for s in doc_starts if dom[s] == d_id and s >= CONTEXT][:PROMPTS_PER_DOMAIN]
    prompts += [(name, val[s - CONTEXT:s + HEAD]) for s in picked]

runs = []
for name, p in prompts:
    out_spec, st = speculative_generate(trained, p, N_NEW)
    assert torch.equal(out_spec, generate(trained, p, N_NEW, temperature=0.0)), "not exact!"
    _, st_untrained = speculative_generate(untrained, p, N_NEW)
    runs.append((name, p, out_spec, st, st_untrained))

print(f"all {len(runs)} speculative outputs equal plain greedy decoding\n")
print(f"{'prompt':<13}{'accepted':>10}{'rate':>8}{'forwards':>10}{'tokens/fwd':>12}{'untrained rate':>16}")
for n, (name, _, _, st, su) in enumerate(runs):
    print(f"{name + ' ' + str(n % PROMPTS_PER_DOMAIN + 1):<13}{f'{st.accepted}/{st.drafted}':>10}"
          f"{st.acceptance_rate:>8.1%}{st.forward_passes:>10}{st.tokens_per_forward:>12.3f}"
          f"{su.acceptance_rate:>16.1%}")


def total(stats_list):
    """Pooled acceptance rate and tokens per forward of several runs."""
    acc = sum(s.accepted for s in stats_list) / sum(s.drafted for s in stats_list)
    tpf = sum(s.new_tokens for s in stats_list) / sum(s.forward_passes for s in stats_list)
    return acc, tpf


acc, tpf = total([r[3] for r in runs])
acc_u, tpf_u = total([r[4] for r in runs])
print(f"\ntrained:   acceptance {acc:.1%}, {tpf:.3f} tokens per main-model forward "
      f"({len(runs) * N_NEW} tokens in {sum(r[3].forward_passes for r in runs)} forwards)")
print(f"untrained: acceptance {acc_u:.1%}, {tpf_u:.3f} tokens per main-model forward")
print(f"1 + p for the trained model: {1 + acc:.3f} (measured: a bit less, as the prefill verifies no draft)")

# %% [markdown]
# Two of the continuations, prompt in brackets. The greedy model writes plausible documents of the corpus; where it
# is sure of itself, the MTP module is too.

# %%
for name, p, out_spec, st, _ in [runs[0], runs[-1]]:
    print(f"{name} ({st.acceptance_rate:.0%} accepted): [{decode(p)!r}] -> {decode(out_spec[len(p):])!r}\n")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Where drafts fail: agreement per domain
#
# A handful of prompts gives a noisy rate. Every byte of the validation split carries its domain label, so we can
# also ask, for every position of some validation text at once: does the depth-1 draft for $t_{i+2}$ equal the main
# model's choice for $t_{i+2}$ (made one position later)? That is the acceptance rate the drafts would have if the
# text so far were this text (in decoding, the text so far is the model's own output). One batched forward pass
# covers every position.

# %%
EVAL_ROWS, EVAL_LEN = 8, 256
windows = val[:EVAL_ROWS * EVAL_LEN].view(EVAL_ROWS, EVAL_LEN)
labels = dom[:EVAL_ROWS * EVAL_LEN].view(EVAL_ROWS, EVAL_LEN)[:, 2:]  # the domain of t_{i+2}


def draft_agreement(m):
    """Per position i (0..EVAL_LEN-3): does the depth-1 draft for t_{i+2} equal the main model's choice?"""
    with torch.no_grad():
        o = m(windows)
        draft = m.mtp_logits(windows, o.hidden_states)[0].argmax(-1)[:, :-1]  # position i -> t_{i+2}
    main_choice = o.logits.argmax(-1)[:, 1:-1]  # position i+1 -> t_{i+2}
    text = windows[:, 2:]
    return draft == main_choice, main_choice == text, draft == text


agree, main_right, draft_right = draft_agreement(trained)
agree_u, _, _ = draft_agreement(untrained)
per_domain = {}
print(f"{'domain':<12}{'positions':>10}{'agreement':>11}{'main = text':>13}{'draft = text':>14}"
      f"{'untrained agreement':>21}")
for d_id, name in enumerate([*data.domain_names, "all"]):
    sel = labels == d_id if name != "all" else torch.ones_like(agree)
    rates = [x[sel].float().mean().item() for x in (agree, main_right, draft_right, agree_u)]
    per_domain[name] = [rates[0], rates[3]]
    print(f"{name:<12}{int(sel.sum()):>10}{rates[0]:>11.1%}{rates[1]:>13.1%}{rates[2]:>14.1%}{rates[3]:>21.1%}")

# %% slideshow={"slide_type": "slide"}
names = list(data.domain_names)
spec_by_domain = [total([r[3] for r in runs if r[0] == name])[0] for name in names]
v3_band = "#009E73"
fig = go.Figure([
    go.Bar(name="trained: accepted in decoding (prompts)", x=names,
           y=[100 * v for v in spec_by_domain], marker_color="#0072B2"),
    go.Bar(name="trained: agreement on validation bytes", x=names,
           y=[100 * per_domain[n][0] for n in names], marker_color="#56B4E9"),
    go.Bar(name="untrained: agreement on validation", x=names,
           y=[100 * per_domain[n][1] for n in names], marker_color="#E69F00"),
    go.Scatter(name="V3's reported acceptance: 85–90%", x=[None], y=[None], mode="markers",
               marker=dict(symbol="square", size=14, color=v3_band, opacity=0.3)),
])
fig.add_hrect(y0=85, y1=90, fillcolor=v3_band, opacity=0.3, line_width=0, layer="below")
fig.update_traces(hovertemplate="%{x}: %{y:.1f}%", selector=dict(type="bar"))
fig.update_layout(barmode="group", template="course", title="How often the MTP module's draft is accepted",
                  xaxis_title="domain", yaxis=dict(title="acceptance / agreement (%)", range=[0, 105]),
                  legend=dict(orientation="h", y=-0.2), height=520, font=dict(size=13))
fig.show()

# %% [markdown]
# The drafts fail where the *main* model is unsure: the digits of an arithmetic result (the "main = text" column:
# the main model itself rarely knows them). There a draft is a guess about a guess, and the two often differ.
# In the templated domains the next bytes are nearly determined by the text so far, both heads know them, and nearly
# every draft is accepted. In decoding, the arithmetic prompts fare better than the agreement suggests: the answer
# is only the first few of the generated bytes (the continuations above move on to other documents), and the
# model continues from its *own* digits rather than the true ones.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Forward passes are not seconds
#
# Tokens per main-model forward is a property of the model and the text, the same on any machine. Time is not: a
# verification pass over two tokens and the draft's extra block both cost something. On a GPU serving a big model
# one token at a time, a forward is bound by reading the weights from memory, so two tokens cost about as much as
# one; that is where the report's 1.8× comes from. On this CPU, at this size and batch 1, the forward of two tokens
# costs noticeably more than that of one (every linear layer multiplies a 2-row matrix where one token needs only a
# matrix-vector product, which the math library does up to twice as fast), and the draft runs one more block on top
# of our four. So expect a wall-clock speed-up well below the forwards saved, and one that moves with the machine's
# load: the timing below is not stored as a checked result. `SpeculativeStats` also records where the speculative
# time went (`verify_seconds`, `draft_seconds`), which says how much speed-up the machine allows.

# %%
# NBVAL_IGNORE_OUTPUT
REPEATS = 3  # the fastest of 3 runs per prompt and decoder: less noise from other programs


def seconds(decode_fn, p):
    """(seconds, what decode_fn returned)"""
    t0 = time.perf_counter()
    out = decode_fn(trained, p, N_NEW)  # generate's default temperature is 0.0: greedy
    return time.perf_counter() - t0, out


t_greedy = t_spec = verify_s = draft_s = 0.0
verifies = drafts = 0
for _, p in prompts[::PROMPTS_PER_DOMAIN]:  # the first prompt of each domain
    runs_g, runs_s = [], []
    for _ in range(REPEATS):  # interleaved, so both decoders see the same machine load
        runs_g.append(seconds(generate, p)[0])
        runs_s.append(seconds(speculative_generate, p))
    fastest, (_, st) = min(runs_s, key=lambda run: run[0])
    t_greedy, t_spec = t_greedy + min(runs_g), t_spec + fastest
    verify_s, draft_s = verify_s + st.verify_seconds, draft_s + st.draft_seconds
    verifies, drafts = verifies + st.drafted, drafts + st.forward_passes  # a draft after the prefill and every verify
n_tokens = len(data.domain_names) * N_NEW
step = t_greedy / n_tokens
print(f"{n_tokens} tokens: greedy {n_tokens / t_greedy:.0f} tokens/s, speculative {n_tokens / t_spec:.0f} tokens/s")
print(f"wall-clock speed-up {t_greedy / t_spec:.2f}x, against {tpf:.2f}x more tokens per main-model forward")
print(f"a greedy step {1e3 * step:.2f} ms; a 2-token verify {verify_s / verifies / step:.2f}x that, "
      f"a draft {draft_s / drafts / step:.2f}x: at most {tpf / ((verify_s / verifies + draft_s / drafts) / step):.2f}x")
print(f"the speculative time: verifies {verify_s / t_spec:.0%}, drafts {draft_s / t_spec:.0%}, "
      f"the rest {1 - (verify_s + draft_s) / t_spec:.0%}")

# %% [markdown]
# > **How our mini model differs from the real one.** The MTP module is built as in V3 (projection $M_1$, one MoE
# > block, shared embedding and head, one depth), but on a 4-block model with 192-wide states instead of 61 blocks
# > of 7,168. Our tokens are bytes: guessing the byte after next is easier than guessing V3's token after next (a
# > BPE token carries several bytes), and our corpus is generated from templates, so most bytes are nearly
# > determined. Our acceptance rates are therefore not comparable one-to-one with the report's 85–90%, which V3
# > measured on real text across many topics. We keep $\lambda = 0.3$ for the whole run (V3 lowered it to 0.1
# > for its last 4.8T tokens); the weights are stored in bf16 and run in fp32 on a CPU; decoding is greedy and one
# > sequence at a time (V3 is served in batches on GPUs, where verifying a second token costs little extra).

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Bug hunt: an MTP loss that leaks
#
# `course.bug_hunt` hands you a tiny model whose MTP losses were rewritten by hand, with one bug planted (the
# library stays correct). The tool is a leakage test: train a copy for 25 steps on uniformly random bytes, where
# nothing can be predicted. An honest loss cannot fall below ln(256) ≈ 5.55 nats there; `mtp_leak` reports how far
# the MTP loss falls below ln(256) − 0.5. Read the planted function, name the bug (one of `bug_hunt.BUGS`), and write
# the fix: a function with the same arguments.

# %%
from course import bug_hunt, check_bug_hunt

print(bug_hunt.bug_menu())
lab_5 = bug_hunt.open_lab("5")
print(f"\nlab 5: {lab_5.detector} = {lab_5.detect():.2f} nats (an honest MTP loss: 0)")
print(lab_5.source)

# %%
my_bug = ...  # one of the names above

check_bug_hunt.check_diagnosis("5", my_bug)

# %%
my_fix = ...  # def my_fix(model, mtp_logits, targets): ...

check_bug_hunt.check_fix("5", my_fix)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
def fixed_mtp_losses(model, mtp_logits, targets):
    # depth k at position i saw the embedding of token i + k; it must predict token i + k + 1 = targets[:, i + k]
    return [cross_entropy(logits, targets[:, k:]) for k, logits in enumerate(mtp_logits, start=1)]


print(check_bug_hunt.check_diagnosis("5", "mtp-target-leak"))
print(check_bug_hunt.check_fix("5", fixed_mtp_losses))
print("scored against its own input, the module learns to copy: a falling loss that teaches nothing")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Exercises
#
# Each exercise cell starts with `my_answer = ...`. Replace the `...` with a number, run the cell, and the checker
# from `course.check_mtp` compares it with what the library computes. A collapsed solution follows each
# exercise.

# %% [markdown]
# **Exercise 1.** The depth-1 MTP module at position $i$ is scored against token $t_{i+j}$. What is $j$? (The
# checker finds it by shifting the token stream until the cross-entropy matches the model's own `mtp_losses[0]`.)

# %%
my_answer = ...  # your expression here

check_mtp.check_mtp_target(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
solution = 2  # it reads Emb(t_{i+1}) and predicts the token after it
print(check_mtp.check_mtp_target(solution))
print("in the table: at '=' the module reads '4' and predicts '6'")

# %% [markdown]
# **Exercise 2.** One draft per verification pass, accepted with probability $p = 0.85$ (the low end of V3's
# range). How many new tokens does one main-model forward produce on average?

# %%
my_answer = ...  # your expression here

check_mtp.check_tokens_per_forward(my_answer, acceptance=0.85)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
solution = 1 + 0.85
print(check_mtp.check_tokens_per_forward(solution, acceptance=0.85))
print(f"ours: 1 + p = {1 + acc:.3f}, measured {tpf:.3f} tokens per forward; "
      "the report: about 1.8x tokens per second")

# %% [markdown]
# **Exercise 3.** A model with $D = 3$ MTP modules trains on a window of $T = 16$ tokens (with their 16 targets).
# How many (position, target) pairs do the main loss and the three MTP losses score together?

# %%
my_answer = ...  # your expression here

check_mtp.check_scored_predictions(my_answer, seq_len=16, depth=3)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
T, D3 = 16, 3
solution = T + sum(T - k for k in range(1, D3 + 1))  # depth k has T - k positions
print(check_mtp.check_scored_predictions(solution, seq_len=T, depth=D3))
print("16 + 15 + 14 + 13; each depth's mean is weighted by lambda / D in the loss")

# %% [markdown]
# **Exercise 4.** Plain greedy `generate` makes how many forward passes of the main model for 48 new tokens? (The
# checker counts them with a forward hook, as above.) Compare with speculative decoding at your answer to
# exercise 2.

# %%
my_answer = ...  # your expression here

check_mtp.check_greedy_forwards(my_answer, new_tokens=48)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
solution = 48  # the prefill gives the first token, then one forward per token
print(check_mtp.check_greedy_forwards(solution, new_tokens=48))
print(f"speculative at p = 0.85: about 48 / 1.85 = {48 / 1.85:.0f} forwards")

# %% [markdown]
# **Discussion.** Our drafts are accepted most often where the text is most predictable, and least on arithmetic
# answers. What does that suggest about the speed-up a chat model gets on a maths problem versus on boilerplate
# code? And why must a *sampling* decoder use a rejection rule instead of "accept if it equals the argmax" to stay
# exact?
#
# Next: lesson 6, the mini end-to-end training run.
