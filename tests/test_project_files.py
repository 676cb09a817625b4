"""Packaging and set-up files agree with each other: pip and conda, README, Makefile and CI.

Nothing here needs git: the course must test the same way when downloaded as a ZIP (no ``.git``),
so the project's files are found by walking the tree.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import sys
import tomllib
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PIP = {"pytorch": "torch"}
NOT_PACKAGES = {"python", "pip"}
# Folders that are not the course's own files: environments, data, caches, build output.
NOT_OURS = {".git", ".venv", ".venv-colab", "venv", "__pycache__", ".pytest_cache", ".ipynb_checkpoints", ".mypy_cache",
            ".ruff_cache", "build", "dist", "checkpoints", "node_modules"}

sys.path.insert(0, str(ROOT / "tools"))
from sync_notebooks import repository_url, synced, synced_readme  # noqa: E402


def project_files(root: Path = ROOT) -> list[Path]:
    """The course's own files below ``root``, found without git (a ZIP download has no .git).

    Skips environments, caches and build output, and the data folder except its README.
    """
    found = []
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        subfolders[:] = sorted(name for name in subfolders
                               if name not in NOT_OURS and not name.endswith(".egg-info")
                               and not (here == root and name == "data"))
        found += [here / name for name in sorted(files)]
    if (root / "data" / "README.md").is_file():
        found.append(root / "data" / "README.md")
    return sorted(found)


def pip_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
    return dict(re.match(r"([A-Za-z0-9_.-]+)(.*)", r).groups() for r in requirements)


def conda_requirements() -> dict[str, str]:
    dependencies = (ROOT / "environment.yml").read_text().split("\ndependencies:\n", 1)[1]
    found = {}
    for line in dependencies.splitlines():
        match = re.match(r"^  - ([A-Za-z0-9_.-]+)([<>=!].*)?$", line)
        if match and match.group(1) not in NOT_PACKAGES:
            found[CONDA_TO_PIP.get(match.group(1), match.group(1))] = match.group(2) or ""
    return found


def lower_bound(spec: str) -> str | None:
    match = re.search(r">=\s*([0-9.]+)", spec)
    return match.group(1) if match else None


# --- pip, conda, CI ------------------------------------------------------------------------------

def test_conda_environment_lists_the_same_packages_as_pip():
    assert set(conda_requirements()) == set(pip_requirements())


def test_conda_and_pip_agree_on_minimum_versions():
    pip, conda = pip_requirements(), conda_requirements()
    assert {name: lower_bound(pip[name]) for name in pip} == {name: lower_bound(conda[name]) for name in pip}


def test_conda_environment_uses_conda_forge_only():
    text = (ROOT / "environment.yml").read_text()
    channels = re.search(r"channels:\n((?:  - .*\n)+)", text).group(1)
    assert [c.strip("- ").strip() for c in channels.splitlines()] == ["conda-forge", "nodefaults"]


def test_package_does_not_pin_torch():
    for name, spec in pip_requirements().items():
        if name in ("torch", "torchvision"):
            assert "==" not in spec and "<" not in spec, f"{name}{spec}: let Colab keep its own torch"




def test_ci_runs_exactly_the_readme_test_commands():
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci == ["make test", "make test-colab"]
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme and "make test-colab" in readme
    assert readme.index("make demo") < readme.index("make test-colab") < readme.index("## "), "the commands come first"


def test_both_test_targets_run_the_same_suite_on_the_tiny_slice_in_float32():
    makefile = (ROOT / "Makefile").read_text()
    command = makefile.split("TEST_COMMAND =", 1)[1].split("\ntest:", 1)[0]
    assert "pytest tests notebooks" in command and "--nbval-lax" in command and "FLOWERS_TINY=1" in command
    assert "FLOWERS_PRECISION=float32" in command  # the recorded notebook outputs are float32's
    recipes = {target: makefile.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0] for target in ("test", "test-colab")}
    assert "$(call TEST_COMMAND,$(PY))" in recipes["test"]
    assert "$(call TEST_COMMAND,$(COLAB_VENV)/bin/python," in recipes["test-colab"]


def test_colab_versions_live_in_one_file_that_says_where_they_come_from():
    text = (ROOT / "constraints-colab.txt").read_text()
    pins = dict(line.split("==") for line in text.splitlines() if line and not line.startswith("#"))
    assert {"torch", "torchvision", "ipywidgets", "ipykernel", "numpy", "matplotlib", "scipy"} <= set(pins)
    assert re.search(r"^# python: 3\.\d+$", text, re.MULTILINE) and "Colab" in text.split("\ntorch")[0]
    makefile = (ROOT / "Makefile").read_text()
    assert "constraints-colab.txt" in makefile and not re.search(r"torch==|python3\.1\d", makefile)


# --- the repository address lives in pyproject.toml; the sync tool copies it -----------------------

def test_project_files_are_found_without_git(tmp_path):
    """A course downloaded as a ZIP: no .git, but a virtual environment, data and build output beside it."""
    files = ["README.md", "helpers/data.py", "notebooks/00_quickstart.ipynb", "data/README.md", ".ci/run"]
    ignored = [".venv/lib/site.py", "data/tiny/train/1/a.jpg", "flowers_helpers.egg-info/PKG-INFO",
               "helpers/__pycache__/data.cpython-311.pyc", "notebooks/.ipynb_checkpoints/00-checkpoint.ipynb",
               "checkpoints/demo/checkpoint.pth"]
    for name in files + ignored:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert project_files(tmp_path) == sorted(tmp_path / name for name in files)


def test_repository_address_is_written_only_where_the_sync_tool_keeps_it():
    url = repository_url()
    owner_and_name = url.removeprefix("https://github.com/")
    elsewhere = "https://github.com/someone-else/a-fork"
    offenders = []
    for path in project_files():
        relative = path.relative_to(ROOT)
        text = path.read_text(errors="ignore")
        if owner_and_name not in text or relative == Path("pyproject.toml"):
            continue
        if relative == Path("README.md"):
            text = synced_readme(text, elsewhere)  # the links the tool rewrites for a fork
        elif path.suffix == ".ipynb":
            text = json.dumps(synced(json.loads(text), path, elsewhere))  # badge and setup cell, rewritten
        if owner_and_name in text:
            offenders.append(str(relative))
    assert offenders == [], "the address is written by hand here; a fork's `make sync-notebooks` would miss it"


# --- the package: what the README promises, and its size -------------------------------------------

def helpers_modules() -> list[Path]:
    return sorted(path for path in (ROOT / "helpers").glob("*.py") if not path.stem.startswith("__"))


def test_the_package_stays_readable_in_one_sitting():
    modules = helpers_modules()
    assert len(modules) <= 13, [m.stem for m in modules]
    too_long = {m.stem: n for m in modules if (n := len(m.read_text().splitlines())) > 300}
    assert too_long == {}


def readme_code_imports() -> list[tuple[str, str]]:
    """(module, name) of every ``from helpers... import name`` in the README's code blocks."""
    readme = (ROOT / "README.md").read_text()
    found = []
    for block in re.findall(r"```python\n(.*?)```", readme, re.DOTALL):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helpers"):
                found += [(node.module, alias.name) for alias in node.names]
    return found


def package_table() -> list[tuple[list[str], list[str]]]:
    """(modules, names) per row of the README's package table."""
    section = (ROOT / "README.md").read_text().split("## The package", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `helpers"):
            modules_cell, described = line.strip("|").split("|", 1)
            while re.search(r"\([^()]*\)", described):  # arguments and asides: `fit(model, ...)` -> `fit`
                described = re.sub(r"\([^()]*\)", "", described)
            rows.append((re.findall(r"`(helpers\.\w+)`", modules_cell), re.findall(r"`([A-Za-z_]\w*)`", described)))
    return rows


def test_the_readme_names_only_what_the_package_has():
    missing = []
    for modules, names in package_table():
        loaded = []
        for module in modules:
            try:
                loaded.append(importlib.import_module(module))
            except ImportError:
                missing.append(module)
        missing += [name for name in names if not any(hasattr(m, name) for m in loaded)]
    for module, name in readme_code_imports():
        try:
            if not hasattr(importlib.import_module(module), name):
                missing.append(f"{module}.{name}")
        except ImportError:
            missing.append(module)
    assert missing == []
    listed = {module.split(".")[1] for modules, _ in package_table() for module in modules}
    assert {path.stem for path in helpers_modules()} <= listed  # every module has its row
    assert sum(len(names) for _, names in package_table()) > 40  # the table was read, not skipped


def test_helpers_stay_plain_short_lines_and_few_parameters():
    """The package review's rules (issue 16): no line over 110 characters, no function with more than
    8 parameters except ``fit``, the one loop that gathers the options."""
    long_lines, many_parameters = [], []
    for path in sorted((ROOT / "helpers").glob("*.py")):
        source = path.read_text()
        long_lines += [f"{path.name}:{number}" for number, line in enumerate(source.splitlines(), start=1)
                       if len(line) > 110]
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "fit":
                arguments = node.args
                count = len(arguments.posonlyargs + arguments.args + arguments.kwonlyargs)
                count += (arguments.vararg is not None) + (arguments.kwarg is not None)
                if count > 8:
                    many_parameters.append(f"{path.name}:{node.name} ({count})")
    assert not long_lines, f"lines over 110 characters: {long_lines}"
    assert not many_parameters, f"functions with more than 8 parameters: {many_parameters}"
