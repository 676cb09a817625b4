"""Opening images safely: any file a learner brings becomes an upright RGB image or a clear error.

``ImageFolder``'s own loader raises errors that do not name the file, and converts
RGBA images by dropping the alpha channel (transparent pixels often turn black).
:func:`load_rgb_image` fixes both, and :func:`verify_images` checks a whole folder
before a long training run finds a broken file half-way through.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class BadImageError(ValueError):
    """A file that should be an image cannot be read as one. The message names the file."""


@dataclass(frozen=True)
class BadImage:
    """One unreadable file found by :func:`verify_images`."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def check_image_path(path: str | os.PathLike) -> Path:
    """Return ``path`` as a ``Path`` if it is an existing file; otherwise raise with the path."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the path of one image file.")
    if not path.exists():
        raise FileNotFoundError(f"No image at {path}; check the path (relative paths start at {Path.cwd()}).")
    return path


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL image mode to RGB the way a person would see it.

    Transparent areas become white (not black), 16-bit and float grayscale images are
    scaled into 0-255 instead of being clipped, palette images keep their colours.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        return Image.fromarray(scaled.astype(np.uint8), mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb_image(path: str | os.PathLike, min_side: int | None = None) -> Image.Image:
    """Open an image file as an upright RGB PIL image (EXIF orientation applied).

    Raises ``FileNotFoundError``/``IsADirectoryError`` for a wrong path and
    :class:`BadImageError` (a ``ValueError``) naming the file when it is empty,
    truncated, or not an image at all. Used as the ``ImageFolder`` loader, so an error
    inside a DataLoader worker still says which file is broken.

    ``min_side``: decode a large JPEG at reduced scale (``Image.draft``: 1/2, 1/4 or 1/8)
    as long as both sides stay at least ``min_side`` pixels; much faster when the image
    is resized to ``min_side`` next anyway. Other formats load in full.
    """
    path = check_image_path(path)
    try:
        with Image.open(path) as opened:
            if min_side is not None:
                opened.draft("RGB", (min_side, min_side))
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            return to_rgb(upright)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise BadImageError(
            f"{path}: cannot be read as an image ({describe_problem(path, error)}). "
            "Replace or delete it; helpers.data.verify_images(root) lists every such file."
        ) from error


def describe_problem(path: Path, error: Exception) -> str:
    """A short, learner-friendly reason why ``path`` failed to load."""
    if path.stat().st_size == 0:
        return "the file is empty (0 bytes)"
    if isinstance(error, UnidentifiedImageError):
        return "not an image format PIL knows; is it really a picture?"
    text = str(error)
    if "truncated" in text.lower():
        return "the file is truncated (cut off part-way, e.g. an interrupted download)"
    return text or type(error).__name__


def iter_image_files(root: str | os.PathLike) -> Iterator[Path]:
    """Yield image files below ``root`` in sorted order, skipping dot-folders and dot-files."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                yield Path(folder) / name


def verify_images(root: str | os.PathLike) -> list[BadImage]:
    """Fully decode every image file below ``root`` and return the ones that fail.

    An empty list means every file loads. Run it once after copying your own photos
    into a dataset folder; a broken file otherwise stops training part-way through.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"No folder at {root}.")
    bad = []
    for path in iter_image_files(root):
        try:
            load_rgb_image(path)
        except BadImageError as error:
            bad.append(BadImage(path, describe_problem(path, error.__cause__ or error)))
    return bad
