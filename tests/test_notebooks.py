"""The notebooks' shape: committed clean, with badge, setup and settings cells, summary, exercises with
revealable solutions and further reading; test markers as cell tags.

nbval runs them (``make test``); these tests check what nbval cannot: that they are
stored without outputs, that their Colab parts are in step with pyproject.toml, that
every checked cell has a recorded expectation, and that no helper is redefined.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
COURSE = ["00_quickstart", "01_loading_data", "02_augmentation", "03_pretrained_backbone_and_head",
          "04_training", "05_overfitting_experiments", "06_inference", "07_fine_tuning"]
sys.path.insert(0, str(ROOT / "tools"))
from sync_notebooks import SETUP_MARKER, badge, release_tag, repository_url  # noqa: E402


def load(name: str) -> dict:
    return json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())


def source(cell: dict) -> str:
    return "".join(cell["source"])


def code_cells(notebook: dict) -> list[dict]:
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def test_every_course_notebook_exists_and_nothing_else():
    assert sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb")) == COURSE


@pytest.mark.parametrize("name", COURSE)
def test_committed_without_outputs(name):
    for cell in code_cells(load(name)):
        assert cell["outputs"] == [] and cell["execution_count"] is None, source(cell)[:80]


@pytest.mark.parametrize("name", COURSE)
def test_opens_with_badge_title_goals_and_time(name):
    first = load(name)["cells"][0]
    text = source(first)
    assert first["cell_type"] == "markdown"
    assert badge(repository_url(), Path(f"{name}.ipynb")) in text
    assert re.search(rf"^# {name[:2]} ", text, re.MULTILINE), "title '# NN ...' missing"
    assert "what you will learn" in text.lower()
    assert "CPU" in text and "Colab" in text, "say how long it takes on a laptop CPU and on Colab"


MAIN_FLOW_WORDS = {"00_quickstart": 900}  # every other notebook: 2,000 (a chapter, not a book)
WRITE_IT_CELLS = {"01_loading_data": 1, "03_pretrained_backbone_and_head": 1, "04_training": 2,
                  "05_overfitting_experiments": 1, "06_inference": 1, "07_fine_tuning": 1}


def main_flow_words(notebook: dict) -> int:
    """Words of markdown outside collapsed <details> blocks: the prose a learner reads on the way through."""
    text = "\n".join(source(cell) for cell in notebook["cells"] if cell["cell_type"] == "markdown")
    return len(re.findall(r"[A-Za-z0-9]+", re.sub(r"<details>.*?</details>", " ", text, flags=re.DOTALL)))


@pytest.mark.parametrize("name", COURSE)
def test_a_notebook_is_a_chapter_not_a_book(name):
    assert main_flow_words(load(name)) <= MAIN_FLOW_WORDS.get(name, 2000)


def is_solution(cell: dict) -> bool:
    """A code cell whose input is collapsed: JupyterLab's source_hidden and Colab's form view with a title."""
    return (cell["cell_type"] == "code" and cell.get("metadata", {}).get("jupyter", {}).get("source_hidden") is True
            and cell.get("metadata", {}).get("cellView") == "form" and source(cell).startswith("# @title Solution"))


def is_empty_for_the_learner(cell: dict) -> bool:
    """A code cell that holds only comments: the place where the learner writes."""
    lines = [line.strip() for line in source(cell).splitlines() if line.strip()]
    return cell["cell_type"] == "code" and bool(lines) and all(line.startswith("#") for line in lines)


@pytest.mark.parametrize("name", sorted(WRITE_IT_CELLS))
def test_the_learner_writes_the_core_pieces(name):
    """Prompt, an empty cell to write in, the collapsed solution (nbval runs it), then a check that uses it."""
    cells = load(name)["cells"]
    found = 0
    for index in range(1, len(cells) - 2):
        if is_empty_for_the_learner(cells[index]) and is_solution(cells[index + 1]):
            assert cells[index - 1]["cell_type"] == "markdown", "a prompt comes before the empty cell"
            assert any(cell["cell_type"] == "code" and not is_solution(cell) for cell in cells[index + 2:index + 5])
            found += 1
    assert found >= WRITE_IT_CELLS[name]


@pytest.mark.parametrize("name", COURSE)
def test_setup_then_settings_cell(name):
    cells = load(name)["cells"]
    assert cells[1]["cell_type"] == "code" and source(cells[1]).startswith(SETUP_MARKER)
    assert f'REPOSITORY = "{repository_url()}"' in source(cells[1])
    assert f'VERSION = "{release_tag()}"' in source(cells[1]) and "KEEP_DATA_ON_DRIVE = False" in source(cells[1])
    settings = source(cells[2])
    assert "get_settings()" in settings and "print(settings.describe())" in settings


def test_a_failed_colab_install_says_why_and_what_to_do(tmp_path):
    """The setup cell run as on Colab, with an address that has no published copy: one clear error."""
    cell = source(load("00_quickstart")["cells"][1])
    cell = re.sub(r'REPOSITORY = ".*"', f'REPOSITORY = "file://{tmp_path / "no-such-fork"}"', cell)
    script = "import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')\n" + cell
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()
    assert any(line.startswith("RuntimeError: Could not install the course package") for line in error)
    assert "For your fork, set REPOSITORY" in result.stderr and "ModuleNotFoundError" not in result.stderr


def markdown_after(notebook: dict, heading: str) -> str:
    """The markdown from the heading that contains ``heading`` to the next heading of the same level."""
    text = "\n".join(source(cell) for cell in notebook["cells"] if cell["cell_type"] == "markdown")
    match = re.search(rf"^(#+) [^\n]*{heading}[^\n]*$", text, re.MULTILINE | re.IGNORECASE)
    assert match, f"no '{heading}' heading"
    rest = text[match.end():]
    following = re.search(rf"^#{{1,{len(match.group(1))}}} ", rest, re.MULTILINE)
    return rest[:following.start()] if following else rest


@pytest.mark.parametrize("name", COURSE)
def test_ends_with_summary_exercises_and_further_reading(name):
    cells = load(name)["cells"]
    tail = "\n".join(source(cell) for cell in cells[-6:] if cell["cell_type"] == "markdown")
    headings = re.findall(r"^#+ (.*)$", tail, re.MULTILINE)
    order = [next((i for i, h in enumerate(headings) if word in h.lower()), None)
             for word in ("summary", "exercises", "further reading")]
    assert None not in order and order == sorted(order), f"Summary, Exercises, Further reading in that order: {headings}"
    assert "http" in markdown_after(load(name), "Further reading"), "further reading needs links"


@pytest.mark.parametrize("name", COURSE)
def test_every_exercise_has_a_revealable_hint_and_solution(name):
    exercises = markdown_after(load(name), "Exercises")
    numbered = re.split(r"^(?:\d+\.|#{3,} )", exercises, flags=re.MULTILINE)[1:]
    assert numbered, "no numbered exercises"
    for exercise in numbered:
        assert re.search(r"<details>\s*<summary>\s*Hint", exercise, re.IGNORECASE), exercise[:80]
        assert re.search(r"<details>\s*<summary>\s*Solution", exercise, re.IGNORECASE), exercise[:80]


@pytest.mark.parametrize("name", COURSE)
def test_test_markers_are_cell_tags_not_comments(name):
    for cell in load(name)["cells"]:
        assert "NBVAL" not in source(cell).upper(), "use the cell tag nbval-check-output, not a visible comment"
    assert any("nbval-check-output" in cell.get("metadata", {}).get("tags", []) for cell in code_cells(load(name)))


def helper_function_names() -> set[str]:
    """Every public function and class defined in the helpers package."""
    names = set()
    for path in (ROOT / "helpers").glob("*.py"):
        if path.stem.startswith("__"):
            continue
        module = importlib.import_module(f"helpers.{path.stem}")
        names |= {name for name, obj in vars(module).items()
                  if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
                  and obj.__module__ == module.__name__}
    return names


@pytest.mark.parametrize("name", COURSE)
def test_no_helper_redefined_and_no_star_import(name):
    helpers = helper_function_names()
    for cell in code_cells(load(name)):
        code = "\n".join(line for line in source(cell).splitlines() if not line.lstrip().startswith(("!", "%")))
        tree = ast.parse(code)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                assert node.name not in helpers, f"{name} redefines helper {node.name}"
            if isinstance(node, ast.ImportFrom):
                assert all(alias.name != "*" for alias in node.names), f"{name} has a star import"


@pytest.mark.parametrize("name", COURSE)
def test_every_checked_cell_has_a_recorded_output(name):
    expected = json.loads((NOTEBOOKS / "expected_outputs.json").read_text()).get(f"{name}.ipynb", {})
    checked = [cell for cell in code_cells(load(name)) if "nbval-check-output" in cell.get("metadata", {}).get("tags", [])]
    for cell in checked:
        assert cell.get("id") in expected, f"{name}: record the output of {source(cell)[:60]!r}"
        assert expected[cell["id"]], f"{name}: the recorded output of a checked cell is empty"


def test_badges_setup_cells_and_readme_are_in_step_with_pyproject():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "sync_notebooks.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
