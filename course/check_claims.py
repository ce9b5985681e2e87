"""Checkers for lesson 9 (what the report claims vs what we measured).

Every expected value is computed by the library from the released configuration (``preset("deepseek-v3")``) or from
the definitions in ``dsv3_mini.generate``; only the report's acceptance rate (85%, the low end of its 85–90%) and
the multiple-choice options are written here.
"""

from __future__ import annotations

from dsv3_mini.config import preset
from dsv3_mini.generate import SpeculativeStats
from dsv3_mini.kv_cache import bytes_per_token, naive_mla_bytes_per_token

from .verdict import Verdict, check_choice, check_number

# The report's claims about *training* that the committed `make bench` run checks with trained models, as
# (claim, source, the report's figure, bench item, title prefix of its row). Lesson 9 takes each verdict from that row
# (read, not re-run), and tests/test_fact_check_bench.py fails when the lesson's stored table disagrees with bench.json.
BENCH_CLAIMS = (
    ("loss-free balances better than a sequence-wise aux loss", "2408.15664 (1B); V3 §2.1.2",
     "MaxVio_global 0.04 vs 0.72", "repro_balance", "Balancing: MaxVio_global"),
    ("loss-free balancing costs no quality", "2408.15664 (1B); V3 §4.5.3", "ppl 9.50 vs 9.56",
     "repro_balance", "Balancing: validation loss"),
    ("batch-wise aux loss ≈ loss-free: the scope matters", "V3 §4.5.3 (1B)", "2.253 vs 2.253 (seq-wise 2.258)",
     "repro_balance", "Balancing scope"),
    ("loss-free experts specialise more by domain", "V3 §4.5.3, Figure 9", "more specialised",
     "repro_balance", "Expert specialisation"),
    ("MTP improves the main model, short run", "V3 §4.5.1, Table 4", "better at equal tokens",
     "repro_mtp", "MTP on vs off: next-token validation loss (nats/byte), 120 steps"),
    ("MTP improves the main model, longer run", "V3 §4.5.1, Table 4", "better at equal tokens",
     "repro_mtp", "MTP on vs off: next-token validation loss (nats/byte), 900 steps"),
    ("FP8 training within 0.25% of BF16", "V3 §3.3, Figure 10", "< 0.25% relative loss error",
     "repro_fp8", "FP8 (simulated) vs BF16: relative error of the smoothed"),
    ("MoE beats dense at equal active parameters", "DeepSeekMoE (arXiv 2401.06066)", "MoE better",
     "repro_dense", "MoE vs dense"),
)

REPORT_ACCEPTANCE = 0.85  # second-token acceptance of V3's MTP draft, low end of the reported 85–90%

CLAIMS = ("parameters", "kv-cache", "exactness", "perplexity")
CLAIM_TEXT = {
    "parameters": "DeepSeek-V3 has 671B parameters, 37B activated per token",
    "kv-cache": "MLA caches 70,272 bytes per token (BF16, all 61 layers)",
    "exactness": "greedy speculative decoding returns exactly the tokens of plain greedy decoding",
    "perplexity": "at 1B parameters, loss-free balancing reaches perplexity 9.50 where an auxiliary loss reaches 9.56",
}


def _as_fraction(answer: object, expected: float, hint: str) -> Verdict:
    """A reduction given as a fraction (0.5 for 50%); a percentage gets a pointer to the unit instead of a no."""
    verdict = check_number(answer, expected, hint, abs_tol=5e-4)
    if not verdict:
        try:
            value = float(answer)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return verdict
        if abs(value - 100 * expected) <= 0.05:
            return Verdict(False, f"Right number, wrong unit: give it as a fraction ({value / 100:.4f}), "
                                  "not as a percentage.")
    return verdict


def kv_reduction_vs_naive() -> float:
    """1 − MLA cache / cache of full per-head K and V, for DeepSeek-V3 (0.986)."""
    v3 = preset("deepseek-v3")
    return 1 - bytes_per_token(v3) / naive_mla_bytes_per_token(v3)


def kv_reduction_vs_mha() -> float:
    """1 − MLA cache / cache of standard MHA with V3's own shape (128 heads of 128 dims, 61 layers)."""
    v3 = preset("deepseek-v3")
    return 1 - bytes_per_token(v3) / bytes_per_token(v3.replace(attention="mha", head_dim=v3.v_head_dim))


def tokens_per_forward(acceptance: float = REPORT_ACCEPTANCE, drafts: int = 1_000_000) -> float:
    """Tokens per main-model forward with one MTP draft accepted at rate ``acceptance``, over many steps.

    Every verifying forward yields its own next token, plus the draft when that was accepted (prefill ignored).
    """
    accepted = round(acceptance * drafts)
    stats = SpeculativeStats(drafted=drafts, accepted=accepted, forward_passes=drafts, new_tokens=drafts + accepted)
    return stats.tokens_per_forward


def check_kv_reduction(answer: object) -> Verdict:
    """Exercise 1: the 98.6% from the two byte counts, as a fraction."""
    return _as_fraction(answer, kv_reduction_vs_naive(),
                        "one minus the ratio of what MLA caches to what caching every head's K and V would need")


def check_tokens_per_forward(answer: object) -> Verdict:
    """Exercise 2: tokens per main-model forward implied by 85% acceptance of one MTP draft."""
    return check_number(answer, tokens_per_forward(),
                        "each verifying forward always yields one token; how often does it yield a second?",
                        abs_tol=1e-6)


def check_mha_reduction(answer: object) -> Verdict:
    """Exercise 3: MLA's cache saving against standard MHA of V3's own shape, as a fraction."""
    return _as_fraction(answer, kv_reduction_vs_mha(),
                        "MHA caches a key and a value of head_dim numbers for each of the 128 heads in every layer; "
                        "`bytes_per_token` works for any attention kind")


def check_uncheckable(answer: object) -> Verdict:
    """Exercise 4: the claim that only training at the report's scale could check."""
    return check_choice(answer, "perplexity", CLAIMS,
                        "two of these follow from the configuration alone and one is a property of the algorithm "
                        "at any size; which one is a measurement of models trained at a scale we cannot run?")
