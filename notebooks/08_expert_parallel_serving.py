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
# # 8 · The machine room, part 2: expert parallelism, node-limited routing and serving
#
# **Learning goals.** After this lesson you can
#
# 1. describe expert parallelism as two `all_to_all` exchanges — *dispatch* tokens to the ranks that own their
#    experts, *combine* the weighted results back — and check that sharding changes no number;
# 2. count what node-limited routing saves: a token sent once per destination node, at most $M$ = 4 nodes, and
#    why that lets a token use "up to 13 experts for the cost of 4 nodes";
# 3. place redundant copies of busy experts so that every rank does about the same work;
# 4. plan a deployment: weight and cache memory, GPUs, a decode speed bound, V3's published prefill and decode units;
# 5. redo the training bill — 6 · N_active · tokens — and say what the famous \$5.576M does not include.
#
# The router lessons (2 and 3) chose experts; this lesson follows the tokens to them. Every number is computed by
# `dsv3_mini` (`expert_parallel`, `traffic`, `placement`, `deployment`) on the shipped mini model
# (`checkpoints/mini/`), real validation text, or `preset("deepseek-v3")`.

# %%
import textwrap
import time

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from course import check_serving
from course.paths import SHIPPED_RUN
from dsv3_mini import count_params, preset, seed_everything
from dsv3_mini.checkpoint import load_model
from dsv3_mini.data import builtin_dataset
from dsv3_mini.deployment import (
    COST_CAVEAT,
    DEPLOYMENTS,
    REPORTED_PRETRAINING_HOURS,
    plan,
    training_bill,
    weight_bytes,
)
from dsv3_mini.expert_parallel import compare_with_single_process, experts_per_rank
from dsv3_mini.placement import balanced, contiguous, expert_loads
from dsv3_mini.traffic import (
    experts_for_cost_of_nodes,
    full_scale,
    measured_traffic,
    moe_inputs,
    row_bytes,
)
from widgets import DeploymentWidget
from widgets.palette import BLUE, GREY, ORANGE

_ = seed_everything(0, threads=1)
model = load_model(SHIPPED_RUN / "model.safetensors")
data = builtin_dataset(seed=0)
cfg, v3 = model.cfg, preset("deepseek-v3")
print(f"shipped model: {cfg.n_routed_experts} routed experts in {cfg.n_group} groups, top-{cfg.num_experts_per_tok}, "
      f"at most {cfg.topk_group} groups per token; {cfg.num_moe_layers} MoE layers")

# %% slideshow={"slide_type": "skip"} tags=["remove-cell"]
from widgets import setup_plotly

_ = setup_plotly()  # plotly in JupyterLab, plain HTML in the book

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Expert parallelism for real: experts on ranks, tokens on the move
#
# V3 trains with 64-way expert parallelism (EP) over 8 nodes: each GPU holds 4 of the 256 routed experts of a layer.
# Attention runs data-parallel, so every GPU has its own tokens; the router is replicated. One MoE layer is then
#
# 1. **route**: each rank runs the router on its own tokens;
# 2. **dispatch**: one `all_to_all` sends each token *once* to every rank that owns at least one of its experts,
#    together with the gating weights $g$ of the experts it uses there;
# 3. **compute**: each rank runs its own experts and sums $g_i\,\mathrm{FFN}_i(\mathbf{u})$ per received token;
# 4. **combine**: a second `all_to_all` returns the partial sums; the home rank adds them and the shared expert.
#
# `dsv3_mini.expert_parallel.ExpertParallelMoE` does exactly this with `torch.distributed` over **gloo**: real
# processes on this machine, talking over loopback TCP. Here is layer 1 of the shipped model, sharded over 2 and
# then 4 processes (experts in contiguous blocks: 8 or 4 per rank), run forward and backward on 512 real
# validation tokens, and compared with the single-process `MoE` of lesson 2.

# %%
inputs = moe_inputs(model, data, batch_size=12, seq_len=256, max_batches=1)  # the input u of every MoE layer
layer = 0
u = inputs[layer][:512]
moe = model.moe_layers(include_mtp=False)[layer]
results = {}
for ranks in (2, 4):
    print(f"{ranks} ranks: {experts_per_rank(cfg.n_routed_experts, ranks)} experts each")
    results[ranks] = compare_with_single_process(moe, u, ranks)
    worst = max(results[ranks].max_diff.values())
    print(f"  output, input gradient and all {len(results[ranks].max_diff) - 2} weight gradients equal the "
          f"single-process MoE: max |Δ| <= 1e-6 is {worst <= 1e-6}")

# %%
# NBVAL_IGNORE_OUTPUT
t = time.perf_counter()
compare_with_single_process(moe, u, 4)
print(f"one 4-rank run (start 4 processes, forward + backward, stop them): {time.perf_counter() - t:.1f} s")

# %% [markdown]
# The differences are rounding only (the sum over experts is grouped by rank instead of by expert). The run takes
# seconds, almost all of it starting Python processes and importing torch: **time here says nothing about V3**,
# whose GPUs exchange over NVLink and InfiniBand. What the processes do show exactly is *which rows go where*.
# Each rank counted what its dispatch sent:

# %%
for ranks, res in results.items():
    print(f"{ranks} ranks:")
    for tr in res.traffic:
        tokens = len(tr.ranks_per_token)
        print(f"  rank {tr.rank}: {tokens} tokens, {tr.pairs} (token, expert) pairs -> rows sent to each rank "
              f"{tr.dispatch_rows.tolist()}")
        print(f"          {tr.remote_rows} rows leave the process")

# %% [markdown]
# A token with two experts on the same rank is sent there once: fewer rows travel than there are (token, expert)
# pairs. That is the whole idea behind node-limited routing, which we measure next.
#
# **What CPU processes cannot show.** Rows here travel in FP32 over one loopback "network"; V3 dispatches in FP8
# (with a scale per 128 numbers) and combines in BF16, sends between nodes over IB and forwards inside a node over
# NVLink, and overlaps all of it with computation (DualPipe, lesson 7's subject). One rank here plays one node.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Node-limited routing's traffic, measured on the shipped model
#
# Put the mini model's 16 experts on 4 nodes (4 per node, one group per node) and give every node a quarter of the
# tokens. For each token we count the **distinct destination nodes**, the copies that **leave its own node** (the
# IB traffic) and their bytes: FP8 dispatch, `row_bytes(192, "fp8")` = 192 + 2 scales × 4 = 200 bytes, plus BF16
# combine, 384 bytes. The shipped routers are re-run on the same inputs under other limits: `n_group` groups, at most
# `topk_group` = $M$ of them per token; (1, 1) is unrestricted top-K. The model was trained with (4, 2).

# %%
rows = measured_traffic(model, inputs, nodes=4)
print(f"per copy: {row_bytes(cfg.hidden_size, 'fp8')} B dispatch + {row_bytes(cfg.hidden_size, 'bf16')} B combine; "
      f"{sum(len(x) for x in inputs):,} token-layers")
print(f"{'groups':>6}{'M':>3}{'nodes':>7}{'max':>5}{'remote':>8}{'pairs':>7}{'bytes/token':>13}"
      f"{'affinity kept':>15}{'same as trained':>17}")
for r in rows:
    print(f"{r.n_group:>6}{r.topk_group:>3}{r.mean_nodes:>7.2f}{r.max_nodes:>5}{r.remote_copies:>8.2f}"
          f"{r.pair_copies:>7.2f}{r.bytes_per_token:>13,.0f}{r.kept_affinity:>14.1%}{r.same_as_trained:>16.1%}")

# %% slideshow={"slide_type": "slide"}
labels = ["top-K" if r.n_group == 1 else f"{r.n_group} groups, M={r.topk_group}" for r in rows]
trained = [BLUE if (r.n_group, r.topk_group) == (cfg.n_group, cfg.topk_group) else GREY for r in rows]
fig = make_subplots(rows=2, cols=1, vertical_spacing=0.16,
                    subplot_titles=("Distinct destination nodes per token (mean)",
                                    "Bytes per token that leave its node"))
# horizontal bars: the routing labels sit on the y axis, where they fit at any width
fig.add_bar(y=labels, x=[r.mean_nodes for r in rows], orientation="h", marker_color=trained, showlegend=False,
            row=1, col=1, hovertemplate="%{y}: %{x:.2f} nodes<extra></extra>")
fig.add_bar(y=labels, x=[r.bytes_per_token for r in rows], orientation="h", marker_color=trained,
            name="one copy per node", row=2, col=1, hovertemplate="%{y}: %{x:,.0f} B<extra></extra>")
fig.add_scatter(y=labels, x=[r.pair_bytes_per_token for r in rows], mode="markers", name="one copy per expert",
                marker={"color": ORANGE, "size": 11, "symbol": "diamond"}, row=2, col=1,
                hovertemplate="%{y}: %{x:,.0f} B without one-copy-per-node<extra></extra>")
fig.update_xaxes(title_text="nodes", rangemode="tozero", row=1, col=1)
fig.update_xaxes(title_text="bytes", rangemode="tozero", row=2, col=1)
fig.update_yaxes(autorange="reversed")
fig.update_layout(template="course", height=720, font_size=13, margin={"t": 110, "b": 40},
                  title="Shipped model, 4 nodes<br>(blue: its own limit)",
                  legend={"orientation": "h", "x": 0, "y": -0.12, "yanchor": "top"})
fig.show()

# %% [markdown]
# Read the table row by row. Unrestricted top-4 reaches almost 3 of the 4 nodes; the trained limit (4 groups,
# $M$ = 2) never more than 2, and sends about 30% fewer bytes per token. $M$ = 1 would halve that again, but keeps
# only about three quarters of the affinity the router wanted (and the model was not trained for it). The orange
# diamonds are what a dispatch that sent one copy per *expert* would cost: the same under every limit. The savings
# come from the two ideas together, one copy per node *and* few nodes per token.
#
# With 8 groups on 4 nodes (two groups per node), $M$ = 4 groups can still reach all 4 nodes: a group limit bounds
# nodes only when the groups are the nodes, which is why V3 has exactly one group per node (8 and 8).

# %% [markdown] slideshow={"slide_type": "slide"}
# ## At full scale: 13 experts for the cost of 4 nodes
#
# V3 at training: 256 experts on 64 GPUs in 8 nodes (4 per GPU, 32 per node), IB 50 GB/s per GPU between nodes,
# NVLink 160 GB/s inside. A copy reaches a remote node over IB once, landing on the GPU with the sender's in-node
# index, which forwards it over NVLink to the GPUs that hold the token's experts. In the time IB needs for one copy,
# NVLink moves 160 / 50 = 3.2 of them, so for the IB cost of $M$ nodes a token could afford:

# %%
print(f"M = {v3.topk_group} nodes × {160 / 50} copies per node = {experts_for_cost_of_nodes(v3.topk_group):.1f} "
      f"experts (the report: 'up to 13'); V3 uses {v3.num_experts_per_tok}")
regimes = {lim: full_scale(v3, node_limited=lim) for lim in (True, False)}
print(f"{'routing':>13}{'nodes':>7}{'max':>5}{'IB copies':>11}{'NVLink copies':>15}{'IB ms':>8}{'NVLink ms':>11}"
      f"{'layer ms':>10}")
for lim, r in regimes.items():
    print(f"{'M = 4 nodes' if lim else 'plain top-8':>13}{r.mean_nodes:>7.2f}{r.max_nodes:>5}{r.ib_copies:>11.2f}"
          f"{r.nvlink_copies:>15.2f}{r.ib_ms:>8.2f}{r.nvlink_ms:>11.2f}{r.layer_ms:>10.2f}")
print(f"per copy: {row_bytes(v3.hidden_size, 'fp8'):,} B FP8 dispatch + {row_bytes(v3.hidden_size, 'bf16'):,} B "
      f"BF16 combine; {regimes[True].tokens_per_gpu:,} tokens per GPU per layer (an assumption)")
print(f"the node limit cuts the IB time per MoE layer by {regimes[False].ib_ms / regimes[True].ib_ms:.2f}×")

# %% slideshow={"slide_type": "slide"}
names = ["M = 4 nodes", "plain top-8"]
fig = go.Figure()
fig.add_bar(x=names, y=[regimes[k].ib_ms for k in (True, False)], name="InfiniBand (50 GB/s)", marker_color=ORANGE)
fig.add_bar(x=names, y=[regimes[k].nvlink_ms for k in (True, False)], name="NVLink (160 GB/s)", marker_color=BLUE)
fig.update_layout(template="plotly_white", barmode="group", height=420, font_size=13,
                  title="V3: all-to-all time per MoE layer", yaxis_title="ms per 4,096 tokens per GPU",
                  legend={"orientation": "h", "x": 0, "y": -0.15, "yanchor": "top"})
fig.show()

# %% [markdown]
# Routing is simulated here: the real `Router` with V3's sizes on *uniformly random* affinities (V3's trained
# router is not uniform, so its real counts differ). Even so the pattern holds: without the limit a token reaches
# 5.3 nodes on average and up to 8, and IB, the slow link, is the bottleneck; with it at most 4, and the IB time
# drops by a quarter while NVLink has room to spare — the room that "13 experts" describes. The times count bytes
# only (no latency, no overlap with the experts' computation).

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Redundant experts: balancing the ranks while serving
#
# Training balanced the experts (lesson 3), but what a server sees is not the training mix. V3 measures expert loads
# while serving and copies the busiest experts onto extra slots — the prefill unit has 32 redundant experts, one
# more per GPU — re-placing them periodically. `dsv3_mini.placement` is our own version of that placement (DeepSeek's
# EPLB is not installable here): give each extra slot to the expert with the highest load per copy, then pack the
# slots onto ranks, heaviest first onto the lightest rank with room. The busiest rank sets the layer's time, so
# the number to watch is max / mean rank load.

# %%
loads_all = expert_loads(model, data, max_batches=4)
print("all validation tokens, 4 ranks (max / mean rank load):")
for i, load in enumerate(loads_all):
    print(f"  layer {i + 1}: contiguous {contiguous(load, 4).max_over_mean:.3f}, "
          f"repacked {balanced(load, 4).max_over_mean:.3f}, +4 redundant {balanced(load, 4, 4).max_over_mean:.3f}")
for d, name in enumerate(data.domain_names):
    loads = expert_loads(model, data, max_batches=4, domain=d)
    before = [contiguous(load, 4).max_over_mean for load in loads]
    after = [balanced(load, 4, 4).max_over_mean for load in loads]
    print(f"only {name:<10}: contiguous " + ", ".join(f"{b:.2f}" for b in before)
          + "  ->  +4 redundant " + ", ".join(f"{a:.2f}" for a in after))

# %% slideshow={"slide_type": "slide"}
arith = expert_loads(model, data, max_batches=4, domain=0)[1]  # layer 2 on arithmetic: the most skewed above
before, after = contiguous(arith, 4), balanced(arith, 4, 4)
fig = go.Figure()
fig.add_bar(x=[f"rank {r}" for r in range(4)], y=before.rank_load.tolist(), name="contiguous, no copies",
            marker_color=GREY)
fig.add_bar(x=[f"rank {r}" for r in range(4)], y=after.rank_load.tolist(), name="4 redundant, packed",
            marker_color=BLUE)
fig.update_layout(template="plotly_white", barmode="group", height=420, font_size=13,
                  title=f"Arithmetic only, layer 2: max/mean {before.max_over_mean:.2f} → {after.max_over_mean:.2f}",
                  yaxis_title="tokens served", legend={"orientation": "h", "x": 0, "y": -0.15, "yanchor": "top"})
fig.show()
print("experts per rank after placement:", [after.experts_on(r) for r in range(4)])

# %% [markdown]
# Over the whole validation set the loss-free balancing of training leaves the ranks within a few percent of each
# other. A server that mostly sees one kind of request is another matter: arithmetic-only traffic makes the busiest
# rank do twice the mean work, and four redundant slots (5 per rank instead of 4) bring it back to within about 2%.
# Our packing ignores node-limited routing; EPLB's hierarchical policy also keeps each group on its node.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Serving the model: memory, GPUs and a speed bound
#
# `dsv3_mini.deployment.plan` adds up what serving needs. Weights: V3's matrices in FP8 with one FP32 scale per
# 128×128 block, the embedding, head, norms and routers in BF16. KV cache: MLA's 70,272 bytes per token
# (`kv_cache.bytes_per_token`) against the same-shape MHA it replaces. GPUs: the fewest that hold both in 90% of
# their memory *and* split the 256 experts evenly. Speed: decoding reads the weights it uses and the whole cache every
# step, so memory bandwidth bounds tokens per second from above.

# %%
w = weight_bytes(v3, "fp8")
print(f"weights at FP8: {w.quantized:,} params × 1 B + {w.scales:,} B of scales")
print(f"  + {w.kept:,} params × 2 B (BF16) = {w.bytes / 1e9:.1f} GB")
print(f"  (the release's 685B with MTP is larger; BF16 would be {weight_bytes(v3, 'bf16').bytes / 1e9:,.0f} GB)")
for gpu in ("H200", "H100"):
    p = plan(v3, gpu=gpu, context=32_768)
    print(f"{gpu}: {p.gpus} GPUs (with MHA's cache: {p.gpus_mha}); KV cache at 32K {p.kv_bytes / 1e9:.2f} GB "
          f"(MHA {p.kv_bytes_mha / 1e9:.1f} GB)")
    print(f"  decode bound at batch 1: {p.tokens_per_s:,.0f} tokens/s (MHA {p.tokens_per_s_mha:,.0f})")

# %% [markdown]
# "At least 8 H200" — or two nodes of H100 — is what the arithmetic gives: 675 GB over 127 usable GB is 6 GPUs, and 6
# does not divide 256 experts. The decode bound is optimistic by construction (perfect splitting, no communication).
# The mini model's cache bytes are the same formula measured on a real cache (lesson 1 and `make bench`).
#
# V3 itself serves with two deployments (§3.4), whose shapes follow from these numbers:

# %%
for name, d in DEPLOYMENTS.items():
    print(f"{name:>8}: {d.nodes} nodes / {d.gpus} GPUs, attention TP{d.tp} × DP{d.dp}, MoE EP{d.ep}")
    print(f"{'':>8}  {v3.n_routed_experts} + {d.extra_slots} expert slots -> {d.experts_per_gpu(v3)} per GPU "
          f"({d.expert_bytes_per_gpu(v3) / 1e9:.1f} GB of experts), {d.experts_per_token(v3)} experts per token")

# %% [markdown]
# Prefilling: 8 experts + 1 redundant on each of 32 GPUs. Decoding: one expert per GPU on 320 GPUs, 64 of them for
# redundant copies and the shared expert — which is served as a routed one, so each token visits 9. The widget
# drives the planner; impossible settings (too few GPUs, a count that does not split the experts) say why.

# %% slideshow={"slide_type": "slide"} tags=["remove-output"]
widget = DeploymentWidget()
widget

# %% slideshow={"slide_type": "slide"} tags=["remove-input"]
widget.static_figure().show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The training bill
#
# The report's bill (§1, Table 1): 2.664M H800 GPU hours of pre-training, 119K of context extension and 5K of
# post-training, 2.788M in all, or \$5.576M at \$2 per GPU hour. Can we redo it? Training costs about 6 FLOPs per
# active parameter per token (2 forward, 4 backward). With `count_params`'s 36.6B active parameters (the embedding is
# a lookup) and 14.8T tokens:

# %%
for util in (0.3, 0.4):
    bill = training_bill(v3, utilisation=util)
    print(f"at {util:.0%} of the H800's BF16 dense peak: {bill.gpu_hours / 1e6:.2f}M GPU hours "
          f"(${bill.cost_usd / 1e6:.2f}M at $2/hour)")
print(f"6 × {bill.active_params:,} × 14.8e12 = {bill.flops:.3g} FLOPs")
print(f"the report's 2.788M hours imply {bill.implied_utilisation:.1%} of the BF16 peak "
      f"(pre-training alone, 2.664M hours: {bill.implied_utilisation_pretraining:.1%})")
fp8 = training_bill(v3, precision="fp8")
print(f"or {fp8.implied_utilisation:.1%} of the FP8 peak; reported cost ${bill.reported_cost_usd / 1e6:.3f}M")
print(f"pre-training hours per trillion tokens: {REPORTED_PRETRAINING_HOURS / (bill.tokens / 1e12):,.0f}"
      " (the report: 180K GPU hours per trillion tokens, on 2,048 H800s)")
print(f"total parameters for scale: {count_params(v3).total:,}")

# %% [markdown]
# 6N leaves out attention scores and the MTP module (`dsv3_mini.flops` counts them), so the true utilisation is a
# little higher than the 33% above. And the report's own caveat on the \$5.576M, in its words (kept in
# `dsv3_mini.deployment.COST_CAVEAT`): the costs

# %%
print(textwrap.fill(COST_CAVEAT, 100))

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Exercises
#
# **Exercise 1.** For the IB cost of reaching $M$ = 4 nodes, how many experts can a V3 token use (IB 50 GB/s,
# NVLink 160 GB/s)?

# %%
my_answer = ...  # your expression here

check_serving.check_experts_for_four_nodes(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
solution = v3.topk_group * 160 / 50
print(check_serving.check_experts_for_four_nodes(solution))

# %% [markdown]
# **Exercise 2.** How many GB (10⁹ bytes) of MLA cache does one 131,072-token sequence take in BF16?

# %%
my_answer = ...  # your expression here

check_serving.check_kv_cache_gb(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
solution = 131_072 * v3.num_hidden_layers * (v3.kv_lora_rank + v3.qk_rope_head_dim) * 2 / 1e9
print(check_serving.check_kv_cache_gb(solution))

# %% [markdown]
# **Exercise 3.** What is the fewest number of H200 GPUs (90% of 141 GB usable each) that hold V3's FP8 weights
# and a 32K cache, with the 256 experts split evenly?

# %%
my_answer = ...  # a whole number

check_serving.check_h200_count(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
need = (weight_bytes(v3).bytes + 32_768 * 70_272) / (0.9 * 141e9)
solution = next(n for n in range(int(need) + 1, 257) if 256 % n == 0)
print(check_serving.check_h200_count(solution), f"({need:.2f} GPUs of memory, rounded up to a divisor of 256)")

# %% [markdown]
# **Exercise 4.** One layer's experts served these loads, two experts per rank on 4 ranks (experts 0–1 on rank 0,
# …). (a) What is max / mean rank load? (b) Which expert gets the first redundant copy?

# %%
print("loads of experts 0..7:", check_serving.LOADS)
my_answer_a = ...  # max / mean
my_answer_b = ...  # an expert id

print(check_serving.check_max_over_mean(my_answer_a))
print(check_serving.check_first_redundant(my_answer_b))

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
loads = check_serving.LOADS
per_rank = [loads[2 * r] + loads[2 * r + 1] for r in range(4)]
print(check_serving.check_max_over_mean(max(per_rank) / (sum(per_rank) / 4)))
print(check_serving.check_first_redundant(loads.index(max(loads))))

# %% [markdown]
# **Exercise 5.** How many million H800 GPU hours do 6 · N_active · 14.8T FLOPs take at 40% of the BF16 dense peak
# (989.5 TFLOP/s)?

# %%
my_answer = ...  # millions of GPU hours

check_serving.check_gpu_hours(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
solution = 6 * count_params(v3).active_non_embedding * 14.8e12 / (0.4 * 989.5e12) / 3600 / 1e6
print(check_serving.check_gpu_hours(solution))

# %% [markdown]
# **Discussion.** The node limit costs the router a little freedom (the "affinity kept" column) and buys a quarter
# less IB traffic. Would V3 still need it on a machine whose inter-node links were as fast as NVLink? And why does
# the decoding deployment spread the experts one per GPU over 320 GPUs, when 8 H200 could hold the whole model?
