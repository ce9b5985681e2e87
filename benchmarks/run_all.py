"""Run the dsv3-mini benchmarks and reproductions; write results/bench.json and results/BENCH.md (``make bench``).

    .venv/bin/python -m benchmarks.run_all                      # everything (~80 minutes on 2 cores)
    .venv/bin/python -m benchmarks.run_all --quick              # a smoke run on tiny sizes (numbers mean nothing)
    .venv/bin/python -m benchmarks.run_all --only train_step,mfu
    .venv/bin/python -m benchmarks.run_all --list

from the repository's root (``benchmarks`` is a package: its modules import each other relatively).

One progress line per item. Both files are rewritten after every item, each to a temporary name then renamed, so an
interrupt leaves the previous complete file, never half of one; ``--only`` updates those items in an existing
bench.json of the same kind (full or quick) and keeps the others. A complete full run into the default folder also
rewrites the table in the repository's README.md (between its ``bench:begin``/``bench:end`` markers). What each item
measures: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from . import repro
from .common import THREADS, Skipped, cpu_seconds, machine, other_jobs_share

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
README_BEGIN, README_END = "<!-- bench:begin (written by make bench) -->", "<!-- bench:end -->"
SCHEMA = 1

# (name, module, function, section, what); run in this order
ITEMS = [
    ("train_step", "train_step", "run", "Performance", "training step vs transformers (same weights)"),
    ("mfu", "mfu", "run", "Performance", "model FLOP utilisation vs the matmul peak"),
    ("time_to_quality", "time_to_quality", "run", "Performance",
     "make train's run to the shipped validation loss: today's trainer vs issue 15's start"),
    ("moe_dispatch", "moe_dispatch", "run", "Performance", "grouped MoE dispatch vs a per-expert loop"),
    ("decoding", "decoding", "run", "Performance", "decoding at 1K/4K: absorbed/naive MLA, MHA"),
    ("speculative", "speculative", "run", "Performance", "MTP speculative decoding on the shipped checkpoint"),
    ("hf_generate", "hf_generate", "run", "Performance", "greedy generate at 1K vs transformers (same weights)"),
    ("batch_sampling", "batch_sampling", "run", "Performance", "sampling 64 short sequences: batch vs sequential"),
    ("widget_latency", "widget_latency", "run", "Course tooling", "widget redraw latency"),
    ("nbval", "build_times", "run_nbval", "Course tooling", "pytest --nbval notebooks/"),
    ("book", "build_times", "run_book", "Course tooling", "jupyter-book build -W"),
    ("repro_balance", "repro_balance", "run", "Reproductions at mini scale", "loss-free vs aux losses, γ, scope"),
    ("repro_mtp", "repro_mtp", "run", "Reproductions at mini scale", "MTP on vs off"),
    ("repro_fp8", "repro_fp8", "run", "Reproductions at mini scale", "FP8 simulation vs BF16"),
    ("repro_dense", "repro_dense", "run", "Reproductions at mini scale", "MoE vs dense at equal active params"),
    ("repro_long_context", "repro_long_context", "run", "Reproductions at mini scale",
     "context extension: plain RoPE vs YaRN, ± the two-phase fine-tune, passkey at 4×"),
    ("repro_grpo", "repro_grpo", "run", "Reproductions at mini scale",
     "post-training: SFT, then GRPO vs REINFORCE; MTP acceptance after RL"),
]
NAMES = [i[0] for i in ITEMS]


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _met(m: bool | None) -> str:
    return "—" if m is None else "yes" if m else "**no**"


def markdown(results: dict[str, Any]) -> str:
    m, others = results["machine"], results.get("other_jobs_cpu_share")
    kind = "quick smoke run (tiny sizes: the numbers mean nothing)" if results["quick"] else "full run"
    total = results.get("total_seconds")
    lines = [
        "# dsv3-mini benchmarks", "",
        f"{kind.capitalize()}, {results['date']}: {m['cpu']}, {m['cores']} cores (torch threads {m['torch_threads']}),"
        f" torch {m['torch']}, transformers {m['transformers']}, Python {m['python']}."
        + (f" Run in parts (`--only`); the items took {total / 60:.1f} min in all." if total and
           results.get("in_parts") else f" Total {total / 60:.1f} min." if total else "")
        + (f" Other jobs used {100 * others:.0f}% of the CPU meanwhile" + (
            " (during the last part; each item's date is in bench.json)." if results.get("in_parts") else ".")
           if others is not None else ""),
        "Regenerate with `make bench` (`benchmarks/run_all.py`); methods and formulas in `benchmarks/README.md`,"
        " every raw number in `benchmarks/results/bench.json`.",
    ]
    if others is not None and others >= 0.1:
        lines += ["", f"**The machine was busy**: other jobs used {100 * others:.0f}% of its CPU during this run, so "
                  "the timings are pessimistic and noisy. Re-run on a quiet machine before quoting them."]
    if not results.get("complete", False):
        lines += ["", "**Incomplete run**: some items did not run (interrupted or `--only`)."]
    for section in dict.fromkeys(i[3] for i in ITEMS):
        names = [i[0] for i in ITEMS if i[3] == section and i[0] in results["benchmarks"]]
        if not names:
            continue
        lines += ["", f"## {section}", "", "| item | ours | baseline / paper | goal | met? | notes |",
                  "|---|---|---|---|---|---|"]
        for name in names:
            b = results["benchmarks"][name]
            if b["status"] != "ok":
                what = dict((i[0], i[4]) for i in ITEMS)[name]
                lines.append(f"| {name}: {_cell(what)} | {b['status']} | — | — | — | {_cell(b.get('error', ''))} |")
                continue
            for r in b["rows"]:
                lines.append("| " + " | ".join(_cell(r[k]) for k in ("item", "ours", "baseline", "goal"))
                             + f" | {_met(r['met'])} | {_cell(r['note'])} |")
    return "\n".join(lines) + "\n"


def readme_block(results: dict[str, Any]) -> str:
    """The README's copy of BENCH.md: without its title, sections one level down, between the markers."""
    body = markdown(results).split("\n", 2)[2].replace("\n## ", "\n### ")
    return f"{README_BEGIN}\n{body}{README_END}"


def update_readme(results: dict[str, Any], readme: Path = README) -> bool:
    """Put a complete full run's table in the README (between the markers); quick or partial runs never do."""
    if results["quick"] or not results.get("complete"):
        return False
    text = readme.read_text()
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        return False
    atomic_write(readme, text[:begin] + readme_block(results) + text[end + len(README_END):])
    return True


def load_previous(path: Path, quick: bool) -> dict[str, Any]:
    """Items of an earlier bench.json of the same kind, to keep when only some items are rerun."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if old.get("schema") != SCHEMA or old.get("quick") != quick:
        return {}
    return old.get("benchmarks", {})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few repetitions: a smoke run")
    ap.add_argument("--only", default=None, help=f"comma-separated items among: {', '.join(NAMES)}")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for bench.json and BENCH.md")
    ap.add_argument("--list", action="store_true", help="list the items and exit")
    args = ap.parse_args(argv)
    if args.list:
        for name, *_, what in ITEMS:
            print(f"{name:16s} {what}")
        return 0
    selected = NAMES
    if args.only:
        selected = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [s for s in selected if s not in NAMES]
        if unknown:
            print(f"error: unknown item(s) {', '.join(unknown)}; choose among {', '.join(NAMES)}", file=sys.stderr)
            return 2
        selected = [n for n in NAMES if n in selected]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "bench.json", out / "BENCH.md"
    torch.set_num_threads(THREADS)

    benchmarks = load_previous(json_path, args.quick) if args.only else {}
    results: dict[str, Any] = {"schema": SCHEMA, "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                               "quick": args.quick, "machine": machine(), "complete": False,
                               "total_seconds": None, "other_jobs_cpu_share": None, "benchmarks": benchmarks}

    start, cpu_start = time.perf_counter(), cpu_seconds()

    def save() -> None:
        results["benchmarks"] = {n: benchmarks[n] for n in NAMES if n in benchmarks}
        results["complete"] = all(n in benchmarks for n in NAMES)
        results["other_jobs_cpu_share"] = other_jobs_share(cpu_start, time.perf_counter() - start)
        atomic_write(json_path, json.dumps(results, indent=1) + "\n")
        atomic_write(md_path, markdown(results))

    repro_items = [n for n in selected if n.startswith("repro_")]
    try:
        for k, name in enumerate(selected, start=1):
            _, module_name, fn, _, what = next(i for i in ITEMS if i[0] == name)
            print(f"[{k}/{len(selected)}] {name}: {what} ...", flush=True)
            t = time.perf_counter()
            try:
                module = importlib.import_module(f".{module_name}", __package__)
                if repro_items and name == repro_items[0]:  # train every reproduction's runs at once, 2 at a time
                    needs = [r for n in repro_items
                             for r in importlib.import_module(f".{n}", __package__).needs(args.quick)]
                    repro.ensure(needs, args.quick, log=lambda s: print(s, flush=True))
                entry = {"status": "ok", **getattr(module, fn)(args.quick)}
            except Skipped as e:
                entry = {"status": "skipped", "error": str(e)}
            except Exception as e:  # one broken item must not lose the others' results
                traceback.print_exc()
                entry = {"status": "error", "error": f"{type(e).__name__}: {e}"}
            entry["seconds"] = time.perf_counter() - t
            entry["date"] = results["date"]
            benchmarks[name] = entry
            status = "" if entry["status"] == "ok" else f" ({entry['status']}: {entry.get('error', '')})"
            print(f"    {name} done in {entry['seconds']:.1f} s{status}", flush=True)
            save()
    except KeyboardInterrupt:
        print("interrupted: results of the finished items are saved", file=sys.stderr)
        return 130
    if selected == NAMES:  # the time of `make bench`
        results["total_seconds"] = time.perf_counter() - start
    elif all(n in benchmarks for n in NAMES):  # a complete run made in parts: the sum of its items' times
        results["total_seconds"] = sum(b.get("seconds", 0.0) for b in benchmarks.values())
        results["in_parts"] = True
    save()
    print(f"took {(time.perf_counter() - start) / 60:.1f} min; wrote {json_path} and {md_path}")
    if out.resolve() == (HERE / "results").resolve() and update_readme(results):
        print(f"updated the benchmark table in {README}")
    return 0 if all(benchmarks[n]["status"] != "error" for n in selected) else 1


if __name__ == "__main__":
    raise SystemExit(main())
