"""Strip outputs, execution counts and run metadata from notebooks, in place.

Usage: python tools/clean_notebooks.py notebooks/*.ipynb
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def clean(path: Path) -> bool:
    """Clean one notebook; True if the file changed."""
    original = path.read_text()
    notebook = json.loads(original)
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cell.get("metadata", {}).pop("execution", None)
    cleaned = json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if cleaned != original:
        path.write_text(cleaned)
        return True
    return False


if __name__ == "__main__":
    for name in sys.argv[1:]:
        if clean(Path(name)):
            print(f"cleaned {name}")
