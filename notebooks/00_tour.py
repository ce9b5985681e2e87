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
# # 0 · Tour: what DeepSeek-V3 is, and why it is sparse
#
# **Learning goals.** After this lesson you can
#
# 1. say what DeepSeek-V3 is: a 671-billion-parameter Mixture-of-Experts (MoE) language model that activates only
#    36.6 billion parameters for each token;
# 2. compute those numbers yourself from the model's configuration, component by component;
# 3. explain why *sparse* activation makes a huge model affordable, and write down the MoE layer's output;
# 4. run a tiny but real DeepSeek-V3 built by this course, and count its parameters;
# 5. see why Multi-head Latent Attention (MLA) shrinks the KV cache, the topic of the next lesson.
#
# Every number below is computed by the code in `dsv3_mini/` from a configuration, not copied from a paper.
# The cell after the imports only chooses how figures are shown (interactive in JupyterLab, plain HTML in the
# book, which hides that cell).

# %%
import plotly.graph_objects as go
import torch

from course import check_tour
from dsv3_mini import DeepSeekV3, count_params, preset, seed_everything
from dsv3_mini.kv_cache import bytes_per_token, naive_mla_bytes_per_token

_ = seed_everything(0)  # the same numbers on every run


# %% slideshow={"slide_type": "skip"} tags=["remove-cell"]
from widgets import setup_plotly

_ = setup_plotly()  # plotly in JupyterLab, plain HTML in the book

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What DeepSeek-V3 is
#
# DeepSeek-V3 (December 2024) is a decoder-only transformer language model with 61 blocks. Its two distinctive parts
# are **Multi-head Latent Attention** (MLA), which caches a small compressed vector per token instead of full keys and
# values, and **DeepSeekMoE**, a feed-forward layer made of 1 shared expert and 256 small routed experts of which each
# token uses only 8. It was also trained with FP8 arithmetic and a multi-token prediction (MTP) objective, which later
# lessons build too. The report: [arXiv 2412.19437](https://arxiv.org/abs/2412.19437).
#
# `preset("deepseek-v3")` is the released configuration. `count_params` counts its parameters from the shapes alone
# (nothing is allocated, so we can count a model that would need 1.3 TB of memory in bf16).

# %%
v3 = preset("deepseek-v3")
c = count_params(v3)
print(f"total parameters (main model):      {c.total:>18,}")
print(f"activated per token (no embedding): {c.active_non_embedding:>17,}")
print(f"  side note, with the embedding:    {c.active:>17,}")
print(f"MTP module (extra, for training):   {c.mtp:>17,}")
print(f"in billions: {c.total / 1e9:.1f}B total,",
      f"{c.active_non_embedding / 1e9:.1f}B activated ({c.active / 1e9:.1f}B with the embedding),",
      f"{c.mtp / 1e9:.1f}B MTP")
stored_mtp = c.mtp + c.breakdown["embedding"] + c.breakdown["head"]  # the checkpoint's own copies of both
print(f"MTP with stored copies of embedding and head: {c.mtp / 1e9:.2f}B + 2 × {c.breakdown['head'] / 1e9:.2f}B",
      f"= {stored_mtp / 1e9:.1f}B")

# %% [markdown]
# The report rounds these to "671B total parameters, of which 37B are activated for each token". DeepSeek's own
# accounting, in the weights README of the release, is the one we lead with: "activation parameters 36.6B, including
# 0.9B for the output head", without the embedding table (a lookup of one row per token, not a matrix product):
# exactly `active_non_embedding`. The same README states 11.5B unique parameters for the MTP module; we count 11.6B
# because our count includes its $2d \to d$ projection and its norms. The figure "685B = 671B + 14B" comes from the
# release's README, not from the report: the checkpoint stores the MTP module with its own copies of the embedding
# and the output head, which adds up to 13.5B by our count (printed above), not quite the README's 14B.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Why sparse
#
# A dense model uses every parameter for every token, so its compute per token grows with its size. An MoE model
# keeps many experts but **routes** each token to a few of them: the model *stores* a lot of knowledge and *spends*
# only a little compute per token. Here is where DeepSeek-V3's parameters live, and how many of each kind one token
# actually touches.

# %%
k_r, n_r = v3.num_experts_per_tok, v3.n_routed_experts
active = dict(c.breakdown)  # every token uses every component, except:
active["routed_experts"] = c.breakdown["routed_experts"] * k_r // n_r
active["embedding"] = 0  # a lookup of one row, which DeepSeek's count of activated parameters leaves out
assert sum(active.values()) == c.active_non_embedding, "the parts must add up to count_params"

print(f"{'component':<16}{'total':>20}{'activated per token':>22}")
for name, total in c.breakdown.items():
    print(f"{name:<16}{total:>20,}{active[name]:>22,}")
print(f"\nrouted experts used per token: {k_r} of {n_r} = {k_r / n_r:.3%}")
print(f"activated fraction of the whole model: {c.active_non_embedding / c.total:.2%}")

# %% slideshow={"slide_type": "slide"}
labels = {"embedding": "embedding", "attention": "attention (MLA)",
          "norms": "norms", "dense_ffn": "dense FFN",
          "shared_experts": "shared experts",
          "routed_experts": "routed experts", "routers": "routers",
          "head": "output head"}
fig = go.Figure([
    go.Bar(name=labels[part], x=["total", "activated per token"],
           y=[c.breakdown[part] / 1e9, active[part] / 1e9],
           hovertemplate="%{x}: %{y:.2f}B<extra>" + labels[part] + "</extra>")
    for part in c.breakdown
])
fig.update_layout(barmode="stack", title="DeepSeek-V3 parameters by component",
                  yaxis_title="parameters (billions)",
                  legend_title_text="component", template="course")
fig.show()

# %% [markdown]
# Almost all of the 671B are routed experts (654B), and a token uses 8 of the 256 in each MoE layer. Everything
# else — attention, the shared expert, the first three dense layers and the head — is used by every token; the
# embedding is only looked up (one row per token), so it is not counted as activated. Written out, the MoE layer of
# block $l$ turns the attention output $\mathbf{u}_t$ of token $t$ into
#
# $$
# \mathbf{h}'_t = \mathbf{u}_t + \sum_{i=1}^{N_s} \mathrm{FFN}^{(s)}_i(\mathbf{u}_t)
#   + \sum_{i=1}^{N_r} g_{i,t}\, \mathrm{FFN}^{(r)}_i(\mathbf{u}_t),
# $$
#
# where the $N_s = 1$ shared expert always runs, and the gate $g_{i,t}$ is zero for all but the $K_r = 8$ routed
# experts (of $N_r = 256$) that the router picks for this token. Lessons 2 and 3 build the router and keep its load
# balanced.
#
# Move the slider: the same model with a different number $K_r$ of routed experts per token. The total does not move;
# what a token costs does.

# %% slideshow={"slide_type": "slide"}
ks = [1, 2, 4, 8, 16, 32, 64]
total_b = c.total / 1e9
active_b = {k: count_params(v3.replace(num_experts_per_tok=k)).active_non_embedding / 1e9
            for k in ks}


def bars(k):
    """The heights and labels of the two bars for k experts per token."""
    return {"y": [[total_b, active_b[k]]],
            "text": [[f"{total_b:.0f}B", f"{active_b[k]:.1f}B"]]}


def title(k):
    return f"{k} routed experts per token: {active_b[k] / total_b:.1%} active"


fig = go.Figure(go.Bar(x=["total", "activated per token"],
                       textposition="outside",
                       marker_color=["#9aa5b1", "#e4572e"]))
fig.update_traces(y=bars(8)["y"][0], text=bars(8)["text"][0])
steps = [dict(method="update", label=str(k),
              args=[bars(k), {"title.text": title(k)}]) for k in ks]
fig.update_layout(
    title=title(8), template="course",
    yaxis=dict(title="parameters (billions)", range=[0, 760]),
    sliders=[dict(active=ks.index(8), steps=steps,
                  currentvalue=dict(prefix="routed experts per token K_r = "))],
)
fig.show()
for k in ks:
    print(f"K_r = {k:>2}: {active_b[k]:6.1f}B activated per token")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## A tiny real model
#
# The course's model is the same architecture at laptop size. `preset("tiny")` is small enough that a forward pass
# takes milliseconds. It takes token ids (here bytes, vocabulary 256) and returns one row of logits per position: a
# score for every possible next token.

# %%
tiny = preset("tiny")
model = DeepSeekV3(tiny).eval()
tokens = torch.tensor([list(b"Hello, V3")])
with torch.no_grad():
    out = model(tokens)
print("tokens:", tuple(tokens.shape), "-> logits:", tuple(out.logits.shape))

ct = count_params(tiny)
n_weights = sum(p.numel() for p in model.parameters())
# the router biases are buffers, not parameters: the balancing rule sets them
n_bias = sum(m.gate.bias.numel() for m in model.moe_layers())
print(f"in the module: {n_weights:,} parameters + {n_bias} router biases "
      f"= {n_weights + n_bias:,}")
print(f"count_params(tiny): total {ct.total:,} + MTP {ct.mtp:,} "
      f"= {ct.total + ct.mtp:,}")
assert n_weights + n_bias == ct.total + ct.mtp

# %% [markdown]
# The untrained model's predictions are noise, of course; lesson 6 trains the `mini` preset on a CPU.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## A teaser: the KV cache
#
# To generate text, a transformer keeps the keys and values of every earlier token: the KV cache. Its size per token
# decides how many users and how long a context fit in a GPU's memory. MLA caches one compressed latent $c^{KV}_t$
# (512 numbers) and one shared RoPE key $k^R_t$ (64 numbers) per layer, instead of a key and a value for each of the
# 128 heads.

# %%
mla = bytes_per_token(v3)  # bf16: 2 bytes per number
naive = naive_mla_bytes_per_token(v3)
context = 128 * 1024  # tokens
print(f"MLA cache per token:    {mla:>10,} bytes")
print(f"K and V of every head:  {naive:>10,} bytes ({naive / mla:.0f}x)")
print(f"128K tokens with MLA:   {mla * context / 2**30:>10.2f} GiB")
print(f"128K tokens, full K, V: {naive * context / 2**30:>10.2f} GiB")

# %% [markdown]
# Lesson 1 builds MLA, shows that its absorbed path computes the same function as the naive path from the same cache
# (equal up to float rounding: the small cache costs nothing against computing the same MLA naively), and compares its
# cache with MHA, GQA and MQA. Whether MLA models are as good as MHA models is a different, empirical question: the
# DeepSeek-V2 report answers it with trained models, and this course does not test it.
#
# > **How our mini model differs from the real one.** The architecture is the same code path: MLA with decoupled
# > RoPE, DeepSeekMoE with sigmoid routing and group-limited top-k, the selection bias for auxiliary-loss-free
# > balancing, MTP. What differs is size and engineering: a byte vocabulary (256) instead of 129,280 tokens; a few
# > million parameters instead of 671 billion; experts run in a loop on the CPU instead of being spread over GPUs
# > with an all-to-all exchange; fp32 everywhere unless a lesson is about precision (lesson 4 simulates FP8); a
# > context of 1,024 tokens without YaRN extension.

# %%
mini = preset("mini")
fields = ["vocab_size", "hidden_size", "num_hidden_layers",
          "first_k_dense_replace", "num_attention_heads", "q_lora_rank",
          "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
          "intermediate_size", "moe_intermediate_size", "n_shared_experts",
          "n_routed_experts", "num_experts_per_tok", "n_group", "topk_group",
          "num_nextn_predict_layers", "max_position_embeddings"]
cm = count_params(mini)
rows = [(f, getattr(mini, f), getattr(v3, f)) for f in fields]
rows += [("total parameters", cm.total, c.total),
         ("activated per token", cm.active_non_embedding, c.active_non_embedding),
         ("KV cache bytes/token", bytes_per_token(mini), bytes_per_token(v3))]
print(f"{'':<26}{'mini (ours)':>16}{'DeepSeek-V3':>20}")
for name, ours, theirs in rows:
    print(f"{name:<26}{ours:>16,}{theirs:>20,}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The map of the course
#
# | # | lesson | what you build and measure |
# |---|---|---|
# | 0 | Tour (this page) | the numbers of DeepSeek-V3, a tiny model |
# | 1 | Attention & KV cache | MLA (naive and absorbed), RoPE, MHA/GQA/MQA, cache sizes |
# | 2 | MoE & router | shared and routed experts, sigmoid gate, group-limited top-k |
# | 3 | Load balancing | auxiliary-loss-free bias updates vs an auxiliary loss, MaxVio |
# | 4 | FP8 | tile- and block-wise quantization, accumulation precision |
# | 5 | MTP & speculative decoding | multi-token prediction, drafts that keep greedy output exact |
# | 6 | Mini end-to-end training run | the `mini` preset trained on a CPU, MoE vs dense |
# | 7 | Pipeline parallelism | 1F1B, zero-bubble and DualPipe on real processes, bubbles vs Table 2 |
# | 8 | Expert parallelism & serving | all-to-all dispatch, node-limited traffic, redundant experts, deployment |
# | 9 | Report vs measured | the report's claims next to what this course measures |

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Exercises
#
# Each exercise cell starts with `my_answer = ...`. Replace the `...` with an expression (use `v3`, the
# configuration), run the cell, and the checker from `course.check_tour` compares your number with what the
# library computes. A collapsed
# solution follows each exercise.

# %% [markdown]
# **Exercise 1.** A routed expert is a SwiGLU: three matrices of `hidden_size × moe_intermediate_size`. How many
# parameters do all routed experts of DeepSeek-V3 hold together? (There are `v3.num_hidden_layers -
# v3.first_k_dense_replace` MoE layers.)

# %%
my_answer = ...  # your expression here

check_tour.check_routed_expert_params(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
moe_layers = v3.num_hidden_layers - v3.first_k_dense_replace
expert = 3 * v3.hidden_size * v3.moe_intermediate_size
solution = moe_layers * v3.n_routed_experts * expert
print(check_tour.check_routed_expert_params(solution))
print("58 layers × 256 experts × 3 × 7168 × 2048,",
      f"{solution / c.total:.1%} of the model")

# %% [markdown]
# **Exercise 2.** MLA caches `kv_lora_rank + qk_rope_head_dim` numbers per token and layer, 2 bytes each in bf16.
# How many bytes does DeepSeek-V3 cache per token over all its layers?

# %%
my_answer = ...  # your expression here

check_tour.check_kv_bytes_per_token(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
solution = v3.num_hidden_layers * (v3.kv_lora_rank + v3.qk_rope_head_dim) * 2
print(check_tour.check_kv_bytes_per_token(solution))
print("61 layers × (512 + 64) numbers × 2 bytes")

# %% [markdown]
# **Exercise 3.** Suppose each token used 4 routed experts instead of 8. By how many parameters would the
# activated count drop? Compute it from the expert size; the check compares it with
# `count_params(v3.replace(num_experts_per_tok=4))`.

# %%
my_answer = ...  # your expression here

check_tour.check_activated_drop(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
moe_layers = v3.num_hidden_layers - v3.first_k_dense_replace
solution = moe_layers * 4 * 3 * v3.hidden_size * v3.moe_intermediate_size
print(check_tour.check_activated_drop(solution))
print(f"58 layers × 4 experts × 3 × 7168 × 2048: {solution / 1e9:.1f}B")

# %% [markdown]
# **Discussion.** The activated count sets the compute per token; the total sets the memory needed to serve the
# model. Which of the two does a sparse model make cheap, and what does it leave expensive?
#
# Next: lesson 1, attention and the KV cache.
