"""The checkers of lesson 1 accept the right answers (computed independently here) and hint on wrong ones."""

import torch

from course import check_attention
from dsv3_mini import preset
from dsv3_mini.attention import MLA, decode_step_flops


def test_gqa_bytes_per_token():
    assert check_attention.check_gqa_bytes_per_token(61 * 2 * 8 * 128 * 2)  # 249,856
    wrong = check_attention.check_gqa_bytes_per_token(61 * 2 * 128 * 128 * 2)  # MHA: one K/V per query head
    assert not wrong and "Hint" in wrong.message and "KV group" in wrong.message
    assert "No answer yet" in check_attention.check_gqa_bytes_per_token(...).message


def test_mla_numbers_per_layer():
    assert check_attention.check_mla_numbers_per_layer(512 + 64)
    wrong = check_attention.check_mla_numbers_per_layer(512)  # forgot the RoPE key
    assert not wrong and "RoPE key" in wrong.message


def test_equivalent_gqa_groups():
    assert check_attention.check_equivalent_gqa_groups(2.25)
    assert check_attention.check_equivalent_gqa_groups(576 / 256)
    wrong = check_attention.check_equivalent_gqa_groups(4.5)  # forgot that a group caches a key and a value
    assert not wrong and "key and a value" in wrong.message


def test_cheaper_decode_path():
    assert check_attention.check_cheaper_decode_path("absorbed")
    assert check_attention.check_cheaper_decode_path(" Absorbed ")
    wrong = check_attention.check_cheaper_decode_path("naive")
    assert not wrong and "Hint" in wrong.message
    assert "is not one of" in check_attention.check_cheaper_decode_path("mla").message
    assert "No answer yet" in check_attention.check_cheaper_decode_path(...).message


def test_decode_flops_are_counted_from_the_shapes():
    """Per cached token, naive re-expands the latent for every head; absorbed only attends to it."""
    v3 = preset("deepseek-v3")
    with torch.device("meta"):
        layer = MLA(v3)
    flops = {impl: decode_step_flops(layer, impl, 2048) - decode_step_flops(layer, impl, 1024)
             for impl in ("naive", "absorbed")}
    h, d_c = v3.num_attention_heads, v3.kv_lora_rank
    assert flops["absorbed"] == 1024 * 2 * h * ((d_c + v3.qk_rope_head_dim) + d_c)
    assert flops["naive"] == 1024 * (2 * d_c * h * (v3.qk_nope_head_dim + v3.v_head_dim)
                                     + 2 * h * (v3.qk_head_dim + v3.v_head_dim))
