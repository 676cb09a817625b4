"""Every notebook on a learner's own photos: ``FLOWERS_DATASET_DIR`` set to a folder of class folders
whose names have spaces and non-ASCII letters, and no ``cat_to_name.json``. The folder names are
then the class names. Random weights, offline, as in CI."""

from __future__ import annotations

import random
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from helpers.download import TINY_CLASSES, draw_flower

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CLASSES = {"Löwenzahn": TINY_CLASSES[1], "sun flower": TINY_CLASSES[0], "wild rose": TINY_CLASSES[4]}


@pytest.fixture(scope="module")
def own_photos(tmp_path_factory) -> Path:
    """Three classes of drawn 'photos', 8 / 3 / 3 a class, in the layout a learner would make."""
    root = tmp_path_factory.mktemp("own") / "my flowers"
    rng = random.Random(0)
    for split, count in (("train", 8), ("valid", 3), ("test", 3)):
        for folder, kind in CLASSES.items():
            (root / split / folder).mkdir(parents=True)
            for index in range(count):
                draw_flower(kind, rng, 96).save(root / split / folder / f"photo {index}.jpg")
    return root


@pytest.mark.parametrize("name", sorted(path.stem for path in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")))
def test_notebook_runs_on_own_photos_without_a_names_file(name, own_photos, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWERS_DATASET_DIR", str(own_photos))
    monkeypatch.setenv("FLOWERS_DATA_ROOT", str(tmp_path / "data"))  # checkpoints and caches
    monkeypatch.setenv("FLOWERS_TINY", "1")  # random weights: nothing to download
    monkeypatch.setenv("FLOWERS_DEVICE", "cpu")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    printed = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.outputs)
    assert "your own folder (FLOWERS_DATASET_DIR)" in printed
    assert not (own_photos / "cat_to_name.json").exists()
    if name.startswith(("00", "02")):
        assert "Löwenzahn" in printed  # a folder name shown as the class name
