"""helpers.download: the tiny slice, Flowers102 from files on disk (no network), the offline check.

The Flowers102 tests use a small fake of torchvision's downloaded files, with the same structure
as the real ``flowers-102/`` folder: ``jpg/image_00001.jpg``..., ``imagelabels.mat`` ('labels',
1-based) and ``setid.mat`` ('trnid', 'valid', 'tstid', 1-based ids).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from helpers import download, prepared
from helpers.config import get_settings
from helpers.data import check_layout, make_loaders
from helpers.download import (SOURCE_FILES, SOURCE_URL, TINY_CLASSES, OfflineError, can_reach,
                              ensure_dataset, make_tiny_flowers, prepare_flowers102, split_image_ids)
from helpers.prepared import MARKER, lock_path, preparation_lock

FAST = {"image_size": 64, "images_per_split": (4, 2, 2)}
TEXT_ORDER = ["1", "10", "100", "11", "2", "21"]


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below ``root``: its bytes and modification time (ns)."""
    return {str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(root.rglob("*")) if path.is_file()}


def image_files(root: Path) -> dict[str, bytes]:
    return {name: data for name, (data, _) in snapshot(root).items() if name.endswith(".jpg")}


def marker_of(root: Path) -> dict:
    return json.loads((root / MARKER).read_text())


# ============================================================================ the tiny slice

def test_layout_of_the_default_slice(tmp_path):
    root = make_tiny_flowers(tmp_path / "tiny")
    assert root == tmp_path / "tiny"
    for split, count in zip(("train", "valid", "test"), (24, 6, 6)):
        folders = sorted(p.name for p in (root / split).iterdir())
        assert folders == sorted(TEXT_ORDER)
        for folder in folders:
            files = sorted((root / split / folder).iterdir())
            assert len(files) == count
            with Image.open(files[0]) as image:
                assert image.format == "JPEG" and image.mode == "RGB" and image.size == (256, 256)
    names = json.loads((root / "cat_to_name.json").read_text())
    assert names == {kind[0]: kind[1] for kind in TINY_CLASSES[:6]}
    assert marker_of(root)["complete"] is True
    assert check_layout(root) == TEXT_ORDER


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


def test_classes_differ_in_colour(tiny_root):
    """Drawn so that even a random backbone can tell them apart: the mean colours of two classes differ."""
    def mean_colour(folder: str) -> np.ndarray:
        return np.mean([np.asarray(Image.open(p)).reshape(-1, 3).mean(0) for p in (tiny_root / "train" / folder).iterdir()],
                       axis=0)
    assert np.abs(mean_colour("1") - mean_colour("10")).max() > 20  # red petals versus blue petals


def test_second_call_returns_without_rewriting(tmp_path):
    root = make_tiny_flowers(tmp_path / "tiny", **FAST)
    before = snapshot(root)
    assert make_tiny_flowers(tmp_path / "tiny", **FAST) == root
    assert snapshot(root) == before


def test_a_file_browsers_dot_file_does_not_trigger_a_rewrite(tmp_path):
    root = make_tiny_flowers(tmp_path / "tiny", **FAST)
    (root / "train" / "1" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    before = snapshot(root)
    make_tiny_flowers(root, **FAST)
    assert snapshot(root) == before


def test_another_recipe_in_its_own_folder_is_regenerated(tmp_path):
    root = make_tiny_flowers(tmp_path / "tiny", **FAST)
    make_tiny_flowers(root, num_classes=2, image_size=64, images_per_split=(1, 1, 1))
    assert sorted(p.name for p in (root / "train").iterdir()) == ["1", "2"]
    assert sum(1 for _ in root.rglob("*.jpg")) == 2 * 3
    assert json.loads((root / "cat_to_name.json").read_text()).keys() == {"1", "2"}


def test_refuses_a_folder_with_foreign_data(tmp_path):
    mine = tmp_path / "mine" / "train" / "roses"
    mine.mkdir(parents=True)
    (mine / "rose.jpg").write_bytes(b"my own photo")
    with pytest.raises(FileExistsError, match="mine"):
        make_tiny_flowers(tmp_path / "mine", **FAST)
    assert (mine / "rose.jpg").read_bytes() == b"my own photo"
    assert not (tmp_path / "mine" / MARKER).exists()


def test_a_damaged_marker_is_refused_and_nothing_deleted(tmp_path):
    root = make_tiny_flowers(tmp_path / "tiny", **FAST)
    (root / MARKER).write_text("{half written")
    before = snapshot(root)
    with pytest.raises(FileExistsError, match=MARKER):
        make_tiny_flowers(root, **FAST)
    assert snapshot(root) == before


def test_an_interrupted_run_is_redone(tmp_path):
    reference = image_files(make_tiny_flowers(tmp_path / "reference", **FAST))
    root = make_tiny_flowers(tmp_path / "tiny", **FAST)
    # Simulate a run that died half-way: marker says incomplete, some files missing, one half-written.
    (root / MARKER).write_text(json.dumps({**marker_of(root), "complete": False}))
    for path in sorted((root / "test").rglob("*.jpg")):
        path.unlink()
    half = root / "train" / "1" / "train_000.jpg"
    half.write_bytes(half.read_bytes()[:100])
    make_tiny_flowers(root, **FAST)
    assert image_files(root) == reference
    assert marker_of(root)["complete"] is True


def test_an_interrupted_run_is_redone_even_if_the_counts_look_right(tmp_path):
    reference = image_files(make_tiny_flowers(tmp_path / "reference", **FAST))
    root = make_tiny_flowers(tmp_path / "tiny", **FAST)
    (root / MARKER).write_text(json.dumps({**marker_of(root), "complete": False}))
    half = root / "train" / "1" / "train_000.jpg"
    half.write_bytes(half.read_bytes()[:100])  # same number of files, one broken
    make_tiny_flowers(root, **FAST)
    assert image_files(root) == reference


def test_a_photo_added_to_a_complete_slice_is_kept_and_the_difference_reported(tmp_path):
    root = make_tiny_flowers(tmp_path / "tiny", **FAST)
    before = snapshot(root)
    mine = root / "train" / "1" / "my photo.jpg"
    shutil.copyfile(root / "train" / "1" / "train_000.jpg", mine)
    with pytest.warns(UserWarning, match=r"other files than were prepared \(train \+1\)"):
        make_tiny_flowers(root, **FAST)
    assert mine.exists() and {k: v for k, v in snapshot(root).items() if "my photo" not in k} == before


@pytest.mark.parametrize("kwargs, word", [
    ({"num_classes": 1}, "num_classes"),
    ({"num_classes": len(TINY_CLASSES) + 1}, "num_classes"),
    ({"images_per_split": (2, 0, 1)}, "images_per_split"),
    ({"images_per_split": (2, 1)}, "images_per_split"),
    ({"image_size": 16}, "image_size"),
])
def test_tiny_bad_arguments(tmp_path, kwargs, word):
    with pytest.raises(ValueError, match=word):
        make_tiny_flowers(tmp_path / "tiny", **kwargs)
    assert not (tmp_path / "tiny").exists()


# ============================================================================ Flowers102

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


# --- preparing from files on disk, without network ----------------------------------------------

def test_official_split_from_files_on_disk_offline(tmp_path, source, no_network):
    root = prepare_flowers102(tmp_path / "official", split="official", resize_to=None, download_dir=source)
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
    assert marker_of(root)["complete"] is True
    assert no_network == []
    assert make_loaders(root, batch_size=4, num_workers=0)["train"].dataset.classes == ["1", "2", "3"]


def test_cat_to_name_keys_are_the_folders(tmp_path, source):
    root = prepare_flowers102(tmp_path / "p", download_dir=source)
    names = json.loads((root / "cat_to_name.json").read_text())
    assert names == {"1": "pink primrose", "2": "hard-leaved pocket orchid", "3": "canterbury bells"}


def test_default_download_folder_is_inside_root(tmp_path):
    write_fake_source(tmp_path / "root" / "downloads")
    root = prepare_flowers102(tmp_path / "root", split="official")
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
    with pytest.raises(ValueError, match="random"):
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


@pytest.mark.parametrize("kwargs, word", [({"split": "random"}, "split"), ({"resize_to": 16}, "resize_to")])
def test_flowers_bad_arguments(tmp_path, source, kwargs, word):
    with pytest.raises(ValueError, match=word):
        prepare_flowers102(tmp_path / "p", download_dir=source, **kwargs)
    assert not (tmp_path / "p").exists()


# --- idempotent, interrupted, refused -----------------------------------------------------------

def test_second_call_checks_and_returns_without_rewriting(tmp_path, source, monkeypatch):
    root = prepare_flowers102(tmp_path / "p", split="classic", resize_to=48, download_dir=source)
    before = tree(root)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the second call must not prepare again")

    monkeypatch.setattr(download, "download_flowers102", must_not_run)
    monkeypatch.setattr(download, "copy_image", must_not_run)
    assert prepare_flowers102(tmp_path / "p", split="classic", resize_to=48, download_dir=source) == root
    assert tree(root) == before


def test_a_deleted_image_is_reported_and_nothing_rewritten(tmp_path, source):
    root = prepare_flowers102(tmp_path / "p", download_dir=source)
    victim = next((root / "test" / "2").iterdir())
    victim.unlink()
    before = snapshot(root)
    with pytest.warns(UserWarning, match=r"\(test -1\).*Delete the folder"):
        prepare_flowers102(tmp_path / "p", download_dir=source)
    assert not victim.exists() and snapshot(root) == before


def test_an_interrupted_preparation_is_redone(tmp_path, source):
    root = prepare_flowers102(tmp_path / "p", split="official", resize_to=None, download_dir=source)
    complete = {name for name in tree(root) if not name.startswith(".")}
    # Simulate a run killed half-way: the marker says unfinished, files are missing, one is half written.
    (root / MARKER).write_text(json.dumps({**marker_of(root), "complete": False, "counts": None}))
    for path in list((root / "test").rglob("*.jpg"))[:5]:
        path.unlink()
    (root / "train" / "1" / "image_00001.jpg").write_bytes(b"\xff\xd8 half")
    prepare_flowers102(tmp_path / "p", split="official", resize_to=None, download_dir=source)
    assert {name for name in tree(root) if not name.startswith(".")} == complete
    assert (root / "train" / "1" / "image_00001.jpg").read_bytes() == \
        (source / "flowers-102" / "jpg" / "image_00001.jpg").read_bytes()
    assert marker_of(root)["complete"] is True


def test_an_interrupted_preparation_is_redone_even_if_the_counts_look_right(tmp_path, source):
    root = prepare_flowers102(tmp_path / "p", download_dir=source)
    (root / MARKER).write_text(json.dumps({**marker_of(root), "complete": False}))
    (root / "train" / "1" / "image_00001.jpg").write_bytes(b"\xff\xd8 half")  # same count, broken file
    prepare_flowers102(tmp_path / "p", download_dir=source)
    assert (root / "train" / "1" / "image_00001.jpg").stat().st_size > 100
    assert marker_of(root)["complete"] is True


def test_another_recipe_in_the_same_folder_is_refused_and_nothing_deleted(tmp_path, source):
    root = prepare_flowers102(tmp_path / "p", split="official", download_dir=source)
    before = tree(root)
    with pytest.raises(FileExistsError) as error:
        prepare_flowers102(tmp_path / "p", split="classic", download_dir=source)
    assert str(root) in str(error.value) and "classic" in str(error.value)
    with pytest.raises(FileExistsError):
        prepare_flowers102(tmp_path / "p", split="official", resize_to=48, download_dir=source)
    assert tree(root) == before


def test_foreign_train_folders_are_refused_and_nothing_deleted(tmp_path, source):
    mine = tmp_path / "mine"
    (mine / "train" / "roses").mkdir(parents=True)
    (mine / "train" / "roses" / "rose.jpg").write_bytes(b"my photo")
    (mine / "valid").mkdir()
    with pytest.raises(FileExistsError, match=str(mine)):
        prepare_flowers102(mine, download_dir=source)
    assert (mine / "train" / "roses" / "rose.jpg").read_bytes() == b"my photo"
    assert sorted(p.name for p in mine.iterdir()) == ["train", "valid"]


def test_a_tiny_slice_is_not_overwritten_by_flowers102(tmp_path, source):
    root = make_tiny_flowers(tmp_path / "data", **FAST)
    before = snapshot(root)
    with pytest.raises(FileExistsError):
        prepare_flowers102(root, download_dir=source)
    assert snapshot(root) == before


# --- the source files: half extracted, missing, offline ----------------------------------------

def test_a_half_extracted_archive_is_detected_and_extracted_again(tmp_path, source, no_network, monkeypatch):
    flowers = source / "flowers-102"
    with tarfile.open(flowers / SOURCE_FILES[0], "w:gz") as archive:  # the archive copied in by hand
        archive.add(flowers / "jpg", arcname="jpg")
    for path in sorted((flowers / "jpg").iterdir())[10:]:
        path.unlink()  # extraction stopped part-way
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


def test_a_failed_download_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "can_reach", lambda url, timeout=3.0: True)

    def broken_download(*args, **kwargs):
        raise RuntimeError("connection reset by peer")

    monkeypatch.setattr("torchvision.datasets.Flowers102.__init__", broken_download)
    with pytest.raises(OfflineError) as error:
        prepare_flowers102(tmp_path / "p")
    assert "connection reset by peer" in str(error.value) and SOURCE_FILES[0] in str(error.value)
    assert not (tmp_path / "p" / "train").exists()


# ============================================================================ the offline check

def test_reachable_host(monkeypatch):
    calls = []

    def connect(address, timeout=None):
        calls.append((address, timeout))
        return contextlib.nullcontext()

    monkeypatch.setattr(socket, "create_connection", connect)
    assert can_reach("https://example.org/some/file.tgz", timeout=1.5) is True
    assert can_reach("http://example.org:8080/") is True
    assert calls == [(("example.org", 443), 1.5), (("example.org", 8080), 3.0)]


def test_unreachable_host(no_network):
    assert can_reach(SOURCE_URL) is False
    assert no_network  # it did try, and the failure was turned into False


def test_timeout_is_false_not_an_exception(monkeypatch):
    def slow(address, timeout=None):
        raise socket.timeout("timed out")

    monkeypatch.setattr(socket, "create_connection", slow)
    assert can_reach("https://download.pytorch.org/models/") is False


def test_a_hanging_dns_lookup_is_bounded(monkeypatch, hang_guard):
    release = threading.Event()

    def hang(address, timeout=None):  # a DNS lookup that ignores the socket timeout
        release.wait(60)
        return contextlib.nullcontext()

    monkeypatch.setattr(socket, "create_connection", hang)
    try:
        with hang_guard(10):
            assert can_reach("https://download.pytorch.org/models/", timeout=0.2) is False
    finally:
        release.set()


# ============================================================================ ensure_dataset

def test_ensure_dataset_generates_the_tiny_slice(tmp_path):
    settings = get_settings({"FLOWERS_TINY": "1", "FLOWERS_DATA_ROOT": str(tmp_path), "FLOWERS_DEVICE": "cpu"})
    root = ensure_dataset(settings)
    assert root == tmp_path / "tiny"
    assert check_layout(root) == TEXT_ORDER
    assert len(list((root / "train").rglob("*.jpg"))) == 6 * 24


def test_ensure_dataset_full_data_offline_says_what_to_do(tmp_path, no_network, hang_guard):
    settings = get_settings({"FLOWERS_DATA_ROOT": str(tmp_path), "FLOWERS_DEVICE": "cpu"})
    with hang_guard(60), pytest.raises(OfflineError) as error:
        ensure_dataset(settings)
    assert str(tmp_path / "downloads" / "flowers-102") in str(error.value)
    assert "FLOWERS_TINY=1" in str(error.value)


def test_ensure_dataset_prepares_flowers102_from_files_in_place(tmp_path, no_network):
    write_fake_source(tmp_path / "downloads")
    settings = get_settings({"FLOWERS_DATA_ROOT": str(tmp_path), "FLOWERS_DEVICE": "cpu", "FLOWERS_RESIZE_TO": "48"})
    root = ensure_dataset(settings)
    assert root == tmp_path / "flowers102-classic-48" == settings.dataset_dir
    assert check_layout(root) == ["1", "2", "3"] and no_network == []


def test_ensure_dataset_uses_an_own_folder_after_checking_it(tmp_path, tiny_root, no_network):
    settings = get_settings({"FLOWERS_DATASET_DIR": str(tiny_root), "FLOWERS_DEVICE": "cpu"})
    assert ensure_dataset(settings) == tiny_root and no_network == []
    (tmp_path / "mine").mkdir()
    broken = get_settings({"FLOWERS_DATASET_DIR": str(tmp_path / "mine"), "FLOWERS_DEVICE": "cpu"})
    with pytest.raises(FileNotFoundError, match="train/"):
        ensure_dataset(broken)


# --- one preparation at a time -------------------------------------------------------------------

PREPARE_IN_A_NEW_PROCESS = ("import sys\nfrom helpers.download import make_tiny_flowers\n"
                            "make_tiny_flowers(sys.argv[1], image_size=64, images_per_split=(12, 3, 3))\nprint('done')")


def start_preparing(root: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PREPARE_IN_A_NEW_PROCESS, str(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def file_times(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_two_processes_preparing_at_once_leave_one_complete_slice(tmp_path, hang_guard):
    root = tmp_path / "tiny"
    with hang_guard(120):
        first, second = start_preparing(root), start_preparing(root)
        results = [process.communicate() for process in (first, second)]
    assert [process.returncode for process in (first, second)] == [0, 0], results
    assert all(out.strip() == "done" and "Error" not in err for out, err in results)
    assert marker_of(root)["complete"] is True and marker_of(root)["counts"] == {"train": 72, "valid": 18, "test": 18}
    assert marker_of(root)["complete"] is True


def test_a_second_preparation_waits_for_the_first_and_reuses_its_result(tmp_path, hang_guard):
    root = make_tiny_flowers(tmp_path / "tiny", image_size=64, images_per_split=(12, 3, 3))
    before = file_times(root)
    with hang_guard(120):
        with preparation_lock(root):  # as if another notebook were preparing it right now
            waiting = start_preparing(root)
            time.sleep(1.5)
            assert waiting.poll() is None, "it did not wait for the lock"
        out, err = waiting.communicate()
    assert waiting.returncode == 0 and out.strip() == "done", err
    assert file_times(root) == before  # reused, not rewritten


def test_waiting_too_long_stops_with_a_message_naming_the_folder(tmp_path, monkeypatch):
    root = tmp_path / "tiny"
    monkeypatch.setattr(prepared, "LOCK_TIMEOUT", 0.5)
    with preparation_lock(root):  # another preparation holds it
        with pytest.raises(TimeoutError, match=f"preparing {root} for over 0 s.*Let it finish"):
            make_tiny_flowers(root, **FAST)
    assert not (root / "train").exists()


def test_a_lock_file_left_by_a_process_that_died_does_not_block(tmp_path, hang_guard):
    root = tmp_path / "tiny"
    killed = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
                               "from helpers.prepared import preparation_lock\n"
                               "with preparation_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n"
                               "    time.sleep(60)", str(root)], stdout=subprocess.PIPE, text=True)
    assert killed.stdout.readline().strip() == "held"
    killed.kill()  # dies holding the lock: the operating system releases it
    killed.wait()
    assert lock_path(root).exists()
    with hang_guard(30):
        make_tiny_flowers(root, **FAST)
    assert marker_of(root)["complete"] is True


def test_two_preparations_sharing_a_download_folder_take_turns(tmp_path, source, monkeypatch):
    held = []
    real = prepared.preparation_lock

    def recording(root):
        held.append(root)
        return real(root)

    monkeypatch.setattr(download, "preparation_lock", recording)
    prepare_flowers102(tmp_path / "a", download_dir=source)
    assert held == [tmp_path / "a", source]  # the dataset folder, then the shared download folder


def test_a_backbone_that_resizes_above_the_stored_size_is_warned_about(tmp_path, no_network):
    write_fake_source(tmp_path / "downloads")
    env = {"FLOWERS_DATA_ROOT": str(tmp_path), "FLOWERS_DEVICE": "cpu", "FLOWERS_BACKBONE": "efficientnet_b4"}
    with pytest.warns(UserWarning, match="stored at 256 px, but efficientnet_b4 resizes images to 384 px.*=384"):
        ensure_dataset(get_settings(env))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ensure_dataset(get_settings({**env, "FLOWERS_RESIZE_TO": "384"}))
