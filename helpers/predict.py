"""Predicting one image: prepare it exactly like the validation images, then top-k classes."""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
from PIL import Image, ImageOps
from torch import nn

from helpers.config import resolve_device
from helpers.data import eval_transform
from helpers.images import load_rgb_image, to_rgb


class Prediction(NamedTuple):
    """One of the top-k answers: the class folder, its flower name, and the probability."""

    folder: str
    name: str
    probability: float


def open_image(image: str | os.PathLike | Image.Image) -> Image.Image:
    """A path or a PIL image, as an upright RGB PIL image (EXIF orientation applied)."""
    if isinstance(image, Image.Image):
        return to_rgb(ImageOps.exif_transpose(image))
    return load_rgb_image(image)


def process_image(image: str | os.PathLike | Image.Image, image_size: int = 224) -> torch.Tensor:
    """The (3, size, size) normalised tensor the network expects, as for validation images."""
    return eval_transform(image_size)(open_image(image))


def idx_to_class(class_to_idx: dict[str, int]) -> dict[int, str]:
    """Invert ``class_to_idx``: output index -> class folder name.

    Needed because ImageFolder numbers folders in *text* order: "1", "10", "100", "11", ...
    so index 2 is folder "100", not "3".
    """
    return {index: folder for folder, index in class_to_idx.items()}


@torch.no_grad()
def predict(image: str | os.PathLike | Image.Image, model: nn.Module, topk: int = 5,
            cat_to_name: dict[str, str] | None = None, device: str | None = None) -> list[Prediction]:
    """The ``topk`` most probable classes for one image, most probable first.

    ``model`` needs ``class_to_idx`` (a loaded checkpoint has it). Names come from
    ``cat_to_name`` (folder -> flower name) when given, else the folder name is used.
    """
    class_to_idx = getattr(model, "class_to_idx", None)
    if not class_to_idx:
        raise ValueError("The model has no class_to_idx; set model.class_to_idx = loaders['train'].dataset.class_to_idx "
                         "or load a checkpoint.")
    if not isinstance(topk, int) or not 1 <= topk <= len(class_to_idx):
        raise ValueError(f"topk must be a whole number from 1 to {len(class_to_idx)} (the number of classes), not {topk!r}.")
    device = resolve_device(device)
    tensor = process_image(image, getattr(model, "image_size", 224)).unsqueeze(0).to(device)
    model.to(device).eval()
    probabilities = model(tensor).float().exp().squeeze(0)
    top_probabilities, top_indices = probabilities.topk(topk)
    folders = idx_to_class(class_to_idx)
    names = cat_to_name or {}
    return [Prediction(folders[i], names.get(folders[i], folders[i]), float(p))
            for p, i in zip(top_probabilities.tolist(), top_indices.tolist())]
