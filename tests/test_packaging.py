"""The project's promises about its own files: install path, environment files, README, CI."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    pip_block = (ROOT / "environment.yml").read_text().split("- pip:\n", 1)[1]
    pip_lines = re.findall(r"^\s+- ([^-\s].*)$", pip_block, flags=re.M)
    env = {_name(line): line.strip() for line in pip_lines}
    assert set(env) == {_name(r) for r in reqs}
    for r in reqs:  # same version constraints, except torch, which the environment pins to the CPU wheel
        if _name(r) != "torch":
            assert env[_name(r)].replace(" ", "") == r.replace(" ", ""), r
    assert env["torch"] == "torch==2.13.0"


def test_install_path_pins_torch():
    makefile = (ROOT / "Makefile").read_text()
    assert 'TORCH_PIN := torch==2.13.0' in makefile and '"$(TORCH_PIN)"' in makefile


def test_readme_quick_start_has_exactly_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quick, flags=re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make lab", "make test"]


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_model_package_imports_no_notebook_libraries():
    for path in (ROOT / "dsv3_mini").glob("*.py"):
        text = path.read_text()
        for lib in ("plotly", "ipywidgets", "IPython", "jupyter"):
            assert not re.search(rf"^\s*(import|from) {lib}\b", text, flags=re.M), f"{path.name} imports {lib}"


def _where_is() -> str:
    return (ROOT / "README.md").read_text().split("## Where is …?", 1)[1].split("\n## ", 1)[0]


def test_readme_map_names_every_module_and_only_real_paths():
    """The README's "Where is …?" table answers by question; every module of the three packages is in it."""
    where = _where_is()
    for package in ("dsv3_mini", "widgets", "course"):
        for path in sorted((ROOT / package).glob("*.py")):
            if path.name != "__init__.py":
                assert f"`{package}/{path.name}`" in where, f"README's map does not mention {package}/{path.name}"
    for named in re.findall(r"`((?:dsv3_mini|widgets|course|benchmarks|notebooks|tests)/[\w./]+)`", where):
        assert (ROOT / named).exists(), f"README's map names {named}, which does not exist"


def test_package_docstring_lists_every_module():
    import dsv3_mini

    for path in sorted((ROOT / "dsv3_mini").glob("*.py")):
        if path.name != "__init__.py":
            assert f"``{path.stem}``" in dsv3_mini.__doc__, f"dsv3_mini's docstring does not list {path.stem}"
