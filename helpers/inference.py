"""Using a trained classifier on images it never saw (notebook 06): top-k for one image, and a whole split.

Both use :func:`helpers.train.model_outputs`, the one inference path: CLI, notebooks and test accuracy agree.
"""

from __future__ import annotations

import os
from typing import Mapping, NamedTuple

import torch
from PIL import Image, ImageOps
from torch import nn
from torch.utils.data import DataLoader

from helpers.data import eval_transform, load_rgb_image, to_rgb
from helpers.train import model_outputs


class Prediction(NamedTuple):
    """One of the top-k answers: the class folder, its flower name, and the probability."""

    folder: str
    name: str
    probability: float


def process_image(image: str | os.PathLike | Image.Image, backbone: str | None = "resnet18") -> torch.Tensor:
    """The (3, crop, crop) normalised tensor the network expects, prepared exactly like validation images."""
    picture = (to_rgb(ImageOps.exif_transpose(image)) if isinstance(image, Image.Image)
               else load_rgb_image(image))
    return eval_transform(backbone)(picture)


def idx_to_class(class_to_idx: Mapping[str, int]) -> dict[int, str]:
    """Output index -> class folder; folders are sorted as *text* ("1", "10", "100", ...), so 2 is "100"."""
    return {index: folder for folder, index in class_to_idx.items()}


def predict(image: str | os.PathLike | Image.Image, model: nn.Module, topk: int = 5,
            cat_to_name: Mapping[str, str] | None = None, device: str | None = None) -> list[Prediction]:
    """The ``topk`` most probable classes for one image, most probable first.

    Names come from ``cat_to_name`` (folder -> flower name), else those saved with the model, else the folder.
    """
    class_to_idx = getattr(model, "class_to_idx", None)
    if not class_to_idx:
        raise ValueError("The model has no class_to_idx; set model.class_to_idx = "
                         "loaders['train'].dataset.class_to_idx, or load a checkpoint.")
    if not isinstance(topk, int) or isinstance(topk, bool) or not 1 <= topk <= len(class_to_idx):
        raise ValueError(f"topk must be a whole number from 1 to {len(class_to_idx)} "
                         f"(the number of classes), not {topk!r}.")
    name = None if getattr(model, "custom_backbone", True) else model.backbone_name
    batch = process_image(image, name).unsqueeze(0)
    log_probs, _ = model_outputs(model, [(batch, torch.zeros(1, dtype=torch.long))], device)
    probabilities, indices = log_probs[0].exp().topk(topk)
    folders = idx_to_class(class_to_idx)
    names = cat_to_name or getattr(model, "cat_to_name", None) or {}
    return [Prediction(folders[i], names.get(folders[i], folders[i]), p)
            for p, i in zip(probabilities.tolist(), indices.tolist())]


class SplitResult(NamedTuple):
    """Every prediction over one split, in the dataset's order: labels and predicted indices (N,),
    probabilities (N, classes), the class folders, and each image's file."""

    labels: torch.Tensor
    predicted: torch.Tensor
    probabilities: torch.Tensor
    classes: list[str]
    paths: list[str]


def evaluate_split(model: nn.Module, loader: DataLoader, device: str | None = None) -> SplitResult:
    """Run ``model`` over an unshuffled loader of a ``FlowerFolder`` and keep every prediction."""
    if not isinstance(loader.sampler, torch.utils.data.SequentialSampler):
        raise ValueError("evaluate_split needs an unshuffled loader (e.g. loaders['test']) "
                         "to match images and paths.")
    log_probs, labels = model_outputs(model, loader, device)
    probabilities = log_probs.exp()
    return SplitResult(labels, probabilities.argmax(dim=1), probabilities, list(loader.dataset.classes),
                       [str(path) for path, _ in loader.dataset.samples])


def accuracy(result: SplitResult) -> float:
    """The share of images whose top prediction is the true class."""
    return float((result.predicted == result.labels).float().mean())
