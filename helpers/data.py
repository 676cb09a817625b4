"""Datasets and DataLoaders: transforms, the folder layout check, and the loaders themselves.

The functions that *make* data live in their own modules and are re-exported here, so
``helpers.data`` is the one place a notebook imports data things from:
:func:`prepare_flowers102` (real data), :func:`make_tiny_flowers` (generated slice),
:func:`verify_images` and :func:`load_rgb_image` (safe image opening).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from helpers.config import Settings, cpu_cores, resolve_device
from helpers.flowers102 import prepare_flowers102
from helpers.images import iter_image_files, load_rgb_image, verify_images
from helpers.tiny import SPLIT_NAMES, make_tiny_flowers

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "SPLIT_NAMES", "FlowerFolder", "check_layout", "default_num_workers",
    "ensure_dataset", "eval_transform", "load_cat_to_name", "load_rgb_image", "make_datasets", "make_loaders",
    "make_tiny_flowers", "prepare_flowers102", "resize_size", "train_transform", "verify_images",
]

# The per-channel statistics of ImageNet, which every torchvision pretrained network was trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

LAYOUT = """Expected layout:
    ROOT/train/<class>/<image>.jpg
    ROOT/valid/<class>/<image>.jpg
    ROOT/test/<class>/<image>.jpg
with the same class folders in each split (folders whose names start with a dot are ignored)."""


def resize_size(image_size: int) -> int:
    """The shorter side to resize to before a centre crop of ``image_size`` (256 for 224)."""
    return round(image_size * 256 / 224)


def eval_transform(image_size: int = 224) -> transforms.Compose:
    """Resize, centre-crop, make a tensor and normalise: what valid, test and prediction use."""
    return transforms.Compose([
        transforms.Resize(resize_size(image_size)),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def train_transform(image_size: int = 224, strength: float = 1.0, colour: bool = True) -> transforms.Compose:
    """Random rotation, translation, scale and flips (and a little colour) before the usual steps.

    ``strength`` scales every random change: 0 gives the evaluation pipeline, 1 the
    course's default (up to 30 degrees, 10 % shift, +-20 % scale), 2 twice that.
    """
    if not 0 <= strength <= 2:
        raise ValueError(f"strength must be between 0 and 2, not {strength}.")
    if strength == 0:
        return eval_transform(image_size)
    steps: list = [
        transforms.Resize(resize_size(image_size)),
        transforms.RandomAffine(degrees=30 * strength, translate=(0.1 * strength, 0.1 * strength),
                                scale=(1 - 0.2 * strength, 1 + 0.2 * strength)),
        transforms.CenterCrop(image_size),
        transforms.RandomHorizontalFlip(),
    ]
    if colour:
        steps.append(transforms.ColorJitter(brightness=0.2 * strength, contrast=0.2 * strength,
                                            saturation=0.2 * strength))
    steps += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return transforms.Compose(steps)


def class_folders(split_dir: Path) -> list[str]:
    """Class folder names in one split, sorted as text (as ImageFolder does), dot-folders skipped."""
    return sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir() and not entry.name.startswith("."))


def _has_image(folder: Path) -> bool:
    """True if ``folder`` holds at least one image that the loaders will use (dot-files don't count)."""
    return next(iter_image_files(folder), None) is not None


def _is_hidden(path: str, directory: str) -> bool:
    """True if ``path`` is a dot-file or lies in a dot-folder below ``directory`` (``._photo.jpg``, ...)."""
    return any(part.startswith(".") for part in Path(os.path.relpath(path, directory)).parts)


def check_layout(root: str | os.PathLike, splits: tuple[str, ...] = SPLIT_NAMES) -> list[str]:
    """Check ``root`` against the expected layout and return the class names.

    Raises ``FileNotFoundError`` naming a missing folder, or ``ValueError`` for an empty
    class folder or for valid/test classes that differ from train's (listing both ways).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"No dataset folder at {root}.\n{LAYOUT}")
    classes_per_split = {}
    for split in splits:
        split_dir = root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"{root} has no {split}/ folder.\n{LAYOUT}")
        classes = class_folders(split_dir)
        if not classes:
            raise FileNotFoundError(f"{split_dir} has no class folders (images must sit in ROOT/{split}/<class>/).\n{LAYOUT}")
        empty = [str(split_dir / name) for name in classes if not _has_image(split_dir / name)]
        if empty:
            raise ValueError(f"Class folders without images: {', '.join(empty)}. "
                             f"Add images or remove the folders.\n{LAYOUT}")
        classes_per_split[split] = classes
    reference = classes_per_split[splits[0]]
    for split, classes in classes_per_split.items():
        missing, extra = sorted(set(reference) - set(classes)), sorted(set(classes) - set(reference))
        if missing or extra:
            raise ValueError(
                f"{root / split} has different classes from {root / splits[0]}: "
                f"missing {missing or 'none'}, extra {extra or 'none'}. Every split needs the same class folders."
            )
    return reference


class FlowerFolder(datasets.ImageFolder):
    """``ImageFolder`` that skips dot-folders and opens images with :func:`load_rgb_image`.

    Dot-folders such as ``.ipynb_checkpoints`` (Jupyter creates them) would otherwise
    become an extra class, and dot-files such as macOS's ``._photo.jpg`` would be read
    as broken images; the loader names the file when an image is broken.
    """

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None) -> None:
        super().__init__(str(root), transform=transform, loader=load_rgb_image)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        """Class names from the sub-folders, dot-folders left out."""
        classes = class_folders(Path(directory))
        if not classes:
            raise FileNotFoundError(f"{directory} has no class folders.\n{LAYOUT}")
        return classes, {name: index for index, name in enumerate(classes)}

    @staticmethod
    def make_dataset(directory: str | os.PathLike, class_to_idx: dict[str, int],
                     extensions: tuple[str, ...] | None = None, is_valid_file: Callable | None = None,
                     allow_empty: bool = False) -> list[tuple[str, int]]:
        """ImageFolder's (path, class index) list without dot-files and files in dot-folders."""
        samples = datasets.ImageFolder.make_dataset(directory, class_to_idx, extensions, is_valid_file, allow_empty)
        return [(path, target) for path, target in samples if not _is_hidden(path, str(directory))]


def make_datasets(root: str | os.PathLike, augment: bool = True, image_size: int = 224,
                  augment_strength: float = 1.0) -> dict[str, FlowerFolder]:
    """The train/valid/test datasets; only train is augmented (and only when ``augment``)."""
    check_layout(root)
    train_tf = train_transform(image_size, augment_strength) if augment else eval_transform(image_size)
    return {split: FlowerFolder(Path(root) / split, train_tf if split == "train" else eval_transform(image_size))
            for split in SPLIT_NAMES}


def default_num_workers(device: str = "cpu") -> int:
    """Worker processes for loading: enough to keep a GPU busy, none on a small CPU machine.

    On a CPU the network itself needs the cores; on 2 cores, loading in the main
    process beats workers that fight torch's threads for the same cores.
    """
    cores = cpu_cores()
    if device.startswith("cuda"):
        return min(8, cores)
    return 0 if cores <= 2 else min(4, cores // 2)


def make_loaders(root: str | os.PathLike, batch_size: int = 64, augment: bool = True,
                 num_workers: int | None = None, image_size: int = 224, shuffle: bool = True,
                 seed: int | None = None, augment_strength: float = 1.0,
                 device: str | None = None) -> dict[str, DataLoader]:
    """DataLoaders for "train" (shuffled, augmented if asked), "valid" and "test" (neither).

    Class names come from train and must match valid/test. ``seed`` fixes the shuffling
    order (a seeded generator); ``num_workers=None`` picks :func:`default_num_workers`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}.")
    device = resolve_device(device)
    workers = default_num_workers(device) if num_workers is None else num_workers
    sets = make_datasets(root, augment=augment, image_size=image_size, augment_strength=augment_strength)
    generator = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(seed)
    common = {"batch_size": batch_size, "num_workers": workers, "pin_memory": device.startswith("cuda"),
              "persistent_workers": workers > 0}
    return {
        "train": DataLoader(sets["train"], shuffle=shuffle, generator=generator, **common),
        "valid": DataLoader(sets["valid"], shuffle=False, **common),
        "test": DataLoader(sets["test"], shuffle=False, **common),
    }


def load_cat_to_name(path: str | os.PathLike) -> dict[str, str]:
    """Read a ``cat_to_name.json`` (folder name -> flower name); errors name the file."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "cat_to_name.json"
    try:
        names = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"No category names file at {path}.") from None
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from None
    if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
        raise ValueError(f"{path} must map folder names to flower names, like {{\"1\": \"pink primrose\"}}.")
    return {str(key): value for key, value in names.items()}


def ensure_dataset(settings: Settings) -> Path:
    """Make sure the dataset the settings ask for is on disk, and return its folder.

    Your own folder (``FLOWERS_DATASET_DIR``): its layout is checked. Tiny: generated in
    a second. Full: Flowers102 prepared once (downloads ~330 MB the first time; later
    calls return at once).
    """
    if settings.dataset_override is not None:
        check_layout(settings.dataset_override)
        return settings.dataset_override
    if settings.tiny:
        return make_tiny_flowers(settings.dataset_dir)
    return prepare_flowers102(settings.dataset_dir, split=settings.split, resize_to=settings.resize_to,
                              download_dir=settings.data_root / "downloads")
