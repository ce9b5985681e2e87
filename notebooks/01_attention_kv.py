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
# # 1 · Attention and the KV cache
#
# **Learning goals.** After this lesson you can
#
# 1. explain what a transformer keeps in its **KV cache** while it generates text, and why the cache's size per token
#    decides how long a context and how many users fit into a GPU;
# 2. place MHA, GQA and MQA on one line — the same attention with fewer and fewer key/value heads — and compute the
#    cache of each;
# 3. write down Multi-head Latent Attention (MLA): a compressed latent $\mathbf{c}^{KV}_t$ per token, plus one
#    decoupled RoPE key shared by all heads, and say why RoPE forces that decoupling;
# 4. run MLA's *naive* and *absorbed* computations on the same inputs and see that they agree, and measure which one
#    does less work when decoding;
# 5. check that a real cache holds exactly the bytes the formula predicts, and read DeepSeek-V3's 70,272 bytes per
#    token next to the percentages that are often quoted about it.
#
# Every number below is computed by `dsv3_mini`. The cell after the imports only chooses how figures are shown
# (interactive in JupyterLab, plain HTML in the book, which hides that cell).

# %%
import plotly.graph_objects as go
import torch

from course import check_attention
from course.bench_results import bench_data, run_date
from dsv3_mini import DeepSeekV3, preset, seed_everything
from dsv3_mini.attention import MLA, decode_step_flops, make_attention
from dsv3_mini.config import yarn_mscale
from dsv3_mini.kv_cache import (
    KVCache,
    bytes_per_token,
    cache_bytes,
    elements_per_token_per_layer,
    naive_mla_bytes_per_token,
)
from dsv3_mini.params import attention_params
from dsv3_mini.rope import RotaryEmbedding, apply_rope, inverse_frequencies
from widgets import KVCacheWidget

# the same numbers on every run; the tensors here are tiny, so one thread is also the fastest
gen = seed_everything(0, threads=1)

# %% slideshow={"slide_type": "skip"} tags=["remove-cell"]
from widgets import setup_plotly

_ = setup_plotly()  # plotly in JupyterLab, plain HTML in the book

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Attention, and what decoding has to remember
#
# In multi-head attention (MHA) each of the $n_h$ heads projects the hidden state $\mathbf{h}_t$ of token $t$ into a
# query, a key and a value of $d_h$ numbers, and the output of head $i$ mixes the values of all tokens up to $t$:
#
# $$
# \mathbf{q}_{t,i} = W^Q_i \mathbf{h}_t,\quad \mathbf{k}_{t,i} = W^K_i \mathbf{h}_t,\quad
# \mathbf{v}_{t,i} = W^V_i \mathbf{h}_t,\qquad
# \mathbf{o}_{t,i} = \sum_{j \le t} \operatorname{softmax}_j\!\left(
#   \frac{\mathbf{q}_{t,i}^\top \mathbf{k}_{j,i}}{\sqrt{d_h}}\right) \mathbf{v}_{j,i}.
# $$
#
# When a model generates, token $t+1$ needs the keys and values of tokens $1 \dots t$ again, and they have not
# changed. So the model keeps them: that store is the **KV cache**. Each new token adds a key and a value per head
# and per layer, $2 n_h d_h$ numbers per layer, and every decoding step reads the whole cache once. Its size per
# token sets how many tokens of context (times how many users) fit in memory, and how many bytes each step must read.
#
# Watch a real cache grow. `preset("tiny")` with `attention="mha"` is a 3-layer model with 4 heads of 16 numbers. We
# feed a 5-token prompt (the *prefill*), then decode one token at a time, passing the same `KVCache` each time.

# %%
tiny_mha = preset("tiny").replace(attention="mha")
model = DeepSeekV3(tiny_mha).eval()
cache = model.new_cache()
prompt = torch.randint(0, tiny_mha.vocab_size, (1, 5), generator=gen)
with torch.no_grad():
    logits = model(prompt, cache=cache).logits  # prefill: 5 positions at once
    k, v = cache.layers[0]
    print(f"after the prompt: {len(cache)} positions; layer 0 holds K {tuple(k.shape)}",
          f"and V {tuple(v.shape)}  (batch, positions, KV heads, d_h)")
    for step in range(3):
        nxt = logits[:, -1].argmax(-1, keepdim=True)  # greedy: the most likely next token
        logits = model(nxt, cache=cache).logits  # one new position, attending to the cache
        print(f"decode step {step + 1}: {len(cache)} positions, K of layer 0 {tuple(cache.layers[0][0].shape)}")
print(f"cache now holds {cache.nbytes():,} bytes = {len(cache)} tokens × "
      f"{bytes_per_token(tiny_mha, dtype_bytes=4):,} bytes per token (fp32, 3 layers)")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Fewer key/value heads: MHA → GQA → MQA
#
# The cache is big because every head has its own key and value. Two well-known fixes share them between heads:
# **grouped-query attention** (GQA) keeps $n_g$ key/value heads, each serving a group of $n_h / n_g$ query heads, and
# **multi-query attention** (MQA) keeps a single one for all heads. Per token and layer (DeepSeek-V2 report,
# Table 1):
#
# | attention | cached numbers per token and layer |
# |---|---|
# | MHA | $2 n_h d_h$ |
# | GQA | $2 n_g d_h$ |
# | MQA | $2 d_h$ |
# | MLA | $d_c + d_h^R$ |
#
# In `dsv3_mini` they are one module behind one interface: `make_attention(cfg)` returns `StandardAttention` with
# `cfg.kv_heads` key/value heads (all heads for MHA, `num_key_value_heads` for GQA, one for MQA), or `MLA`. Every one
# has `forward(x, cos, sin, cache=None, layer=0)` and maps (batch, seq, hidden) to (batch, seq, hidden); what
# differs is what it puts into the cache.

# %%
tiny = preset("tiny")
kinds = {"MHA": tiny.replace(attention="mha"),
         "GQA, 2 groups": tiny.replace(attention="gqa", num_key_value_heads=2),
         "MQA": tiny.replace(attention="mqa"),
         "MLA": tiny}
x = torch.randn(1, 6, tiny.hidden_size, generator=gen)  # (batch, seq, hidden)
print(f"{'kind':<15}{'module':<19}{'output':<13}{'cached in one layer (batch, seq, ...)':<40}"
      f"{'numbers/token':>13}")
for name, cfg in kinds.items():
    attn = make_attention(cfg)
    layer_cache = KVCache(num_layers=1)
    with torch.no_grad():
        out = attn(x, *RotaryEmbedding.for_model(cfg)(0, 6), cache=layer_cache)
    shapes = " + ".join(str(tuple(t.shape)) for t in layer_cache.layers[0])
    print(f"{name:<15}{type(attn).__name__:<19}{str(tuple(out.shape)):<13}{shapes:<40}"
          f"{elements_per_token_per_layer(cfg):>13}")

# %% [markdown]
# The query side never changes (4 query heads everywhere); only the number of cached key/value heads does. The price
# of GQA and MQA is quality: heads that share a key and value can attend less independently. MLA takes another route:
# it caches one vector that is *not* a key or a value at all.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## MLA: compress keys and values into a latent
#
# MLA (DeepSeek-V2, kept unchanged in V3; V3 report §2.1.1, equations 1–11) down-projects the hidden state into a
# small latent $\mathbf{c}^{KV}_t$ of $d_c$ numbers (512 in V3) and re-expands the keys and values of every head from
# it:
#
# $$
# \boxed{\mathbf{c}^{KV}_t = W^{DKV} \mathbf{h}_t}\;(1),\qquad
# \mathbf{k}^C_{t} = W^{UK} \mathbf{c}^{KV}_t\;(2),\qquad
# \mathbf{v}^C_{t} = W^{UV} \mathbf{c}^{KV}_t\;(5).
# $$
#
# Positions enter through a separate, **decoupled** RoPE key of $d_h^R$ numbers (64 in V3), computed from
# $\mathbf{h}_t$ and **shared by all heads**; each head's key is its own compressed part next to that shared part:
#
# $$
# \boxed{\mathbf{k}^R_t = \operatorname{RoPE}(W^{KR} \mathbf{h}_t)}\;(3),\qquad
# \mathbf{k}_{t,i} = [\mathbf{k}^C_{t,i};\, \mathbf{k}^R_t]\;(4).
# $$
#
# Queries are low-rank too ($\mathbf{c}^Q_t = W^{DQ}\mathbf{h}_t$ with $d_c' = 1536$, then $W^{UQ}$ and a per-head
# RoPE part $W^{QR}$, equations 6–9). That saves activation memory in training and does not touch the cache. The
# attention itself is ordinary, with the scale $1/\sqrt{d_h + d_h^R}$ (equations 10–11):
#
# $$
# \mathbf{o}_{t,i} = \sum_{j \le t} \operatorname{softmax}_j\!\left(
#   \frac{\mathbf{q}_{t,i}^\top \mathbf{k}_{j,i}}{\sqrt{d_h + d_h^R}}\right) \mathbf{v}^C_{j,i},\qquad
# \mathbf{u}_t = W^O [\mathbf{o}_{t,1}; \dots; \mathbf{o}_{t,n_h}].
# $$
#
# Only the boxed vectors are cached: $d_c + d_h^R = 512 + 64 = 576$ numbers per token and layer, whatever the number
# of heads. Two details of what exactly is cached. The latent passes one more RMSNorm before it is stored (equation 1
# leaves it out; the report adds RMSNorm layers after the compressed latents in its hyper-parameters, §4.2, and
# DeepSeek's code calls it `kv_norm`), so the cache holds $\operatorname{RMSNorm}(W^{DKV}\mathbf{h}_t)$ and the
# up-projections read that. And the RoPE key carries its position index: $\mathbf{k}^R_t$ is rotated by the angle of
# its own position $t$ *before* it is stored, so a cached key never needs rotating again. Our `MLA` names its weights
# as DeepSeek's inference code does; here they are at DeepSeek-V3's size (built on PyTorch's `meta` device: shapes
# without memory, because one V3 attention layer alone has 187 million weights).

# %%
v3 = preset("deepseek-v3")
with torch.device("meta"):
    mla_v3 = MLA(v3)
symbols = {"wq_a": "W^DQ (query down)", "q_norm": "RMSNorm of c^Q", "wq_b": "[W^UQ; W^QR] (query up)",
           "wkv_a": "[W^DKV; W^KR] (latent + rope key)", "kv_norm": "RMSNorm of c^KV",
           "wkv_b": "[W^UK; W^UV] (key/value up)", "wo": "W^O (output)"}
for name, p in mla_v3.named_parameters():
    print(f"{name:<16}{str(tuple(p.shape)):<16}{symbols[name.split('.')[0]]}")
n_attn = sum(p.numel() for p in mla_v3.parameters())
print(f"\nweights of one MLA layer: {n_attn:,} (params.attention_params: {attention_params(v3):,})")
print(f"cached per token and layer: d_c + d_R = {v3.kv_lora_rank} + {v3.qk_rope_head_dim}"
      f" = {elements_per_token_per_layer(v3)} numbers")

# %% [markdown]
# `wkv_a` maps the 7,168-dim hidden state to $512 + 64$ numbers: exactly what is cached. `wkv_b` holds $W^{UK}$ and
# $W^{UV}$ for all 128 heads, $128 \times (128 + 128)$ rows that read the 512-dim latent.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Why the RoPE key has to be separate
#
# RoPE rotates a query at position $t$ by $R_t$ and a key at position $j$ by $R_j$; their product depends only on the
# offset, $\mathbf{q}^\top R_t^\top R_j \mathbf{k} = \mathbf{q}^\top R_{j-t} \mathbf{k}$. Without RoPE, the
# compressed part of the score can be regrouped so that the up-projection moves to the query side:
#
# $$
# \mathbf{q}^{C\top}_{t,i}\, \mathbf{k}^C_{j,i}
#   = \mathbf{q}^{C\top}_{t,i}\, W^{UK}_i \mathbf{c}^{KV}_j
#   = \big(W^{UK\top}_i \mathbf{q}^C_{t,i}\big)^{\!\top} \mathbf{c}^{KV}_j .
# $$
#
# One "absorbed" query per head then scores every cached latent directly. Had RoPE rotated the whole key,
# $\mathbf{k}_{j,i} = R_j W^{UK}_i \mathbf{c}^{KV}_j$, the absorbed query would be $W^{UK\top}_i R_j^\top R_t
# \mathbf{q}_{t,i}$: a different one for every cached position $j$, which is as much work as expanding the keys. So
# MLA rotates only a separate 64-dim part of the query and key and leaves the compressed part position-free.
#
# Let's see it with numbers: a 16-dim head, a random $W^{UK}$ reading a 32-dim latent, and the query at position 40.
# `apply_rope` from `dsv3_mini.rope` is linear, so applying it to the identity gives its matrix.

# %%
d, d_c, t = 16, 32, 40
cos, sin = RotaryEmbedding(d, tiny)(0, 64)


def rotation(p):
    """The matrix of RoPE at position p: apply_rope(x) == x @ rotation(p) for a row vector x."""
    return apply_rope(torch.eye(d), cos[p : p + 1], sin[p : p + 1])


w_uk = torch.randn(d, d_c, generator=gen)  # W^UK: latent (32) -> key (16)
q, c = torch.randn(d, generator=gen), torch.randn(d_c, generator=gen)
j = 30
score = (q @ rotation(t)) @ (w_uk @ c @ rotation(j))  # RoPE on the whole key, computed naively


def absorbed_query(j):
    """The query that would score the latent of position j directly: q R_t R_j^T W^UK."""
    return q @ rotation(t) @ rotation(j).T @ w_uk


print(f"score via the expanded key: {score:.4f}; via the absorbed query for j={j}: "
      f"{absorbed_query(j) @ c:.4f}")
same_offset = torch.allclose(rotation(40) @ rotation(30).T, rotation(12) @ rotation(2).T, atol=1e-6)
print("R_t R_j^T depends only on the offset t - j:", same_offset)
for j in (40, 39, 32, 8):
    change = (absorbed_query(j) - absorbed_query(t)).norm() / absorbed_query(t).norm()
    print(f"key at position {j:>2} (offset {t - j:>2}): absorbed query differs by {change:.1%}"
          " from the one for offset 0")

# %% [markdown]
# Only for a key at the query's own position is the absorbed query the plain $W^{UK\top}\mathbf{q}$; every other
# offset needs its own. The decoupled design avoids this: the 64 rotated dimensions come from the shared
# $\mathbf{k}^R_t$, which is cached already rotated, and the 128 compressed dimensions carry no position, so
# $W^{UK}$ folds into the query once per step.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Naive and absorbed: the same attention, computed two ways
#
# `MLA.forward(..., impl=...)` has both computations, as DeepSeek's inference code does:
#
# - **naive**: expand $\mathbf{k}^C$ and $\mathbf{v}^C$ of every head from the cached latents, then run ordinary
#   attention over $n_h$ heads with keys of $d_h + d_h^R = 192$ numbers;
# - **absorbed**: fold $W^{UK}$ into the query ($\tilde{\mathbf{q}}_{t,i} = W^{UK\top}_i \mathbf{q}^C_{t,i}$) and
#   $W^{UV}$ into the output, so every head attends to $[\mathbf{c}^{KV}_j; \mathbf{k}^R_j]$ directly. That is MQA
#   with a single 576-dim key (and 512-dim value) shared by all heads.
#
# Mathematically they are the same function. Below both run on the same tiny layer and inputs, in fp32. We give the
# weights a larger spread than the model's default initialisation (std 0.2 instead of 0.02) so that the outputs are
# not near zero and a mismatch could not hide.

# %%
mla = MLA(tiny)
with torch.no_grad():
    for p in mla.parameters():
        p.normal_(std=0.2, generator=gen)
x = torch.randn(2, 13, tiny.hidden_size, generator=gen)
cos, sin = RotaryEmbedding.for_model(tiny)(0, 13)
with torch.no_grad():
    naive = mla(x, cos, sin, impl="naive")
    absorbed = mla(x, cos, sin, impl="absorbed")
print("output shape:", tuple(naive.shape), f"| mean |output| = {naive.abs().mean():.3f}")
print("naive == absorbed within 1e-5:", torch.allclose(naive, absorbed, atol=1e-5, rtol=1e-5))

# %% [markdown]
# The two differ only by fp32 rounding (the operations run in a different order). The exact size of that rounding
# difference depends on the CPU's arithmetic kernels, so it sits in its own cell:

# %%
# NBVAL_IGNORE_OUTPUT
print(f"max |naive - absorbed| = {(naive - absorbed).abs().max():.1e}")

# %% [markdown]
# Then why two paths? Count the work of one decoding step at DeepSeek-V3's size. `decode_step_flops` uses PyTorch's
# `FlopCounterMode`, which counts
# the floating-point operations of every matrix product, and on the `meta` device it counts without computing
# (or allocating) anything, so we can run a full-size V3 attention layer with thousands of cached tokens.

# %%
print(f"{'cached tokens':>14}{'naive GFLOP':>14}{'absorbed GFLOP':>16}{'naive/absorbed':>16}")
for cached in (1024, 4096, 32768, 131072):
    fn, fa = (decode_step_flops(mla_v3, impl, cached) for impl in ("naive", "absorbed"))
    print(f"{cached:>14,}{fn / 1e9:>14.1f}{fa / 1e9:>16.2f}{fn / fa:>15.0f}×")

# %% [markdown]
# Per layer and per generated token, our naive path re-expands every cached latent into the keys and values of all
# 128 heads, $2 \cdot d_c \cdot n_h (d_h + d_h^v)$ FLOPs per cached token ($d_h^v = 128$ is the value width), again
# at every step. The absorbed path folds $W^{UK}$ and $W^{UV}$ in once per step and then touches each cached latent
# only in the two attention products, $2 n_h (576 + 512)$ FLOPs. The difference between two cache lengths measures
# that cost per cached token:

# %%
per_cached = {impl: (decode_step_flops(mla_v3, impl, 4096) - decode_step_flops(mla_v3, impl, 1024)) / 3072
              for impl in ("naive", "absorbed")}
for impl, f in per_cached.items():
    print(f"{impl:<9} {f:>12,.0f} FLOPs per cached token per step")
expansion = 2 * v3.kv_lora_rank * v3.num_attention_heads * (v3.qk_nope_head_dim + v3.v_head_dim)
print(f"of the naive path's, 2·d_c·n_h·(d_h + d_v) = {expansion:,} are the re-expansion")

# %% [markdown]
# That is why inference uses the absorbed path, and why MLA's small cache does not cost a recomputation of keys and
# values at every step. Training is the opposite case: every position is a query, nothing is cached, and each
# latent is expanded once for all the queries that see it, so the naive bracketing with its narrower keys
# (192 numbers per head instead of 576) is the cheaper one. Our models default to `mla_impl="auto"`: the naive
# path for a forward without a cache (training, scoring whole sequences), the absorbed path when decoding with one.
#
# DeepSeek's reference inference code also has a naive mode that caches the *expanded* keys and values instead
# (`naive_mla_bytes_per_token`, below). It skips the re-expansion, and its attention products are even smaller
# (192-dim keys instead of 576-dim), but its cache is 71× larger — and at decoding time, reading the cache from
# memory, not arithmetic, is what limits the speed.

# %% [markdown]
# At V3's size, that is. Does it hold for the mini model on a laptop? The committed `make bench` run decodes 32 tokens
# after a 4,096-token context with three models of the mini width (same shape, random weights): MLA on the absorbed
# path, MLA on the naive path, and MHA with 4 heads of 48. With one sequence, a decoding step of the 4-layer model
# runs about 470 PyTorch operators (~2 ms on 2 cores) whatever the context, and the cache hardly shows. With 8
# sequences decoded together, as a server decodes, the operators are paid once for 8 tokens while every step reads
# 8 caches: 40 MiB for MLA, 192 MiB for MHA, far more than this CPU's 32 MiB L3. Then the bytes decide.

# %%
decoding = bench_data("decoding")
print(run_date("decoding"))
print(f"{'tok/s at 4,096 context':<24}{'absorbed MLA':>13}{'MHA':>7}{'naive MLA':>11}{'absorbed / MHA':>16}")
for key, label in (("4096", "1 sequence"), ("4096_batch8", "8 sequences together")):
    e = decoding[key]
    tps = {k: e[k]["tokens_per_s"]["median"] for k in ("mla_absorbed", "mha", "mla_naive")}
    print(f"{label:<24}{tps['mla_absorbed']:>13,.0f}{tps['mha']:>7,.0f}{tps['mla_naive']:>11,.0f}"
          f"{e['speedup_vs']['mha']['median']:>15.2f}×")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Decoding with a cache gives the same logits as the full sequence
#
# A cache is only correct if generating token by token gives exactly what the model computes on the whole sequence at
# once. Here every attention kind, and both MLA paths, run an 11-token sequence both ways: once in full, once as a
# 4-token prefill, then 4 single tokens, then a 3-token chunk, all through one `KVCache`.

# %%
variants = {**kinds, "MLA (naive path)": tiny.replace(mla_impl="naive")}
tokens = torch.randint(0, tiny.vocab_size, (2, 11), generator=gen)
decode_diffs = {}
for name, cfg in variants.items():
    torch.manual_seed(0)
    model = DeepSeekV3(cfg).eval()
    with torch.no_grad():
        full = model(tokens).logits
        cache = model.new_cache()
        parts = [model(tokens[:, :4], cache=cache).logits]
        parts += [model(tokens[:, i : i + 1], cache=cache).logits for i in range(4, 8)]
        parts.append(model(tokens[:, 8:], cache=cache).logits)
    decode_diffs[name] = (torch.cat(parts, dim=1) - full).abs().max().item()
    same = torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    print(f"{name:<18} cached decoding == full forward (within 1e-5): {same}; cache: {len(cache)} positions")

# %%
# NBVAL_IGNORE_OUTPUT
for name, diff in decode_diffs.items():
    print(f"{name:<18} max |cached - full| = {diff:.1e}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Formula = reality: the bytes a real cache holds
#
# `bytes_per_token(cfg, dtype_bytes)` is the formula: layers × numbers per token and layer × bytes per number.
# `KVCache.nbytes()` is the measurement: it adds up the bytes of the tensors the cache actually holds. Build a small
# model of each kind, decode $N$ tokens, and compare. The model computes in fp32 (4 bytes per number); a bf16 copy of
# the same models caches in bf16 (2 bytes per number), as DeepSeek-V3 does.

# %%
N_PROMPT, N_DECODE = 8, 24  # the cache ends with N = 32 tokens


def decoded_cache(cfg, dtype):
    """Decode N_PROMPT + N_DECODE tokens with a fresh model of cfg in dtype; return the cache."""
    torch.manual_seed(0)
    model = DeepSeekV3(cfg).eval().to(dtype)
    cache = model.new_cache()
    with torch.no_grad():
        logits = model(torch.randint(0, cfg.vocab_size, (1, N_PROMPT), generator=gen), cache=cache).logits
        for _ in range(N_DECODE):
            logits = model(logits[:, -1:].argmax(-1), cache=cache).logits
    return cache


print(f"{'kind':<18}{'N':>4}{'fp32 measured':>15}{'N × formula':>13}{'bf16 measured':>15}"
      f"{'N × formula':>13}")
for name, cfg in variants.items():
    c32, c16 = decoded_cache(cfg, torch.float32), decoded_cache(cfg, torch.bfloat16)
    n = len(c32)
    f32_formula, bf16_formula = n * bytes_per_token(cfg, dtype_bytes=4), n * bytes_per_token(cfg)
    assert c32.nbytes() == f32_formula and c16.nbytes() == bf16_formula
    print(f"{name:<18}{n:>4}{c32.nbytes():>15,}{f32_formula:>13,}{c16.nbytes():>15,}{bf16_formula:>13,}")

# %% [markdown]
# To the byte. Note the last two rows: our MLA caches the same latent and RoPE key whichever path computes the
# attention; the naive path pays in recomputation, not in memory. On this tiny model MLA (32 + 8 = 40 numbers per
# layer) caches less than MHA (2 × 4 × 16 = 128) but more than MQA (32): at this size $d_c$ is not small relative to
# the heads. At DeepSeek-V3's size the picture is very different.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## At DeepSeek-V3's size
#
# The same formula for the released configuration, and for hypothetical same-shape variants of it: MHA with 128 heads
# of $d_h = 128$, GQA with 8 groups, MQA. These variants do not exist as models; they answer "what would V3's cache
# be with that attention". The last row is MLA if it cached its expanded per-head keys (192 numbers) and values
# (128 numbers), as a naive implementation would.

# %%
d_h = v3.v_head_dim  # 128
variants_v3 = {"MHA": v3.replace(attention="mha", head_dim=d_h),
               "GQA, 8 groups": v3.replace(attention="gqa", num_key_value_heads=8, head_dim=d_h),
               "MQA": v3.replace(attention="mqa", head_dim=d_h),
               "MLA (V3)": v3}
per_token = {name: bytes_per_token(cfg) for name, cfg in variants_v3.items()}  # bf16
per_token["MLA, expanded K/V cached"] = naive_mla_bytes_per_token(v3)
numbers = {name: elements_per_token_per_layer(cfg) for name, cfg in variants_v3.items()}
numbers["MLA, expanded K/V cached"] = v3.num_attention_heads * (v3.qk_head_dim + v3.v_head_dim)
print(f"{'attention':<26}{'numbers/token/layer':>20}{'bytes/token (bf16)':>20}{'vs MLA':>9}")
for name, b in per_token.items():
    print(f"{name:<26}{numbers[name]:>20,}{b:>20,}{b / per_token['MLA (V3)']:>8.1f}×")

mla_b, expanded_b = per_token["MLA (V3)"], per_token["MLA, expanded K/V cached"]
print(f"\nMLA vs caching the expanded K and V: {1 - mla_b / expanded_b:.1%} less "
      f"({expanded_b:,} -> {mla_b:,} bytes per token)")
print(f"MLA vs same-shape MHA:               {1 - mla_b / per_token['MHA']:.1%} less")
print(f"MLA caches as much as GQA with {numbers['MLA (V3)'] / (2 * d_h):.2f} groups of d_h = {d_h}")

# %% [markdown]
# Be exact about what each percentage compares:
#
# - **98.6%** is MLA's 70,272 bytes per token against 4,997,120 bytes for caching the full per-head keys (192
#   numbers) and values (128 numbers) of the same model: what the latent saves over the naive cache.
# - **98.2%** is MLA against MHA of the same shape (keys of 128 numbers, no RoPE part).
# - The often-quoted **93.3%** is from the DeepSeek-V2 report and compares DeepSeek-V2's KV cache with that of
#   DeepSeek 67B, a *different, dense* model with its own layers and heads. It is a statement about two models, not
#   about MLA against MHA of the same shape, and it cannot be computed from V3's configuration.
#
# MLA's cache is still larger than MQA's, but its heads are not forced to share: each head reads the latent through
# its own $W^{UK}_i$ and $W^{UV}_i$, so every head still has keys and values of its own, where MQA's heads all get the
# same one. What this lesson shows is the arithmetic: the cache sizes, and that the absorbed path computes the same
# attention as the naive one. Whether MLA *models* are as good as MHA models is an empirical claim of the DeepSeek-V2
# report, measured on trained models; nothing here tests it.

# %% slideshow={"slide_type": "slide"}
colors = ["#E69F00", "#CC79A7", "#009E73", "#0072B2", "#7F7F7F"]
names = list(per_token)
fig = go.Figure(go.Bar(
    x=names, y=[per_token[n] for n in names], marker_color=colors,
    text=[f"{per_token[n] / 1e3:,.1f} KB" for n in names], textposition="outside",
    hovertemplate="%{x}: %{y:,} bytes per token<extra></extra>"))
fig.update_layout(title="KV cache per token at DeepSeek-V3's size (61 layers, bf16)",
                  template="course", font_size=15,
                  yaxis=dict(title="bytes per token (log scale)", type="log", range=[4, 7.2], dtick=1),
                  xaxis_title="attention kind (same model shape)")
fig.show()

# %% [markdown]
# Multiplied by the context length, the per-token bytes become the memory one sequence needs. A 128K-token context
# (V3's extended context window) with the same-shape MHA would need hundreds of gigabytes for one sequence; with
# MLA it is under ten.

# %% slideshow={"slide_type": "slide"}
contexts = [1024 * 2**i for i in range(8)]  # 1K .. 128K tokens
fig = go.Figure()
for (name, cfg), color in zip(variants_v3.items(), colors, strict=False):
    fig.add_scatter(x=contexts, y=[cache_bytes(cfg, n) / 1e9 for n in contexts], name=name,
                    mode="lines+markers", line_color=color,
                    hovertemplate="%{x:,} tokens: %{y:.3g} GB<extra>" + name + "</extra>")
fig.update_layout(title="Cache of one sequence vs context length (DeepSeek-V3 shape, bf16)",
                  template="course", font_size=15,
                  xaxis=dict(title="context (tokens, log scale)", type="log", tickvals=contexts[::2],
                             ticktext=[f"{n // 1024}K" for n in contexts[::2]]),
                  yaxis=dict(title="cache size (GB = 10⁹ bytes, log)", type="log", dtick=1),
                  legend_title_text="attention")
fig.show()
for name, cfg in variants_v3.items():
    print(f"{name:<15} 128K tokens: {cache_bytes(cfg, 131072) / 1e9:7.1f} GB")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The KV-cache widget
#
# Change the shape, the context, the batch and the cache's number format, and see the cache of each attention kind.
# The right panel is the measurement from above: a real tiny model's cache, formula against bytes held. In
# JupyterLab the controls below are live; the figure after them is the static twin used by the published book (its
# slider steps through context lengths).

# %% slideshow={"slide_type": "slide"} tags=["remove-output"]
w = KVCacheWidget()
w

# %% slideshow={"slide_type": "slide"} tags=["remove-input"]
w.static_figure().show()

# %% [markdown]
# What the widget computes for its default setting, straight from `dsv3_mini.kv_cache`:

# %%
s = w.state
p = s["params"]
print(f"{p['preset']}, {p['dtype']}, {p['context']:,} tokens, batch {p['batch']}:")
for kind in ("mha", "gqa", "mqa", "mla"):
    print(f"{kind.upper():<4} {s['per_token'][kind]:>10,} bytes/token"
          f"   whole cache: {s['total'][kind] / 1e9:7.2f} GB")
print(f"MLA is {s['saving_vs_mha']:.1f}% smaller than same-shape MHA and "
      f"{s['saving_vs_naive']:.1f}% smaller than naive MLA")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## A note on long contexts: YaRN
#
# DeepSeek-V3 was pre-trained with 4K-token sequences and then extended with **YaRN** in two phases of 1,000 steps
# each (the report, §4.3): 4K → 32K with a batch of 1,920 sequences, then 32K → 128K with a batch of 480, both at a
# learning rate of 7.3e-6 and with the same YaRN hyper-parameters, $s = 40$, $\alpha = 1$, $\beta = 32$ (the
# released config's `factor`, `beta_slow` and `beta_fast`). What YaRN does: the slowest-rotating RoPE frequencies are
# divided by the scale $s$ (interpolated), the fastest keep theirs, a ramp blends the ones between, and the softmax
# scale is multiplied by $\sqrt{t}^{\,2}$ with $\sqrt{t} = 0.1 \ln s + 1$. YaRN only touches the 64 decoupled RoPE
# dimensions and the scale; the cache is the same. `dsv3_mini.rope` implements it; here is what it does to V3's 32
# rotation frequencies.

# %%
plain_freq, _ = inverse_frequencies(v3.qk_rope_head_dim, v3.rope_theta)
yarn_freq, _ = inverse_frequencies(v3.qk_rope_head_dim, v3.rope_theta, v3.rope_scaling)
s_factor = v3.rope_scaling["factor"]
kept = int((yarn_freq == plain_freq).sum())
divided = int(torch.isclose(yarn_freq, plain_freq / s_factor).sum())
print(f"released config: s = factor = {s_factor}, alpha = beta_slow = {v3.rope_scaling['beta_slow']},"
      f" beta = beta_fast = {v3.rope_scaling['beta_fast']}")
print(f"scale s = {s_factor}: {kept} frequencies kept, {divided} divided by s,"
      f" {len(plain_freq) - kept - divided} blended")
print(f"sqrt(t) = 0.1 ln(s) + 1 = {yarn_mscale(s_factor):.4f}")
print(f"softmax scale: 1/sqrt(192) = {v3.qk_head_dim ** -0.5:.5f} -> with YaRN {v3.softmax_scale:.5f}")

# %% [markdown]
# > **How our mini model differs from the real one.** The attention code is the same computation: MLA with a
# > low-rank query, the latent $\mathbf{c}^{KV}$, a decoupled RoPE key shared by all heads, both the naive and the
# > absorbed path, and YaRN (implemented and tested, though our small presets do not use it). What differs: sizes
# > (the tiny model has 4 heads, $d_c = 32$, $d_h^R = 8$; V3 has 128 heads, 512 and 64); our models compute and
# > cache in fp32 unless a cell converts them (V3 caches in bf16); our naive path caches the latent like the absorbed
# > one and re-expands it at every step, where the naive mode of DeepSeek's reference code caches the expanded keys
# > and values; the absorbed path runs through PyTorch's `scaled_dot_product_attention` with the shared latent
# > expanded as a view, not a fused MLA kernel; and the cache is a list of growing tensors, not the paged,
# > preallocated memory of a serving system. The GQA and MQA models are ours, for comparison: DeepSeek-V3 uses MLA
# > only.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Bug hunt: two broken copies
#
# The most instructive mistakes in public DeepSeek-V3 code are bugs that still run. `course.bug_hunt` hands you a
# broken copy of one piece of `dsv3_mini` with one bug planted (the library itself stays correct) and the tool that
# finds it. Read the planted function, run the tool, name the bug (one of `bug_hunt.BUGS`), then write the fix: a
# function with the same arguments. `check_bug_hunt.check_fix` installs it in a fresh copy and runs the tool again.
#
# **Lab 1a** is a tiny model whose MLA attention was rewritten by hand. The tool is the parity test of this course:
# the same weights in transformers' `DeepseekV3ForCausalLM` must give the same logits (max |Δ| ≤ 1e-4).

# %%
from course import bug_hunt, check_bug_hunt

print(bug_hunt.bug_menu())
lab_1a = bug_hunt.open_lab("1a")
print(f"\nlab 1a: {lab_1a.detector} = {lab_1a.detect():.2e} (a correct model: ≤ {bug_hunt.PARITY_TOL:g})")
print(lab_1a.source)

# %%
my_bug = ...  # one of the names above

check_bug_hunt.check_diagnosis("1a", my_bug)

# %%
my_fix = ...  # def my_fix(attn, x, cos, sin, cache=None, layer=0, impl=None): ... (start from lab_1a.source)

check_bug_hunt.check_fix("1a", my_fix)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
def fixed_mla_forward(attn, x, cos, sin, cache=None, layer=0, impl=None):
    b, s, _ = x.shape
    q = attn.wq(x) if attn.cfg.q_lora_rank is None else attn.wq_b(attn.q_norm(attn.wq_a(x)))
    q = q.view(b, s, attn.n_heads, -1).transpose(1, 2)
    q_nope, q_rope = q.split([attn.d_nope, attn.d_rope], dim=-1)
    q_rope = apply_rope(q_rope, cos, sin)  # the missing rotation of the queries' rope part
    c_kv, k_rope = attn.wkv_a(x).split([attn.d_c, attn.d_rope], dim=-1)
    c_kv = attn.kv_norm(c_kv)
    k_rope = apply_rope(k_rope, cos, sin)  # ... and of the shared rope key, before it is cached
    if cache is not None:
        c_kv, k_rope = cache.update(layer, c_kv, k_rope)
    t = c_kv.shape[1]
    w_kv_b = attn.wkv_b.weight.view(attn.n_heads, attn.d_nope + attn.d_v, attn.d_c)
    k_nope, v = torch.einsum("btc,hdc->bhtd", c_kv, w_kv_b).split([attn.d_nope, attn.d_v], dim=-1)
    k = torch.cat([k_nope, k_rope[:, None].expand(b, attn.n_heads, t, attn.d_rope)], dim=-1)
    out = bug_hunt._attend(torch.cat([q_nope, q_rope], dim=-1), k, v, attn.scale)
    return attn.wo(out.transpose(1, 2).reshape(b, s, attn.n_heads * attn.d_v))


print(check_bug_hunt.check_diagnosis("1a", "rope-not-applied"))
print(check_bug_hunt.check_fix("1a", fixed_mla_forward))
print("without RoPE the attention cannot tell positions apart: the model still runs, its logits are wrong")

# %% [markdown]
# **Lab 1b** is a cache-size formula, `bytes_per_token(cfg, dtype_bytes)`. The tool is the cache-bytes check of this
# lesson: run the tiny model with a real `KVCache` for 8 tokens and compare `KVCache.nbytes()` with the formula.

# %%
lab_1b = bug_hunt.open_lab("1b")
print(f"lab 1b: {lab_1b.detector} = {lab_1b.detect():,.0f} bytes between the measured cache and the formula")
print(lab_1b.source)

# %%
my_bug = ...  # one of bug_hunt.BUGS

check_bug_hunt.check_diagnosis("1b", my_bug)

# %%
my_fix = ...  # def my_fix(cfg, dtype_bytes=2): ...

check_bug_hunt.check_fix("1b", my_fix)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
def fixed_bytes_per_token(cfg, dtype_bytes=2):
    return cfg.num_hidden_layers * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * dtype_bytes  # c_KV and k_R


print(check_bug_hunt.check_diagnosis("1b", "mla-cache-2dc"))
print(check_bug_hunt.check_fix("1b", fixed_bytes_per_token))
print("2·d_c counts the latent twice, as if it were a key and a value; MLA caches c_KV once plus one rope key")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Exercises
#
# Each exercise cell starts with `my_answer = ...`. Replace the `...` with an expression (use `v3`, the configuration
# of DeepSeek-V3), run the cell, and the checker from `course.check_attention` compares your answer with what
# the library computes. A collapsed solution follows each exercise.

# %% [markdown]
# **Exercise 1.** A GQA variant of DeepSeek-V3 keeps 8 key/value groups with $d_h = 128$. How many bytes per token
# does its cache hold over all 61 layers, in bf16 (2 bytes per number)?

# %%
my_answer = ...  # your expression here

check_attention.check_gqa_bytes_per_token(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
solution = v3.num_hidden_layers * 2 * 8 * 128 * 2
print(check_attention.check_gqa_bytes_per_token(solution))
print(f"61 layers × (K and V) × 8 groups × 128 × 2 bytes; {solution / bytes_per_token(v3):.2f}× MLA's cache")

# %% [markdown]
# **Exercise 2.** How many numbers does MLA cache per token in *one* layer of DeepSeek-V3? Write it from the
# configuration's fields.

# %%
my_answer = ...  # your expression here

check_attention.check_mla_numbers_per_layer(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
solution = v3.kv_lora_rank + v3.qk_rope_head_dim
print(check_attention.check_mla_numbers_per_layer(solution))
print("the latent c_KV (512) and the shared RoPE key k_R (64); nothing per head")

# %% [markdown]
# **Exercise 3.** The DeepSeek-V2 report says MLA's cache equals that of GQA with only a few groups. With
# $d_h = 128$, how many GQA groups cache as many numbers per token and layer as MLA? (It need not be a whole number.)

# %%
my_answer = ...  # your expression here

check_attention.check_equivalent_gqa_groups(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
solution = (v3.kv_lora_rank + v3.qk_rope_head_dim) / (2 * 128)
print(check_attention.check_equivalent_gqa_groups(solution))
print("576 numbers / (a key and a value of 128 numbers per group)")

# %% [markdown]
# **Exercise 4.** In our `MLA` at DeepSeek-V3's size, with 4,096 tokens in the cache, which path does fewer FLOPs for
# one decoding step: `"naive"` or `"absorbed"`? Predict first, then measure with `decode_step_flops` from above.

# %%
my_answer = ...  # "naive" or "absorbed"

check_attention.check_cheaper_decode_path(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
flops = {impl: decode_step_flops(mla_v3, impl, 4096) for impl in ("naive", "absorbed")}
solution = min(flops, key=flops.get)
print(check_attention.check_cheaper_decode_path(solution))
print(f"naive {flops['naive'] / 1e9:.1f} GFLOP vs absorbed {flops['absorbed'] / 1e9:.2f} GFLOP per layer:"
      " the naive path re-expands all 4,096 latents for 128 heads at every step")

# %% [markdown]
# **Discussion.** MLA shrinks the cache by storing a compressed latent instead of keys and values. Where does the model
# pay for that — in quality, in parameters, in compute at training time, at decoding time? And why would a serving
# system happily trade more FLOPs per step (the absorbed path does more arithmetic per cached token than attention
# over an expanded cache) for 71× fewer bytes?
#
# Next: lesson 2, the MoE layer and its router.
