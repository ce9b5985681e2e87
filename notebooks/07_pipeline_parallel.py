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
# # 7 · The machine room, part 1: pipeline parallelism and DualPipe, run for real
#
# **Learning goals.** After this lesson you can
#
# 1. say how DeepSeek-V3 spreads its training over 2,048 GPUs — 16-way pipeline parallelism with DualPipe, 64-way
#    expert parallelism, ZeRO-1, and *no* tensor parallelism — and why;
# 2. lay out 1F1B, ZB1P and DualPipe step by step, and compute their bubbles with the report's Table 2 formulas;
# 3. cut the mini model into pipeline stages and train a step with **real** schedules — PyTorch's GPipe, 1F1B, a
#    zero-bubble schedule, DualPipeV, and DeepSeek's own `dualpipe` package — on 2 and 4 CPU processes, and check
#    that every one of them computes exactly the gradients of a single process;
# 4. read measured timelines, and say what CPU processes can and cannot show about DualPipe;
# 5. explain the memory tricks of §3.2.3 that let V3 do without tensor parallelism.
#
# Every number below is computed by `dsv3_mini` in this notebook.

# %%
import torch

from course import check_pipeline
from dsv3_mini.config import preset
from dsv3_mini.pipeline import build_model, compare_grads, make_batch, pipeline_config, reference_step, split_stages
from dsv3_mini.pipeline_run import SCHEDULES as RUN_SCHEDULES
from dsv3_mini.pipeline_run import run_pipelines
from dsv3_mini.pipeline_schedule import SCHEDULES, dualpipe_order, simulate, table2_activations, table2_bubble
from dsv3_mini.utils import seed_everything
from widgets import PipelineScheduleWidget
from widgets.pipeline import LABELS, measured_gantt

_ = seed_everything(0, threads=1)

# %% slideshow={"slide_type": "skip"} tags=["remove-cell"]
from widgets import setup_plotly

_ = setup_plotly()  # plotly in JupyterLab, plain HTML in the book

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1 · How V3 is spread over 2,048 GPUs
#
# The report (§3.2) trains V3 with **16-way pipeline parallelism** (PP: the 61 blocks cut into 16 consecutive
# stages, one per group of GPUs), **64-way expert parallelism** over 8 nodes (the routed experts of a layer spread
# over 64 GPUs, tokens sent to them by all-to-all), and **ZeRO-1 data parallelism** (each data-parallel replica keeps
# only its shard of the optimizer states). It uses **no tensor parallelism** (TP: splitting every matrix across
# GPUs), which costs an all-reduce inside every layer, forward and backward. §3.2.3's memory savings (section 6
# below) make a stage fit in one GPU without it.
#
# The price of pipelining is the **bubble**: at the start of a step the last stage waits for the first micro-batch
# to arrive, at the end the first stage waits for the last gradients to come back. And with expert parallelism,
# the all-to-all of dispatch and combine takes about as long as the computation (a ratio of about 1:1). DualPipe is
# the schedule DeepSeek wrote to shrink the bubble *and* hide that communication behind computation.
#
# How big is a stage of V3 and of our model?

# %%
v3 = preset("deepseek-v3")
print(f"V3: {v3.num_hidden_layers} blocks over 16 PP ranks → about {v3.num_hidden_layers / 16:.1f} blocks per rank")
cfg = pipeline_config()
print(f"ours: {cfg.name}, {cfg.num_hidden_layers} blocks, hidden {cfg.hidden_size}, "
      f"{cfg.n_routed_experts} routed experts; MTP {cfg.num_nextn_predict_layers}, "
      f"sequence-wise balance α {cfg.seq_aux_alpha}")

# %% [markdown]
# We pipeline a **tiny** model with 8 blocks (divisible into 2, 4 and 8 stages), so that four processes on two
# cores finish a step in a fraction of a second. It trains **without MTP and without the tiny sequence-wise balance
# loss**: the pipelined loss is the next-token cross-entropy alone. (The bias of loss-free balancing is not a
# gradient; each rank would update it after the step for its own layers.) Section 6 says where V3 puts MTP.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2 · Three schedules on paper
#
# Each micro-batch runs a **forward chunk** F on every stage, then a **backward chunk** on every stage in reverse.
# The report (Table 2) writes B for a *full* backward chunk and splits it into a **backward for inputs** (B − W: the
# gradient the previous stage waits for) and a **backward for weights** W (nobody waits for it):
#
# | schedule | bubble | parameters | activations |
# |---|---|---|---|
# | 1F1B | (PP − 1)(F + B) | 1× | PP |
# | ZB1P | (PP − 1)(F + B − 2W) | 1× | PP |
# | DualPipe | (PP/2 − 1)(F&B + B − 3W) | 2× | PP + 1 |
#
# **1F1B** warms up with forwards, then alternates one forward and one backward. **ZB1P** (zero bubble, Qi et al.)
# runs the W chunks where the rank would otherwise wait. **DualPipe** feeds micro-batches from *both ends*: rank r
# holds stage r for those entering at rank 0 and stage PP−1−r for those entering at the last rank, and pairs the
# forward of one micro-batch with the backward of another (F&B) so that one's communication hides behind the
# other's computation. `dsv3_mini.pipeline_schedule.simulate` lays each out step by step (without communication
# time) and measures its bubble:

# %%
PP, M = 8, 20
F, B, W = 1.0, 1.5, 0.5  # in units of one forward chunk; the backward for inputs B − W equals F
FB = 0.8 * (F + B)  # an overlapped forward + backward pair, if overlap saves 20%
for s in SCHEDULES:
    tl = simulate(s, PP, M, F, B, W, FB)
    print(f"{LABELS[s]:<9} step {tl.makespan:5.1f}   bubble: simulated {max(tl.bubble):4.1f}, "
          f"Table 2 {table2_bubble(s, PP, F, B, W, FB):4.1f}   activations {max(tl.peak_activations):2d} "
          f"(Table 2: {table2_activations(s, PP)})   parameters ×{tl.parameter_copies}")

# %% [markdown]
# The simulated bubbles are the formulas (tested over a grid of settings; for DualPipe the formula is the bubble of
# the middle ranks — the outer ranks idle less — when the backward for inputs takes as long as a forward and W < F).
# DualPipe halves the pipeline's depth (PP/2 − 1) and hides three W's; in exchange each rank keeps two stages of
# parameters and one more micro-batch of activations.
#
# Play with the schedules: drag PP to 16 (V3's), make W larger or smaller, change how much F&B saves.

# %% slideshow={"slide_type": "slide"} tags=["remove-output"]
w = PipelineScheduleWidget()
w

# %% [markdown]
# In the book (no kernel), the same chart steps through precomputed settings with its own slider:

# %% slideshow={"slide_type": "slide"} tags=["remove-input"]
w.static_figure().show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3 · Cutting the mini model into stages
#
# `split_stages(model, n)` returns n `Stage` modules that **share** the model's parameters: stage 0 holds the
# embedding and the first blocks, the last stage the last blocks, the final RMSNorm and the output head. Running the
# stages one after another must be the model:

# %%
model = build_model(cfg, seed=0)
stages = split_stages(model, 4)
for st in stages:
    parts = (["embedding"] if st.embed is not None else []) + \
        [f"blocks {st.first}–{st.first + len(st.blocks) - 1}"] + (["norm + head"] if st.head is not None else [])
    print(f"stage {st.index}: {', '.join(parts)} ({sum(p.numel() for p in st.parameters()):,} parameters)")
tokens, targets = make_batch(cfg, micro_batches=1, seq_len=16)
x = tokens
for st in stages:
    x = st(x)
print("stages in a row == the model, bitwise:", torch.equal(x, model(tokens).logits))

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4 · Real schedules on real processes
#
# `run_pipelines` starts one operating-system process per rank (`torch.distributed` with the gloo backend, on
# 127.0.0.1 only, a free port, one thread each), runs one training step with each schedule, and stops every process
# again — also when something fails or takes too long. The schedules:
#
# - PyTorch's own `torch.distributed.pipelining`: **GPipe** (all forwards, then all backwards), **1F1B**, **ZBV**
#   (`ScheduleZBVZeroBubble`, a zero-bubble schedule that splits B into I and W) and **DualPipeV** (PyTorch's
#   DualPipe in a V: each rank holds stages r and 2·PP−1−r, so it needs one copy of the parameters);
# - **DualPipe** from DeepSeek's own package, run unmodified through `dsv3_mini.dualpipe_adapter`, which changes its
#   two CUDA assumptions (receive buffers on `"cuda"`, a device check) from the outside.
#
# Two processes first, 4 micro-batches; then four processes, 8 micro-batches:

# %%
RUNS = {pp: run_pipelines(list(RUN_SCHEDULES), pp=pp, micro_batches=2 * pp) for pp in (2, 4)}

# %% [markdown]
# Each schedule's losses and gradients against a single process running the same micro-batches one after the other:

# %%
for pp, runs in RUNS.items():
    tok, tgt = make_batch(cfg, 2 * pp)
    ref_losses, ref_grads = reference_step(cfg, tok, tgt, 2 * pp)
    print(f"PP = {pp}, {2 * pp} micro-batches, reference losses {[round(x, 4) for x in ref_losses]}")
    for name, run in runs.items():
        d = compare_grads(run.grads, ref_grads)
        same_loss = max(abs(a - b) for a, b in zip(run.losses, ref_losses, strict=True))
        print(f"  {name:<10} losses equal: {run.losses == ref_losses!s:<5}  (max |Δ| {same_loss:.0e})   "
              f"gradients bitwise equal: {d['bitwise']!s:<5}  max relative Δ {d['max_rel_diff']:.0e}")

# %% [markdown]
# PyTorch's schedules reproduce the single process **bit for bit**: each micro-batch's gradient is added to `.grad`
# in the same order, and divided by the number of micro-batches at the end. DeepSeek's DualPipe divides each loss
# before its backward and keeps two copies of every stage (one per direction) whose gradients we sum, as V3's
# all-reduce over the pair would: the same numbers up to rounding, a relative difference below 10⁻⁶.
#
# DeepSeek's package also executes exactly the order our simulator lays out, chunk for chunk, on every rank:

# %%
for pp, runs in RUNS.items():
    dp = runs["dualpipe"]
    same = all(dp.order(r) == [(w.what, w.direction, w.micro_batch) for c in dualpipe_order(pp, 2 * pp, r)
                               for w in c] for r in range(pp))
    print(f"PP = {pp}: dualpipe package order == simulator order on every rank: {same}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5 · Measured timelines
#
# Every rank recorded when each of its chunks ran: forward (F), full backward (B), backward for inputs (I) and for
# weights (W). The timings change from run to run (and from machine to machine); the order does not.

# %% slideshow={"slide_type": "slide"}
# NBVAL_IGNORE_OUTPUT
measured_gantt(RUNS[4], "Measured: one step on 4 CPU processes, 8 micro-batches").show()

# %% [markdown]
# The measured bubble next to the nearest Table 2 row, evaluated with the measured F, B and W of the same run
# (F&B = F + B: nothing overlaps here):

# %%
# NBVAL_IGNORE_OUTPUT
for pp, runs in RUNS.items():
    for name, run in runs.items():
        row, formula = run.table2()
        print(f"PP={pp} {name:<10} F {1000 * run.mean_time('F'):5.1f} ms  B {1000 * run.mean_time('B'):5.1f}  "
              f"I {1000 * run.mean_time('I'):5.1f}  W {1000 * run.mean_time('W'):5.1f}   measured bubble "
              f"{1000 * max(run.bubbles()):6.1f} ms   Table 2 ({LABELS[row]}) {1000 * formula:6.1f} ms")

# %% [markdown]
# Both sides count idle time differently: the formula counts only the waiting that the schedule's order causes;
# the measurement also counts message latency, Python between the chunks, and time slices taken by the other
# processes on the same cores. Expect the measured bubble to be larger.
#
# **What CPU processes can and cannot show.** The *order* of the chunks and the *bubbles* it creates are real:
# they are the schedules' own code deciding, waiting for gloo messages from the neighbouring rank. What is missing:
#
# - **No overlap.** On H800s, DualPipe's F&B runs a forward and a backward chunk together while the all-to-all and
#   pipeline sends run on a few SMs set aside for communication. Here there is no separate communication engine:
#   the package runs an F&B's forward, then its backward (our modules define no overlapped forward-backward), and
#   a gloo send costs CPU time on the same cores. So F&B = F + B, and DualPipe's advantage here is only its
#   shorter pipeline depth.
# - **No real W split in DeepSeek's package.** Its W chunks run weight gradients that custom layers stored in
#   `dualpipe.WeightGradStore`; our `nn.Linear` layers compute them inside B, so its W chunks are empty. PyTorch's
#   ZBV and DualPipeV do split I and W (see the green bars).
# - **Four processes on two cores.** With four ranks, two processes share a core: a rank may be *ready* and
#   still wait for the CPU, which shows up as idle time no schedule caused. The 2-rank runs are the cleaner ones.
# - **Tiny chunks.** A chunk of the tiny model takes milliseconds, so Python and message overheads are a large
#   share; measured and formula bubbles agree only roughly.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 6 · The memory tricks of §3.2.3 (why no tensor parallelism is needed)
#
# V3 saves memory in three ways, each traded for a little compute or a clever placement:
#
# 1. **Recompute RMSNorm and the MLA up-projections** in the backward instead of storing their outputs. Per token
#    and layer that drops the two normalised hidden states and the up-projected queries, keys and values:

# %%
bf16 = 2
norm_outputs = 2 * v3.hidden_size  # attention and FFN RMSNorm outputs
up_proj = v3.num_attention_heads * (2 * v3.qk_head_dim + v3.v_head_dim)  # q, k (nope + rope) and v, all heads
print(f"per token and layer, not stored: RMSNorm outputs {norm_outputs * bf16:,} B, "
      f"MLA up-projections {up_proj * bf16:,} B (bf16)")
print(f"for a 4K-token sequence over V3's {v3.num_hidden_layers} layers: "
      f"{(norm_outputs + up_proj) * bf16 * 4096 * v3.num_hidden_layers / 2**30:.1f} GiB")

# %% [markdown]
# 2. **The EMA of the parameters lives in CPU memory**, updated asynchronously after each step: the GPUs do not hold
#    a second copy of the weights for it.
# 3. **MTP shares the embedding and the output head physically** with the main model by placing the shallowest
#    layers (with the embedding) and the deepest (with the head) on the same PP rank. DualPipe's two directions,
#    and PyTorch's DualPipeV, do exactly that: rank 0 holds stage 0 and the last stage.

# %%
pp = 4
for name, stages_of in (("1F1B", lambda r: [r]), ("DualPipeV", lambda r: [r, 2 * pp - 1 - r])):
    n_stages = sum(len(stages_of(r)) for r in range(pp))
    head_rank = next(r for r in range(pp) if n_stages - 1 in stages_of(r))
    print(f"{name} on {pp} ranks: rank 0 holds stages {stages_of(0)}; the embedding is on rank 0, "
          f"the head on rank {head_rank}")

# %% [markdown]
# With 1F1B the head sits on the last rank, far from the embedding, so an MTP module (which needs both) would need a
# copy of one and an all-reduce of its gradient every step. In the V-layout they share one rank and one tensor.
# Together with ZeRO-1 (optimizer states sharded over data-parallel replicas) and the pipeline splitting the layers,
# this is how a 671B model trains without splitting each matrix over GPUs.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 7 · Exercises
#
# **Exercise 1.** V3 uses 16 PP ranks. With F = 1 and B = 1.5 (a full backward; `check_pipeline.F`, `.B`), how long
# does each rank idle per step under 1F1B?

# %%
my_answer = ...  # your number here

check_pipeline.check_1f1b_bubble(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
solution = (check_pipeline.V3_PP - 1) * (check_pipeline.F + check_pipeline.B)
print(check_pipeline.check_1f1b_bubble(solution))

# %% [markdown]
# **Exercise 2.** The same 16 ranks with DualPipe, W = 0.5 and F&B = 2 (`check_pipeline.W`, `.FB`): the bubble?

# %%
my_answer = ...  # your number here

check_pipeline.check_dualpipe_bubble(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
c = check_pipeline
solution = (c.V3_PP / 2 - 1) * (c.FB + c.B - 3 * c.W)
print(check_pipeline.check_dualpipe_bubble(solution))
print(f"simulated on the middle ranks: {max(simulate('dualpipe', 16, 32, c.F, c.B, c.W, c.FB).bubble):g}")

# %% [markdown]
# **Exercise 3.** At PP = 16, how many micro-batches of activations does the busiest DualPipe rank hold at its
# peak, and how many stages of parameters does each rank keep?

# %%
my_activations, my_copies = ..., ...  # your numbers here

check_pipeline.check_dualpipe_memory(my_activations, my_copies)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
tl = simulate("dualpipe", 16, 32)
print(check_pipeline.check_dualpipe_memory(max(tl.peak_activations), tl.parameter_copies))

# %% [markdown]
# **Exercise 4.** Predict before you simulate: with `check_pipeline.RACE` — 8 ranks, 16 micro-batches, F = 1,
# B = 2, **W = 0** (no weight part to move) and **no overlap** (F&B = F + B, as on our CPU) — which of `"1f1b"`,
# `"zb1p"`, `"dualpipe"` has the shortest step?

# %%
my_answer = ...  # "1f1b", "zb1p" or "dualpipe"

check_pipeline.check_race(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
r = check_pipeline.RACE
for s in SCHEDULES:
    print(s, simulate(s, r["pp"], r["micro_batches"], r["F"], r["B"], r["W"], r["FB"]).makespan)
print(check_pipeline.check_race(check_pipeline.race_winner()))

# %% [markdown]
# **Discussion.** In the widget, set W to 0 and F&B / (F+B) to 1: ZB1P becomes 1F1B, and DualPipe keeps only its
# halved depth. Which of DualPipe's gains needs the GPU's separate communication engine, and which would a CPU
# cluster get too?
#
# Next: the claims-vs-measurements lesson.
