"""A prepared dataset folder: the marker that says what was written there, and one preparation at a time.

``helpers.download`` writes Flowers102 and the tiny slice as ``root/{train,valid,test}/...``. The marker
``root/.prepared.json`` records the recipe, whether it finished and each split's file count. A lock beside it
lets two notebooks opened together share one preparation: the second waits, then reuses the result.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Iterator

from helpers.config import SPLITS

try:
    import fcntl  # Linux and macOS
except ImportError:  # Windows
    fcntl = None

MARKER = ".prepared.json"
LOCK = ".preparing.lock"
LOCK_TIMEOUT = 1800.0  # seconds to wait for another preparation: Flowers102 takes minutes, not half an hour


@contextlib.contextmanager
def preparation_lock(root: Path) -> Iterator[None]:
    """Hold a lock on ``root`` while preparing it; wait while another process holds it.

    The operating system releases the lock (``fcntl.flock`` on :func:`lock_path`, beside ``root`` so
    that a folder we refuse to touch stays untouched) when its process ends, even by a crash. Past
    :data:`LOCK_TIMEOUT` seconds a ``TimeoutError`` names the folder. Windows has no ``fcntl``: no lock there.
    """
    lock_file = lock_path(root)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + LOCK_TIMEOUT
    with open(lock_file, "a") as lock:
        while fcntl is not None:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    busy = f"Another process has been preparing {root} for over {LOCK_TIMEOUT:.0f} s."
                    raise TimeoutError(f"{busy} Let it finish (or stop it), then run this again.") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)


def lock_path(root: Path) -> Path:
    """The lock file of ``root``'s preparation: ``.<name>.preparing.lock`` in its parent folder."""
    return root.parent / f".{root.name}{LOCK}"


def count_files(root: Path) -> dict[str, int]:
    """Files per split, dot-files and dot-folders (a file browser's .DS_Store, say) not counted."""
    return {split: sum(1 for path in (root / split).rglob("[!.]*") if path.is_file()
                       and not any(part.startswith(".") for part in path.relative_to(root).parts))
            for split in SPLITS}


def is_done(root: Path, recipe: dict, replace_other_recipe: bool) -> bool:
    """True if ``root`` holds this recipe, complete; False if it must be (re)written; raises if not ours.

    A complete folder of the same recipe is never rewritten: files a learner added or removed stay
    as they are (a tiny slice of another recipe is replaced: ``replace_other_recipe``).
    """
    marker = root / MARKER
    if not marker.exists():
        if any((root / split).exists() for split in SPLITS):
            raise FileExistsError(f"{root} already has train/valid/test folders that helpers did not write. "
                                  "Use it with make_loaders, or pick an empty folder (nothing was changed).")
        return False
    try:
        done = json.loads(marker.read_text())
    except ValueError:
        raise FileExistsError(f"{marker} is damaged (not JSON). Delete {root} and prepare again.") from None
    if done.get("recipe") != recipe and done.get("complete") and not replace_other_recipe:
        raise FileExistsError(f"{root} already holds data made with {done.get('recipe')}; you asked for "
                              f"{recipe}. Use another folder for this variant (nothing was changed).")
    if done.get("recipe") != recipe or done.get("complete") is not True:
        return False  # another recipe, or our own preparation was interrupted: redo it
    counts, prepared = count_files(root), done.get("counts") or {}
    if counts != prepared:  # the learner added or removed files: theirs to keep
        changes = ", ".join(f"{split} {counts[split] - prepared.get(split, 0):+d}" for split in SPLITS
                            if counts[split] != prepared.get(split, 0))
        warnings.warn(f"{root} holds other files than were prepared ({changes}); it is used as it is. "
                      "Delete the folder to prepare it afresh.", stacklevel=3)
    return True


def write_marker(root: Path, recipe: dict, complete: bool) -> None:
    """Record ``recipe`` in ``root``'s marker: unfinished, or complete with its file counts."""
    marker = {"recipe": recipe, "complete": complete, "counts": count_files(root) if complete else None}
    (root / MARKER).write_text(json.dumps(marker, indent=1))


def start_writing(root: Path, recipe: dict) -> None:
    """Mark ``root`` as ours and unfinished, then clear the split folders an earlier run left."""
    root.mkdir(parents=True, exist_ok=True)
    write_marker(root, recipe, complete=False)
    for split in SPLITS:
        shutil.rmtree(root / split, ignore_errors=True)
