"""Getting data onto the disk: Oxford 102 Flowers, the generated tiny slice, and the offline check.

Both are written as ``root/{train,valid,test}/<class>/<image>.jpg`` plus ``root/cat_to_name.json``, with a
marker file (:mod:`helpers.prepared`): a second call with the same recipe returns at once, an interrupted one
is redone, a folder this module did not write is never touched, and preparations of one folder take turns.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import socket
import threading
import warnings
from pathlib import Path
from urllib.parse import urlparse

from PIL import Image, ImageDraw
from torchvision.datasets import Flowers102

from helpers.config import SPLITS, Settings
from helpers.data import check_layout, preprocessing
from helpers.prepared import is_done, preparation_lock, start_writing, write_marker

SOURCE_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
SOURCE_FILES = ("102flowers.tgz", "imagelabels.mat", "setid.mat")


class OfflineError(RuntimeError):
    """Something needs a download, the network is not reachable, and the message says what to do."""


def can_reach(url: str, timeout: float = 3.0) -> bool:
    """True if a TCP connection to ``url``'s host opens within ``timeout`` seconds (a hung DNS lookup: 2x)."""
    parsed, answer = urlparse(url), []

    def connect() -> None:
        try:
            with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
                answer.append(True)
        except OSError:
            pass

    worker = threading.Thread(target=connect, daemon=True)  # a hanging DNS lookup ignores socket timeouts
    worker.start()
    worker.join(timeout * 2)
    return bool(answer)


# (folder, name, petals, petal colour, centre colour). Folder names sort differently as text
# ("1", "10", "100", "11", "2", "21") and as numbers: the same trap as Flowers102's "1".."102".
TINY_CLASSES = (
    ("1", "red five-petal", 5, (210, 40, 50), (250, 210, 40)),
    ("2", "yellow eight-petal", 8, (245, 200, 30), (110, 60, 20)),
    ("10", "blue four-petal", 4, (60, 90, 220), (245, 245, 245)),
    ("11", "white six-petal", 6, (240, 240, 235), (245, 140, 20)),
    ("21", "pink twelve-petal", 12, (240, 120, 180), (70, 30, 60)),
    ("100", "purple three-petal", 3, (130, 50, 170), (250, 230, 60)),
    ("101", "orange seven-petal", 7, (250, 130, 30), (60, 20, 10)),
    ("102", "cyan ten-petal", 10, (40, 190, 200), (230, 40, 40)),
)


def _jitter(colour: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, ...]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in colour)


def draw_flower(kind: tuple, rng: random.Random, size: int) -> Image.Image:
    """One drawn flower of ``kind`` (a row of TINY_CLASSES) on leaves, with random pose and colours."""
    _, _, petals, petal_colour, centre_colour = kind
    image = Image.new("RGB", (size, size), _jitter((70, 130, 60), rng, 35))
    pen = ImageDraw.Draw(image)
    for _ in range(rng.randint(2, 5)):  # leaves and shadows behind the flower
        x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(size * 0.08, size * 0.25)
        pen.ellipse([x - r, y - r / 2, x + r, y + r / 2], fill=_jitter((40, 100, 40), rng, 30))
    cx, cy = (size / 2 + rng.uniform(-0.12, 0.12) * size for _ in range(2))
    radius, turn = rng.uniform(0.25, 0.38) * size, rng.uniform(0, 2 * math.pi)
    petal, half_width = _jitter(petal_colour, rng, 25), math.pi / petals * 0.8
    for i in range(petals):
        angle = turn + 2 * math.pi * i / petals
        corners = [(cx + radius * f * math.cos(angle + da), cy + radius * f * math.sin(angle + da))
                   for f, da in ((0.45, -half_width), (1.0, 0.0), (0.45, half_width))]
        pen.polygon([(cx, cy), *corners], fill=petal, outline=_jitter(petal, rng, 40))
    r = radius * rng.uniform(0.18, 0.28)
    pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_jitter(centre_colour, rng, 20))
    return image


def make_tiny_flowers(root: str | os.PathLike, num_classes: int = 6,
                      images_per_split: tuple[int, int, int] = (24, 6, 6), image_size: int = 256,
                      seed: int = 0) -> Path:
    """Generate the tiny slice in ``root``: drawn flowers, deterministic for a ``seed``, in a second.

    Classes differ in petal count and colours, so even a random backbone can tell them apart.
    A slice with the same arguments is reused; one with others is replaced (nothing of yours).
    """
    if not 2 <= num_classes <= len(TINY_CLASSES):
        raise ValueError(f"num_classes must be between 2 and {len(TINY_CLASSES)}, not {num_classes}.")
    if len(images_per_split) != 3 or min(images_per_split) < 1:
        raise ValueError("images_per_split needs three counts of at least 1: (train, valid, test).")
    if image_size < 32:
        raise ValueError(f"image_size={image_size} is too small to draw a flower; use 32 or more.")
    root = Path(root).expanduser()
    recipe = {"maker": "tiny", "num_classes": num_classes, "images_per_split": list(images_per_split),
              "image_size": image_size, "seed": seed}
    with preparation_lock(root):
        if not is_done(root, recipe, replace_other_recipe=True):
            _write_tiny_flowers(root, recipe)
    return root


def _write_tiny_flowers(root: Path, recipe: dict) -> None:
    """Draw the tiny slice of ``recipe`` into ``root`` (see :func:`make_tiny_flowers`)."""
    num_classes, images_per_split = recipe["num_classes"], recipe["images_per_split"]
    start_writing(root, recipe)
    rng = random.Random(recipe["seed"])
    for split, count in zip(SPLITS, images_per_split):
        for kind in TINY_CLASSES[:num_classes]:
            (root / split / kind[0]).mkdir(parents=True)
            for index in range(count):
                image = draw_flower(kind, rng, recipe["image_size"])
                image.save(root / split / kind[0] / f"{split}_{index:03d}.jpg", quality=90)
    names = {kind[0]: kind[1] for kind in TINY_CLASSES[:num_classes]}
    (root / "cat_to_name.json").write_text(json.dumps(names, indent=1))
    write_marker(root, recipe, complete=True)


def offline_message(download_dir: Path) -> str:
    """What to do when Flowers102 is not on disk and cannot be downloaded."""
    files = "\n".join(f"  {SOURCE_URL}{name}" for name in SOURCE_FILES)
    return (f"Oxford 102 Flowers is not in {download_dir / 'flowers-102'} and {SOURCE_URL} is unreachable.\n"
            f"Either download these three files on a machine with internet:\n{files}\n"
            f"and copy them into {download_dir / 'flowers-102'} (the archive is extracted for you), then "
            "run this again; or work offline on the generated tiny slice: set FLOWERS_TINY=1, or call "
            "helpers.download.make_tiny_flowers(folder).")


def _read_labels(flowers_dir: Path) -> tuple[list[int], dict[str, list[int]]]:
    """Labels (1..102, one per image id) and the official split's image ids, from the .mat files."""
    from scipy.io import loadmat

    labels = [int(v) for v in loadmat(flowers_dir / "imagelabels.mat", squeeze_me=True)["labels"].tolist()]
    ids = loadmat(flowers_dir / "setid.mat", squeeze_me=True)
    official = {split: [int(i) for i in ids[key].tolist()]
                for split, key in zip(SPLITS, ("trnid", "valid", "tstid"))}
    return labels, official


def download_flowers102(download_dir: Path) -> Path:
    """The original files in ``download_dir/flowers-102``, downloaded by torchvision (MD5-checked) if needed.

    A half-extracted ``jpg/`` folder is extracted again. Offline, :class:`OfflineError` comes within seconds.
    """
    with preparation_lock(download_dir):  # preparations that share download_dir download one at a time
        return _download_flowers102(download_dir)


def _download_flowers102(download_dir: Path) -> Path:
    """The body of :func:`download_flowers102`, run under its lock."""
    flowers_dir = download_dir / "flowers-102"
    try:
        labels, _ = _read_labels(flowers_dir)
        if len(list((flowers_dir / "jpg").glob("*.jpg"))) == len(labels):
            return flowers_dir
    except (OSError, ValueError, KeyError, TypeError):
        pass
    shutil.rmtree(flowers_dir / "jpg", ignore_errors=True)
    if not (flowers_dir / SOURCE_FILES[0]).exists() and not can_reach(SOURCE_URL):
        raise OfflineError(offline_message(download_dir))
    try:
        Flowers102(str(download_dir), split="train", download=True)
    except (OSError, RuntimeError) as error:
        raise OfflineError(f"Downloading Flowers102 failed ({error}).\n"
                           + offline_message(download_dir)) from error
    return flowers_dir


def split_image_ids(labels: list[int], official: dict[str, list[int]], split: str,
                    seed: int = 0) -> dict[str, list[int]]:
    """Image ids per split: the official ones, or a seeded ~80/10/10 split stratified by class ("classic")."""
    if split == "official":
        return official
    if split != "classic":
        raise ValueError(f"split must be 'official' or 'classic', not {split!r}.")
    rng, by_class = random.Random(seed), {}
    for image_id, label in enumerate(labels, start=1):
        by_class.setdefault(label, []).append(image_id)
    result: dict[str, list[int]] = {name: [] for name in SPLITS}
    for label in sorted(by_class):
        ids = by_class[label]
        rng.shuffle(ids)
        tenth = max(1, round(len(ids) * 0.1))
        result["valid"] += ids[:tenth]
        result["test"] += ids[tenth:2 * tenth]
        result["train"] += ids[2 * tenth:]
    return {name: sorted(ids) for name, ids in result.items()}


def copy_image(source: Path, target: Path, resize_to: int | None) -> None:
    """Copy one JPEG, or store it with its shorter side at ``resize_to`` pixels (never enlarged)."""
    if resize_to is None:
        shutil.copyfile(source, target)
        return
    with Image.open(source) as image:
        image.draft("RGB", (resize_to, resize_to))
        image = image.convert("RGB")
        scale = resize_to / min(image.size)
        if scale < 1:
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.BICUBIC)
        image.save(target, quality=92)


def prepare_flowers102(root: str | os.PathLike, split: str = "classic", resize_to: int | None = 256,
                       download_dir: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Download Oxford 102 Flowers and write it to ``root`` as train/valid/test class folders.

    ``split``: "classic" (~80/10/10 of all 8,189 images) or "official" (1,020 / 1,020 / 6,149).
    ``resize_to``: the shorter side to store (faster decoding; ``None`` keeps the originals).
    Downloads go to ``download_dir`` (default ``root/downloads``). An interrupted run is redone.
    """
    if resize_to is not None and resize_to < 32:
        raise ValueError(f"resize_to={resize_to} is too small; 256 is the usual choice.")
    if split not in ("official", "classic"):
        raise ValueError(f"split must be 'official' or 'classic', not {split!r}.")
    root = Path(root).expanduser()
    recipe = {"maker": "flowers102", "split": split, "resize_to": resize_to, "seed": seed}
    with preparation_lock(root):
        if not is_done(root, recipe, replace_other_recipe=False):
            downloads = Path(download_dir).expanduser() if download_dir else root / "downloads"
            _write_flowers102(root, recipe, downloads)
    return root


def _write_flowers102(root: Path, recipe: dict, download_dir: Path) -> None:
    """Download Flowers102 if needed, write ``recipe``'s split to ``root``: see :func:`prepare_flowers102`."""
    flowers_dir = download_flowers102(download_dir)
    labels, official = _read_labels(flowers_dir)
    start_writing(root, recipe)
    for name, image_ids in split_image_ids(labels, official, recipe["split"], recipe["seed"]).items():
        for image_id in image_ids:
            folder = root / name / str(labels[image_id - 1])
            folder.mkdir(parents=True, exist_ok=True)
            file_name = f"image_{image_id:05d}.jpg"
            copy_image(flowers_dir / "jpg" / file_name, folder / file_name, recipe["resize_to"])
    names = {str(k): Flowers102.classes[k - 1] for k in sorted(set(labels))}  # torchvision >= 0.21 has them
    (root / "cat_to_name.json").write_text(json.dumps(names, indent=1))
    write_marker(root, recipe, complete=True)


def ensure_dataset(settings: Settings) -> Path:
    """The dataset the settings ask for, on disk: your folder (checked), the tiny slice, or Flowers102."""
    if settings.own_dataset is not None:
        check_layout(settings.own_dataset)
        return settings.own_dataset
    if settings.tiny:
        return make_tiny_flowers(settings.dataset_dir)
    resize = preprocessing(settings.backbone)["resize"]
    if settings.resize_to and settings.resize_to < resize:  # e.g. efficientnet_b4 (384), vit_h_14 (518)
        warnings.warn(f"Flowers102 is stored at {settings.resize_to} px, but {settings.backbone} resizes "
                      f"images to {resize} px: they are enlarged, blurrier than the photos predict() gets. "
                      f"Set FLOWERS_RESIZE_TO={resize} (or 0 for the original files).", stacklevel=2)
    return prepare_flowers102(settings.dataset_dir, split=settings.split, resize_to=settings.resize_to,
                              download_dir=settings.data_root / "downloads")
