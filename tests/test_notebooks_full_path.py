"""The notebooks' full-data path (pretrained weights, Flowers102 prepared), run offline.

CI runs every notebook on the tiny slice. This test runs the quickstart notebook the way
Colab does (``FLOWERS_TINY`` unset: classic split prepared from the original files,
pretrained weights from torch's cache) on stand-ins placed where the real files would
be: a small fake ``flowers-102/`` download and a weight file in a temporary TORCH_HOME.
Nothing is downloaded; a network attempt would fail the run, since the machine is offline
and the files are there.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from test_download import write_fake_source

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture
def full_data_environment(tmp_path, monkeypatch, fake_imagenet_weights):
    """Settings for the full-data path, with the original files and weights already on disk."""
    labels = [label for label in range(1, 5) for _ in range(10)]  # 4 classes, 10 photos each
    write_fake_source(tmp_path / "data" / "downloads", labels=labels, size=(300, 240))
    fake_imagenet_weights("resnet18")  # also sets TORCH_HOME for this test
    monkeypatch.delenv("FLOWERS_TINY", raising=False)
    monkeypatch.setenv("FLOWERS_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("FLOWERS_DEVICE", "cpu")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path / "data"


def test_quickstart_runs_on_prepared_flowers102_with_pretrained_weights(full_data_environment):
    notebook = nbformat.read(NOTEBOOKS / "00_quickstart.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    printed = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.outputs)
    assert "Flowers102, classic split" in printed and "pretrained (ImageNet)" in printed
    assert (full_data_environment / "flowers102-classic-256" / "cat_to_name.json").exists()
    assert "with a head for 4 classes" in printed
