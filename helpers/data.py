"""Images, transforms, datasets and DataLoaders: the code notebook 01 writes, saved for reuse.

Every error about an image names the file; the transforms follow the chosen backbone's preprocessing.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torchvision
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from helpers.config import SPLITS, default_num_workers, resolve_device

# The per-channel statistics of ImageNet, which torchvision's pretrained networks were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = datasets.folder.IMG_EXTENSIONS
LAYOUT = ("Expected layout: ROOT/train/<class>/<image>.jpg, ROOT/valid/<class>/..., ROOT/test/<class>/..., "
          "with the same class folders in each split (names starting with a dot are ignored).")


class BadImageError(ValueError):
    """A file that should be an image cannot be read as one. The message names the file."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image in RGB, as a person sees it: transparency on white, 16-bit stretched from min to max."""
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
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def load_rgb_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as an upright RGB PIL image; every error names the file."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the path of one image file.")
    if not path.exists():
        raise FileNotFoundError(f"No image at {path}; check the path (relative paths start at {Path.cwd()}).")
    try:
        with Image.open(path) as opened:
            opened.load()
            return to_rgb(ImageOps.exif_transpose(opened))
    except Image.DecompressionBombError as error:
        raise BadImageError(f"{path}: the image is too large for PIL's safety limit ({error}). "
                            "Shrink it, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust it.") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        if path.stat().st_size == 0:
            problem = "the file is empty (0 bytes)"
        elif path.suffix.lower() in (".heic", ".heif"):
            problem = "HEIC photos (iPhone) cannot be read here; export or convert them to JPEG"
        elif isinstance(error, UnidentifiedImageError):
            problem = "not an image format PIL knows; is it really a picture?"
        elif "truncated" in str(error).lower():
            problem = "the file is truncated (cut off part-way, e.g. an interrupted download)"
        else:
            problem = str(error) or type(error).__name__
        raise BadImageError(f"{path}: cannot be read as an image ({problem}). Replace or delete it; "
                            "helpers.data.verify_images(root) lists every such file.") from error


def iter_image_files(root: str | os.PathLike) -> Iterator[Path]:
    """Image files below ``root`` in sorted order, dot-folders and dot-files skipped."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                yield Path(folder) / name


def verify_images(root: str | os.PathLike) -> list[str]:
    """Fully decode every image below ``root``; return one line per file that fails (empty: all good)."""
    if not Path(root).is_dir():
        raise FileNotFoundError(f"No folder at {root}.")
    problems = []
    for path in iter_image_files(root):
        try:
            load_rgb_image(path)
        except BadImageError as error:
            problems.append(str(error).split(" Replace or delete it")[0])
    return problems


def preprocessing(backbone: str | None = "resnet18") -> dict:
    """Resize, crop, interpolation, mean and std that ``backbone``'s pretrained weights expect.

    From the weights' metadata (no download): resnet18 256/224, resnet50 232/224, efficientnet_b0 bicubic.
    """
    if backbone is None:  # your own backbone: the usual ImageNet recipe
        return {"resize": 256, "crop": 224, "interpolation": transforms.InterpolationMode.BILINEAR,
                "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    preset = torchvision.models.get_model_weights(backbone).DEFAULT.transforms()
    return {"resize": preset.resize_size[0], "crop": preset.crop_size[0],
            "interpolation": preset.interpolation, "mean": tuple(preset.mean), "std": tuple(preset.std)}


def eval_transform(backbone: str | None = "resnet18") -> transforms.Compose:
    """Resize, centre-crop, tensor, normalise: what valid, test and prediction images get."""
    p = preprocessing(backbone)
    return transforms.Compose([transforms.Resize(p["resize"], p["interpolation"]),
                               transforms.CenterCrop(p["crop"]), transforms.ToTensor(),
                               transforms.Normalize(p["mean"], p["std"])])


def train_transform(backbone: str | None = "resnet18", strength: float = 1.0) -> transforms.Compose:
    """Random rotation, shift, scale, flip and a little colour change, then the evaluation steps.

    ``strength`` scales every change: 0 is the evaluation pipeline, 1 the course's default, 2 twice that.
    """
    if not 0 <= strength <= 2:
        raise ValueError(f"strength must be between 0 and 2, not {strength}.")
    if strength == 0:
        return eval_transform(backbone)
    p, s = preprocessing(backbone), strength
    return transforms.Compose([
        transforms.Resize(p["resize"], p["interpolation"]),
        transforms.RandomAffine(degrees=30 * s, translate=(0.1 * s, 0.1 * s),
                                scale=(1 - 0.2 * s, 1 + 0.2 * s)),
        transforms.CenterCrop(p["crop"]),
        transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(brightness=0.2 * s, contrast=0.2 * s, saturation=0.2 * s),
        transforms.ToTensor(),
        transforms.Normalize(p["mean"], p["std"]),
    ])


def class_folders(split_dir: Path) -> list[str]:
    """Class folder names of one split, sorted as text (as ImageFolder does), dot-folders skipped."""
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def check_layout(root: str | os.PathLike, splits: tuple[str, ...] = SPLITS) -> list[str]:
    """Check ``root`` against the expected layout and return the class names (an error names the problem)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"No dataset folder at {root}. {LAYOUT}")
    found = {}
    for split in splits:
        if not (root / split).is_dir():
            raise FileNotFoundError(f"{root} has no {split}/ folder. {LAYOUT}")
        classes = class_folders(root / split)
        if not classes:
            raise FileNotFoundError(f"{root / split} has no class folders. {LAYOUT}")
        empty = [str(root / split / c) for c in classes
                 if next(iter_image_files(root / split / c), None) is None]
        if empty:
            raise ValueError(f"Class folders without images: {', '.join(empty)}. "
                             f"Add images or remove them. {LAYOUT}")
        found[split] = classes
    first = set(found[splits[0]])
    for split, classes in found.items():
        missing, extra = sorted(first - set(classes)), sorted(set(classes) - first)
        if missing or extra:
            raise ValueError(f"{root / split} has different classes from {root / splits[0]}: "
                             f"missing {missing or 'none'}, extra {extra or 'none'}. "
                             "Every split needs the same class folders.")
    return found[splits[0]]


class FlowerFolder(datasets.ImageFolder):
    """``ImageFolder`` that ignores dot-files and names the file when an image is broken.

    Files whose type it cannot read (a phone's ``.heic`` photos, say) are left out with a
    warning that counts them; ``skipped`` lists them (:func:`verify_images` finds broken files).
    """

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None) -> None:
        super().__init__(str(root), transform=transform, loader=load_rgb_image)
        listed = {Path(path) for path, _ in self.samples}
        self.skipped = [path for c in self.classes for path in sorted((Path(root) / c).rglob("*"))
                        if path.is_file() and path not in listed
                        and not any(part.startswith(".") for part in path.relative_to(root).parts)]
        if self.skipped:
            examples = ", ".join(path.name for path in self.skipped[:3])
            warnings.warn(f"{root}: {len(self.skipped)} file(s) skipped because this loader cannot read "
                          f"them (e.g. {examples}). Convert them to JPEG or PNG, or move them out of the "
                          f"class folders; readable types: {', '.join(IMAGE_EXTENSIONS)}.", stacklevel=2)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        """Class names from the sub-folders, dot-folders left out."""
        classes = class_folders(Path(directory))
        if not classes:
            raise FileNotFoundError(f"{directory} has no class folders. {LAYOUT}")
        return classes, {name: index for index, name in enumerate(classes)}

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        """ImageFolder's (path, class index) list without dot-files and files in dot-folders."""
        samples = datasets.ImageFolder.make_dataset(directory, class_to_idx, extensions, is_valid_file,
                                                    allow_empty)
        return [(p, t) for p, t in samples
                if not any(part.startswith(".") for part in Path(p).relative_to(directory).parts)]


def make_loaders(root: str | os.PathLike, batch_size: int = 32, train_tf: Callable | None = None,
                 eval_tf: Callable | None = None, shuffle: bool = True, seed: int = 0,
                 num_workers: int | None = None, device: str | None = None) -> dict[str, DataLoader]:
    """DataLoaders "train" (shuffled, ``train_tf``), "valid" and "test" (``eval_tf``, in order).

    Also "train_eval": a fixed sample of the training images (1,000, or half of a smaller set) with
    ``eval_tf``, to measure training accuracy the way validation is measured. ``seed`` fixes the shuffling
    order; ``num_workers=None`` picks the default for ``device``, where the batches will go.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}.")
    check_layout(root)
    train_tf, eval_tf = train_tf or train_transform(), eval_tf or eval_transform()
    device = resolve_device(device)
    workers = default_num_workers(device) if num_workers is None else num_workers
    sets = {split: FlowerFolder(Path(root) / split, train_tf if split == "train" else eval_tf)
            for split in SPLITS}
    plain_train = copy.copy(sets["train"])  # the same files, with the evaluation transform
    plain_train.transform = eval_tf
    size = min(1000, max(1, len(plain_train) // 2))  # each measured image costs a forward pass every epoch
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randperm(len(plain_train), generator=generator)[:size].sort().values
    sets["train_eval"] = Subset(plain_train, sample.tolist())
    # Page-locked memory speeds up copies to a CUDA GPU; MPS shares memory with the CPU, which needs no copy.
    common = {"batch_size": batch_size, "num_workers": workers, "pin_memory": device.startswith("cuda"),
              "persistent_workers": workers > 0}
    return {split: DataLoader(data, shuffle=shuffle and split == "train",
                              generator=torch.Generator().manual_seed(seed), **common)
            for split, data in sets.items()}


def load_cat_to_name(path: str | os.PathLike, classes: list[str] | None = None) -> dict[str, str]:
    """Read a ``cat_to_name.json`` (class folder -> flower name); errors name the file.

    ``path``: the file, or the dataset folder that holds it. Without the file, ``classes``
    (e.g. ``loader.dataset.classes``) name themselves: your own photos need no names file.
    """
    path = Path(path).expanduser()
    path = path / "cat_to_name.json" if path.is_dir() else path
    if classes is not None and not path.exists():
        return {folder: folder for folder in classes}
    try:
        names = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"No category names file at {path}. Pass the class folders too, "
                                "load_cat_to_name(path, classes), to use the folder names.") from None
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from None
    if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
        raise ValueError(f'{path} must map class folders to flower names, like {{"1": "pink primrose"}}.')
    return {str(key): value for key, value in names.items()}
