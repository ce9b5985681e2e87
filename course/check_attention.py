"""Checkers for lesson 1 (attention and the KV cache): cache sizes of MHA/GQA/MQA/MLA at DeepSeek-V3's size, and
which MLA path is cheaper to decode with."""

from __future__ import annotations

import torch

from dsv3_mini.attention import MLA, decode_step_flops
from dsv3_mini.config import preset
from dsv3_mini.kv_cache import bytes_per_token, elements_per_token_per_layer

from .verdict import Verdict, check_choice, check_number

MLA_PATHS = ("naive", "absorbed")


def check_gqa_bytes_per_token(answer: object) -> Verdict:
    """Exercise 1: bf16 cache bytes per token of a DeepSeek-V3-shaped GQA with 8 KV groups of d_h = 128."""
    v3 = preset("deepseek-v3")
    gqa = v3.replace(attention="gqa", num_key_value_heads=8, head_dim=v3.v_head_dim)
    return check_number(answer, bytes_per_token(gqa),
                        "every layer caches a key and a value for each KV group (not for each query head), "
                        "2 bytes per number", unit="bytes")


def check_mla_numbers_per_layer(answer: object) -> Verdict:
    """Exercise 2: numbers MLA caches per token in one layer of DeepSeek-V3."""
    return check_number(answer, elements_per_token_per_layer(preset("deepseek-v3")),
                        "MLA caches the compressed latent c_KV and the decoupled RoPE key k_R, and nothing per head",
                        unit="numbers")


def check_equivalent_gqa_groups(answer: object) -> Verdict:
    """Exercise 3: how many GQA groups of d_h = 128 cache as many numbers as MLA (the V2 report's 2.25)."""
    v3 = preset("deepseek-v3")
    groups = elements_per_token_per_layer(v3) / (2 * v3.v_head_dim)
    return check_number(answer, groups,
                        "one GQA group caches a key and a value of d_h numbers each; divide MLA's numbers per "
                        "layer by that", abs_tol=1e-3, unit="groups")


def check_cheaper_decode_path(answer: object) -> Verdict:
    """Exercise 4: which path of our MLA does fewer FLOPs per decoding step at V3 size with 4,096 cached tokens."""
    with torch.device("meta"):
        layer = MLA(preset("deepseek-v3"))
    cheaper = min(MLA_PATHS, key=lambda impl: decode_step_flops(layer, impl, 4096))
    return check_choice(answer, cheaper, MLA_PATHS,
                        "look at what each path does with every cached latent at every step: is anything expanded "
                        "into 128 heads?")
