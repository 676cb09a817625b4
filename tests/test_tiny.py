"""helpers.data.make_tiny_flowers: layout, determinism, idempotence, interrupted runs, refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from helpers.data import make_tiny_flowers
from helpers.tiny import MARKER, TINY_CLASSES

FAST = {"image_size": 64, "images_per_split": (4, 2, 2)}


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below ``root``: its bytes and modification time (ns)."""
    return {str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(root.rglob("*")) if path.is_file()}


def image_files(root: Path) -> dict[str, bytes]:
    return {name: data for name, (data, _) in snapshot(root).items() if name.endswith(".jpg")}


def test_layout_of_the_default_slice(tmp_path):
    root = make_tiny_flowers(tmp_path / "tiny")
    assert root == tmp_path / "tiny"
    for split, count in zip(("train", "valid", "test"), (8, 3, 3)):
        folders = sorted(p.name for p in (root / split).iterdir())
        assert folders == sorted(["1", "2", "10", "11", "21", "100"])
        for folder in folders:
            files = sorted((root / split / folder).iterdir())
            assert len(files) == count
            with Image.open(files[0]) as image:
                assert image.format == "JPEG" and image.mode == "RGB" and image.size == (256, 256)
    names = json.loads((root / "cat_to_name.json").read_text())
    assert names == {kind.folder: kind.name for kind in TINY_CLASSES[:6]}
    assert json.loads((root / MARKER).read_text())["complete"] is True


def test_options_change_classes_counts_and_size(tmp_path):
    root = make_tiny_flowers(tmp_path, num_classes=3, images_per_split=(2, 1, 1), image_size=40)
    assert sorted(p.name for p in (root / "train").iterdir()) == ["1", "10", "2"]
    assert len(list((root / "valid" / "10").iterdir())) == 1
    with Image.open(root / "train" / "1" / "train_000.jpg") as image:
        assert image.size == (40, 40)


def test_same_seed_gives_the_same_bytes(tmp_path):
    first = image_files(make_tiny_flowers(tmp_path / "a", **FAST, seed=3))
    second = image_files(make_tiny_flowers(tmp_path / "b", **FAST, seed=3))
    assert len(first) == 6 * 8
    assert first == second


def test_another_seed_gives_other_images(tmp_path):
    first = image_files(make_tiny_flowers(tmp_path / "a", **FAST, seed=0))
    other = image_files(make_tiny_flowers(tmp_path / "b", **FAST, seed=1))
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first)


def test_images_differ_within_a_class(tiny_root):
    files = sorted((tiny_root / "train" / "1").iterdir())
    assert len({path.read_bytes() for path in files}) == len(files)


def test_second_call_returns_without_rewriting(tmp_path):
    root = make_tiny_flowers(tmp_path / "tiny", **FAST)
    before = snapshot(root)
    assert make_tiny_flowers(tmp_path / "tiny", **FAST) == root
    assert snapshot(root) == before


def test_another_recipe_in_its_own_folder_is_regenerated(tmp_path):
    root = make_tiny_flowers(tmp_path / "tiny", **FAST)
    make_tiny_flowers(root, num_classes=2, image_size=64, images_per_split=(1, 1, 1))
    assert sorted(p.name for p in (root / "train").iterdir()) == ["1", "2"]
    assert sum(1 for _ in root.rglob("*.jpg")) == 2 * 3


def test_refuses_a_folder_with_foreign_data(tmp_path):
    mine = tmp_path / "mine" / "train" / "roses"
    mine.mkdir(parents=True)
    (mine / "rose.jpg").write_bytes(b"my own photo")
    with pytest.raises(FileExistsError, match="mine"):
        make_tiny_flowers(tmp_path / "mine", **FAST)
    assert (mine / "rose.jpg").read_bytes() == b"my own photo"
    assert not (tmp_path / "mine" / MARKER).exists()


def test_an_interrupted_run_is_redone(tmp_path):
    reference = image_files(make_tiny_flowers(tmp_path / "reference", **FAST))
    root = make_tiny_flowers(tmp_path / "tiny", **FAST)
    # Simulate a run that died half-way: marker says incomplete, some files missing, one half-written.
    marker = json.loads((root / MARKER).read_text())
    (root / MARKER).write_text(json.dumps({**marker, "complete": False}))
    for path in sorted((root / "test").rglob("*.jpg")):
        path.unlink()
    half = root / "train" / "1" / "train_000.jpg"
    half.write_bytes(half.read_bytes()[:100])
    make_tiny_flowers(root, **FAST)
    assert image_files(root) == reference
    assert json.loads((root / MARKER).read_text())["complete"] is True


def test_files_deleted_after_a_complete_run_are_regenerated(tmp_path):
    root = make_tiny_flowers(tmp_path / "tiny", **FAST)
    reference = image_files(root)
    os.remove(root / "valid" / "2" / "valid_000.jpg")
    make_tiny_flowers(root, **FAST)
    assert image_files(root) == reference


@pytest.mark.parametrize("kwargs, word", [
    ({"num_classes": 1}, "num_classes"),
    ({"num_classes": len(TINY_CLASSES) + 1}, "num_classes"),
    ({"images_per_split": (2, 0, 1)}, "images_per_split"),
    ({"images_per_split": (2, 1)}, "images_per_split"),
    ({"image_size": 16}, "image_size"),
])
def test_bad_arguments(tmp_path, kwargs, word):
    with pytest.raises(ValueError, match=word):
        make_tiny_flowers(tmp_path / "tiny", **kwargs)
    assert not (tmp_path / "tiny").exists()
