"""Record the outputs of cells tagged ``nbval-check-output``, run on the tiny slice, for nbval.

Run after changing such a cell (``make test`` then compares against the recording):

    FLOWERS_TINY=1 FLOWERS_DATA_ROOT=data .venv/bin/python tools/record_expected_outputs.py [notebooks/NN_x.ipynb ...]

The notebooks themselves stay without outputs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = ROOT / "notebooks" / "expected_outputs.json"
TAG = "nbval-check-output"
KEEP = ("output_type", "name", "text", "data")


def recorded_outputs(path: Path) -> dict[str, list]:
    """Execute one notebook in its folder and return {cell id: outputs} for the checked cells."""
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    result = {}
    for cell in notebook.cells:
        if cell.cell_type == "code" and TAG in cell.metadata.get("tags", []):
            outputs = []
            for output in cell.outputs:
                kept = {key: output[key] for key in KEEP if key in output}
                if "data" in kept:
                    kept["data"] = {k: v for k, v in kept["data"].items() if k == "text/plain"}
                kept.setdefault("metadata", {}) if output["output_type"] in ("display_data", "execute_result") else None
                if output["output_type"] == "execute_result":
                    kept["execution_count"] = 1
                previous = outputs[-1] if outputs else {}
                if kept["output_type"] == "stream" and previous.get("output_type") == "stream" \
                        and previous.get("name") == kept.get("name"):
                    previous["text"] += kept["text"]  # one stream, however the kernel happened to chunk it
                    continue
                outputs.append(kept)
            result[cell.id] = outputs
    return result


def main(argv: list[str]) -> int:
    """Record the given notebooks (default: all) into expected_outputs.json; 2 without FLOWERS_TINY=1."""
    if os.environ.get("FLOWERS_TINY") != "1":
        print("Set FLOWERS_TINY=1: the recorded outputs are those of the tiny slice.", file=sys.stderr)
        return 2
    if os.environ.get("FLOWERS_DATA_ROOT"):  # the notebooks run in notebooks/: make a relative root absolute
        os.environ["FLOWERS_DATA_ROOT"] = str(Path(os.environ["FLOWERS_DATA_ROOT"]).resolve())
    paths = [Path(a).resolve() for a in argv] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    recorded = {path.name: recorded_outputs(path) for path in paths}
    # Read the file only now, after the slow runs, so recordings of other notebooks made meanwhile survive.
    expected = json.loads(EXPECTED.read_text()) if EXPECTED.exists() else {}
    for name, outputs in recorded.items():
        expected[name] = outputs
        print(f"{name}: {len(outputs)} checked cells recorded")
    EXPECTED.write_text(json.dumps(dict(sorted(expected.items())), indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
