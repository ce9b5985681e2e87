"""``make bench``'s entry point on a few cheap items in quick mode: it writes bench.json of the documented shape and
the Markdown table. No timing is asserted here — speed goals live in the benchmarks, never in tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import run_all as bench
from dsv3_mini import flops, preset

ROOT = Path(__file__).resolve().parents[1]
CHEAP = ["moe_dispatch", "decoding", "repro_mtp"]  # a timing, a model-level and a training-run item
ROW_KEYS = {"item", "ours", "baseline", "goal", "met", "note"}


def run_all(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.run_all", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("bench")
    return run_all("--quick", "--only", ",".join(CHEAP), "--out", str(out)), out


def test_quick_run_succeeds_with_a_progress_line_per_item(quick_run):
    proc, _ = quick_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for k, name in enumerate(CHEAP, start=1):
        assert f"[{k}/{len(CHEAP)}] {name}" in proc.stdout


def test_bench_json_has_the_documented_shape(quick_run):
    _, out = quick_run
    results = json.loads((out / "bench.json").read_text())
    assert results["schema"] == 1 and results["quick"] is True
    assert results["complete"] is False  # only some items ran
    assert {"cpu", "cores", "torch", "torch_threads"} <= set(results["machine"])
    assert list(results["benchmarks"]) == CHEAP
    for name, entry in results["benchmarks"].items():
        assert entry["status"] == "ok", (name, entry.get("error"))
        assert entry["seconds"] >= 0 and isinstance(entry["data"], dict)
        assert entry["rows"], name
        for row in entry["rows"]:
            assert set(row) == ROW_KEYS and row["met"] in (True, False, None)


def test_reproduction_outputs_are_checked_for_identity(quick_run):
    _, out = quick_run
    bench = json.loads((out / "bench.json").read_text())["benchmarks"]
    assert bench["moe_dispatch"]["data"]["same_output"] is True  # grouped dispatch = per-expert loop = dense mask
    assert bench["decoding"]["data"]["64"]["same_tokens"] is True  # absorbed MLA decodes as naive MLA and generate()


def test_markdown_table_is_written(quick_run):
    _, out = quick_run
    md = (out / "BENCH.md").read_text()
    results = json.loads((out / "bench.json").read_text())
    assert "| item | ours | baseline / paper | goal | met? | notes |" in md
    assert results["machine"]["torch"] in md
    for entry in results["benchmarks"].values():
        for row in entry["rows"]:
            assert row["item"] in md
    assert not list(out.glob("*.tmp")), "a temporary file was left behind"


def test_unknown_item_is_refused_by_name(tmp_path):
    proc = run_all("--only", "nope", "--out", str(tmp_path), timeout=60)
    assert proc.returncode == 2 and "unknown item(s) nope" in proc.stderr
    assert not (tmp_path / "bench.json").exists()


def test_readme_shows_the_committed_complete_run():
    """The README's table is the one the committed bench.json renders to, from a complete full run, dated."""
    results = json.loads((ROOT / "benchmarks" / "results" / "bench.json").read_text())
    assert results["complete"] is True and results["quick"] is False and results["total_seconds"] > 0
    readme = (ROOT / "README.md").read_text()
    assert bench.readme_block(results) in readme
    assert results["date"] in readme and results["machine"]["cpu"] in readme


def test_only_a_complete_full_run_rewrites_the_readme(tmp_path):
    results = json.loads((ROOT / "benchmarks" / "results" / "bench.json").read_text())
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench.README_BEGIN}\nold table\n{bench.README_END}\noutro\n")
    assert not bench.update_readme({**results, "quick": True}, readme)
    assert not bench.update_readme({**results, "complete": False}, readme)
    assert "old table" in readme.read_text()
    assert bench.update_readme(results, readme)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "old table" not in text
    assert "### Performance" in text and "# dsv3-mini benchmarks" not in text


def test_readme_flop_numbers_are_the_library_s():
    """benchmarks/README.md's worked example for "mini" at 12 × 256 is what dsv3_mini.flops computes."""
    cfg = preset("mini")
    step, no_mtp = flops.training_step_flops(cfg, 12, 256), flops.training_step_flops(cfg, 12, 256, mtp=False)
    numbers = {"N_matmul": step.main_matmul_params, "attention per layer": flops.attention_matmul_params(cfg),
               "dense FFN": flops.ffn_matmul_params(cfg, moe=False),
               "active MoE": flops.ffn_matmul_params(cfg, moe=True),
               "head": cfg.hidden_size * cfg.vocab_size, "MTP module": step.mtp_matmul_params,
               "attention FLOPs per token per layer": flops.attention_fwd_flops_per_token(cfg, 256)}
    text = " ".join((ROOT / "benchmarks" / "README.md").read_text().split())
    for what, n in numbers.items():
        assert f"{n:,}" in text, (what, n)
    assert f"{step.total / 1e9:.1f} GFLOP, {step.per_token / 1e6:.1f} MFLOP per token" in text
    assert f"({no_mtp.per_token / 1e6:.1f} without MTP)" in text


def test_generate_benchmarks_check_their_tokens(tmp_path):
    """The transformers comparison decodes the same greedy tokens from the same weights, and the batched sampler's
    greedy rows equal batch-1 decoding (quick mode: tiny random models; no timing is asserted)."""
    proc = run_all("--quick", "--only", "hf_generate,batch_sampling", "--out", str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bench = json.loads((tmp_path / "bench.json").read_text())["benchmarks"]
    assert bench["hf_generate"]["data"]["identical_tokens"] is True
    sampling = bench["batch_sampling"]["data"]
    assert sampling["greedy_rows_equal_batch_1"] == sampling["greedy_rows_checked"] > 0


def test_mfu_measures_again_without_the_numeric_pin():
    """The MFU item's second measurement runs in a child process whose environment has none of the Makefile's pins
    (quick mode; no timing is asserted)."""
    from benchmarks import mfu

    free = mfu.measure_unpinned(quick=True)
    assert free["env"] == {k: None for k in mfu.PINS}
    assert {"fp32", "bf16"} <= set(free) and free["bf16"]["peak_flops_per_s"] > 0
