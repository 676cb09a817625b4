"""Pictures for the notebooks: images from tensors, training curves, predictions.

Every function draws into a new matplotlib figure and returns it, so a notebook cell
shows it once and a test can check what was drawn.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from PIL import Image

from helpers.data import IMAGENET_MEAN, IMAGENET_STD


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation of a (3, H, W) tensor and clip to [0, 1] for display."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image.detach().cpu().float() * std + mean).clamp(0, 1)


def _as_displayable(image: torch.Tensor | Image.Image, normalized: bool):
    if isinstance(image, Image.Image):
        return image
    tensor = denormalize(image) if normalized else image.detach().cpu().float().clamp(0, 1)
    return tensor.permute(1, 2, 0).numpy()


def show_images(images: Sequence[torch.Tensor | Image.Image], titles: Sequence[str] | None = None,
                columns: int = 6, normalized: bool = True, size: float = 2.0) -> plt.Figure:
    """A grid of images (normalised tensors or PIL images) with optional titles."""
    count = len(images)
    if count == 0:
        raise ValueError("No images to show.")
    columns = max(1, min(columns, count))
    rows = (count + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < count:
            axis.imshow(_as_displayable(images[index], normalized))
            if titles is not None:
                axis.set_title(str(titles[index]), fontsize=9)
    figure.tight_layout()
    return figure


def plot_history(histories: Mapping[str, Mapping[str, Sequence[float]]] | Mapping[str, Sequence[float]],
                 title: str | None = None) -> plt.Figure:
    """Loss and accuracy per epoch: training dashed, validation solid, one colour per run.

    Pass one history (from ``fit`` or ``train_head_on_features``) or a dict of them keyed
    by a label, e.g. ``{"lr=0.01": h1, "lr=0.001": h2}``. The gap between the dashed and
    the solid line of a colour is overfitting made visible.
    """
    runs = {"": histories} if "train_loss" in histories else dict(histories)
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 3.8))
    for number, (label, history) in enumerate(runs.items()):
        colour = f"C{number % 10}"
        epochs = history["epoch"]
        prefix = f"{label} " if label else ""
        for axis, metric in ((loss_axis, "loss"), (accuracy_axis, "accuracy")):
            axis.plot(epochs, history[f"train_{metric}"], "--", color=colour, label=f"{prefix}train")
            axis.plot(epochs, history[f"valid_{metric}"], "-", color=colour, label=f"{prefix}valid")
    loss_axis.set(xlabel="epoch", ylabel="loss (NLL)", title="loss")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    accuracy_axis.legend(fontsize=8, loc="best")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_prediction(image, predictions: Sequence, title: str | None = None) -> plt.Figure:
    """The image beside a bar chart of its top-k predicted classes and probabilities."""
    figure, (image_axis, bar_axis) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1, 1.3]})
    image_axis.imshow(_as_displayable(image, normalized=True))
    image_axis.axis("off")
    image_axis.set_title(title or "")
    names = [f"{p.name} ({p.folder})" for p in predictions][::-1]
    bar_axis.barh(names, [p.probability for p in predictions][::-1], color="C0")
    bar_axis.set(xlim=(0, 1), xlabel="probability")
    figure.tight_layout()
    return figure
