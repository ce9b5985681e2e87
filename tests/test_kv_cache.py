import pytest
import torch

from dsv3_mini import DeepSeekV3, preset
from dsv3_mini.kv_cache import (
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
