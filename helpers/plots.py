"""Pictures for the notebooks: images, transforms, channel statistics, batches, augmentation,
training curves, predictions.

Every ``plot_*`` function (and :func:`augmentation_grid`, :func:`augmentation_examples`)
draws into a new matplotlib figure and returns it, so a notebook cell shows it once and a
test can check what was drawn. A few small functions beside them compute what is drawn
(channel statistics, label counts per batch) or format it as a text table.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from helpers.data import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform


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
    for axis in (loss_axis, accuracy_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    loss_axis.set(xlabel="epoch", ylabel="loss (NLL)", title="loss")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    accuracy_axis.legend(fontsize=8, loc="best")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_prediction(image: torch.Tensor | Image.Image, predictions: Sequence, title: str | None = None) -> plt.Figure:
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


# --- Looking at transforms (notebook 01) -------------------------------------------------


def describe_value(value: object) -> str:
    """One line saying what ``value`` is: a PIL image with its size, or a tensor with shape and dtype."""
    if isinstance(value, Image.Image):
        return f"PIL image {value.width} x {value.height} ({value.mode})"
    if isinstance(value, torch.Tensor):
        return f"tensor {tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    return type(value).__name__


def step_name(step: Callable) -> str:
    """A short name for one transform step, e.g. ``Resize(256)`` or ``CenterCrop(224)``."""
    name = type(step).__name__
    size = getattr(step, "size", None)
    if isinstance(size, (tuple, list)) and len(set(size)) == 1:
        size = size[0]
    return f"{name}({size})" if size is not None else f"{name}()"


def transform_steps(image: Image.Image, transform: transforms.Compose) -> list[tuple[str, object]]:
    """Apply the steps of ``transform`` one by one; return ``(step name, result)`` after each.

    The first entry is ``("input", image)``. Useful to see what every step of a
    ``Compose`` does to the size, type and values of an image.
    """
    if not isinstance(transform, transforms.Compose):
        raise TypeError(f"transform_steps needs a transforms.Compose, not {type(transform).__name__}.")
    results: list[tuple[str, object]] = [("input", image)]
    value: object = image
    for step in transform.transforms:
        value = step(value)
        results.append((step_name(step), value))
    return results


def _for_display(value: object) -> tuple[object, str]:
    """An imshow-able version of an intermediate result, and a note on how it is shown."""
    if isinstance(value, Image.Image):
        return value, ""
    tensor = value.detach().cpu().float()
    low, high = float(tensor.min()), float(tensor.max())
    if low >= 0 and high <= 1:
        return tensor.permute(1, 2, 0).numpy(), f"values {low:.2f}..{high:.2f}"
    rescaled = (tensor - low) / (high - low) if high > low else tensor * 0
    return rescaled.permute(1, 2, 0).numpy(), f"values {low:.2f}..{high:.2f} (rescaled to show)"


def plot_transform_steps(image: Image.Image, transform: transforms.Compose, size: float = 2.6) -> plt.Figure:
    """One panel per step of ``transform``: the image after it, with its size or value range.

    All panels use the same scale in pixels, so a resize or crop is visible as a
    change of size. A normalised tensor has values outside [0, 1]; it is rescaled
    for display (the title says so).
    """
    steps = transform_steps(image, transform)
    widths = [value.width if isinstance(value, Image.Image) else value.shape[-1] for _, value in steps]
    figure, axes = plt.subplots(1, len(steps), figsize=(size * len(steps), size + 0.6), squeeze=False,
                                gridspec_kw={"width_ratios": widths})
    for axis, (name, value) in zip(axes.flat, steps):
        shown, note = _for_display(value)
        axis.imshow(shown)
        what = describe_value(value).split(" (")[0] if isinstance(value, Image.Image) else f"tensor {tuple(value.shape)}"
        axis.set_title(f"{name}\n{what}" + (f"\n{note}" if note else ""), fontsize=8)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    return figure


# --- Channel statistics (notebook 01) ------------------------------------------------------


def channel_statistics(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of each colour channel over a batch ``(N, 3, H, W)``."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"Expected a batch of RGB images shaped (N, 3, H, W), got {tuple(images.shape)}.")
    values = images.detach().float().transpose(0, 1).reshape(3, -1)
    return values.mean(dim=1), values.std(dim=1)


def channel_table(batches: Mapping[str, torch.Tensor],
                  reference: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
                  digits: int = 3) -> str:
    """A text table of per-channel mean and std, one row per named batch of images.

    ``reference`` adds rows of known values, ``{"label": (means, stds)}``, for example
    ImageNet's, so the batch rows can be compared with them.
    """
    rows: list[tuple[str, Sequence[float], Sequence[float]]] = []
    for label, images in batches.items():
        mean, std = channel_statistics(images)
        rows.append((label, mean.tolist(), std.tolist()))
    for label, (mean, std) in (reference or {}).items():
        rows.append((label, list(mean), list(std)))
    if not rows:
        raise ValueError("channel_table needs at least one batch or reference row.")
    width = max(len(label) for label, _, _ in rows) + 2
    columns = ("mean R", "mean G", "mean B", "std R", "std G", "std B")
    header = f"{'':<{width}}" + "".join(f"{name:>9}" for name in columns)
    lines = [header, "-" * len(header)]
    for label, mean, std in rows:
        numbers = "".join(f"{value:>9.{digits}f}" for value in [*mean, *std])
        lines.append(f"{label:<{width}}{numbers}")
    return "\n".join(lines)


def plot_channel_histograms(batches: Mapping[str, torch.Tensor], bins: int = 60) -> plt.Figure:
    """Histograms of the red, green and blue values of each named batch, side by side.

    A dashed line marks each channel's mean and a grey line marks 0, so you see the
    values move from [0, 1] to roughly centred on 0 after normalisation.
    """
    figure, axes = plt.subplots(1, len(batches), figsize=(5.2 * len(batches), 3.2), squeeze=False)
    for axis, (label, images) in zip(axes.flat, batches.items()):
        values = images.detach().float().transpose(0, 1).reshape(3, -1)
        for channel, colour in enumerate(("red", "green", "blue")):
            axis.hist(values[channel].numpy(), bins=bins, histtype="step", color=colour, label=colour, density=True)
            axis.axvline(float(values[channel].mean()), color=colour, linestyle="--", linewidth=1)
        axis.axvline(0, color="grey", linewidth=0.8)
        axis.set(title=label, xlabel="pixel value", ylabel="density")
        axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


# --- What the loaders feed (notebook 01) ------------------------------------------------------


def class_table(class_to_idx: Mapping[str, int], cat_to_name: Mapping[str, str] | None = None,
                limit: int | None = None) -> str:
    """Output index, class folder and flower name, one line per class, in index order.

    Shows that index ``i`` is *not* folder ``str(i + 1)``: ImageFolder sorts folder
    names as text. ``limit`` keeps the first lines only; a folder without a name shows ``?``.
    """
    names = cat_to_name or {}
    lines = [f"{'index':>5}  {'folder':<8}name"]
    in_order = sorted(class_to_idx.items(), key=lambda item: item[1])
    for folder, index in in_order[:limit]:
        lines.append(f"{index:>5}  {folder:<8}{names.get(folder, '?')}")
    return "\n".join(lines)


def one_per_class(dataset: Dataset, limit: int | None = None) -> list[int]:
    """The index of the first sample of each class in an ImageFolder-like dataset (at most ``limit``)."""
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise TypeError(f"{type(dataset).__name__} has no .targets; pass an ImageFolder (e.g. FlowerFolder).")
    first: dict[int, int] = {}
    for index, label in enumerate(targets):
        first.setdefault(int(label), index)
    indices = [first[label] for label in sorted(first)]
    return indices if limit is None else indices[:limit]


def batch_label_counts(loader: DataLoader, max_batches: int | None = None) -> torch.Tensor:
    """How many images of each class every batch of ``loader`` holds: shape ``(batches, classes)``.

    It asks the loader's batch sampler which dataset indices form each batch and looks
    their labels up in ``dataset.targets``, so no image is opened: this is fast even for
    a whole epoch of the real data. A shuffled loader draws a new order each time.
    """
    targets = getattr(loader.dataset, "targets", None)
    if targets is None or loader.batch_sampler is None:
        raise TypeError("batch_label_counts needs a DataLoader with a batch_size over a dataset with .targets "
                        "(an ImageFolder such as FlowerFolder).")
    num_classes = len(getattr(loader.dataset, "classes", None) or set(targets))
    rows = []
    for number, indices in enumerate(loader.batch_sampler):
        if max_batches is not None and number >= max_batches:
            break
        labels = torch.as_tensor([int(targets[i]) for i in indices])
        rows.append(torch.bincount(labels, minlength=num_classes))
    return torch.stack(rows) if rows else torch.zeros(0, num_classes, dtype=torch.long)


def plot_batch_labels(counts: Mapping[str, torch.Tensor], class_names: Sequence[str] | None = None,
                      max_batches: int = 6) -> plt.Figure:
    """A label histogram for each of the first batches, one row of panels per loader.

    ``counts`` maps a label (e.g. ``"shuffle=False"``) to a ``(batches, classes)`` tensor
    from :func:`batch_label_counts`. A bar per class shows how many of its images the
    batch holds; an unshuffled loader shows one tall bar per batch.
    """
    rows = len(counts)
    columns = min(max_batches, max(len(c) for c in counts.values()))
    figure, axes = plt.subplots(rows, columns, figsize=(1.9 * columns + 1.2, 2.0 * rows + 0.8), squeeze=False,
                                sharey=True)
    for row, (label, table) in enumerate(counts.items()):
        num_classes = table.shape[1]
        names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        colours = [f"C{i % 10}" for i in range(num_classes)]
        for column in range(columns):
            axis = axes[row][column]
            if column >= len(table):
                axis.axis("off")
                continue
            axis.bar(range(num_classes), table[column].tolist(), color=colours)
            axis.set_title(f"batch {column + 1}", fontsize=9)
            axis.set_xticks([])
        axes[row][0].set_ylabel(f"{label}\nimages per class", fontsize=9)
    if class_names is not None and len(names) <= 12:
        handles = [plt.Rectangle((0, 0), 1, 1, color=colour) for colour in colours]
        figure.legend(handles, names, loc="lower center", ncol=min(6, len(names)), fontsize=8, frameon=False)
        figure.tight_layout(rect=(0, 0.1 if len(names) <= 6 else 0.16, 1, 1))
    else:
        figure.supxlabel("class index (one bar per class)", fontsize=9)
        figure.tight_layout()
    return figure


# --- Augmentation (notebook 02) ---------------------------------------------------------------


def augment_many(image: Image.Image, transform: Callable, count: int, seed: int = 0) -> list:
    """``count`` results of a random ``transform`` on one image, repeatable for a given ``seed``.

    The random numbers come from a forked torch generator, so calling this does not
    change the random state the rest of the notebook uses.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return [transform(image) for _ in range(count)]


def augmentation_examples(image: Image.Image, changes: Mapping[str, Callable], count: int = 5,
                          seed: int = 0, size: float = 1.9) -> plt.Figure:
    """One row per named random change (rotation, flip, ...): the original, then ``count`` draws.

    ``changes`` maps a label to a transform that takes and returns a PIL image.
    """
    figure, axes = plt.subplots(len(changes), count + 1, figsize=(size * (count + 1), size * len(changes)),
                                squeeze=False)
    for row, (label, change) in enumerate(changes.items()):
        versions = [image, *augment_many(image, change, count, seed + row)]
        for column, version in enumerate(versions):
            axis = axes[row][column]
            axis.imshow(_as_displayable(version, normalized=False))
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row][0].set_ylabel(label, fontsize=9)
        axes[row][0].set_title("original" if row == 0 else "", fontsize=9)
    figure.tight_layout()
    return figure


def augmentation_grid(image: Image.Image, strength: float = 1.0, count: int = 11, seed: int = 0,
                      image_size: int = 224, columns: int = 6) -> plt.Figure:
    """The evaluation view of ``image`` followed by ``count`` training views at ``strength``.

    ``strength`` (0 to 2) scales every random change of
    :func:`helpers.data.train_transform`; 0 gives ``count`` copies of the evaluation view.
    Also the callback of the augmentation slider in notebook 02.
    """
    evaluation = eval_transform(image_size)(image)
    augmented = augment_many(image, train_transform(image_size, strength), count, seed)
    titles = ["evaluation view", *[f"train view {i}" for i in range(1, count + 1)]]
    figure = show_images([evaluation, *augmented], titles, columns=columns, normalized=True, size=1.9)
    figure.suptitle(f"augmentation strength {strength:g} (seed {seed})")
    figure.tight_layout(rect=(0, 0, 1, 0.94))
    return figure
