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
# # 10 · Long context: reading past the training length with YaRN
#
# **Prerequisites.** Lesson 1 (RoPE and MLA's decoupled RoPE key) and lesson 6 (how the course trains a model).
# This lesson continues the training material of lesson 6: DeepSeek-V3 is pre-trained at 4K tokens, then extended to
# 32K and 128K in two short phases with YaRN (report §4.3). We do the same at mini scale, on a CPU.
#
# **Learning goals.** After this lesson you can
#
# 1. explain why a model with rotary position embeddings meets angles it has never seen beyond its training length;
# 2. write down the four position schemes side by side — plain RoPE, linear position interpolation, NTK-aware
#    scaling and YaRN — and compute their frequencies with `dsv3_mini.rope`;
# 3. read a needle-in-a-haystack heat map (retrieval accuracy over length × depth) and a loss-by-position curve;
# 4. measure, on a model trained here at 128 bytes, what each method buys at 2×, 4× and 8× that length, with and
#    without a short two-phase extension fine-tune, and compare our recipe with V3's;
# 5. size the KV cache a long context needs, MLA against MHA.
#
# Every number below is computed by `dsv3_mini`, live or from the files `python -m dsv3_mini.long_context` and
# `benchmarks/repro_long_context.py` wrote into `checkpoints/passkey/`.

# %%
import json
import math
from pathlib import Path

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from course import check_long_context
from dsv3_mini import preset, seed_everything
from dsv3_mini.data import decode
from dsv3_mini.kv_cache import bytes_per_token, cache_bytes
from dsv3_mini.long_context import (
    METHODS,
    PasskeyConfig,
    cache_by_length,
    evaluate,
    filler_stream,
    load_run,
    passkey_document,
    scaled_for,
    training_batch,
)
from dsv3_mini.rope import inverse_frequencies, yarn_ramp
from widgets.yarn import YaRNWidget

_ = seed_everything(0)  # the same numbers on every run
torch.set_num_threads(1)

RUN = Path("../checkpoints/passkey")  # the shipped passkey run and its results
COLORS = {"none": "#000000", "linear": "#E69F00", "ntk": "#56B4E9", "yarn": "#009E73"}  # Okabe–Ito
NAMES = {"none": "plain RoPE", "linear": "linear (PI)", "ntk": "NTK-aware", "yarn": "YaRN"}

# %% slideshow={"slide_type": "skip"} tags=["remove-cell"]
from widgets import setup_plotly

_ = setup_plotly()  # plotly in JupyterLab, plain HTML in the book

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1 · Angles a model has never seen
#
# RoPE rotates each pair $j$ of query and key dimensions by the angle $p\,\theta_j$ at position $p$, with
# $\theta_j = \text{theta}^{-2j/d}$ (lesson 1). A score depends only on the *difference* of the angles, so on the
# distance $m - n$. But a model trained on sequences of length $L$ has only ever seen differences below $L$: pair $j$
# has seen angles up to $L\theta_j$. For the fast pairs that is many full turns — every angle has been seen. For the
# slow pairs, whose wavelength $2\pi/\theta_j$ is longer than $L$, a longer context produces angles that never
# occurred in training. That is where a model read past its training length goes wrong.
#
# Our passkey model (a "tiny" DeepSeek-V3: MLA with a decoupled RoPE part of $d_h^R = 8$ dimensions, so 4 pairs) was
# trained at $L = 128$ bytes:

# %%
model, results = load_run(RUN)
pc = PasskeyConfig(**results["config"])
cfg = model.cfg
inv, _ = inverse_frequencies(cfg.qk_rope_head_dim, cfg.rope_theta)
print(f"trained at {pc.seq_len} bytes; RoPE pairs: {len(inv)} (d_h^R = {cfg.qk_rope_head_dim})")
for j, t in enumerate(inv.tolist()):
    wavelength = 2 * math.pi / t
    seen = min(1.0, pc.seq_len / wavelength)
    print(f"pair {j}: θ = {t:.4g} rad/byte, wavelength {wavelength:8,.0f} bytes, "
          f"angles seen in training: {seen:.0%} of a turn" + ("" if seen < 1 else " (all)"))

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2 · Four ways to read a longer context
#
# Each method changes the frequencies $\theta_j$ (and nothing else in the model: rotary embeddings have no weights)
# for a scale $s$ = target length / training length:
#
# - **plain RoPE** (`rope_scaling=None`): $\theta_j$ unchanged — the model extrapolates to new angles;
# - **linear position interpolation** (`"linear"`): $\theta'_j = \theta_j / s$ — position $p$ is read as $p/s$, so
#   every angle stays in the trained range, but neighbouring positions are $s$ times closer than the model knows;
# - **NTK-aware scaling** (`"ntk"`): a larger base, $\text{theta}' = \text{theta}\cdot s^{d/(d-2)}$ — the fastest
#   pair keeps its frequency, the slowest is divided by exactly $s$, those between by less;
# - **YaRN** (`"yarn"`, DeepSeek-V3): a ramp $r_j$ between the pairs that turn more than $\beta_\text{fast}$ times in
#   the original context (kept, $r_j = 0$) and those that turn fewer than $\beta_\text{slow}$ times (interpolated,
#   $r_j = 1$): $\theta'_j = (1 - r_j)\,\theta_j + r_j\,\theta_j/s$, plus a temperature $\sqrt t = 0.1\ln s + 1$
#   on cos and sin, so every attention logit is multiplied by $t$.
#
# The widget shows $\theta_j / \theta'_j$ — how much each pair is slowed — for DeepSeek-V3's 32 RoPE pairs
# ($d_h^R = 64$, pre-trained at 4K; V3 uses $s = 40$) or for our passkey model's 4, and on the right how many turns
# each pair makes within the original context, against YaRN's two β lines. Move $s$ and the βs; a setting the config
# refuses shows its error. In JupyterLab the controls are live; the figure after them is the static twin of the
# published book (its slider steps through $s$).

# %% slideshow={"slide_type": "slide"} tags=["remove-output"]
w = YaRNWidget()
w

# %% slideshow={"slide_type": "slide"} tags=["remove-input"]
w.static_figure().show()

# %%
v3 = preset("deepseek-v3")
d_r, original = v3.qk_rope_head_dim, v3.rope_scaling["original_max_position_embeddings"]
ramp = yarn_ramp(d_r, v3.rope_theta, original, v3.rope_scaling["beta_fast"], v3.rope_scaling["beta_slow"])
kept, full = int((ramp == 0).sum()), int((ramp == 1).sum())
_, amplitude = inverse_frequencies(d_r, v3.rope_theta, v3.rope_scaling)
print(f"YaRN at s = {v3.rope_scaling['factor']}: {kept} pairs kept, {full} fully interpolated, "
      f"{len(ramp) - kept - full} on the ramp")
print(f"√t = 0.1·ln({v3.rope_scaling['factor']}) + 1 = {0.1 * math.log(40) + 1:.4f}; V3's config puts it into the "
      f"softmax scale (mscale² = {v3.softmax_scale * math.sqrt(v3.qk_head_dim):.4f}) and cos/sin get {amplitude:.1f}")
ramp_ours = yarn_ramp(cfg.qk_rope_head_dim, cfg.rope_theta, pc.seq_len)
print(f"the passkey model's {len(ramp_ours)} pairs at {pc.seq_len} bytes: ramp r_j = {ramp_ours.tolist()}")

# %% [markdown]
# Linear interpolation slows every pair by $s$, including the fast ones that carry the fine, local position
# information; NTK-aware leaves the fastest pair alone and spreads the slow-down geometrically; YaRN keeps the fast
# pairs exactly (they turned many times within 4K: no new angles there), interpolates the slow ones fully, and ramps
# between. V3's released config sets `mscale = mscale_all_dim = 1`, so the two temperatures cancel on cos/sin and
# the whole $t$ goes into the softmax scale — the same product.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3 · The task: a pass key in a haystack
#
# A document is filler text (the English domain of the course corpus: no digits in it) with one sentence
# "the pass key is 48213." at a chosen **depth** (0 = at the start, 1 = just before the question), and at the end
# "what is the pass key?" followed by the key. The model **retrieves** when it predicts all five digits after the
# question. (We score with teacher forcing: the five argmax predictions are all right exactly when greedy decoding
# writes the key.) This is V3's Needle-in-a-Haystack test in miniature.

# %%
filler = filler_stream(5_000, 0)
doc, answer_at = passkey_document(128, 0.3, 48213, filler, start=0)
print(repr(decode(doc)))
print(f"{len(doc)} bytes; the answer digits are bytes {answer_at.tolist()}")

# %% [markdown]
# Training (`dsv3_mini.long_context.train_passkey`) packs one or two documents of random length and depth into every
# 128-byte sequence, so the question comes at many positions and every batch holds dozens of retrievals. The loss is
# the next-byte cross-entropy plus 3 × the cross-entropy of the answer digits: the filler alone would teach nothing
# about retrieval. Plain RoPE throughout.

# %%
tokens, targets, answer = training_batch(4, pc.seq_len, filler, torch.Generator().manual_seed(1))
print(f"a batch of 4: {int(answer.sum()) // 5} questions; row 0 reads")
print(repr(decode(tokens[0])))
print(f"\nshipped run: {results['command']}")
print(f"{pc.steps} steps of {pc.batch_size} × {pc.seq_len} bytes, model {cfg.name}, "
      f"{sum(p.numel() for p in model.parameters()):,} parameters")

# %% slideshow={"slide_type": "slide"}
hist = [h for h in results["history"] if h["seq_len"] == pc.seq_len][: pc.steps // 50]
fig = go.Figure()
fig.add_scatter(x=[h["step"] for h in hist], y=[round(h["loss"], 4) for h in hist], name="all bytes",
                line=dict(color="#0072B2"))
fig.add_scatter(x=[h["step"] for h in hist], y=[round(h["answer_loss"], 4) for h in hist],
                name="answer digits only", line=dict(color="#D55E00", width=3))
fig.add_scatter(x=[0, pc.steps], y=[math.log(10)] * 2, name="guessing a digit (ln 10)", mode="lines",
                line=dict(color="#555555", dash="dash"))
fig.update_layout(title="Training the passkey model at 128 bytes (one batch per point)", xaxis_title="step",
                  yaxis_title="cross-entropy (nats/byte)", template="course", font=dict(size=14))
fig.show()

# %% [markdown]
# The answer loss sits at $\ln 10$ — guessing — for hundreds of steps while the filler is learnt, then drops: the
# model has found how to look back for the digits after "the pass key is" and copy them (an *induction* pattern).

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4 · Live: the shipped model at 1× and 2× its training length
#
# Reading a longer document needs only new RoPE tables: `scaled_for(model, method, length, 128)` builds the same
# weights with `method` at $s$ = length / 128. This cell measures plain RoPE and YaRN at 128 and 256 bytes on 40
# fresh documents each (8 keys at each of 5 depths, from filler the training never saw) — and checks that it gets
# exactly the numbers of the shipped results file.

# %%
live = {}
for method in ("none", "yarn"):
    live[method] = [evaluate(scaled_for(model, method, n, pc.seq_len), (n,))["accuracy_by_length"][0]
                    for n in (pc.seq_len, 2 * pc.seq_len)]
    shipped = results["no_finetune"][method]["accuracy_by_length"][:2]
    print(f"{NAMES[method]:>11}: retrieval at {pc.seq_len} bytes {live[method][0]:.0%}, "
          f"at {2 * pc.seq_len} bytes {live[method][1]:.0%}   (results file: {shipped}, "
          f"same: {live[method] == shipped})")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5 · The needle heat map: length × depth, for each method
#
# The shipped results file holds the full grid: every method at 1×, 2×, 4× and 8× the training length, at 5 depths,
# 8 documents per cell (depth 0 = the key at the start of the document) — first **without fine-tuning**
# ($s$ = length / 128 for each length), then **after the
# extension** (`dsv3_mini.long_context.extend`): a phase at 2× the training length, then one at 4× with a quarter of
# the batch, each method at one fixed $s$ for both (plain RoPE fine-tuned the same way is the control) — V3's two
# phases at mini scale; section 9 sets the settings beside V3's.

# %% slideshow={"slide_type": "slide"}
lengths = results["no_finetune"]["none"]["lengths"]
depths = results["no_finetune"]["none"]["depths"]
# one row per method, one column per condition: a stack that stays legible on a phone
fig = make_subplots(rows=len(METHODS), cols=2, shared_xaxes=True, shared_yaxes=True, horizontal_spacing=0.06,
                    vertical_spacing=0.05, column_titles=["no fine-tune", "extended"])
for r, method in enumerate(METHODS, start=1):
    for c, key in enumerate(("no_finetune", "finetuned"), start=1):
        acc = torch.tensor(results[key][method]["accuracy"]).T  # (depth, length)
        fig.add_heatmap(z=acc.tolist(), x=[f"{n // pc.seq_len}×" for n in lengths], y=[f"{d:.2f}" for d in depths],
                        zmin=0, zmax=1, colorscale=[[0, "#D55E00"], [0.5, "#F0E442"], [1, "#009E73"]],
                        showscale=(r == 1 and c == 1),
                        colorbar=dict(title=dict(text="retrieved", side="right"), tickformat=".0%"),
                        hovertemplate="%{x}, depth %{y}: %{z:.0%} retrieved<extra>" + NAMES[method] + "</extra>",
                        row=r, col=c)
    fig.update_yaxes(title_text=NAMES[method], row=r, col=1)
fig.update_layout(title="Passkey retrieval (share of 8 keys) by length<br>(× the training length) and depth of the key",
                  template="course", font=dict(size=12), height=900, margin=dict(t=110))
fig.show()

# %%
for key, label in (("no_finetune", "without fine-tuning"), ("finetuned", "after the extension")):
    print(label)
    for method in METHODS:
        a = results[key][method]["accuracy_by_length"]
        print(f"  {NAMES[method]:>11}: " + "   ".join(f"{n // pc.seq_len}× {x:4.0%}" for n, x in zip(lengths, a,
                                                                                                     strict=True)))

# %% [markdown]
# **What the grid shows.** Without fine-tuning, no method retrieves past the training length — not plain RoPE, and
# not the three scalings either: rescaling puts every position where the model has never learnt to read, and this
# model never answered a question beyond byte 128. After the extension, plain RoPE fine-tuned the same way partly
# learns 2×, loses some of its in-length accuracy, and still fails at 4× although its second phase trained at 4× —
# in this seed; section 7 shows that other seeds do better. The three scaled methods reuse angles the model knows and
# retrieve at 2× and mostly at 4×; YaRN and NTK-aware miss where the key is far from the question (small depths at
# 4×), linear interpolation misses more evenly. At 8×, beyond the length the extension trained on, retrieval is
# gone or nearly so: V3 too evaluates up to the 128K it extended to, not beyond.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 6 · Loss by position
#
# Retrieval is one bit per document. The next-byte loss along the document shows *where* reading breaks: below, the
# loss of the 8×-long documents (1,024 bytes) in 16 bins of 64 positions, for each method. The dashed line marks the
# training length.

# %%
fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,  # stacked: legible on a phone
                    subplot_titles=["no fine-tuning", "after the extension"])
for c, key in enumerate(("no_finetune", "finetuned"), start=1):
    for method in METHODS:
        r = results[key][method]
        edges, loss = r["bin_edges"][-1], r["loss_by_position"][-1]
        mids = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
        fig.add_scatter(x=mids, y=[round(v, 4) for v in loss], name=NAMES[method], legendgroup=method,
                        showlegend=(c == 1), line=dict(color=COLORS[method]), row=c, col=1)
    fig.add_vline(x=pc.seq_len, line=dict(color="#555555", dash="dash"), row=c, col=1)
fig.update_xaxes(title_text="position in a 1,024-byte document", row=2, col=1)
fig.update_yaxes(title_text="nats/byte", type="log", tickvals=[0.03, 0.1, 0.3, 1, 3, 10])
fig.update_layout(title="Next-byte loss by position<br>at 8× the training length", template="course",
                  font=dict(size=14), height=640, legend=dict(orientation="h", x=0, y=-0.14, yanchor="top"),
                  margin=dict(b=120))
fig.show()

# %% [markdown]
# Without fine-tuning, plain RoPE's loss jumps in the first bin past the training length — the new angles of its slow
# pairs. Linear interpolation is bad *everywhere*, even at the start: dividing the fast pairs' frequencies by 8 blurs
# the order of neighbouring bytes, which next-byte prediction needs most. NTK-aware holds for a while and then breaks;
# YaRN, which keeps the fast pair and adds the temperature, stays lowest over the whole document. After the
# extension, the scaled methods are low up to 512 bytes (4×, the last phase's length) and rise after it.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 7 · Three seeds: what the extension buys at 4×
#
# One model is one seed. `benchmarks/repro_long_context.py` (part of `make bench`) trains the passkey model with
# seeds 0, 1 and 2 (seed 0 is the shipped one), extends each with plain RoPE and with YaRN, and measures retrieval at
# 4× the training length (512 bytes): mean ± standard deviation over the seeds.

# %%
seeds = json.loads((RUN / "seeds.json").read_text())
labels = {"plain_1x": "plain, 1× (in length)", "plain_4x": "plain, 4×", "yarn_4x": "YaRN s=4, 4×",
          "plain_ft_4x": "plain + extension, 4×", "yarn_ft_4x": "YaRN + extension, 4×"}
cells = seeds["cells"]
fig = go.Figure()
fig.add_bar(y=[v.replace(", ", "<br>") for v in labels.values()], x=[round(cells[k]["mean"], 4) for k in labels],
            error_x=dict(type="data", array=[round(cells[k]["std"], 4) for k in labels]), orientation="h",
            marker_color=["#0072B2", "#000000", "#009E73", "#555555", "#009E73"])
fig.update_layout(title=f"Retrieval, mean ± std<br>over seeds {seeds['seeds']}", xaxis=dict(title="retrieved",
                  range=[0, 1.05], tickformat=".0%"), yaxis=dict(autorange="reversed"), template="course",
                  font=dict(size=14), height=460)
fig.show()
for k, name in labels.items():
    print(f"{name:>24}: {cells[k]['mean']:.0%} ± {cells[k]['std']:.0%}   per seed "
          + ", ".join(f"{v:.0%}" for v in cells[k]["values"]))

# %% [markdown]
# **What three seeds say.** Plain RoPE never retrieves at 4× without fine-tuning, in any seed; YaRN after the
# extension retrieves in every seed, though below its in-length level, and its spread is wide. YaRN *without*
# fine-tuning helps in some seeds and not in others. The control is the surprise: plain RoPE fine-tuned with the
# same two phases recovers in two seeds of three and fails completely in the third (seed 0, the shipped model of the
# heat maps). With three seeds of 40 documents, YaRN + extension is clearly better than doing nothing, but its lead
# over the plain fine-tune is within the seed-to-seed spread: this mini experiment shows that the extension phases
# matter, not that YaRN beats plain RoPE fine-tuned on long documents. The report shows no such control either.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 8 · The cache side: what a long context costs
#
# Whatever the method, decoding at length $n$ keeps $n$ tokens of keys and values. MLA caches the latent $c^{KV}$ and
# the shared RoPE key, $d_c + d_h^R$ numbers per token and layer; MHA with the same heads caches $2 n_h d_h$
# (lesson 1). `dsv3_mini.kv_cache.bytes_per_token` counts both, in BF16:

# %%
kv = cache_by_length(cfg, tuple(m * pc.seq_len for m in (1, 2, 4, 8)))
print(f"passkey model: MLA {kv['mla_per_token']} B/token, MHA {kv['mha_per_token']} B/token")
for n, a, b in zip(kv["lengths"], kv["mla"], kv["mha"], strict=True):
    print(f"  {n:>5} bytes: MLA {a:>9,} B   MHA {b:>9,} B")
mha_v3 = v3.replace(attention="mha", head_dim=v3.v_head_dim)
print(f"\nDeepSeek-V3: MLA {bytes_per_token(v3):,} B/token, "
      f"MHA with 128 heads of 128: {bytes_per_token(mha_v3):,} B/token")
for n in (4096, 32768, 131072):
    print(f"  {n:>7,} tokens: MLA {cache_bytes(v3, n) / 2**30:6.2f} GiB   "
          f"MHA {cache_bytes(mha_v3, n) / 2**30:7.1f} GiB")

# %% [markdown]
# Decode speed at each length is measured in `make bench` (`repro_long_context`, and `decoding` at 1K/4K); timings
# are not printed here because they change from run to run.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 9 · The report's recipe beside ours
#
# DeepSeek-V3 report §4.3, and what this lesson ran:

# %%
report = {"pre-training length": "4K tokens", "extension phases": "4K → 32K → 128K",
          "steps per phase": "1,000 + 1,000", "batch (sequences)": "1,920, then 480", "learning rate": "7.3e-6",
          "YaRN scale s": "40", "α (β_slow), β (β_fast)": "1, 32", "temperature √t": "0.1 ln s + 1 = 1.369",
          "evaluation": "Needle-in-a-Haystack to 128K"}
ours = {"pre-training length": f"{pc.seq_len} bytes",
        "extension phases": f"{pc.seq_len} → {2 * pc.seq_len} → {4 * pc.seq_len}",
        "steps per phase": f"{pc.extend_steps} + {pc.extend_steps}",
        "batch (sequences)": f"{pc.batch_size // 2}, then {pc.batch_size // 8}", "learning rate": f"{pc.extend_lr:g}",
        "YaRN scale s": f"{pc.extend_factor:g}", "α (β_slow), β (β_fast)": "1, 32",
        "temperature √t": f"0.1 ln s + 1 = {0.1 * math.log(pc.extend_factor) + 1:.3f}",
        "evaluation": f"passkey at {', '.join(str(n) for n in lengths)} bytes × 5 depths"}
print(f"{'':<24}{'DeepSeek-V3':<32}{'ours':<32}")
for k in report:
    print(f"{k:<24}{report[k]:<32}{ours[k]:<32}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 10 · How this differs from DeepSeek-V3
#
# > - **Scale of the extension**: V3 goes from 4K to 128K, 32×, with $s = 40$; we go 4× with $s = 4$ and also read at
# >   8×. With 4 RoPE pairs instead of 32, YaRN's ramp has almost no room: section 2 prints it for the passkey
# >   model — one pair kept, one half-way, two fully interpolated — so here YaRN is close to linear interpolation
# >   with a temperature.
# > - **Task and model**: a templated-English passkey task on a 3-block "tiny" model of bytes, instead of real
# >   long documents and a 671B model; V3 evaluates Needle-in-a-Haystack and long-context benchmarks (LongBench v2).
# > - **The fine-tune**: 2 × 100 steps at a constant learning rate of 1e-3 on passkey documents, instead of
# >   2 × 1,000 steps at 7.3e-6 on V3's long-context data; our batches are 16 and 4 sequences, not 1,920 and 480.
# > - **No MTP, short balancing**: the passkey model has no MTP module, and its bias speed γ = 0.001 over 1,500
# >   steps (lesson 3's caveat about short runs applies).
# > - **Precision**: fp32 on one CPU thread; the shipped weights are bf16.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Exercises
#
# Replace the `...` with an expression, run the cell, and the checker from `course.check_long_context` compares it
# with what the library computes. A collapsed solution follows each exercise.
#
# **Exercise 1.** NTK-aware scaling for the passkey model's RoPE part ($d = 8$, theta $= 10{,}000$) at $s = 4$ uses
# a larger base theta'. What is it?

# %%
my_answer = ...  # your expression here

check_long_context.check_ntk_base(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
solution = 10000 * 4 ** (8 / (8 - 2))
print(check_long_context.check_ntk_base(solution))
print(f"theta' = {solution:,.0f}: the slowest pair, θ_3 = theta'^(-6/8), is exactly 4× slower than before")

# %% [markdown]
# **Exercise 2.** Under linear interpolation at $s = 4$, position 400 is rotated exactly like which position of
# plain RoPE?

# %%
my_answer = ...  # your expression here

check_long_context.check_linear_position(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
solution = 400 // 4
print(check_long_context.check_linear_position(solution))

# %% [markdown]
# **Exercise 3.** What is DeepSeek-V3's YaRN temperature $\sqrt t$ at $s = 40$?

# %%
my_answer = ...  # your expression here

check_long_context.check_yarn_temperature(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
solution = 0.1 * math.log(40) + 1
print(check_long_context.check_yarn_temperature(solution))
print(f"every attention logit is multiplied by t = {solution ** 2:.3f}: a sharper softmax over a longer context")

# %% [markdown]
# **Exercise 4.** Of DeepSeek-V3's 32 RoPE pairs, how many does YaRN leave at their original frequency? A pair is
# kept when it turns more than $\beta_\text{fast} = 32$ times within the 4,096 pre-training positions.

# %%
my_answer = ...  # your expression here

check_long_context.check_kept_pairs(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
turns = [4096 * 10000 ** (-2 * j / 64) / (2 * math.pi) for j in range(32)]
solution = sum(t > 32 for t in turns)
print(check_long_context.check_kept_pairs(solution))
print(f"pair {solution - 1} turns {turns[solution - 1]:.1f} times, pair {solution} only {turns[solution]:.1f}")

# %% [markdown]
# **Exercise 5.** How many bytes does the passkey model's BF16 KV cache hold after 1,024 tokens (batch 1)? Use its
# config `cfg`: MLA keeps `kv_lora_rank + qk_rope_head_dim` numbers per token in each of `num_hidden_layers` layers.

# %%
my_answer = ...  # your expression here

check_long_context.check_cache_bytes(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
solution = 1024 * cfg.num_hidden_layers * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * 2
print(check_long_context.check_cache_bytes(solution))
print(f"{solution:,} bytes; MHA with the same heads would keep {cache_bytes(cfg.replace(attention='mha'), 1024):,}")

# %% [markdown]
# **Discussion.** Plain RoPE fine-tuned at 2× and 4× is the control of section 7. If it recovers as much as YaRN
# does, what has the experiment shown about YaRN, and what would you change — the scale, the number of RoPE pairs,
# the length ratio — to separate the two?
