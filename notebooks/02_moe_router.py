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
# # 2 · Mixture of experts and the router
#
# **Learning goals.** After this lesson you can
#
# 1. name the two ideas of DeepSeekMoE — many *fine-grained* routed experts, plus *shared* experts that every token
#    uses — and compute why finer experts give far more expert combinations for the same compute;
# 2. write down DeepSeek-V3's gate: sigmoid affinities, top-$K$ selection, weights normalised over the chosen experts
#    and multiplied by the routed scale 2.5, and say how it differs from DeepSeek-V2's softmax gate;
# 3. follow group-limited (node-limited) routing for one token: which groups survive and which experts win;
# 4. read a real MoE layer's routing decision (scores, weights, indices, tokens per expert) and explain how dispatch
#    groups tokens by expert instead of looping over tokens;
# 5. see load imbalance appear when the inputs are skewed: the problem that lesson 3 solves.
#
# Every number below is computed by `dsv3_mini` (the `Router`, `MoE` and `SwiGLU` of `dsv3_mini/moe.py`) or from a
# configuration; the report's values come from `preset("deepseek-v3")`, the released configuration.

# %%
import math
import time

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from course import check_moe
from dsv3_mini import DeepSeekV3, preset, seed_everything
from dsv3_mini.balancing import max_violation, skewed_router
from dsv3_mini.data import builtin_dataset
from dsv3_mini.moe import Router, SwiGLU
from dsv3_mini.params import expert_params, router_params
from dsv3_mini.traffic import IB_GBPS, NVLINK_GBPS, experts_for_cost_of_nodes
from widgets import RouterLoadWidget
from widgets.palette import OKABE_ITO, group_colors

_ = seed_everything(0, threads=1)  # the same numbers on every run; one thread suits these small tensors
_ = torch.set_grad_enabled(False)  # this lesson only looks at routing; nothing is trained

# %% slideshow={"slide_type": "skip"} tags=["remove-cell"]
from widgets import setup_plotly

_ = setup_plotly()  # plotly in JupyterLab, plain HTML in the book

# %% [markdown] slideshow={"slide_type": "slide"}
# ## DeepSeekMoE: many small experts, and some that every token uses
#
# Lesson 0 wrote the MoE layer of a block as
#
# $$
# \mathbf{h}'_t = \mathbf{u}_t + \sum_{i=1}^{N_s} \mathrm{FFN}^{(s)}_i(\mathbf{u}_t)
#   + \sum_{i=1}^{N_r} g_{i,t}\, \mathrm{FFN}^{(r)}_i(\mathbf{u}_t),
# $$
#
# with $N_s$ shared experts that every token uses and $N_r$ routed experts of which the gate $g_{i,t}$ keeps only
# $K_r$. A classic MoE layer (GShard, Switch Transformer) has no shared experts and a few large routed experts, each
# as wide as a dense FFN, of which a token uses one or two. DeepSeekMoE
# ([arXiv 2401.06066](https://arxiv.org/abs/2401.06066)) changes two things:
#
# * **Fine-grained experts.** Split every expert into $m$ narrower ones ($1/m$ of the width) and let each token use
#   $m$ times as many. The parameters and the compute per token stay the same, but the number of expert sets a token
#   can be sent to explodes, from $\binom{N}{K}$ to $\binom{mN}{mK}$. Each expert can then specialise more narrowly,
#   and the router can combine them more freely.
# * **Shared experts.** Knowledge that every token needs (common syntax, frequent words) would otherwise be learned
#   again by many routed experts. A shared expert holds it once, and the routed experts are free to specialise.
#
# DeepSeek-V3 uses 1 shared and 256 routed experts of width 2,048, 8 of them per token. Here is its routed layer as
# the result of splitting a coarse layer of 32 experts, 8 times as wide, with top-1 routing: the same stored and
# activated parameters, $m$ = 1, 2, 4, 8 (V3) and a hypothetical 16.

# %%
v3 = preset("deepseek-v3")
coarse_width = 8 * v3.moe_intermediate_size  # 16,384: one coarse expert = 8 of V3's
splits = [1, 2, 4, 8, 16]
split_cfgs = {m: v3.replace(n_routed_experts=32 * m, num_experts_per_tok=m,
                            moe_intermediate_size=coarse_width // m, n_group=1, topk_group=1)
              for m in splits}
combos = {m: math.comb(cfg.n_routed_experts, cfg.num_experts_per_tok) for m, cfg in split_cfgs.items()}

print(f"{'m':>3}{'experts':>9}{'chosen':>8}{'width':>8}{'routed params/layer':>21}"
      f"{'activated/token':>17}{'router':>12}{'combinations':>16}")
for m, cfg in split_cfgs.items():
    print(f"{m:>3}{cfg.n_routed_experts:>9}{cfg.num_experts_per_tok:>8}{cfg.moe_intermediate_size:>8,}"
          f"{expert_params(cfg) * cfg.n_routed_experts:>21,}"
          f"{expert_params(cfg) * cfg.num_experts_per_tok:>17,}{router_params(cfg):>12,}"
          f"{combos[m]:>16.3g}")
assert len({expert_params(c) * c.num_experts_per_tok for c in split_cfgs.values()}) == 1  # equal compute

# %% slideshow={"slide_type": "slide"}
fig = go.Figure(go.Bar(
    x=[f"m = {m}<br>{c.num_experts_per_tok} of {c.n_routed_experts}" for m, c in split_cfgs.items()],
    y=[float(combos[m]) for m in splits],
    marker_color=[OKABE_ITO[5] if m == 8 else OKABE_ITO[0] for m in splits],
    text=[f"{combos[m]:.2g}" for m in splits], textposition="outside",
    hovertemplate="%{x}<br>%{y:.3g} expert sets<extra></extra>",
))
fig.update_layout(title="Expert sets a token can be routed to, at equal compute (orange: DeepSeek-V3)",
                  template="course", font_size=14,
                  xaxis_title="split factor m: chosen of routed experts",
                  yaxis=dict(title="possible expert sets (count, log scale)", type="log", range=[0, 30]))
fig.show()

# %% [markdown]
# From 32 possible choices (top-1 of 32) to about $4 \times 10^{14}$ (top-8 of 256), for the same 11.3 billion
# parameters in the layer and the same 352 million activated per token. The router grows with the number of experts
# (its centroids are $N_r \times$ hidden), but stays within about 1% of the activated expert parameters. The DeepSeekMoE
# paper reports better results from fine-grained experts at equal compute; what limits $m$ in practice is that many
# tiny experts make small, inefficient matrix products and more traffic between devices (hence group-limited
# routing, below).

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The experts are SwiGLU feed-forward networks
#
# Every expert, routed or shared, is the same small network as the dense FFN, only narrower:
#
# $$
# \mathrm{FFN}(\mathbf{x}) = W_2\,\big(\mathrm{SiLU}(W_1\mathbf{x}) \odot W_3\mathbf{x}\big),
# \qquad W_1, W_3 \in \mathbb{R}^{w \times d},\; W_2 \in \mathbb{R}^{d \times w},
# $$
#
# three matrices of hidden size $d$ by expert width $w$. `dsv3_mini.moe.SwiGLU` is exactly this; here with the
# sizes of our `mini` preset, next to a V3 expert.

# %%
mini = preset("mini")
expert = SwiGLU(mini.hidden_size, mini.moe_intermediate_size)
x = torch.randn(5, mini.hidden_size)  # 5 tokens
print("SwiGLU:", tuple(x.shape), "->", tuple(expert(x).shape))
for name, p in expert.named_parameters():
    print(f"  {name}: {tuple(p.shape)}")
n = sum(p.numel() for p in expert.parameters())
assert n == expert_params(mini)
print(f"one mini expert: {n:,} parameters = 3 × {mini.hidden_size} × {mini.moe_intermediate_size}")
print(f"one V3 expert:   {expert_params(v3):,} parameters = 3 × {v3.hidden_size:,} × {v3.moe_intermediate_size:,}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The gate: sigmoid affinities, top-$K$, normalised weights
#
# The router holds one learned vector $\mathbf{e}_i$ per routed expert (its *centroid*). For token $t$ with input
# $\mathbf{u}_t$ DeepSeek-V3 computes (report §2.1.2)
#
# $$
# s_{i,t} = \sigma\!\left(\mathbf{u}_t^{\top}\mathbf{e}_i\right), \qquad
# \mathcal{S}_t = \operatorname{TopK}\big(\{\, s_{j,t} + b_j \,\},\, K_r\big), \qquad
# g_{i,t} = \rho\,\frac{s_{i,t}}{\sum_{j \in \mathcal{S}_t} s_{j,t}} \;\text{ for } i \in \mathcal{S}_t
#   \text{ (else 0)}.
# $$
#
# * $s_{i,t}$, the **affinity**, is a sigmoid: each expert's score lies in $(0, 1)$ and depends on its own
#   centroid only.
# * The bias $b_j$ is used **only to choose** the experts. It is not trained by gradients; lesson 3 moves it to
#   balance the load. Here it is zero.
# * The weights are the chosen affinities **normalised over the chosen experts** (`norm_topk_prob=True`), times the
#   routed scale $\rho$ = `routed_scaling_factor` = 2.5 of the released configuration (the report's equations leave
#   the scale out). So the $K_r$ weights of every token add up to exactly 2.5.
#
# A real `Router` with the `mini` sizes (16 experts, top-4; group limiting switched off for now), random centroids
# and random inputs from `skewed_router` (with skew 0, the inputs favour no expert):

# %%
flat = mini.replace(n_group=1, topk_group=1)  # no groups yet
router, u = skewed_router(flat, tokens=512, skew=0.0, seed=0)
routing = router(u)
t = 0
print(f"routed_scaling_factor = {flat.routed_scaling_factor}, norm_topk_prob = {flat.norm_topk_prob}")
print(f"scores s (tokens, experts): {tuple(routing.scores.shape)}, "
      f"indices and weights (tokens, K): {tuple(routing.indices.shape)}")
print(f"\ntoken {t}:  expert     s_i    g_i")
for i, g in zip(routing.indices[t].tolist(), routing.weights[t].tolist(), strict=True):
    print(f"{i:>17}{routing.scores[t, i]:>8.4f}{g:>7.4f}")
chosen_s = routing.scores[t, routing.indices[t]]
print(f"sum of the chosen s: {chosen_s.sum():.4f};  sum of g: {routing.weights[t].sum():.4f}")
torch.testing.assert_close(routing.weights[t], flat.routed_scaling_factor * chosen_s / chosen_s.sum())

# %% [markdown]
# ### Softmax gating, for comparison
#
# DeepSeek-V2, like most MoE models before it, used a **softmax** over all experts and took the chosen affinities
# as the weights without renormalising them:
# $s_{i,t} = \mathrm{softmax}_i(\mathbf{u}_t^\top \mathbf{e}_i)$, $g_{i,t} = s_{i,t}$ for the top $K$. Our `Router`
# does this with `scoring_func="softmax"`, `norm_topk_prob=False` and a routed scale of 1. Same centroids, same
# token, same logits $\mathbf{u}_t^\top \mathbf{e}_i$: both functions are increasing, so the same four experts win;
# the weights differ.

# %%
v2_style = flat.replace(scoring_func="softmax", norm_topk_prob=False, routed_scaling_factor=1.0)
router_v2 = Router(v2_style)
router_v2.load_state_dict(router.state_dict())  # the same centroids e_i
routing_v2 = router_v2(u)
assert torch.equal(routing_v2.indices[t], routing.indices[t])

logits = router.weight @ u[t]  # u_t · e_i for every expert
print("expert   logit  sigmoid s  V3 weight g   softmax s  V2 weight g")
for i in range(flat.n_routed_experts):
    slot = (routing.indices[t] == i).nonzero()
    g3 = f"{routing.weights[t, slot].item():.4f}" if len(slot) else "-"
    g2 = f"{routing_v2.weights[t, slot].item():.4f}" if len(slot) else "-"
    print(f"{i:>6}{logits[i]:>8.3f}{routing.scores[t, i]:>11.4f}{g3:>13}"
          f"{routing_v2.scores[t, i]:>12.4f}{g2:>13}")
print(f"sums over all 16 experts:  sigmoid {routing.scores[t].sum():.3f}, "
      f"softmax {routing_v2.scores[t].sum():.3f}")
print(f"sums of the 4 weights:     V3 {routing.weights[t].sum():.3f}, V2-style {routing_v2.weights[t].sum():.3f}")

# %% slideshow={"slide_type": "slide"}
chosen = set(routing.indices[t].tolist())
experts = list(range(flat.n_routed_experts))
fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.14,  # stacked: legible on a phone
                    subplot_titles=("sigmoid affinities s (V3)", "softmax affinities s (V2)"))
for row, scores, colour in ((1, routing.scores[t], OKABE_ITO[0]), (2, routing_v2.scores[t], OKABE_ITO[1])):
    fig.add_bar(x=experts, y=scores.tolist(), row=row, col=1, showlegend=False,
                marker_color=[colour if i in chosen else "#c8c8c8" for i in experts],
                hovertemplate="expert %{x}<br>s = %{y:.4f}<extra></extra>")
    fig.update_yaxes(title_text="affinity s", row=row, col=1)
fig.update_xaxes(title_text="routed expert (index)", row=2, col=1)
fig.update_layout(title=f"One token, the same logits, two gates (coloured: the {flat.num_experts_per_tok} "
                  "chosen experts)", template="course", font_size=14, height=560)
fig.show()

# %% [markdown]
# With the softmax, every score depends on all the others: the 16 scores share a total of 1, so the four chosen
# weights add up to less than 1, and by an amount that changes from token to token. With the sigmoid, each score
# depends only on its own expert. Watch what happens to the other scores when one expert that was *not* chosen
# becomes more attractive (its logit rises by 2):

# %%
loser = next(i for i in experts if i not in chosen)
bumped_v3, bumped_v2 = Router(flat), Router(v2_style)
for r in (bumped_v3, bumped_v2):
    r.load_state_dict(router.state_dict())
    r.weight[loser] += 2.0 * u[t] / u[t].dot(u[t])  # raises u_t · e_loser by exactly 2
others = [i for i in experts if i != loser]
for name, before, r in (("sigmoid", routing, bumped_v3), ("softmax", routing_v2, bumped_v2)):
    after = r(u[t:t + 1])
    change = (after.scores[0, others] - before.scores[t, others]).abs().max()
    print(f"{name}: expert {loser} s {before.scores[t, loser]:.4f} -> {after.scores[0, loser]:.4f}; "
          f"largest change of the other 15 scores: {change:.4f}")

# %% [markdown]
# The softmax couples the experts: one expert gaining pushes every other score down. The sigmoid keeps them
# independent, and the normalisation over the chosen experts afterwards still gives each token weights of a fixed
# total. That independence also makes the selection bias of lesson 3 easy to reason about: moving $b_i$ changes
# whether expert $i$ is chosen, and nothing else.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Group-limited routing
#
# In training, V3's routed experts are spread over many GPUs on several nodes, and each token's input must be sent to
# the nodes of its chosen experts; traffic between nodes is the slow part. So the report limits every token to at
# most $M = 4$ nodes. In code (and in transformers' `DeepseekV3Config`) the experts are split into `n_group` = 8
# equal **groups** (think: nodes) and a token may use `topk_group` = 4 of them:
#
# 1. score each group by the sum of its $K_r / M = 8 / 4 = 2$ highest $s_{i,t} + b_i$;
# 2. keep the `topk_group` best groups, mask the others out;
# 3. choose the top $K_r$ = 8 experts among the kept ones.
#
# Why 2, and why nodes at all? The report's reason (§3.2.2): between nodes a token's hidden state crosses InfiniBand
# (IB, 50 GB/s per GPU in the report), inside a node NVLink (160 GB/s), about 3.2 times faster. A token that reaches
# at most $M = 4$ nodes pays at most 4 IB copies, and each copy can be fanned out over NVLink to about 3.2 experts on
# its node in the same time: up to 13 experts (the report's figure) for the IB cost of 4 nodes. V3 uses 8, on average
# $K_r / M = 2$ per node, so a node is judged by the best 2 experts the token could send there. (The 2 is written as a
# constant in DeepSeek's code and in transformers, and in ours.) DeepSeek-V2's device-limited routing instead ranked
# the devices by the single highest affinity among their experts. Lesson 8 measures the traffic.

# %%
m_nodes = v3.topk_group
print(f"K_r / M = {v3.num_experts_per_tok} / {m_nodes} = {v3.num_experts_per_tok // m_nodes} experts per node")
print(f"NVLink / IB = {NVLINK_GBPS:.0f} / {IB_GBPS:.0f} GB/s = {NVLINK_GBPS / IB_GBPS:.1f}: "
      f"{experts_for_cost_of_nodes(m_nodes):.1f} experts for the IB cost of {m_nodes} nodes")

# %% [markdown]
# A `Router` of V3's routing shape (256 experts, 8 groups of 32, keep 4, top-8; only the hidden size is small):

# %%
wide = preset("tiny").replace(n_routed_experts=v3.n_routed_experts, n_group=v3.n_group,
                              topk_group=v3.topk_group, num_experts_per_tok=v3.num_experts_per_tok)
router8, u8 = skewed_router(wide, tokens=512, skew=0.0, seed=0)
r8 = router8(u8)
per_group = wide.n_routed_experts // wide.n_group
t = 0
choice = (r8.scores[t] + router8.bias).view(wide.n_group, per_group)  # s + b, one row per group
group_score = choice.topk(wide.num_experts_per_tok // wide.topk_group, dim=-1).values.sum(-1)  # top K_r/M = 2
kept = set(group_score.topk(wide.topk_group).indices.tolist())
picked = sorted(r8.indices[t].tolist())
print(f"token {t}: group  experts      score (top-2 sum)  kept   chosen experts")
for grp in range(wide.n_group):
    inside = [e for e in picked if e // per_group == grp]
    print(f"{grp:>14}  {grp * per_group:>3}..{(grp + 1) * per_group - 1:<3}{group_score[grp]:>18.4f}"
          f"  {'yes' if grp in kept else 'no':<5}  {inside}")
assert {e // per_group for e in picked} <= kept

# the same centroids without the group limit
free = Router(wide.replace(n_group=1, topk_group=1))
free.load_state_dict(router8.state_dict())
r_free = free(u8)
lost = sorted(set(r_free.indices[t].tolist()) - set(picked))
print(f"\nwithout groups token {t} would also pick {lost} (group {[e // per_group for e in lost]}),"
      f" instead of {sorted(set(picked) - set(r_free.indices[t].tolist()))}")

# %% slideshow={"slide_type": "slide"}
is_kept = [e // per_group in kept for e in range(wide.n_routed_experts)]
s_all = r8.scores[t]
grey = "#c8c8c8"
fig = make_subplots(rows=2, cols=1, row_heights=[0.4, 0.6], vertical_spacing=0.2,  # stacked: legible on a phone
                    subplot_titles=("1-2. group scores (top-2 sum)", "3. top-8 inside the kept groups"))
fig.add_bar(x=[f"g{grp}" for grp in range(wide.n_group)], y=group_score.tolist(), row=1, col=1,
            marker_color=[OKABE_ITO[0] if grp in kept else grey for grp in range(wide.n_group)],
            showlegend=False, hovertemplate="%{x}: %{y:.3f}<extra></extra>")
fig.add_scatter(x=list(range(wide.n_routed_experts)), y=s_all.tolist(), mode="markers", row=2, col=1,
                marker=dict(color=[OKABE_ITO[0] if k else grey for k in is_kept], size=6),
                name="experts (grey: group masked out)", hovertemplate="expert %{x}<br>s = %{y:.3f}<extra></extra>")
fig.add_scatter(x=picked, y=s_all[picked].tolist(), mode="markers", row=2, col=1, name="chosen",
                marker=dict(symbol="circle-open", size=16, color="#000000", line_width=2))
fig.add_scatter(x=lost, y=s_all[lost].tolist(), mode="markers", row=2, col=1, name="top-8 without groups",
                marker=dict(symbol="x", size=14, color=OKABE_ITO[5]))
for grp in range(1, wide.n_group):  # group boundaries
    fig.add_vline(x=grp * per_group - 0.5, line_dash="dot", line_color="#7f7f7f", row=2, col=1)
fig.update_yaxes(title_text="score (no unit)", row=1, col=1,
                 range=[float(group_score.min()) - 0.1, float(group_score.max()) + 0.05])
fig.update_yaxes(title_text="affinity s (no unit)", row=2, col=1)
fig.update_xaxes(title_text="group", row=1, col=1)
fig.update_xaxes(title_text="routed expert (index; dotted: groups of 32)", row=2, col=1)
fig.update_layout(title=f"Group-limited routing of token {t} (grey: groups masked out)", template="course",
                  font_size=14, height=640, legend=dict(orientation="h", y=-0.16))
fig.show()

# %% [markdown]
# The price of the limit is small: a strong expert in a discarded group can lose its place to a slightly weaker one
# in a kept group. What it buys, over all 512 tokens:

# %%
def groups_used(indices):
    """How many tokens touch 1, 2, ... groups."""
    n = torch.tensor([len(set((row // per_group).tolist())) for row in indices])
    return torch.bincount(n, minlength=wide.n_group + 1)[1:].tolist()


print("groups (nodes) touched per token:", list(range(1, wide.n_group + 1)))
print(f"with the limit (keep {wide.topk_group}):   {groups_used(r8.indices)}")
print(f"without it:                     {groups_used(r_free.indices)}")
same = (r8.indices.sort(-1).values == r_free.indices.sort(-1).values).all(-1).float().mean()
print(f"tokens whose 8 experts are unchanged by the limit: {same:.1%}")

# %% [markdown]
# With random centroids most tokens would reach 5 to 7 of the 8 groups; the limit caps them at 4, and with them
# the traffic each token causes between nodes. The configuration refuses
# settings the router cannot serve. For example, `mini` keeps 2 of its 4 groups of 4 experts, so a token can
# reach only 8 experts:

# %%
try:
    mini.replace(num_experts_per_tok=12)
except ValueError as err:
    print("ValueError:", err)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## A real MoE layer: the routing decision and the dispatch
#
# Now the whole layer, `dsv3_mini.moe.MoE`, inside an (untrained) `mini` model: 1 shared and 16 routed experts, top-4
# of them, in 4 groups of which 2 are kept. We run 8 windows of 128 bytes from the course's generated corpus through
# the model and read what its first MoE layer decided. `MoE.last_routing` is a `Routing`: the affinities, the
# chosen experts, their weights and the number of tokens per expert.

# %%
model = DeepSeekV3(mini).eval()
tokens = next(builtin_dataset(train_bytes=20_000, val_bytes=20_000).val_batches(8, 128))[0]
layer = model.moe_layers()[0]
seen = {}
hook = layer.register_forward_pre_hook(lambda module, args: seen.update(x=args[0]))  # keep the layer's input
model(tokens)
hook.remove()
routing = layer.last_routing
n_tok, k = routing.indices.shape
print(f"input of the layer: {tuple(seen['x'].shape)} (batch, seq, hidden); tokens_shape = {routing.tokens_shape}")
print(f"scores  {tuple(routing.scores.shape)}   affinities s of every token for every expert")
print(f"indices {tuple(routing.indices.shape)}     the {k} chosen experts per token")
print(f"weights {tuple(routing.weights.shape)}     their gating weights g (each row sums to "
      f"{routing.weights.sum(-1).mean():.4f})")
print(f"counts  {tuple(routing.counts.shape)}          tokens per expert: {routing.counts.tolist()}")
print(f"sum of counts = {int(routing.counts.sum()):,} = {n_tok:,} tokens × {k}")
print(f"routed experts stacked: w1 {tuple(layer.w1.shape)}, w3 {tuple(layer.w3.shape)}, w2 {tuple(layer.w2.shape)}"
      f";  shared expert: SwiGLU of width {layer.shared.w1.out_features}")

# %% slideshow={"slide_type": "slide"}
mean_load = n_tok * k / mini.n_routed_experts
fig = go.Figure(go.Bar(x=list(range(mini.n_routed_experts)), y=routing.counts.tolist(),
                       marker_color=group_colors(mini.n_routed_experts, mini.n_group),
                       hovertemplate="expert %{x}: %{y} tokens<extra></extra>", name="tokens"))
fig.add_hline(y=mean_load, line_dash="dash", line_color="#000000",
              annotation_text=f"balanced: T·K/E = {mean_load:.0f}")
fig.update_layout(title=f"Tokens per expert, first MoE layer of the untrained mini model "
                  f"(MaxVio = {max_violation(routing.counts):.2f})", template="course", font_size=14,
                  xaxis_title="routed expert (index; colour = group)",
                  yaxis_title="tokens routed (count)", height=420)
fig.show()

busiest = int(routing.counts.argmax())
got = tokens.flatten()[(routing.indices == busiest).any(-1)]
top = torch.bincount(got, minlength=256).topk(3)
print(f"expert {busiest} is the busiest ({int(routing.counts[busiest])} tokens); its most common inputs:")
for byte, count in zip(top.indices.tolist(), top.values.tolist(), strict=True):
    total = int((tokens == byte).sum())
    print(f"  {chr(byte)!r}: {count} of the {total} in the batch")

# %% [markdown]
# Even before training the load is uneven: identical bytes (spaces above all) arrive at the layer with similar
# inputs and go to the same experts. (MaxVio, in the title, is how far the busiest expert lies above the balanced
# load, relative to it; the end of this lesson defines it.)
#
# **Dispatch.** The layer does not loop over tokens. It sorts the $T \cdot K$ (token, slot) pairs by expert, so
# every expert's tokens sit in one contiguous slice; expert $e$ runs one batched SwiGLU on its `counts[e]` tokens;
# the outputs are multiplied by their weights $g$ and added back to their tokens (`index_add_`). On V3's GPUs the
# same grouping is what the all-to-all exchange sends to each expert's device. The slices of our layer:

# %%
ends = routing.counts.cumsum(0).tolist()
starts = [0] + ends[:-1]
for e in range(4):
    print(f"expert {e:>2}: sorted pairs {starts[e]:>4} .. {ends[e] - 1:>4}  ({int(routing.counts[e])} tokens)")
print("...")

# routing each token on its own gives the same output as the grouped dispatch
x_in = seen["x"]
batched = layer(x_in)
one_by_one = torch.cat([layer(x_in[:, i:i + 1]) for i in range(x_in.shape[1])], dim=1)
gap = (batched - one_by_one).abs().max().item()  # float32 rounding: its last digits depend on the CPU
print(f"largest difference, grouped vs one position at a time: {'below' if gap < 1e-6 else 'ABOVE'} 1e-6")

# %% [markdown]
# The time this takes depends on your machine and its load (not compared by the tests): one call for 256 tokens,
# against 256 calls of one token each.

# %%
# NBVAL_IGNORE_OUTPUT
flat_x = x_in.reshape(1, -1, mini.hidden_size)[:, :256]
start = time.perf_counter()
layer(flat_x)
grouped_s = time.perf_counter() - start
start = time.perf_counter()
for i in range(flat_x.shape[1]):
    layer(flat_x[:, i:i + 1])
loop_s = time.perf_counter() - start
print(f"grouped dispatch: {grouped_s * 1e3:.1f} ms;  token by token: {loop_s * 1e3:.0f} ms "
      f"({loop_s / grouped_s:.0f}x slower)")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The router load widget
#
# The widget runs the real `Router` on 256 tokens whose inputs lean towards the first experts (`input skew`), and
# shows the load per expert and per group and one token's chosen experts with their weights. Change the number of
# experts, groups, kept groups and top-$k$ (an impossible combination shows the configuration's error message), or
# the skew. The `bias strength` control applies one step of lesson 3's balancing rule: the load evens out, then
# overshoots when the step is too large, while the chosen token's weights still sum to 2.5.
#
# In JupyterLab the controls above are live; the figure below is the static twin used by the published book
# (its slider steps through precomputed bias strengths).

# %% slideshow={"slide_type": "slide"} tags=["remove-output"]
w = RouterLoadWidget()
w

# %% slideshow={"slide_type": "slide"} tags=["remove-input"]
w.static_figure().show()

# %% [markdown]
# The numbers behind the default setting, as `dsv3_mini` computes them:

# %%
s = w.state
cfg = s["cfg"]
print(f"{cfg.n_routed_experts} experts, {cfg.n_group} groups, keep {cfg.topk_group}, "
      f"top-{cfg.num_experts_per_tok}, {w.tokens} tokens, input skew {w.skew.value}")
print("tokens per expert:", [int(c) for c in s["counts"]])
print("token slots per group:", [int(c) for c in s["group_counts"]])
print(f"balanced load: {w.tokens * cfg.num_experts_per_tok / cfg.n_routed_experts:.0f} per expert; "
      f"MaxVio = {s['max_vio']:.3f}")
print(f"token {s['token']}: experts {s['token_experts'].tolist()}, "
      f"s = {[round(v, 3) for v in s['token_scores'].tolist()]}, "
      f"g = {[round(v, 3) for v in s['token_weights'].tolist()]} (sum {s['token_weights'].sum():.3f})")
print("\nthe static figure's steps:")
for label, params in w.static_states():
    step = w.compute_state(params)
    print(f"  bias strength {label:>4}: MaxVio = {step['max_vio']:.3f}, busiest expert "
          f"{int(step['counts'].max())} tokens, idlest {int(step['counts'].min())}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## A teaser for lesson 3: routing collapse
#
# Nothing in the gate keeps the load even. If inputs lean towards some experts, those experts get more tokens, hence
# more gradient; they improve at exactly those tokens, so the router prefers them even more. Left alone, this
# feedback can *collapse* routing onto a few experts while the rest sit idle — wasted parameters, and on a GPU
# cluster the overloaded devices set the pace for all. The imbalance is measured by
#
# $$
# \mathrm{MaxVio} = \frac{\max_i \mathrm{load}_i - \overline{\mathrm{load}}}{\overline{\mathrm{load}}},
# \qquad \overline{\mathrm{load}} = \frac{T K}{N_r},
# $$
#
# 0 when every expert gets the same number of tokens; `dsv3_mini.balancing.max_violation` computes it. The same
# `mini` router on 1,024 tokens whose inputs lean more and more towards experts 0–3:

# %%
skews = [0.0, 1.0, 2.0, 3.0, 4.0]
loads = {}
for skew in skews:
    skew_router, skew_x = skewed_router(mini, tokens=1024, skew=skew, seed=0)
    loads[skew] = skew_router(skew_x).counts
    favoured = loads[skew][:4].sum() / loads[skew].sum()
    print(f"skew {skew:.0f}: MaxVio = {max_violation(loads[skew]):.3f}; experts 0-3 get {favoured:.1%} "
          f"of the token slots (fair share 25%)")

# %% slideshow={"slide_type": "slide"}
fig = go.Figure([go.Bar(x=list(range(mini.n_routed_experts)), y=loads[skew].tolist(), name=f"skew {skew:.0f}",
                        marker_color=colour, hovertemplate="expert %{x}: %{y} tokens<extra></extra>")
                 for skew, colour in ((0.0, OKABE_ITO[0]), (3.0, OKABE_ITO[5]))])
fig.add_hline(y=1024 * mini.num_experts_per_tok / mini.n_routed_experts, line_dash="dash",
              line_color="#000000", annotation_text="balanced load")
fig.update_layout(title="Skewed inputs overload a few experts", template="course", font_size=14,
                  barmode="group", xaxis_title="routed expert (index)",
                  yaxis_title="tokens routed (count)", height=420)
fig.show()

# %% [markdown]
# Classic MoE models add an auxiliary loss that penalises imbalance, at some cost to the language-modelling loss.
# DeepSeek-V3 instead nudges the selection bias $b_i$ after every step, which never touches the weights $g$; lesson 3
# builds both and compares them.
#
# > **How our mini model differs from the real one.** The router is the same code path as V3's: sigmoid
# > affinities, a selection-only bias, group-limited top-$k$, weights normalised over the chosen experts and scaled
# > by 2.5, scores in fp32. The differences are size and engineering: `mini` has 16 routed experts of width 96
# > (V3: 256 of width 2,048), top-4 (V3: top-8) and 4 groups of which 2 are kept (V3: 8 and 4). Groups are only a
# > constraint on the choice here; in V3 they are nodes, and the chosen experts' inputs travel between GPUs by
# > all-to-all communication, while our experts run one after another in a Python loop on one CPU. Like V3, we
# > drop no tokens (there is no expert capacity limit). Our untrained model and `skewed_router` use random
# > centroids, so the loads above show the mechanism, not a trained V3's routing.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Bug hunt: a router that weighs with its bias
#
# `course.bug_hunt` hands you a tiny model whose routers' `select` was rewritten by hand, with one bug planted (the
# library stays correct). Its routers carry nonzero biases, as after some balancing steps. The tool is the parity
# test: the same weights in transformers' `DeepseekV3ForCausalLM` must give the same logits (max |Δ| ≤ 1e-4). Read
# the planted function, run the tool, name the bug (one of `bug_hunt.BUGS`) and write the fix: a function with the
# same arguments (`bug_hunt.group_limited_topk` and `bug_hunt.routing` are the unchanged parts).

# %%
from course import bug_hunt, check_bug_hunt

print(bug_hunt.bug_menu())
lab_2 = bug_hunt.open_lab("2")
print(f"\nlab 2: {lab_2.detector} = {lab_2.detect():.2e} (a correct model: ≤ {bug_hunt.PARITY_TOL:g})")
print(lab_2.source)

# %%
my_bug = ...  # one of the names above

check_bug_hunt.check_diagnosis("2", my_bug)

# %%
my_fix = ...  # def my_fix(router, scores, tokens_shape=None): ...

check_bug_hunt.check_fix("2", my_fix)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
def fixed_select(router, scores, tokens_shape=None):
    indices = bug_hunt.group_limited_topk(router.cfg, scores.detach() + router.bias)  # choose with s + b
    weights = scores.gather(1, indices)  # weigh with s alone
    return bug_hunt.routing(router, scores, weights, indices, tokens_shape)


print(check_bug_hunt.check_diagnosis("2", "bias-in-weights"))
print(check_bug_hunt.check_fix("2", fixed_select))
print("with b in the weights, balancing changes what each expert contributes: exactly what V3's design avoids")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Exercises
#
# Each exercise cell starts with `my_answer = ...`. Replace the `...` with an expression, run the cell, and the
# checker from `course.check_moe` compares it with what the library computes. A collapsed solution follows
# each exercise.

# %% [markdown]
# **Exercise 1.** The DeepSeekMoE paper starts from a layer of 16 experts with top-2 routing and splits every expert
# into 4. How many different sets of experts can a token be routed to after the split? (`math.comb(n, k)` counts
# the ways to choose `k` of `n`.)

# %%
my_answer = ...  # your expression here

check_moe.check_fine_grained_combinations(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
solution = math.comb(4 * 16, 4 * 2)
print(check_moe.check_fine_grained_combinations(solution))
print(f"before the split: math.comb(16, 2) = {math.comb(16, 2)}; "
      f"after: {solution / math.comb(16, 2):.2g} times as many")

# %% [markdown]
# **Exercise 2.** After group limiting, how many of DeepSeek-V3's routed experts can one token still choose from?
# Use the fields of `v3`.

# %%
my_answer = ...  # your expression here

check_moe.check_candidates(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
solution = v3.topk_group * (v3.n_routed_experts // v3.n_group)
print(check_moe.check_candidates(solution))
print("4 kept groups × 32 experts per group: half of the 256")

# %% [markdown]
# **Exercise 3.** A router with 8 routed experts, top-4, no groups, zero bias and V3's gate (normalised over the
# chosen, routed scale 2.5) sees these affinities for one token. What is the gating weight $g$ of expert 2?

# %%
gate_scores = torch.tensor(check_moe.GATE_SCORES, dtype=torch.float64)
print("affinities s of experts 0..7:", gate_scores.tolist())

# %%
my_answer = ...  # your expression here

check_moe.check_gate_weight(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
top4 = gate_scores.topk(4).values
solution = float(v3.routed_scaling_factor * gate_scores[2] / top4.sum())
print(check_moe.check_gate_weight(solution))
print(f"chosen: s = {top4.tolist()}, sum {top4.sum():.2f}; g_2 = 2.5 × 0.75 / {top4.sum():.2f}")

# %% [markdown]
# **Exercise 4.** In the router of exercise 3, the selection bias $b_2$ of expert 2 rises a little (expert 2 stays
# chosen). Does its gating weight $g_2$ `"rises"`, `"falls"` or `"stays the same"`?

# %%
my_answer = ...  # "rises", "falls" or "stays the same"

check_moe.check_bias_effect(my_answer)

# %% jupyter={"outputs_hidden": true, "source_hidden": true} tags=["hide-cell"]
solution = "stays the same"
print(check_moe.check_bias_effect(solution))
print("b enters only the selection TopK(s + b); g is computed from s alone")

# %% [markdown]
# **Discussion.** Fine-grained experts multiply the possible combinations, yet V3 stops at 256 experts of width
# 2,048 rather than, say, 2,048 experts of width 256. What grows as experts get smaller and more numerous — in the
# router, in the size of each expert's matrix products, and in the traffic between GPUs — and which part of this
# lesson's router is there to contain it?
#
# Next: lesson 3, load balancing without an auxiliary loss.
