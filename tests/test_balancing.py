import pytest
import torch

from dsv3_mini import DeepSeekV3, preset
from dsv3_mini.balancing import (
    apply_bias_update,
    aux_loss,
    max_violation,
    proportional_update,
    router_gradients,
    sequence_balance_loss,
    sign_update,
    simulate_balancing,
    simulate_policies,
    skewed_router,
)

ROUTER = preset("tiny").replace(hidden_size=32, n_routed_experts=16, num_experts_per_tok=2, n_group=4, topk_group=2)


def test_sign_rule_moves_overloaded_down_and_underloaded_up():
    bias = torch.zeros(4)
    new = sign_update(bias, torch.tensor([10, 2, 4, 4]), speed=0.001)  # mean 5
    torch.testing.assert_close(new, torch.tensor([-0.001, 0.001, 0.001, 0.001]))
    assert torch.equal(bias, torch.zeros(4)), "sign_update returns a new tensor and leaves its argument alone"
    torch.testing.assert_close(sign_update(new, torch.tensor([3, 3, 3, 3]), 0.001), new)  # balanced: no move


def test_proportional_variant_scales_with_violation():
    new = proportional_update(torch.zeros(2), torch.tensor([30, 10]), speed=0.1)  # mean 20
    torch.testing.assert_close(new, torch.tensor([-0.05, 0.05]))


def test_max_violation():
    assert max_violation(torch.tensor([5, 5, 5, 5])) == 0.0
    assert max_violation(torch.tensor([8, 4, 4, 0])) == pytest.approx(1.0)
    assert max_violation(torch.zeros(3)) == 0.0


def test_sequence_loss_is_alpha_when_balanced_and_grows_when_concentrated():
    e, t = 4, 8  # 4 experts, 8 tokens, top-2
    scores = torch.full((1, t, e), 0.5)
    balanced = torch.tensor([[0, 1], [2, 3]] * (t // 2))[None]
    assert sequence_balance_loss(scores, balanced, alpha=1e-4).item() == pytest.approx(1e-4)
    skewed_scores = torch.tensor([0.9, 0.9, 0.1, 0.1]).expand(1, t, e)
    collapsed = torch.tensor([[0, 1]] * t)[None]
    assert sequence_balance_loss(skewed_scores, collapsed, alpha=1e-4).item() == pytest.approx(1e-4 * 1.8)


def test_sequence_loss_is_per_sequence_not_per_batch():
    # two sequences, each collapsed onto different experts: the batch is balanced, the sequences are not
    scores = torch.tensor([[[0.9, 0.1]] * 4, [[0.1, 0.9]] * 4])
    indices = torch.tensor([[[0]] * 4, [[1]] * 4])
    assert aux_loss(scores, indices, alpha=1.0).item() == pytest.approx(1.0)
    assert sequence_balance_loss(scores, indices, alpha=1.0).item() == pytest.approx(1.8)


def test_loss_free_rule_drives_max_violation_down():
    history = simulate_balancing(ROUTER, "loss-free", steps=200, speed=2e-3)
    none = simulate_balancing(ROUTER, "none", steps=200)
    assert history.max_vio[:5].mean() > 1.0
    assert history.max_vio[-20:].mean() < 0.3 * history.max_vio[:5].mean()
    assert none.max_vio[-20:].mean() > 1.0, "without balancing the skewed router stays imbalanced"
    # the overloaded experts' biases went down, and nothing else in the router changed
    assert history.bias[-1][history.load[0].argmax()] < 0


def test_bias_does_not_change_the_gating_weights_of_chosen_experts():
    router, x = skewed_router(ROUTER, 256, skew=2.0)
    router.bias.copy_(simulate_balancing(ROUTER, "loss-free", steps=100, speed=2e-3).bias[-1])
    r = router(x)
    s = r.scores.gather(1, r.indices)
    torch.testing.assert_close(r.weights, s / s.sum(-1, keepdim=True) * ROUTER.routed_scaling_factor)


def test_bias_never_receives_a_gradient_in_training():
    model = DeepSeekV3(preset("tiny")).train()
    tokens = torch.randint(0, 256, (2, 16))
    model(tokens, targets=tokens.roll(-1, 1)).loss.backward()
    for moe in model.moe_layers():
        assert moe.gate.bias.grad is None and not moe.gate.bias.requires_grad
        assert moe.gate.weight.grad is not None


def test_bias_update_runs_once_per_step_on_all_micro_batches():
    model = DeepSeekV3(preset("tiny").replace(bias_update_speed=0.01)).train()
    expected = [torch.zeros_like(m.gate.bias, dtype=torch.long) for m in model.moe_layers()]
    for _ in range(3):  # three micro-batches of one optimizer step
        tokens = torch.randint(0, 256, (2, 8))
        model(tokens, targets=tokens.roll(-1, 1))  # a training forward: the MTP module routes too
        for e, m in zip(expected, model.moe_layers(), strict=True):
            e += m.last_routing.counts
    before = [m.gate.bias.clone() for m in model.moe_layers()]
    vios = apply_bias_update(model)
    for b, e, m, v in zip(before, expected, model.moe_layers(), vios, strict=True):
        torch.testing.assert_close(m.gate.bias, sign_update(b, e, 0.01))
        assert v == pytest.approx(max_violation(e))
        assert m.step_counts.sum() == 0
    assert len(vios) == len(model.moe_layers()) == 3  # two main MoE layers and the MTP module's


def test_eval_mode_does_not_count_towards_the_update():
    model = DeepSeekV3(preset("tiny")).eval()
    model(torch.randint(0, 256, (1, 8)))
    assert all(m.step_counts.sum() == 0 for m in model.moe_layers())


@pytest.mark.parametrize("policy", ["aux-loss", "seq-aux-loss", "none"])
def test_other_policies_never_move_the_bias(policy):
    model = DeepSeekV3(preset("tiny").replace(balance=policy)).train()
    model(torch.randint(0, 256, (2, 8)))
    apply_bias_update(model)
    assert all(torch.equal(m.gate.bias, torch.zeros_like(m.gate.bias)) for m in model.moe_layers())


def test_policies_add_their_loss():
    tokens = torch.randint(0, 256, (2, 12))
    targets = tokens.roll(-1, 1)
    for policy, present in [("loss-free", True), ("aux-loss", True), ("none", False)]:
        out = DeepSeekV3(preset("tiny").replace(balance=policy))(tokens, targets=targets)
        assert (out.balance_loss is not None) == present
    out = DeepSeekV3(preset("tiny").replace(balance="aux-loss", aux_loss_alpha=0.5))(tokens, targets=targets)
    assert out.balance_loss.item() == pytest.approx(0.5 * 3, rel=0.5)  # ≈ α per layer near balance, 3 MoE layers


def test_sequence_wise_aux_loss_is_the_sequence_loss_with_the_aux_weight():
    """"seq-aux-loss": V3's sequence-wise formula per sequence, weighted by the auxiliary loss's α, in every layer;
    it differs from the batch-wise "aux-loss" on the same routing (the scope is the difference)."""
    torch.manual_seed(0)
    model = DeepSeekV3(preset("tiny").replace(balance="seq-aux-loss", aux_loss_alpha=0.5)).train()
    tokens = torch.randint(0, 256, (3, 16))
    out = model(tokens, targets=tokens.roll(-1, 1))
    routings = [m.last_routing for m in model.moe_layers()]
    per_sequence = sum(sequence_balance_loss(r.scores.view(*r.tokens_shape, -1), r.indices.view(*r.tokens_shape, -1),
                                             0.5) for r in routings)
    batch_wise = sum(aux_loss(r.scores, r.indices, 0.5) for r in routings)
    assert torch.allclose(out.balance_loss, per_sequence)
    assert not torch.allclose(out.balance_loss, batch_wise)


def test_bad_policy_is_a_clear_error():
    with pytest.raises(ValueError, match="balance='aux' is not one of 'loss-free', 'aux-loss', 'seq-aux-loss', 'none'"):
        preset("tiny").replace(balance="aux")
    with pytest.raises(ValueError, match="policy='fast'"):
        simulate_balancing(ROUTER, "fast")


@pytest.mark.parametrize("policy", ["loss-free", "none"])
def test_simulation_routes_each_step_as_the_router_forward_does(policy):
    """The simulation batches the affinities of all steps; replaying it step by step through ``Router.forward``,
    with the bias it recorded, must give the same loads and, from them, the next bias."""
    steps, tokens = 12, 64
    history = simulate_balancing(ROUTER, policy, steps=steps, tokens=tokens, skew=2.0, speed=5e-3, seed=3)
    router, x0 = skewed_router(ROUTER, tokens, 2.0, seed=3)
    g = torch.Generator().manual_seed(4)
    for step in range(steps):
        x = torch.randn(tokens, ROUTER.hidden_size, generator=g) + x0.mean(0)
        router.bias.copy_(history.bias[step])
        counts = router(x).counts
        assert torch.equal(counts.float(), history.load[step])
        if policy == "loss-free" and step + 1 < steps:
            assert torch.equal(sign_update(history.bias[step], counts, 5e-3), history.bias[step + 1])
    if policy == "loss-free":
        assert not torch.equal(history.bias[-1], history.bias[0])


@pytest.mark.parametrize("policy", ["aux-loss", "loss-free"])
def test_router_gradients_split_the_total_gradient_into_its_two_sources(policy):
    torch.manual_seed(0)
    model = DeepSeekV3(preset("tiny").replace(balance=policy, aux_loss_alpha=0.01)).train()
    tokens = torch.randint(0, 256, (2, 33))
    g_lm, g_bal, value = router_gradients(model, tokens[:, :-1], tokens[:, 1:])
    out = model(tokens[:, :-1], targets=tokens[:, 1:])
    total = torch.cat([g.flatten() for g in torch.autograd.grad(out.loss, [m.gate.weight for m in model.moe_layers()])])
    torch.testing.assert_close(g_lm + g_bal, total)
    assert value is not None and float(value) == float(out.balance_loss.detach())
    assert g_bal.abs().sum() > 0 and all(m.gate.bias.grad is None for m in model.moe_layers())


def test_router_gradients_without_a_balance_term_are_zero():
    torch.manual_seed(0)
    model = DeepSeekV3(preset("tiny").replace(balance="none")).train()
    tokens = torch.randint(0, 256, (2, 17))
    g_lm, g_bal, value = router_gradients(model, tokens[:, :-1], tokens[:, 1:])
    assert value is None and torch.count_nonzero(g_bal) == 0 and g_lm.abs().sum() > 0


def _step_by_step(cfg, policy, steps, tokens, skew, speed, alpha, update, seed, lr=10.0):
    """``simulate_balancing`` as first written: one ``Router.select`` (or ``Router.forward``) per step."""
    router, x0 = skewed_router(cfg, tokens, skew, seed)
    g = torch.Generator().manual_seed(seed + 1)
    xs = torch.randn(steps, tokens, cfg.hidden_size, generator=g) + x0.mean(0)
    rule = sign_update if update == "sign" else proportional_update
    with torch.no_grad():
        frozen = router.affinities(xs)
    loads, biases, vios = [], [], []
    for step in range(steps):
        biases.append(router.bias.clone())
        routing = router(xs[step]) if policy == "aux-loss" else router.select(frozen[step])
        loads.append(routing.counts.float())
        vios.append(max_violation(routing.counts))
        if policy == "loss-free":
            router.bias.copy_(rule(router.bias, routing.counts, speed))
        elif policy == "aux-loss":
            router.zero_grad()
            aux_loss(routing.scores, routing.indices, alpha).backward()
            with torch.no_grad():
                router.weight -= lr * router.weight.grad
    return torch.stack(loads), torch.stack(biases), torch.tensor(vios)


@pytest.mark.parametrize("update", ["sign", "proportional"])
@pytest.mark.parametrize("policy", ["loss-free", "aux-loss", "none"])
@pytest.mark.parametrize(("groups", "skew"), [(4, 2.0), (1, 2.0), (4, 40.0), (1, 40.0)])
def test_batched_simulation_is_bitwise_the_step_by_step_loop(policy, update, groups, skew):
    """The simulation routes with comparisons instead of ``torch.topk`` and batches the policies; it must return the
    very numbers of the plain loop. At skew 40 the sigmoid saturates to exactly 1.0, so many tokens tie across the
    top-k boundary: there ``Router.select``'s own topk must decide, as in the loop."""
    cfg = ROUTER.replace(n_group=groups, topk_group=min(2, groups))
    kw = {"steps": 15, "tokens": 64, "skew": skew, "speed": 5e-3, "alpha": 0.1, "update": update, "seed": 3}
    history = simulate_balancing(cfg, policy, **kw)
    load, bias, vio = _step_by_step(cfg, policy, **kw)
    for got, want in ((history.load, load), (history.bias, bias), (history.max_vio, vio)):
        assert got.dtype == want.dtype and torch.equal(got, want)
    if skew == 40.0:  # the tie path really ran: the 2nd and 3rd highest affinities of some first-step tokens are equal
        router, x0 = skewed_router(cfg, kw["tokens"], skew, seed=3)
        top3 = router.affinities(x0).topk(3).values
        assert (top3[:, 1] == top3[:, 2]).any()


def test_policies_simulated_together_equal_each_alone():
    kw = {"steps": 20, "tokens": 48, "skew": 1.5, "speed": 3e-3, "alpha": 0.05, "seed": 1}
    alone = {p: simulate_balancing(ROUTER, p, **kw) for p in ("loss-free", "aux-loss", "none")}
    for policies in [("loss-free", "aux-loss", "none"), ("none", "aux-loss"), ("loss-free",)]:
        together = simulate_policies(ROUTER, policies, **kw)
        assert tuple(together) == policies
        for p in policies:
            for field in ("load", "bias", "max_vio"):
                assert torch.equal(getattr(together[p], field), getattr(alone[p], field)), (policies, p, field)
    with pytest.raises(ValueError, match="policies=.*'fast'"):
        simulate_policies(ROUTER, ("loss-free", "fast"))
