"""Oxford 102 Flowers, downloaded with torchvision and written as an ImageFolder layout.

torchvision's ``Flowers102`` downloads three files (``102flowers.tgz`` with 8,189 JPEGs,
``imagelabels.mat`` and ``setid.mat``) and serves them as a dataset; the course wants
the classic layout instead, so that ``ImageFolder`` and your own photos work the same way::

    root/train/<1..102>/image_XXXXX.jpg
    root/valid/<1..102>/...
    root/test/<1..102>/...
    root/cat_to_name.json        {"1": "pink primrose", ..., "102": "blackberry lily"}

``split="official"`` keeps the dataset's own 1,020 / 1,020 / 6,149 split; ``"classic"``
makes a seeded, stratified ~80/10/10 split of all 8,189 images (the layout of the
well-known course, more training images). ``resize_to=256`` stores every image with
its shorter side at 256 pixels, which makes every later epoch decode much faster.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

from PIL import Image

from helpers.network import OfflineError, can_reach
from helpers.tiny import SPLIT_NAMES

SOURCE_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
SOURCE_FILES = ("102flowers.tgz", "imagelabels.mat", "setid.mat")
PREPARED = ".prepared.json"
PREPARING = ".preparing"
CLASSIC_FRACTIONS = (0.8, 0.1, 0.1)


def flower_names() -> list[str]:
    """The 102 class names in label order (label 0 is folder "1")."""
    from torchvision.datasets import Flowers102

    names = getattr(Flowers102, "classes", None)
    if names is None or len(names) != 102:
        raise RuntimeError("This torchvision has no Flowers102.classes; upgrade torchvision (pip install -U torchvision).")
    return list(names)


def offline_message(download_dir: Path) -> str:
    """What to do when Flowers102 is not on disk and cannot be downloaded."""
    files = "\n".join(f"  {SOURCE_URL}{name}" for name in SOURCE_FILES)
    return (
        f"Oxford 102 Flowers is not in {download_dir / 'flowers-102'} and {SOURCE_URL} cannot be reached.\n"
        f"Either download these three files on a machine with internet:\n{files}\n"
        f"and copy them into {download_dir / 'flowers-102'} (the archive is extracted for you), then run this again;\n"
        "or work offline on the generated tiny slice: set FLOWERS_TINY=1, or call "
        "helpers.data.make_tiny_flowers(folder)."
    )


def _read_source(flowers_dir: Path) -> tuple[list[int], dict[str, list[int]]]:
    """Labels (1..102, one per image id) and the official split's image ids, from the .mat files."""
    from scipy.io import loadmat

    labels = loadmat(flowers_dir / "imagelabels.mat", squeeze_me=True)["labels"].tolist()
    set_ids = loadmat(flowers_dir / "setid.mat", squeeze_me=True)
    official = {"train": set_ids["trnid"].tolist(), "valid": set_ids["valid"].tolist(),
                "test": set_ids["tstid"].tolist()}
    return [int(label) for label in labels], {k: [int(i) for i in v] for k, v in official.items()}


def _source_is_complete(flowers_dir: Path) -> bool:
    """True when the label files load and ``jpg/`` holds one image per label (no half extraction)."""
    try:
        labels, _ = _read_source(flowers_dir)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    jpg = flowers_dir / "jpg"
    return jpg.is_dir() and sum(1 for name in os.listdir(jpg) if name.endswith(".jpg")) == len(labels)


def download_flowers102(download_dir: Path) -> Path:
    """Make sure the original files are in ``download_dir/flowers-102``; return that folder.

    Uses torchvision's ``Flowers102(download=True)`` (which checks the files' MD5 sums).
    A half-extracted ``jpg/`` folder is removed and extracted again from the archive.
    Without network it raises :class:`OfflineError` within seconds, with instructions.
    """
    flowers_dir = download_dir / "flowers-102"
    if _source_is_complete(flowers_dir):
        return flowers_dir
    shutil.rmtree(flowers_dir / "jpg", ignore_errors=True)  # partial extraction: redo it
    if not (flowers_dir / SOURCE_FILES[0]).exists() and not can_reach(SOURCE_URL):
        raise OfflineError(offline_message(download_dir))
    from torchvision.datasets import Flowers102

    try:
        Flowers102(str(download_dir), split="train", download=True)
    except (OSError, RuntimeError) as error:
        raise OfflineError(f"Downloading Flowers102 failed ({error}).\n" + offline_message(download_dir)) from error
    if not _source_is_complete(flowers_dir):
        raise RuntimeError(f"{flowers_dir} is still incomplete after the download; delete it and try again.")
    return flowers_dir


def split_image_ids(labels: list[int], official: dict[str, list[int]], split: str,
                    seed: int = 0) -> dict[str, list[int]]:
    """Image ids per split: the official ones, or a seeded stratified ~80/10/10 split."""
    if split == "official":
        return official
    if split != "classic":
        raise ValueError(f"split must be 'official' or 'classic', not {split!r}.")
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for image_id, label in enumerate(labels, start=1):
        by_class.setdefault(label, []).append(image_id)
    result = {name: [] for name in SPLIT_NAMES}
    for label in sorted(by_class):
        ids = by_class[label]
        rng.shuffle(ids)
        n_valid = max(1, round(len(ids) * CLASSIC_FRACTIONS[1]))
        n_test = max(1, round(len(ids) * CLASSIC_FRACTIONS[2]))
        result["valid"] += ids[:n_valid]
        result["test"] += ids[n_valid:n_valid + n_test]
        result["train"] += ids[n_valid + n_test:]
    return {name: sorted(ids) for name, ids in result.items()}


def copy_image(source: Path, target: Path, resize_to: int | None) -> None:
    """Copy one JPEG, or store it with its shorter side at ``resize_to`` pixels."""
    if resize_to is None:
        shutil.copyfile(source, target)
        return
    with Image.open(source) as image:
        image.draft("RGB", (resize_to, resize_to))  # decode JPEGs at reduced scale where possible
        image = image.convert("RGB")
        scale = resize_to / min(image.size)
        if scale < 1:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BICUBIC)
        image.save(target, quality=92)


def _counts_on_disk(root: Path) -> dict[str, int]:
    return {split: sum(len(files) for _, _, files in os.walk(root / split)) for split in SPLIT_NAMES}


def _check_existing(root: Path, recipe: dict) -> bool:
    """True if ``root`` already holds exactly this preparation; raise if it holds something else."""
    marker = root / PREPARED
    if (root / PREPARING).exists():
        return False  # an earlier run was interrupted: redo it
    if marker.exists():
        try:
            done = json.loads(marker.read_text())
        except ValueError:
            raise FileExistsError(f"{marker} is damaged (not JSON). Delete {root} and prepare again, "
                                  "or restore the file.") from None
        if done.get("recipe") != recipe:
            raise FileExistsError(
                f"{root} already holds Flowers102 prepared with {done.get('recipe')}; you asked for {recipe}. "
                "Use another folder for this variant (nothing was changed)."
            )
        return done.get("counts") == _counts_on_disk(root)
    if any((root / split).exists() for split in SPLIT_NAMES):
        raise FileExistsError(
            f"{root} already has train/valid/test folders that prepare_flowers102 did not write. "
            "Use it directly with make_loaders, or prepare Flowers102 into an empty folder (nothing was changed)."
        )
    return False


def prepare_flowers102(root: str | os.PathLike, split: str = "official", resize_to: int | None = None,
                       download_dir: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Download Oxford 102 Flowers and write it to ``root`` as train/valid/test class folders.

    Idempotent: a second call checks the file counts and returns at once. An interrupted
    call is detected (a ``.preparing`` marker) and redone. Downloads go to
    ``download_dir`` (default ``root/downloads``). Returns ``root`` as a Path.
    """
    if split not in ("official", "classic"):
        raise ValueError(f"split must be 'official' or 'classic', not {split!r}.")
    if resize_to is not None and resize_to < 32:
        raise ValueError(f"resize_to={resize_to} is too small; 256 is the usual choice.")
    root = Path(root).expanduser()
    recipe = {"split": split, "resize_to": resize_to, "seed": seed}
    if _check_existing(root, recipe):
        return root
    flowers_dir = download_flowers102(Path(download_dir).expanduser() if download_dir else root / "downloads")
    labels, official = _read_source(flowers_dir)
    names = flower_names()  # fails now, not after copying 8,189 images, if torchvision lacks them
    ids = split_image_ids(labels, official, split, seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / PREPARING).write_text("prepare_flowers102 is writing this folder; if this file stays, it was interrupted.\n")
    (root / PREPARED).unlink(missing_ok=True)
    for name in SPLIT_NAMES:
        shutil.rmtree(root / name, ignore_errors=True)
    for name, image_ids in ids.items():
        for image_id in image_ids:
            folder = root / name / str(labels[image_id - 1])
            folder.mkdir(parents=True, exist_ok=True)
            file_name = f"image_{image_id:05d}.jpg"
            copy_image(flowers_dir / "jpg" / file_name, folder / file_name, resize_to)
    cat_to_name = {str(label): names[label - 1] for label in sorted(set(labels))}
    (root / "cat_to_name.json").write_text(json.dumps(cat_to_name, indent=1))
    (root / PREPARED).write_text(json.dumps({"recipe": recipe, "counts": _counts_on_disk(root)}, indent=1))
    (root / PREPARING).unlink()
    return root
