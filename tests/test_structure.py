"""The shape of the code base: one-way imports, no hidden dependencies, files one can read in a sitting, a wheel
that holds every package."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dsv3_mini", "widgets", "course")
# the layers, lowest first: a package may import only packages before it in this list
LAYERS = {"dsv3_mini": set(), "widgets": {"dsv3_mini"}, "course": {"dsv3_mini"}, "benchmarks": {"dsv3_mini", "widgets"}}
MAX_LINES = 400


def _modules(package: str) -> dict[str, Path]:
    return {p.stem: p for p in sorted((ROOT / package).glob("*.py"))}


def _own_imports(package: str, path: Path) -> list[tuple[str, bool]]:
    """(module of ``package`` imported, inside a function?) for every import of the package's own modules."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom):
                if child.level == 1 and child.module:
                    found.append((child.module.split(".")[0], in_function))
                elif child.level == 1:
                    found.extend((a.name, in_function) for a in child.names)
                elif child.level == 0 and child.module and child.module.split(".")[0] == package:
                    parts = child.module.split(".")
                    if len(parts) > 1:
                        found.append((parts[1], in_function))
                    else:
                        found.extend((a.name, in_function) for a in child.names)
            elif isinstance(child, ast.Import):
                for a in child.names:
                    parts = a.name.split(".")
                    if parts[0] == package and len(parts) > 1:
                        found.append((parts[1], in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def _graph(package: str) -> dict[str, set[str]]:
    modules = _modules(package)
    return {name: {m for m, _ in _own_imports(package, path) if m in modules and m != name}
            for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph as a list of nodes, or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := dfs(node)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"model": {"mtp"}, "mtp": {"model"}}) == ["model", "mtp", "model"]
    assert _cycle({"model": {"mtp", "block"}, "mtp": {"block"}, "block": set()}) is None


@pytest.mark.parametrize("package", PACKAGES)
def test_import_graph_is_acyclic(package):
    cycle = _cycle(_graph(package))
    assert cycle is None, f"{package} has an import cycle: {' -> '.join(cycle)}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_deferred_imports_of_own_modules(package):
    """An import inside a function hides a dependency (and usually a cycle); the package imports at the top."""
    deferred = [f"{path.name} imports .{m}" for path in _modules(package).values()
                for m, inside in _own_imports(package, path) if inside]
    assert not deferred, deferred


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_packages_import_one_way(package):
    """dsv3_mini imports none of the others; widgets and course build on dsv3_mini, not on each other; benchmarks
    measure dsv3_mini and the widgets."""
    others = set(LAYERS) - LAYERS[package] - {package}
    for path in (ROOT / package).glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                assert name.split(".")[0] not in others, f"{package}/{path.name} imports {name}"


@pytest.mark.parametrize("package", PACKAGES)
def test_modules_fit_in_one_sitting(package):
    long = {p.name: n for p in (ROOT / package).glob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"


def test_wheel_holds_every_package(tmp_path):
    """Build the wheel from a copy of the sources and import each package from the wheel alone."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "-w", str(dist), str(src)], check=True, timeout=300)
    (wheel,) = dist.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in PACKAGES:
        expected = {f"{package}/{p.name}" for p in (ROOT / package).glob("*.py")}
        assert expected <= names, f"the wheel lacks {sorted(expected - names)}"
    modules = [f"{package}.{p.stem}" for package in PACKAGES for p in sorted((ROOT / package).glob("*.py"))
               if p.stem != "__init__"]
    code = ("import importlib, sys; sys.path.insert(0, sys.argv[1]); "
            "mods = [importlib.import_module(m) for m in sys.argv[2:]]; "
            "bad = [m.__name__ for m in mods if not m.__file__.startswith(sys.argv[1])]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-I", "-c", code, str(wheel), *PACKAGES, *modules], check=True, timeout=300,
                   cwd=tmp_path)


def test_package_docstring_reads_in_import_order():
    """dsv3_mini's docstring names its modules so that each imports only modules named before it."""
    import dsv3_mini

    order = {m: i for i, m in enumerate(re.findall(r"``(\w+)``", dsv3_mini.__doc__))}
    graph = {m: deps for m, deps in _graph("dsv3_mini").items() if m != "__init__"}
    late = [f"{m} imports {d}" for m, deps in graph.items() for d in deps if order[d] > order[m]]
    assert not late, late
