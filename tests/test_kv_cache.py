import pytest
import torch

from dsv3_mini import DeepSeekV3, preset
from dsv3_mini.kv_cache import (
    KVCache,
    bytes_per_token,
    elements_per_token_per_layer,
    formula_and_measured_bytes,
    naive_mla_bytes_per_token,
)


def test_deepseek_v3_cache_sizes():
    cfg = preset("deepseek-v3")
    assert elements_per_token_per_layer(cfg) == 576
    assert bytes_per_token(cfg) == 70_272
    assert naive_mla_bytes_per_token(cfg) == 4_997_120
    saving = 1 - bytes_per_token(cfg) / naive_mla_bytes_per_token(cfg)
    assert round(100 * saving, 1) == 98.6


def test_standard_attention_formulas():
    cfg = preset("tiny").replace(attention="gqa", num_key_value_heads=2, head_dim=16)
    assert elements_per_token_per_layer(cfg) == 2 * 2 * 16
    assert elements_per_token_per_layer(cfg.replace(attention="mha")) == 2 * 4 * 16
    assert elements_per_token_per_layer(cfg.replace(attention="mqa")) == 2 * 16


@pytest.mark.parametrize(
    "changes", [{}, {"mla_impl": "naive"}, {"attention": "mha"}, {"attention": "gqa", "num_key_value_heads": 2},
                {"attention": "mqa"}]
)
def test_real_cache_holds_exactly_the_computed_bytes(changes):
    cfg = preset("tiny").replace(**changes)
    model = DeepSeekV3(cfg).eval()
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.randint(0, cfg.vocab_size, (1, 5)), cache=cache)
        for _ in range(7):
            model(torch.randint(0, cfg.vocab_size, (1, 1)), cache=cache)
    assert len(cache) == 12
    assert cache.nbytes() == 12 * bytes_per_token(cfg, dtype_bytes=4)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [({}, 3840), ({"attention": "mha"}, 12288), ({"attention": "gqa", "num_key_value_heads": 2}, 6144),
     ({"attention": "mqa"}, 3072)],
)
def test_formula_and_measured_bytes_agree_on_the_tiny_model(changes, expected):
    """8 tokens x 3 layers x 4 bytes x numbers per layer: MLA 32 + 8, MHA 2·4·16, GQA 2·2·16, MQA 2·16."""
    cfg = preset("tiny").replace(**changes)
    model = DeepSeekV3(cfg).eval()
    tokens = torch.randint(0, cfg.vocab_size, (1, 8))
    assert formula_and_measured_bytes(model, tokens) == (expected, expected)


def test_formula_and_measured_bytes_use_the_models_dtype():
    model = DeepSeekV3(preset("tiny")).to(torch.bfloat16).eval()
    tokens = torch.randint(0, 256, (2, 4))
    assert formula_and_measured_bytes(model, tokens) == (2 * 4 * 3 * 40 * 2,) * 2  # batch 2, 4 tokens, bf16


def test_bad_dtype_bytes_is_rejected():
    with pytest.raises(ValueError, match="dtype_bytes=0"):
        bytes_per_token(preset("tiny"), dtype_bytes=0)


def _steps(cache, values):
    for v in values:
        cache.update(0, v, 2 * v)


def test_preallocated_cache_writes_in_place_and_never_moves():
    """With a capacity, every step writes its position into the same buffer: no copy of what is already cached."""
    cache = KVCache(num_layers=1, capacity=10)
    first = cache.update(0, torch.randn(2, 3, 4), torch.randn(2, 3, 5))
    base = first[0].data_ptr()
    for _ in range(7):
        c, k = cache.update(0, torch.randn(2, 1, 4), torch.randn(2, 1, 5))
        assert c.data_ptr() == base and c.shape == (2, len(cache), 4) and k.shape == (2, len(cache), 5)
    assert len(cache) == 10 and cache.allocated_bytes() == cache.nbytes() == 2 * 10 * 9 * 4


def test_growing_cache_holds_exactly_what_concatenation_would():
    values = [torch.randn(1, n, 3) for n in (5, 1, 1, 4, 1, 9, 1)]
    cache = KVCache(num_layers=1)  # no capacity: grows by doubling
    _steps(cache, values)
    c, k = cache.layers[0]
    assert torch.equal(c, torch.cat(values, dim=1)) and torch.equal(k, 2 * torch.cat(values, dim=1))
    assert cache.nbytes() == 2 * 22 * 3 * 4 <= cache.allocated_bytes()


def test_crop_forgets_positions_and_the_next_write_replaces_them():
    cache = KVCache(num_layers=1, capacity=8)
    _steps(cache, [torch.zeros(1, 4, 2), torch.ones(1, 2, 2)])
    cache.crop(4)
    assert len(cache) == 4 and cache.nbytes() == 2 * 4 * 2 * 4
    _steps(cache, [torch.full((1, 1, 2), 7.0)])
    c, _ = cache.layers[0]
    assert c.shape == (1, 5, 2) and c[0, :4].eq(0).all() and c[0, 4].eq(7).all()


def test_cache_refuses_a_different_batch_and_bad_sizes():
    cache = KVCache(num_layers=1, capacity=4)
    cache.update(0, torch.zeros(2, 1, 3), torch.zeros(2, 1, 3))
    with pytest.raises(ValueError, match="batch size 2"):
        cache.update(0, torch.zeros(3, 1, 3), torch.zeros(3, 1, 3))
    with pytest.raises(ValueError, match="capacity=0"):
        KVCache(num_layers=1, capacity=0)
    with pytest.raises(ValueError, match="length=-1"):
        cache.crop(-1)
