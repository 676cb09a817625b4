"""Generated stand-ins for Flowers102's JPEGs: same pixel size and about the same file size.

Oxford 102 JPEGs average about 630 x 534 pixels and 41-49 KB. A drawn flower alone
compresses far better than a photo, so grain and a slight blur are added until the
files weigh about as much; decoding cost depends on both size and detail.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from helpers.download import TINY_CLASSES, copy_image, draw_flower

FULL_SIZE = (630, 534)
JPEG_QUALITY = 75
GRAIN = 10.0   # standard deviation of the added grain, in 0-255 levels
GRAIN_CELL = 3  # grain blobs of 3 x 3 pixels look more like photo texture than per-pixel noise


def full_size_flower(kind_index: int, rng: random.Random, noise: np.random.Generator) -> Image.Image:
    """One 630 x 534 drawn flower with photo-like grain."""
    width, height = FULL_SIZE
    square = draw_flower(TINY_CLASSES[kind_index % len(TINY_CLASSES)], rng, width)
    top = (width - height) // 2
    pixels = np.asarray(square.crop((0, top, width, top + height)), dtype=np.float32)
    cells = noise.normal(0.0, GRAIN, size=(height // GRAIN_CELL + 1, width // GRAIN_CELL + 1, 3))
    grain = np.repeat(np.repeat(cells, GRAIN_CELL, axis=0), GRAIN_CELL, axis=1)[:height, :width]
    image = Image.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(0.6))


def make_full_size_dataset(root: Path, train_images: int, num_classes: int = 8, seed: int = 0) -> Path:
    """Write ``root/{train,valid,test}/<class>/*.jpg`` full-size-like JPEGs; returns ``root``.

    Train gets ``train_images`` images, valid and test an eighth of that (at least one
    per class), spread over ``num_classes`` class folders named like Flowers102's
    (fewer when there are fewer training images, so that every split has every class).
    """
    rng, noise = random.Random(seed), np.random.default_rng(seed)
    num_classes = max(1, min(num_classes, train_images, len(TINY_CLASSES)))  # every class needs a train image
    counts = {"train": train_images, "valid": max(num_classes, train_images // 8),
              "test": max(num_classes, train_images // 8)}
    for split, count in counts.items():
        for number in range(count):
            kind = number % num_classes
            folder = root / split / TINY_CLASSES[kind][0]
            folder.mkdir(parents=True, exist_ok=True)
            full_size_flower(kind, rng, noise).save(folder / f"{split}_{number:05d}.jpg", quality=JPEG_QUALITY)
    return root


def make_prepared_copy(source: Path, target: Path, resize_to: int = 256) -> Path:
    """Copy a dataset as ``prepare_flowers102(..., resize_to=256)`` stores it (shorter side 256)."""
    for path in sorted(source.rglob("*.jpg")):
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        copy_image(path, destination, resize_to)
    return target


def mean_file_kb(folder: Path) -> float:
    """Average JPEG size below ``folder`` in kilobytes."""
    sizes = [path.stat().st_size for path in folder.rglob("*.jpg")]
    return sum(sizes) / len(sizes) / 1000 if sizes else 0.0


def mean_pixel_size(folder: Path, sample: int = 20) -> tuple[int, int]:
    """Average (width, height) of the first ``sample`` JPEGs below ``folder``."""
    sizes = []
    for path in sorted(folder.rglob("*.jpg"))[:sample]:
        with Image.open(path) as image:
            sizes.append(image.size)
    return (round(sum(w for w, _ in sizes) / len(sizes)), round(sum(h for _, h in sizes) / len(sizes)))
