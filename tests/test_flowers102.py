"""helpers.data.prepare_flowers102 offline, on a small fake of torchvision's downloaded files.

The fake has the same structure as the real ``flowers-102/`` folder: ``jpg/image_00001.jpg``...,
``imagelabels.mat`` ('labels', 1-based) and ``setid.mat`` ('trnid', 'valid', 'tstid', 1-based ids).
"""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from helpers import flowers102
from helpers.data import make_loaders, prepare_flowers102
from helpers.flowers102 import PREPARED, PREPARING, SOURCE_FILES, SOURCE_URL, flower_names, split_image_ids
from helpers.network import OfflineError

CLASSES = 3
PER_CLASS = 10
LABELS = [image % CLASSES + 1 for image in range(CLASSES * PER_CLASS)]  # ids 1, 4, 7... are class 1


def official_split(labels: list[int]) -> dict[str, list[int]]:
    """Like the real setid.mat: per class, 2 train, 2 valid, the rest test."""
    split = {"trnid": [], "valid": [], "tstid": []}
    for label in sorted(set(labels)):
        ids = [i for i, lab in enumerate(labels, start=1) if lab == label]
        split["trnid"] += ids[:2]
        split["valid"] += ids[2:4]
        split["tstid"] += ids[4:]
    return split


def write_fake_source(download_dir: Path, labels: list[int] = LABELS, size: tuple[int, int] = (96, 64)) -> Path:
    flowers = download_dir / "flowers-102"
    (flowers / "jpg").mkdir(parents=True)
    for image_id, label in enumerate(labels, start=1):
        colour = (60 * label % 256, 255 - 40 * label % 256, (image_id * 7) % 256)
        Image.new("RGB", size, colour).save(flowers / "jpg" / f"image_{image_id:05d}.jpg", quality=90)
    savemat(flowers / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    savemat(flowers / "setid.mat", {key: np.array([ids], dtype=np.uint16) for key, ids in official_split(labels).items()})
    return flowers


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``root`` with its size and modification time (ns)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


def ids_in(root: Path, split: str) -> dict[str, list[int]]:
    """Class folder -> image ids found in ``root/split``."""
    return {folder.name: sorted(int(f.stem.split("_")[1]) for f in folder.iterdir())
            for folder in sorted((root / split).iterdir())}


@pytest.fixture
def source(tmp_path) -> Path:
    """The folder that holds ``flowers-102/`` (what torchvision calls root, ours download_dir)."""
    write_fake_source(tmp_path / "downloads")
    return tmp_path / "downloads"


# --- preparing from files on disk, without network ------------------------------------------

def test_official_split(tmp_path, source, no_network):
    root = prepare_flowers102(tmp_path / "official", split="official", download_dir=source)
    assert root == tmp_path / "official"
    expected = official_split(LABELS)
    for split, key in (("train", "trnid"), ("valid", "valid"), ("test", "tstid")):
        found = ids_in(root, split)
        assert sorted(found) == ["1", "2", "3"]
        assert sorted(i for ids in found.values() for i in ids) == sorted(expected[key])
        for folder, ids in found.items():
            assert all(LABELS[i - 1] == int(folder) for i in ids)  # each image in its label's folder
    copied = root / "train" / "1" / "image_00001.jpg"
    assert copied.read_bytes() == (source / "flowers-102" / "jpg" / "image_00001.jpg").read_bytes()
    assert (root / PREPARED).exists() and not (root / PREPARING).exists()
    assert no_network == []
    assert make_loaders(root, batch_size=4, num_workers=0, image_size=32, device="cpu")["train"].dataset.classes \
        == ["1", "2", "3"]


def test_cat_to_name_keys_are_the_folders(tmp_path, source):
    root = prepare_flowers102(tmp_path / "p", download_dir=source)
    names = json.loads((root / "cat_to_name.json").read_text())
    assert names == {"1": "pink primrose", "2": "hard-leaved pocket orchid", "3": "canterbury bells"}


def test_default_download_folder_is_inside_root(tmp_path):
    write_fake_source(tmp_path / "root" / "downloads")
    root = prepare_flowers102(tmp_path / "root")
    assert sum(len(ids) for ids in ids_in(root, "test").values()) == CLASSES * (PER_CLASS - 4)


def test_classic_split_is_stratified_and_covers_every_image_once(tmp_path, source):
    root = prepare_flowers102(tmp_path / "classic", split="classic", download_dir=source)
    seen = []
    for split, per_class in (("train", 8), ("valid", 1), ("test", 1)):
        found = ids_in(root, split)
        assert sorted(found) == ["1", "2", "3"]  # every class in every split
        assert all(len(ids) == per_class for ids in found.values())
        seen += [i for ids in found.values() for i in ids]
    assert sorted(seen) == list(range(1, CLASSES * PER_CLASS + 1))


def test_classic_split_is_seeded(tmp_path, source):
    first = prepare_flowers102(tmp_path / "a", split="classic", download_dir=source, seed=0)
    again = prepare_flowers102(tmp_path / "b", split="classic", download_dir=source, seed=0)
    other = prepare_flowers102(tmp_path / "c", split="classic", download_dir=source, seed=1)
    assert ids_in(first, "valid") == ids_in(again, "valid")
    assert ids_in(first, "valid") != ids_in(other, "valid")


def test_split_image_ids_on_realistic_class_sizes():
    sizes = [40 + (7 * label) % 219 for label in range(102)]  # 40..258 images per class, like Flowers102
    labels = [label + 1 for label, size in enumerate(sizes) for _ in range(size)]
    ids = split_image_ids(labels, {}, "classic", seed=0)
    assert sorted(ids["train"] + ids["valid"] + ids["test"]) == list(range(1, len(labels) + 1))
    fractions = [len(ids[s]) / len(labels) for s in ("train", "valid", "test")]
    assert fractions == pytest.approx([0.8, 0.1, 0.1], abs=0.01)
    for split in ("train", "valid", "test"):
        assert set(Counter(labels[i - 1] for i in ids[split])) == set(range(1, 103))
    official = {"train": [1], "valid": [2], "test": [3]}
    assert split_image_ids(labels, official, "official") == official
    with pytest.raises(ValueError, match="classic"):
        split_image_ids(labels, official, "random")


def test_resize_to_shrinks_the_shorter_side(tmp_path, source):
    root = prepare_flowers102(tmp_path / "small", resize_to=32, download_dir=source)
    for path in root.rglob("*.jpg"):
        with Image.open(path) as image:
            assert image.size == (48, 32)  # 96 x 64 -> shorter side 32, aspect ratio kept


def test_resize_to_never_enlarges(tmp_path, source):
    root = prepare_flowers102(tmp_path / "big", resize_to=256, download_dir=source)
    with Image.open(next(root.rglob("*.jpg"))) as image:
        assert image.size == (96, 64)


def test_flower_names():
    names = flower_names()
    assert len(names) == 102 and names[0] == "pink primrose" and names[-1] == "blackberry lily"


@pytest.mark.parametrize("kwargs, word", [({"split": "random"}, "split"), ({"resize_to": 16}, "resize_to")])
def test_bad_arguments(tmp_path, source, kwargs, word):
    with pytest.raises(ValueError, match=word):
        prepare_flowers102(tmp_path / "p", download_dir=source, **kwargs)
    assert not (tmp_path / "p").exists()


# --- idempotent, interrupted, refused -------------------------------------------------------

def test_second_call_checks_and_returns_without_rewriting(tmp_path, source, monkeypatch):
    root = prepare_flowers102(tmp_path / "p", split="classic", resize_to=48, download_dir=source)
    before = tree(root)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the second call must not prepare again")

    monkeypatch.setattr(flowers102, "download_flowers102", must_not_run)
    monkeypatch.setattr(flowers102, "copy_image", must_not_run)
    assert prepare_flowers102(tmp_path / "p", split="classic", resize_to=48, download_dir=source) == root
    assert tree(root) == before


def test_a_deleted_image_is_noticed_and_the_folder_redone(tmp_path, source):
    root = prepare_flowers102(tmp_path / "p", download_dir=source)
    victim = root / "test" / "2" / "image_00029.jpg"
    assert victim.exists()
    victim.unlink()
    prepare_flowers102(tmp_path / "p", download_dir=source)
    assert victim.exists()


def test_an_interrupted_preparation_is_redone(tmp_path, source):
    root = prepare_flowers102(tmp_path / "p", split="official", download_dir=source)
    complete = {name for name in tree(root) if not name.startswith(".")}
    # Simulate a run killed half-way: the marker is there, files are missing, one is half written.
    (root / PREPARING).write_text("interrupted")
    (root / PREPARED).unlink()
    for path in list((root / "test").rglob("*.jpg"))[:5]:
        path.unlink()
    (root / "train" / "1" / "image_00001.jpg").write_bytes(b"\xff\xd8 half")
    prepare_flowers102(tmp_path / "p", split="official", download_dir=source)
    assert {name for name in tree(root) if not name.startswith(".")} == complete
    assert (root / "train" / "1" / "image_00001.jpg").read_bytes() == \
        (source / "flowers-102" / "jpg" / "image_00001.jpg").read_bytes()
    assert (root / PREPARED).exists() and not (root / PREPARING).exists()


def test_an_interrupted_preparation_is_redone_even_if_the_counts_look_right(tmp_path, source):
    root = prepare_flowers102(tmp_path / "p", download_dir=source)
    (root / PREPARING).write_text("interrupted")
    (root / "train" / "1" / "image_00001.jpg").write_bytes(b"\xff\xd8 half")  # same count, broken file
    prepare_flowers102(tmp_path / "p", download_dir=source)
    assert (root / "train" / "1" / "image_00001.jpg").stat().st_size > 100
    assert not (root / PREPARING).exists()


def test_another_recipe_in_the_same_folder_is_refused_and_nothing_deleted(tmp_path, source):
    root = prepare_flowers102(tmp_path / "p", split="official", download_dir=source)
    before = tree(root)
    with pytest.raises(FileExistsError) as error:
        prepare_flowers102(tmp_path / "p", split="classic", download_dir=source)
    assert "classic" in str(error.value) and "nothing was changed" in str(error.value)
    with pytest.raises(FileExistsError):
        prepare_flowers102(tmp_path / "p", split="official", resize_to=48, download_dir=source)
    assert tree(root) == before


def test_foreign_train_folders_are_refused(tmp_path, source):
    mine = tmp_path / "mine"
    (mine / "train" / "roses").mkdir(parents=True)
    (mine / "train" / "roses" / "rose.jpg").write_bytes(b"my photo")
    (mine / "valid").mkdir()
    with pytest.raises(FileExistsError, match="did not write"):
        prepare_flowers102(mine, download_dir=source)
    assert (mine / "train" / "roses" / "rose.jpg").read_bytes() == b"my photo"
    assert sorted(p.name for p in mine.iterdir()) == ["train", "valid"]


# --- the source files: half extracted, missing, offline ------------------------------------

def test_a_half_extracted_archive_is_detected_and_extracted_again(tmp_path, source, no_network, monkeypatch):
    flowers = source / "flowers-102"
    with tarfile.open(flowers / SOURCE_FILES[0], "w:gz") as archive:  # the archive copied in by hand
        archive.add(flowers / "jpg", arcname="jpg")
    for path in sorted((flowers / "jpg").iterdir())[10:]:
        path.unlink()  # extraction stopped part-way
    assert not flowers102._source_is_complete(flowers)
    # Our fake archive cannot have the real MD5 sum; let torchvision accept the files on disk.
    monkeypatch.setattr("torchvision.datasets.utils.check_md5", lambda *args, **kwargs: True)
    root = prepare_flowers102(tmp_path / "p", download_dir=source)
    assert len(list((flowers / "jpg").iterdir())) == CLASSES * PER_CLASS
    assert sum(len(ids) for split in ("train", "valid", "test") for ids in ids_in(root, split).values()) == 30
    assert no_network == []


def test_a_half_extracted_archive_without_the_archive_is_not_trusted(tmp_path, source, no_network, hang_guard):
    for path in sorted((source / "flowers-102" / "jpg").iterdir())[10:]:
        path.unlink()
    with hang_guard(30), pytest.raises(OfflineError):
        prepare_flowers102(tmp_path / "p", download_dir=source)
    assert not (tmp_path / "p" / "train").exists()


def test_no_files_and_no_network_fails_fast_with_instructions(tmp_path, no_network, hang_guard):
    with hang_guard(30), pytest.raises(OfflineError) as error:
        prepare_flowers102(tmp_path / "p", split="classic")
    message = str(error.value)
    for name in SOURCE_FILES:
        assert f"{SOURCE_URL}{name}" in message  # what to download
    assert str(tmp_path / "p" / "downloads" / "flowers-102") in message  # where to put it
    assert "FLOWERS_TINY=1" in message and "make_tiny_flowers" in message  # the offline alternative
    assert no_network  # it checked once and gave up
    assert not (tmp_path / "p" / "train").exists()
