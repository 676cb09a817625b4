"""Keep the notebooks' Colab badges and setup cells, and README's links, in step with pyproject.toml.

The address lives in one place, ``[project.urls] Repository`` in pyproject.toml, and so does
the version (``[project] version``; its release is tagged ``v<version>``). The notebooks need
both before ``helpers`` is installed (a badge that opens the notebook in Colab; a setup cell
that pip-installs the release the notebook was written for), so this script writes them
into them. ``--check`` changes nothing and exits 1 if a notebook is out of step
(a test runs it that way).

Usage: python tools/sync_notebooks.py [--check] [notebooks/*.ipynb]
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BADGE_PATTERN = re.compile(r"^\[!\[Open In Colab\]\(.*\)\]\(.*\)$", re.MULTILINE)
SETUP_MARKER = "# Setup: on Colab this installs the course package; elsewhere it does nothing."


def repository_url() -> str:
    """The repository address from pyproject.toml, without a trailing slash or .git."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["urls"]["Repository"].rstrip("/").removesuffix(".git")


def release_tag() -> str:
    """The git tag of the package version the notebooks are written for: ``v`` + pyproject's version."""
    return "v" + tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def badge(url: str, notebook: Path) -> str:
    """Markdown for the 'Open in Colab' badge of one notebook (branch main)."""
    github = url.removeprefix("https://github.com/")
    target = f"https://colab.research.google.com/github/{github}/blob/main/notebooks/{notebook.name}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({target})"


def setup_source(url: str, tag: str) -> str:
    """The setup cell: on Colab, optionally keep the data on Google Drive, then pip-install release ``tag``."""
    return "\n".join([
        SETUP_MARKER,
        "import os",
        "import subprocess",
        "import sys",
        "",
        f'REPOSITORY = "{url}"  # your fork? put its address here',
        f'VERSION = "{tag}"  # the release this notebook was written for: a tag, branch or commit',
        "KEEP_DATA_ON_DRIVE = False  # True: data and checkpoints on Google Drive, shared by every notebook",
        "",
        'if "google.colab" in sys.modules:',
        "    if KEEP_DATA_ON_DRIVE:  # each Colab notebook is its own machine; Drive outlives them",
        "        from google.colab import drive",
        "",
        '        drive.mount("/content/drive")',
        '        os.environ["FLOWERS_DATA_ROOT"] = "/content/drive/MyDrive/flowers-data"',
        '    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", f"git+{REPOSITORY}@{VERSION}"],',
        "                             capture_output=True, text=True)",
        "    if install.returncode != 0:",
        '        raise RuntimeError(f"Could not install the course package from {REPOSITORY} at {VERSION}:\\n"',
        '                           f"{install.stderr.strip()[-1500:]}\\n"',
        '                           "REPOSITORY must be a published copy of the course that has VERSION (a tag, "',
        '                           "branch or commit). For your fork, set REPOSITORY to its address and VERSION to "',
        '                           "one of its branches, then run this cell again.")',
    ])


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def synced(notebook: dict, path: Path, url: str) -> dict:
    """The notebook with its badge (top of the first cell) and setup cell (second cell) up to date."""
    cells = notebook["cells"]
    if not cells or cells[0]["cell_type"] != "markdown":
        raise ValueError(f"{path}: the first cell must be the markdown title cell.")
    first = "".join(cells[0]["source"])
    new_badge = badge(url, path)
    first = BADGE_PATTERN.sub(new_badge, first) if BADGE_PATTERN.search(first) else f"{new_badge}\n\n{first}"
    cells[0]["source"] = _lines(first)
    setup = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
             "source": _lines(setup_source(url, release_tag()))}
    existing = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and "".join(c["source"]).startswith(SETUP_MARKER)]
    if existing and "id" in cells[existing[0]]:
        setup["id"] = cells[existing[0]]["id"]
    elif notebook.get("nbformat_minor", 0) >= 5:
        setup["id"] = "setup"
    for index in reversed(existing):
        del cells[index]
    cells.insert(1, setup)
    return notebook


def synced_readme(text: str, url: str) -> str:
    """README with every Colab link, pip-install and clone address pointing at ``url``."""
    github = url.removeprefix("https://github.com/")
    text = re.sub(r"(colab\.research\.google\.com/github/)[\w.-]+/[\w.-]+(/blob/)", rf"\g<1>{github}\g<2>", text)
    text = re.sub(r"(git\+https://github\.com/)[\w.-]+/[\w.-]+?(?=[\s\"'`)@#]|\.git|$)", rf"\g<1>{github}", text)
    return re.sub(r"(git clone https://github\.com/)[\w.-]+/[\w.-]+?(?=[\s\"'`)]|\.git|$)", rf"\g<1>{github}", text)


def main(argv: list[str]) -> int:
    """Sync (or with --check, only compare) the notebooks and README; 1 if --check finds them out of step."""
    check = "--check" in argv
    paths = [Path(a) for a in argv if a != "--check"] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    url = repository_url()
    stale = []
    readme = ROOT / "README.md"
    if readme.exists() and not [a for a in argv if a != "--check"]:
        original = readme.read_text()
        updated = synced_readme(original, url)
        if updated != original:
            stale.append(readme)
            if not check:
                readme.write_text(updated)
    for path in paths:
        original = path.read_text()
        updated = json.dumps(synced(json.loads(original), path, url), indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        if updated != original:
            stale.append(path)
            if not check:
                path.write_text(updated)
    for path in stale:
        print(f"{'out of step' if check else 'updated'}: {path}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
