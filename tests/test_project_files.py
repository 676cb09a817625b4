"""Packaging and set-up files agree with each other: pip and conda, README, Makefile and CI."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PIP = {"pytorch": "torch"}
NOT_PACKAGES = {"python", "pip"}


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


def test_ci_runs_exactly_the_readme_test_command():
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci == ["make test"]
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert readme.index("make demo") < readme.index("## "), "the two commands come first"


def test_makefile_test_target_runs_unit_tests_and_every_notebook():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "pytest tests notebooks" in recipe and "--nbval-lax" in recipe and "FLOWERS_TINY=1" in recipe


def test_repository_address_is_written_only_in_synced_places():
    address = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    allowed = {ROOT / "pyproject.toml", ROOT / "README.md"}
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for path in (ROOT / name for name in listed):
        if path in allowed or path.suffix == ".ipynb" or not path.is_file():
            continue
        if address.removeprefix("https://") in path.read_text(errors="ignore"):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
