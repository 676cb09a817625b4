"""The tiny generated flower slice: same layout as the real data, made in a second, offline.

Each class is a drawn "flower" with its own petal count, petal colour and centre colour,
so a classifier *can* tell them apart; each image varies position, size, rotation,
colours and background, so no two are alike. It exists so that every notebook, test and
the demo run without downloads; accuracy measured on it says nothing about real flowers.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

SPLIT_NAMES = ("train", "valid", "test")
MARKER = ".tiny_flowers.json"


@dataclass(frozen=True)
class TinyClass:
    """How one generated class looks. ``folder`` mimics Flowers102's numbered folders."""

    folder: str
    name: str
    petals: int
    petal_colour: tuple[int, int, int]
    centre_colour: tuple[int, int, int]


# Folder names chosen so that sorting them as text ("1", "10", "100", "11", "2", "21")
# differs from sorting them as numbers: the same trap as the real data's "1".."102".
TINY_CLASSES = (
    TinyClass("1", "red five-petal", 5, (210, 40, 50), (250, 210, 40)),
    TinyClass("2", "yellow eight-petal", 8, (245, 200, 30), (110, 60, 20)),
    TinyClass("10", "blue four-petal", 4, (60, 90, 220), (245, 245, 245)),
    TinyClass("11", "white six-petal", 6, (240, 240, 235), (245, 140, 20)),
    TinyClass("21", "pink twelve-petal", 12, (240, 120, 180), (70, 30, 60)),
    TinyClass("100", "purple three-petal", 3, (130, 50, 170), (250, 230, 60)),
    TinyClass("101", "orange seven-petal", 7, (250, 130, 30), (60, 20, 10)),
    TinyClass("102", "cyan ten-petal", 10, (40, 190, 200), (230, 40, 40)),
)


def _jitter(colour: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in colour)


def draw_flower(kind: TinyClass, rng: random.Random, size: int) -> Image.Image:
    """Draw one flower of ``kind`` on a leafy background, with random pose and colours."""
    background = _jitter((70, 130, 60), rng, 35)
    image = Image.new("RGB", (size, size), background)
    pen = ImageDraw.Draw(image)
    for _ in range(rng.randint(2, 5)):  # a few leaves and shadows behind the flower
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        r = rng.uniform(size * 0.08, size * 0.25)
        pen.ellipse([x - r, y - r / 2, x + r, y + r / 2], fill=_jitter((40, 100, 40), rng, 30))
    cx = size / 2 + rng.uniform(-0.12, 0.12) * size
    cy = size / 2 + rng.uniform(-0.12, 0.12) * size
    radius = rng.uniform(0.25, 0.38) * size
    turn = rng.uniform(0, 2 * math.pi)
    petal = _jitter(kind.petal_colour, rng, 25)
    half_width = math.pi / kind.petals * 0.8
    for i in range(kind.petals):
        angle = turn + 2 * math.pi * i / kind.petals
        tip = (cx + radius * math.cos(angle), cy + radius * math.sin(angle))
        left = (cx + radius * 0.45 * math.cos(angle - half_width), cy + radius * 0.45 * math.sin(angle - half_width))
        right = (cx + radius * 0.45 * math.cos(angle + half_width), cy + radius * 0.45 * math.sin(angle + half_width))
        pen.polygon([(cx, cy), left, tip, right], fill=petal, outline=_jitter(petal, rng, 40))
    centre = radius * rng.uniform(0.18, 0.28)
    pen.ellipse([cx - centre, cy - centre, cx + centre, cy + centre], fill=_jitter(kind.centre_colour, rng, 20))
    return image


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _count_files(root: Path) -> int:
    return sum(len(files) for split in SPLIT_NAMES for _, _, files in os.walk(root / split))


def make_tiny_flowers(
    root: str | os.PathLike,
    num_classes: int = 6,
    images_per_split: tuple[int, int, int] = (8, 3, 3),
    image_size: int = 256,
    seed: int = 0,
) -> Path:
    """Generate the tiny slice in ``root`` (``train/``, ``valid/``, ``test/``, ``cat_to_name.json``).

    Deterministic for a given ``seed`` and arguments; a second call with the same
    arguments finds the finished slice and returns at once. Returns ``root`` as a Path.
    A ``root`` that already holds other data is never overwritten.
    """
    if not 2 <= num_classes <= len(TINY_CLASSES):
        raise ValueError(f"num_classes must be between 2 and {len(TINY_CLASSES)}, not {num_classes}.")
    if len(images_per_split) != 3 or min(images_per_split) < 1:
        raise ValueError("images_per_split needs three counts of at least 1: (train, valid, test).")
    if image_size < 32:
        raise ValueError(f"image_size={image_size} is too small to draw a flower; use 32 or more.")
    root = Path(root).expanduser()
    recipe = {"num_classes": num_classes, "images_per_split": list(images_per_split),
              "image_size": image_size, "seed": seed}
    expected_files = num_classes * sum(images_per_split)
    marker = _read_marker(root)
    if (marker is not None and marker.get("complete") and marker.get("recipe") == recipe
            and _count_files(root) == expected_files):
        return root
    if marker is None and any((root / split).exists() for split in SPLIT_NAMES):
        raise FileExistsError(
            f"{root} already holds train/valid/test folders that make_tiny_flowers did not write; "
            "pick an empty folder for the tiny slice so nothing of yours is overwritten."
        )
    # The marker goes first, marked incomplete: an interrupted run is recognised as ours
    # and redone next time, never mistaken for finished data.
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text(json.dumps({"recipe": recipe, "complete": False}, indent=1))
    _write_slice(root, TINY_CLASSES[:num_classes], images_per_split, image_size, seed)
    (root / MARKER).write_text(json.dumps({"recipe": recipe, "complete": True}, indent=1))
    return root


def _write_slice(root: Path, classes: tuple[TinyClass, ...], counts: tuple[int, int, int],
                 image_size: int, seed: int) -> None:
    """Write every image and ``cat_to_name.json``, replacing an earlier generated slice."""
    rng = random.Random(seed)
    for split in SPLIT_NAMES:
        shutil.rmtree(root / split, ignore_errors=True)
    for split, count in zip(SPLIT_NAMES, counts):
        for kind in classes:
            folder = root / split / kind.folder
            folder.mkdir(parents=True)
            for index in range(count):
                draw_flower(kind, rng, image_size).save(folder / f"{split}_{index:03d}.jpg", quality=90)
    names = {kind.folder: kind.name for kind in classes}
    (root / "cat_to_name.json").write_text(json.dumps(names, indent=1))
