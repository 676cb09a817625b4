"""What the notebooks show more than once: image grids, training curves, predictions, tables.

Every ``plot_*`` function draws a new matplotlib figure and returns it, so a notebook cell shows it once
and a test can check what was drawn. Pictures only one notebook needs are drawn there, in plain matplotlib.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator
from PIL import Image

from helpers.data import IMAGENET_MEAN, IMAGENET_STD


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation of a (3, H, W) tensor and clip to [0, 1] for display."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image.detach().cpu().float() * std + mean).clamp(0, 1)


def _displayable(image: torch.Tensor | Image.Image):
    return image if isinstance(image, Image.Image) else denormalize(image).permute(1, 2, 0).numpy()


def show_images(images: Sequence[torch.Tensor | Image.Image], titles: Sequence[str] | None = None,
                columns: int = 6, size: float = 2.0) -> plt.Figure:
    """A grid of images (PIL, or tensors normalised with ImageNet's statistics) with optional titles."""
    if len(images) == 0:
        raise ValueError("No images to show.")
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < len(images):
            axis.imshow(_displayable(images[index]))
            if titles is not None:
                axis.set_title(str(titles[index]), fontsize=9)
    figure.tight_layout()
    return figure


def plot_history(histories: Mapping[str, Mapping[str, Sequence[float]]],
                 title: str | None = None) -> plt.Figure:
    """Loss and accuracy per epoch for runs ``{label: history}``, one colour per run.

    Solid: validation. Dotted: training images in evaluation mode (compare these two for
    overfitting). Dashed, faint: the running average while training, which lags behind.
    """
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for number, (label, history) in enumerate(histories.items()):
        colour, prefix = f"C{number % 10}", f"{label}: " if len(histories) > 1 else ""
        for axis, metric in zip(axes, ("loss", "accuracy")):
            axis.plot(history["epoch"], history[f"train_{metric}"], "--", color=colour, alpha=0.45,
                      label=f"{prefix}train (while training)")
            if history.get(f"train_eval_{metric}"):
                axis.plot(history["epoch"], history[f"train_eval_{metric}"], ":", color=colour, linewidth=2,
                          label=f"{prefix}train (evaluation mode)")
            axis.plot(history["epoch"], history[f"valid_{metric}"], "-", color=colour, label=f"{prefix}valid")
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set(xlabel="epoch", ylabel="loss (NLL)", title="loss")
    axes[1].set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    axes[1].legend(fontsize=7, loc="best")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_prediction(image: torch.Tensor | Image.Image, predictions: Sequence,
                    title: str | None = None) -> plt.Figure:
    """The image beside a bar chart of its top-k classes and their probabilities."""
    figure, (image_axis, bar_axis) = plt.subplots(1, 2, figsize=(10, 3.8), width_ratios=[1, 1.3])
    image_axis.imshow(_displayable(image))
    image_axis.axis("off")
    image_axis.set_title(title or "")
    ranked = list(predictions)[::-1]  # barh draws from the bottom up: the most probable on top
    bar_axis.barh([f"{p.name} ({p.folder})" for p in ranked], [p.probability for p in ranked])
    bar_axis.set(xlim=(0, 1), xlabel="probability")
    figure.tight_layout()
    return figure


def format_table(rows: Sequence[Mapping[str, object]], percent: Sequence[str] = ()) -> str:
    """Rows with the same keys as an aligned text table; numbers right-aligned, floats with two decimals.

    ``percent`` names the columns that hold fractions (accuracies, shares) to print as percentages.
    """
    if not rows:
        return "(no rows)"
    columns = list(rows[0])

    def cell(key: str, value: object) -> str:
        if isinstance(value, float):
            return f"{value:.1%}" if key in percent else f"{value:,.2f}"
        return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)

    text = [[cell(key, row[key]) for key in columns] for row in rows]
    widths = [max(len(key), *(len(line[i]) for line in text)) for i, key in enumerate(columns)]
    numeric = [all(isinstance(row[key], (int, float)) for row in rows) for key in columns]

    def line(values: Sequence[str]) -> str:
        cells = (v.rjust(w) if right else v.ljust(w) for v, w, right in zip(values, widths, numeric))
        return "  ".join(cells).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(values) for values in text)])
