import math

import pytest
import torch

from dsv3_mini import DeepSeekV3, preset
from dsv3_mini.attention import MLA, StandardAttention
from dsv3_mini.rope import RotaryEmbedding, apply_rope, inverse_frequencies

KINDS = [{}, {"q_lora_rank": None}, {"attention": "mha"}, {"attention": "gqa", "num_key_value_heads": 2},
         {"attention": "mqa"}]


def _rope_for(cfg, seq):
    dim = cfg.qk_rope_head_dim if cfg.attention == "mla" else cfg.std_head_dim
    return RotaryEmbedding(dim, cfg)(0, seq)


@pytest.mark.parametrize("changes", [{}, {"q_lora_rank": None}, {"rope_scaling": {
    "factor": 8.0, "original_max_position_embeddings": 64, "mscale": 1.0, "mscale_all_dim": 1.0}}])
def test_absorbed_equals_naive(changes):
    cfg = preset("tiny").replace(**changes)
    attn = MLA(cfg)
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 13, cfg.hidden_size)
    cos, sin = _rope_for(cfg, 13)
    naive = attn(x, cos, sin, impl="naive")
    absorbed = attn(x, cos, sin, impl="absorbed")
    torch.testing.assert_close(absorbed, naive, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("changes", KINDS + [{"mla_impl": "naive"}, {"mla_impl": "absorbed"}])
def test_incremental_decoding_equals_full_forward(changes):
    cfg = preset("tiny").replace(**changes)
    model = DeepSeekV3(cfg).eval()
    tokens = torch.randint(0, cfg.vocab_size, (2, 11))
    with torch.no_grad():
        full = model(tokens).logits
        cache = model.new_cache()
        parts = [model(tokens[:, :4], cache=cache).logits]  # a prefill, then one token at a time
        parts += [model(tokens[:, i : i + 1], cache=cache).logits for i in range(4, 8)]
        parts.append(model(tokens[:, 8:], cache=cache).logits)  # a multi-token chunk after a prefix
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_mla_caches_only_the_latent_and_one_rope_key():
    cfg = preset("tiny")
    model = DeepSeekV3(cfg).eval()
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.randint(0, cfg.vocab_size, (3, 6)), cache=cache)
    c_kv, k_rope = cache.layers[0]
    assert c_kv.shape == (3, 6, cfg.kv_lora_rank)
    assert k_rope.shape == (3, 6, cfg.qk_rope_head_dim)


def test_attention_is_causal():
    cfg = preset("tiny")
    model = DeepSeekV3(cfg).eval()
    a = torch.randint(0, cfg.vocab_size, (1, 10))
    b = a.clone()
    b[0, 6:] = (b[0, 6:] + 1) % cfg.vocab_size
    with torch.no_grad():
        torch.testing.assert_close(model(a).logits[:, :6], model(b).logits[:, :6])


def test_gqa_with_all_heads_is_mha():
    cfg = preset("tiny").replace(attention="gqa", num_key_value_heads=4)
    gqa = StandardAttention(cfg)
    mha = StandardAttention(cfg.replace(attention="mha"))
    mha.load_state_dict(gqa.state_dict())
    x = torch.randn(1, 7, cfg.hidden_size)
    cos, sin = _rope_for(cfg, 7)
    torch.testing.assert_close(gqa(x, cos, sin), mha(x, cos, sin))


def test_rope_preserves_norm_and_encodes_relative_position():
    cfg = preset("tiny")
    rope = RotaryEmbedding(8, cfg)
    q, k = torch.randn(8), torch.randn(8)
    cos, sin = rope(0, 40)
    rq, rk = apply_rope(q.expand(40, 8), cos, sin), apply_rope(k.expand(40, 8), cos, sin)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm().expand(40))
    # q at position m and k at position n score the same as at m+s, n+s
    torch.testing.assert_close(rq[10] @ rk[3], rq[30] @ rk[23], atol=1e-5, rtol=1e-5)


def test_yarn_keeps_high_frequencies_and_stretches_low_ones():
    plain, _ = inverse_frequencies(64, 10000.0)
    yarn, amplitude = inverse_frequencies(64, 10000.0, {"factor": 40, "original_max_position_embeddings": 4096,
                                                        "beta_fast": 32, "beta_slow": 1})
    assert yarn[0] == plain[0]  # fastest rotation: extrapolated unchanged
    assert yarn[-1] == pytest.approx(plain[-1] / 40)  # slowest: interpolated by the scale s
    assert amplitude == pytest.approx(0.1 * math.log(40) + 1)


def test_positions_beyond_the_limit_are_a_clear_error():
    cfg = preset("tiny").replace(max_position_embeddings=16)
    model = DeepSeekV3(cfg)
    with pytest.raises(ValueError, match="max_position_embeddings=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_decode_step_flops_counts_the_absorbed_path_as_cheaper_at_v3_size():
    from dsv3_mini.attention import MLA, decode_step_flops

    with torch.device("meta"):
        layer = MLA(preset("deepseek-v3"))
    naive, absorbed = (decode_step_flops(layer, impl, 4096) for impl in ("naive", "absorbed"))
    assert naive > 50 * absorbed > 0
    with pytest.raises(ValueError, match="impl='fast'"):
        decode_step_flops(layer, "fast", 1)


def test_auto_mla_is_naive_without_a_cache_and_absorbed_with_one():
    """The default: expand K and V when every position is a query (training), attend to the latent when decoding."""
    auto = DeepSeekV3(preset("tiny")).eval()
    assert auto.cfg.mla_impl == "auto"
    twins = {}
    for impl in ("naive", "absorbed"):
        twins[impl] = DeepSeekV3(preset("tiny").replace(mla_impl=impl)).eval()
        twins[impl].load_state_dict(auto.state_dict())
    tokens = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(auto(tokens).logits, twins["naive"](tokens).logits)
        assert not torch.equal(auto(tokens).logits, twins["absorbed"](tokens).logits)  # rounding tells them apart
        steps = {}
        for name, model in (("auto", auto), *twins.items()):
            cache = model.new_cache()
            steps[name] = torch.cat([model(tokens[:, i:i + 1], cache=cache).logits for i in range(9)], dim=1)
    assert torch.equal(steps["auto"], steps["absorbed"])
    assert not torch.equal(steps["auto"], steps["naive"])


@pytest.mark.parametrize("attention", ["mla", "mha", "gqa"])
def test_rotary_tables_for_a_model_rotate_the_right_width(attention):
    cfg = preset("tiny").replace(attention=attention, num_key_value_heads=2)
    rope = RotaryEmbedding.for_model(cfg)
    width = cfg.qk_rope_head_dim if attention == "mla" else cfg.std_head_dim
    assert rope.cos.shape == (cfg.max_position_embeddings, width // 2)
    assert torch.equal(rope.cos, DeepSeekV3(cfg).rope.cos)


@pytest.mark.parametrize("new", [1, 3])
def test_latent_attention_equals_attention_on_the_concatenated_key(new):
    """Two matmuls over the cached c_KV and k_R give the scores of one MQA key [c_KV; k_R], for 1 and 3 new queries
    after a cached prefix (the causal rule: query i sees the prefix and new positions up to i)."""
    from dsv3_mini.attention import _attend, attend_latent

    g = torch.Generator().manual_seed(0)
    b, h, t, d_c, d_r = 2, 4, 10, 32, 8
    q_latent, q_rope = torch.randn(b, h, new, d_c, generator=g), torch.randn(b, h, new, d_r, generator=g)
    c_kv, k_rope = torch.randn(b, t, d_c, generator=g), torch.randn(b, t, d_r, generator=g)
    key = torch.cat([c_kv, k_rope], dim=-1)[:, None].expand(b, h, t, d_c + d_r)
    reference = _attend(torch.cat([q_latent, q_rope], dim=-1), key, c_kv[:, None].expand(b, h, t, d_c), 0.3)
    torch.testing.assert_close(attend_latent(q_latent, q_rope, c_kv, k_rope, 0.3), reference, atol=1e-6, rtol=1e-5)


class _NewStorage(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the size of every tensor an operator writes into fresh memory (views of its inputs are skipped)."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in torch.utils._pytree.tree_leaves((args, kwargs))
                  if isinstance(a, torch.Tensor)}
        for o in torch.utils._pytree.tree_leaves(out):
            if isinstance(o, torch.Tensor) and o.untyped_storage().data_ptr() not in inputs:
                self.sizes.append((o.numel(), str(func)))
        return out


@pytest.mark.parametrize("changes", [{"mla_impl": "absorbed"}, {"attention": "mha"}])
def test_a_decoding_step_allocates_nothing_the_size_of_the_cache(changes):
    """One new token writes one position into the preallocated cache and reads the rest in place: no operator makes
    a copy of a layer's cache (what torch.cat on every step, or a concatenated [c_KV; k_R] key, would do)."""
    from dsv3_mini.kv_cache import elements_per_token_per_layer

    cfg = preset("tiny").replace(**changes)
    model = DeepSeekV3(cfg).eval()
    t = 200
    cache = model.new_cache(capacity=t + 1)
    with torch.no_grad():
        model(torch.randint(0, cfg.vocab_size, (1, t)), cache=cache)
        with _NewStorage() as mode:
            model(torch.tensor([[7]]), cache=cache, logits_to_keep=1)
    layer_cache = t * elements_per_token_per_layer(cfg) // 2  # half of one layer's cache: c_KV alone, or K alone
    biggest = max(mode.sizes)
    assert biggest[0] < layer_cache, biggest
