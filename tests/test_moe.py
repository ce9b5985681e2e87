import pytest
import torch
import torch.nn.functional as F

from dsv3_mini import preset
from dsv3_mini.moe import MoE, Router


def _router(**changes):
    cfg = preset("tiny").replace(**changes)
    r = Router(cfg)
    torch.nn.init.normal_(r.weight, std=0.5)
    return cfg, r


def test_bias_gets_no_gradient():
    cfg, r = _router()
    assert "bias" not in dict(r.named_parameters())
    r.bias.fill_(0.1)
    x = torch.randn(32, cfg.hidden_size, requires_grad=True)
    routing = r(x)
    (routing.weights.sum() + routing.scores.sum()).backward()
    assert r.bias.grad is None and not r.bias.requires_grad
    assert r.weight.grad is not None


def test_bias_changes_selection_but_not_weights():
    cfg, r = _router(n_group=1, topk_group=1)
    x = torch.randn(64, cfg.hidden_size)
    before = r(x)
    r.bias[3] = 10.0  # expert 3 now wins every selection
    after = r(x)
    assert (after.indices == 3).any(dim=-1).all()
    # the weight of every chosen expert is still its affinity s, renormalised over the chosen set
    s = after.scores.gather(1, after.indices)
    torch.testing.assert_close(after.weights, s / s.sum(-1, keepdim=True) * cfg.routed_scaling_factor)
    torch.testing.assert_close(after.scores, before.scores)


def test_weights_sum_to_the_routed_scale():
    cfg, r = _router()
    w = r(torch.randn(50, cfg.hidden_size)).weights
    torch.testing.assert_close(w.sum(-1), torch.full((50,), cfg.routed_scaling_factor))


def test_group_limited_routing_stays_in_the_best_groups():
    cfg, r = _router(n_routed_experts=16, n_group=4, topk_group=2, num_experts_per_tok=4)
    r.bias.uniform_(-0.1, 0.1)
    x = torch.randn(200, cfg.hidden_size)
    routing = r(x)
    per_group = cfg.n_routed_experts // cfg.n_group
    groups = routing.indices // per_group
    assert max(len(set(g.tolist())) for g in groups) <= cfg.topk_group
    # the kept groups are those with the largest sum of their two best (s + b)
    choice = (routing.scores + r.bias).view(-1, cfg.n_group, per_group)
    best = choice.topk(2, dim=-1).values.sum(-1).topk(cfg.topk_group, dim=-1).indices.sort(-1).values
    for t in range(200):
        assert set(groups[t].tolist()) <= set(best[t].tolist())


def test_counts_are_tokens_per_expert():
    cfg, r = _router()
    routing = r(torch.randn(40, cfg.hidden_size))
    assert routing.counts.sum() == 40 * cfg.num_experts_per_tok
    assert torch.equal(routing.counts, torch.bincount(routing.indices.flatten(), minlength=cfg.n_routed_experts))


def test_softmax_gating_option():
    cfg, r = _router(scoring_func="softmax")
    routing = r(torch.randn(10, cfg.hidden_size))
    torch.testing.assert_close(routing.scores.sum(-1), torch.ones(10))


@pytest.mark.parametrize("shared", [0, 1, 2])
def test_dispatch_equals_a_per_token_loop(shared):
    cfg = preset("tiny").replace(n_shared_experts=shared)
    moe = MoE(cfg)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    moe.gate.bias.uniform_(-0.05, 0.05)
    x = torch.randn(2, 9, cfg.hidden_size)
    out = moe(x)
    routing = moe.last_routing
    flat = x.reshape(-1, cfg.hidden_size)
    expected = torch.zeros_like(flat)
    for t in range(flat.shape[0]):
        for k in range(cfg.num_experts_per_tok):
            e = routing.indices[t, k]
            h = F.silu(flat[t] @ moe.w1[e].T) * (flat[t] @ moe.w3[e].T)
            expected[t] += routing.weights[t, k] * (h @ moe.w2[e].T)
        if shared:
            expected[t] += moe.shared(flat[t])
    torch.testing.assert_close(out.reshape(-1, cfg.hidden_size), expected, atol=1e-4, rtol=1e-4)
    assert moe.shared is None if shared == 0 else moe.shared.w1.out_features == shared * cfg.moe_intermediate_size


def test_gradients_reach_router_and_experts():
    cfg = preset("tiny")
    moe = MoE(cfg)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    moe(torch.randn(2, 5, cfg.hidden_size)).sum().backward()
    assert moe.gate.weight.grad.abs().sum() > 0
    used = moe.last_routing.counts > 0
    assert (moe.w1.grad.flatten(1).abs().sum(-1) > 0).eq(used).all()


def test_router_and_moe_built_alone_are_initialised():
    from dsv3_mini import seed_everything
    from dsv3_mini.moe import MoE, Router

    cfg = preset("tiny")
    seed_everything(0)
    before = torch.rand(3)
    seed_everything(0)
    router = Router(cfg)
    assert torch.equal(torch.rand(3), before)  # building it drew nothing from the global generator
    moe = MoE(cfg)
    for p in (router.weight, moe.w1, moe.w2, moe.w3):
        assert torch.isfinite(p).all() and 0.5 * cfg.initializer_range < p.std() < 2 * cfg.initializer_range
    seed_everything(0)
    assert torch.equal(Router(cfg).weight, router.weight)


def test_moe_gradients_are_bitwise_repeatable_on_two_threads():
    """Routing is discrete: a last-bit difference in one step can change later choices, so training must repeat."""
    from dsv3_mini import seed_everything

    seed_everything(0, threads=2)
    cfg = preset("mini")
    moe = MoE(cfg)
    x = torch.randn(8, 128, cfg.hidden_size)
    grads = []
    for _ in range(4):
        moe.zero_grad()
        xi = x.clone().requires_grad_(True)
        moe(xi).square().sum().backward()
        grads.append((xi.grad.clone(), moe.w1.grad.clone()))
    for g in grads[1:]:
        assert torch.equal(g[0], grads[0][0]) and torch.equal(g[1], grads[0][1])


def test_routing_remembers_the_shape_its_tokens_came_in():
    cfg = preset("tiny")
    router = Router(cfg)
    x = torch.randn(2, 3, cfg.hidden_size)
    assert router(x).tokens_shape == (2, 3)
    assert router(x.view(6, -1)).tokens_shape == (6,)
    assert torch.equal(router(x).indices, router(x.view(6, -1)).indices)
    moe = MoE(cfg)
    moe(x)
    assert moe.last_routing.tokens_shape == (2, 3)


def _concatenated_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """The dispatch the shipped run and the committed outputs were made with: every expert's slice, concatenated,
    weighted and added back with one index_add_ (MoE.forward now adds each slice in while it is in the cache)."""
    flat = x.reshape(-1, x.shape[-1])
    routing = moe.gate(x)
    k = routing.indices.shape[1]
    order = routing.indices.flatten().argsort(stable=True)
    token = order // k
    xs = flat.index_select(0, token)
    outs = [F.linear(F.silu(F.linear(c, moe.w1[e])) * F.linear(c, moe.w3[e]), moe.w2[e])
            for e, c in enumerate(xs.split(routing.counts.tolist())) if len(c)]
    routed = torch.cat(outs) * routing.weights.flatten()[order, None]
    return (torch.zeros_like(flat).index_add_(0, token, routed) + moe.shared(flat)).view(x.shape)


@pytest.mark.parametrize("threads", [1, 2])
def test_dispatch_is_bitwise_the_concatenated_one(threads):
    """Output and every gradient equal to the last bit: the speed-up changed no number a lesson prints."""
    from dsv3_mini import seed_everything

    seed_everything(0, threads=threads)
    cfg = preset("mini")
    moe = MoE(cfg).train()
    with torch.no_grad():
        moe.gate.bias.uniform_(-0.05, 0.05)
    x, probe = torch.randn(4, 128, cfg.hidden_size), torch.randn(4, 128, cfg.hidden_size)
    results = []
    for fn in (moe, lambda t: _concatenated_moe(moe, t)):
        moe.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        out = fn(xi)
        (out * probe).sum().backward()
        results.append([out.detach(), xi.grad] + [p.grad for p in moe.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


@pytest.mark.parametrize("tokens", [1, 2, 7, 64, 128])
def test_few_token_path_is_bitwise_the_expert_loop(tokens):
    """Decoding, verifying and sampling (no autograd, ≤ GROUPED_MAX_PAIRS pairs) run the grouped path; same bits."""
    from dsv3_mini import moe as moe_module
    from dsv3_mini import seed_everything

    seed_everything(0, threads=2)
    cfg = preset("mini")
    moe = MoE(cfg).eval()
    with torch.no_grad():
        moe.gate.bias.uniform_(-0.05, 0.05)
    x = torch.randn(1, tokens, cfg.hidden_size)
    flat = x.reshape(-1, cfg.hidden_size)
    with torch.inference_mode():
        assert moe._grouped_ok(flat.repeat_interleave(cfg.num_experts_per_tok, 0))
        grouped = moe(x)
        saved, moe_module.GROUPED_MAX_PAIRS = moe_module.GROUPED_MAX_PAIRS, 0
        try:
            assert not moe._grouped_ok(flat)
            looped = moe(x)
        finally:
            moe_module.GROUPED_MAX_PAIRS = saved
    assert torch.equal(grouped, looped)
    assert torch.equal(grouped, _concatenated_moe(moe, x).detach())


def test_few_token_path_stays_out_of_training_and_fp8():
    cfg = preset("mini")
    moe = MoE(cfg)
    xs = torch.randn(8, cfg.hidden_size)
    assert not moe._grouped_ok(xs)  # autograd records: the loop (training's path)
    with torch.no_grad():
        assert moe._grouped_ok(xs)
        moe.linear = lambda a, w: F.linear(a, w)  # an FP8 simulation or any other matmul: the loop calls it
        assert not moe._grouped_ok(xs)
