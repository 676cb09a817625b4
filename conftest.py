"""Give nbval the expected outputs of cells tagged ``nbval-check-output`` from a side file.

Notebooks are committed without outputs (clean diffs, and learners on Colab never see
stale tiny-slice numbers). The outputs that must stay the same on the tiny slice live in
``notebooks/expected_outputs.json`` (written by ``tools/record_expected_outputs.py``);
this hook puts them into the collected cells so that nbval compares against them.
"""

from __future__ import annotations

import json
from pathlib import Path


EXPECTED = Path(__file__).parent / "notebooks" / "expected_outputs.json"
TAG = "nbval-check-output"  # a cell tag, which nbval reads from the cell's metadata


def pytest_collection_modifyitems(session, config, items) -> None:
    """Attach the recorded outputs to every checked notebook cell."""
    if not EXPECTED.exists():
        return
    expected = json.loads(EXPECTED.read_text())
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is None or TAG not in cell.get("metadata", {}).get("tags", []):
            continue
        recorded = expected.get(Path(str(item.fspath)).name, {}).get(cell.get("id"))
        if recorded is not None:
            import nbformat  # only when notebooks are collected: runs without the notebook tools still work

            cell.outputs = [nbformat.from_dict(output) for output in recorded]
            cell.execution_count = 1
