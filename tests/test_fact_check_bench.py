"""Lesson 9's verdicts on the report's training claims are the committed `make bench` run's verdicts.

The lesson reads `benchmarks/results/bench.json` (it never re-runs the experiments); this test reads the lesson's
*stored* output and fails when a mark there disagrees with the committed results: a lesson not re-executed after a
new bench run, or a claim whose row the lesson takes from the wrong place.
"""

import json
import re
from pathlib import Path

import pytest

from course import check_claims
from course.bench_results import bench_data, bench_row

LESSON = Path(__file__).resolve().parent.parent / "notebooks" / "09_fact_check.ipynb"


def stored_table(header_start: str) -> dict[str, str]:
    """claim -> mark (✅ / ⚠️) of the markdown table whose header starts with ``header_start`` in the stored output."""
    nb = json.loads(LESSON.read_text())
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            text = "".join(out.get("data", {}).get("text/markdown", ""))
            if text.startswith(header_start):
                rows = [re.split(r"(?<!\\)\|", line)[1:3] for line in text.splitlines()[2:]]
                return {claim.strip(): mark.strip() for mark, claim in rows}
    raise AssertionError(f"no stored table starting with {header_start!r} in {LESSON.name}")


REPORT = "| | claim | source | report | ours"


@pytest.mark.parametrize("claim", [c[0] for c in check_claims.BENCH_CLAIMS])
def test_lesson_mark_is_the_committed_bench_verdict(claim):
    _, _, _, item, prefix = next(c for c in check_claims.BENCH_CLAIMS if c[0] == claim)
    expected = "✅" if bench_row(item, prefix)["met"] else "⚠️"
    assert stored_table(REPORT).get(claim) == expected, f"{claim!r}: re-execute lesson 9 after `make bench`"


def test_speculative_speedup_row_is_wall_clock_from_bench():
    speedup = bench_data("speculative")["speedup"]
    expected = "✅" if abs(speedup - 1.8) <= 0.15 else "⚠️"
    assert stored_table(REPORT)["speed-up from MTP drafts"] == expected


def test_every_bench_claim_names_an_existing_row():
    for _, _, _, item, prefix in check_claims.BENCH_CLAIMS:
        assert isinstance(bench_row(item, prefix)["met"], bool)


def test_simulations_are_not_report_claims():
    """A router-only simulation or a format bound never marks a claim about training."""
    report = stored_table(REPORT)
    selfchecks = stored_table("| | check | of | expected")
    assert "bias rule balances a skewed router" in selfchecks and "bias rule balances a skewed router" not in report
    assert "same logits as transformers' DeepseekV3" in selfchecks


def test_a_quoted_item_is_dated_by_its_own_measurement():
    """Lessons print the date of the item they quote: re-running other items (`--only`) leaves their output true."""
    from course.bench_results import bench_item, run_date

    for item in ("repro_fp8", "speculative", "repro_balance"):
        assert f"make bench of {bench_item(item)['date'][:10]} " in run_date(item)
    with pytest.raises(KeyError, match="no_such_item"):
        run_date("no_such_item")
