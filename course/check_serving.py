"""Checkers for lesson 8 (expert parallelism and serving): node-limited traffic, the KV cache at long context,
GPUs for the weights, redundant experts and the training bill.

Every expected value is computed by ``dsv3_mini`` (``traffic``, ``deployment``, ``placement``) from
``preset("deepseek-v3")`` or from the loads given here.
"""

from __future__ import annotations

import torch

from dsv3_mini.config import preset
from dsv3_mini.deployment import plan, training_bill
from dsv3_mini.placement import contiguous, replicate
from dsv3_mini.traffic import experts_for_cost_of_nodes

from .verdict import Verdict, check_number

# Exercise 4: tokens routed to each of 8 experts in one layer, served by 4 ranks (2 experts each)
LOADS = (90, 10, 20, 40, 15, 15, 30, 20)
RANKS = 4
LONG_CONTEXT = 131_072
UTILISATION = 0.4


def check_experts_for_four_nodes(answer: object) -> Verdict:
    """Exercise 1: how many experts can a token reach for the IB cost of V3's M = 4 nodes?"""
    expected = experts_for_cost_of_nodes(preset("deepseek-v3").topk_group)
    return check_number(answer, expected, "NVLink moves 160 / 50 copies per IB copy: times M",
                        abs_tol=0.25, unit="experts (≈ 13)")


def kv_cache_gb_at_long_context() -> float:
    return plan(context=LONG_CONTEXT, batch=1, cache="bf16").kv_bytes / 1e9


def check_kv_cache_gb(answer: object) -> Verdict:
    """Exercise 2: V3's MLA cache in GB (10⁹ bytes) for one 128K-token sequence in BF16."""
    return check_number(answer, round(kv_cache_gb_at_long_context(), 2),
                        "tokens × 61 layers × 576 numbers × 2 bytes", rel_tol=1e-2,
                        unit="GB")


def check_h200_count(answer: object) -> Verdict:
    """Exercise 3: the fewest H200 GPUs (90% of 141 GB usable) for FP8 weights and a 32K cache, experts split evenly."""
    return check_number(answer, plan(gpu="H200", weights="fp8", context=32_768).gpus,
                        "memory ÷ usable bytes per GPU, up to a divisor of 256", unit="GPUs")


def contiguous_max_over_mean() -> float:
    return contiguous(torch.tensor(LOADS, dtype=torch.float64), RANKS).max_over_mean


def check_max_over_mean(answer: object) -> Verdict:
    """Exercise 4a: max / mean rank load when expert e sits on rank e // 2 (no redundant experts)."""
    return check_number(answer, round(contiguous_max_over_mean(), 4),
                        "sum each rank's two loads; largest ÷ mean",
                        rel_tol=1e-3)


def first_redundant_expert() -> int:
    copies = replicate(torch.tensor(LOADS, dtype=torch.float64), 1)
    return int(torch.nonzero(copies == 2)[0])


def check_first_redundant(answer: object) -> Verdict:
    """Exercise 4b: which expert (0–7) gets the first redundant copy?"""
    return check_number(answer, first_redundant_expert(), "a copy halves its expert's load: whose load is largest?",
                        unit="(expert id)")


def million_gpu_hours() -> float:
    return training_bill(utilisation=UTILISATION).gpu_hours / 1e6


def check_gpu_hours(answer: object) -> Verdict:
    """Exercise 5: H800 hours (millions) for 6 · N_active · 14.8T FLOPs at 40% of the BF16 dense peak."""
    return check_number(answer, round(million_gpu_hours(), 3),
                        "6 · N · D ÷ (0.4 × 989.5e12 FLOP/s) ÷ 3,600 s per hour",
                        rel_tol=2e-2, unit="million GPU hours")
