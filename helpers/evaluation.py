"""Judging a trained classifier on images it never saw: accuracy, per class, confusions, mistakes.

One pass over a loader gives every prediction (:func:`predict_loader`); everything else
is computed from that result, so the test set goes through the network only once.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping, NamedTuple, Sequence

import matplotlib.pyplot as plt
import torch
from torch import nn
from torch.utils.data import DataLoader, SequentialSampler

from helpers.config import resolve_device
from helpers.images import load_rgb_image
from helpers.plots import show_images


class EvaluationResult(NamedTuple):
    """Every prediction over one split, in the loader's order.

    ``labels`` and ``predicted`` are class indices (N,), ``probabilities`` is (N, classes),
    ``classes`` maps an index to its folder name, ``paths`` holds each image's file
    (empty when the loader's order is not the dataset's, e.g. a shuffled loader).
    """

    labels: torch.Tensor
    predicted: torch.Tensor
    probabilities: torch.Tensor
    classes: list[str]
    paths: list[str]


@torch.no_grad()
def predict_loader(model: nn.Module, loader: DataLoader, device: str | None = None) -> EvaluationResult:
    """Run ``model`` (eval mode, no gradients) over every batch of ``loader`` and keep all predictions."""
    device = resolve_device(device)
    model.to(device).eval()
    labels, probabilities = [], []
    for images, batch_labels in loader:
        log_probs = model(images.to(device)).float()
        probabilities.append(log_probs.exp().cpu())
        labels.append(batch_labels.cpu())
    if not labels:
        raise ValueError("The loader gave no batches; is that split empty?")
    dataset = loader.dataset
    classes = list(getattr(dataset, "classes", [])) or [str(i) for i in range(probabilities[0].shape[1])]
    in_order = isinstance(loader.sampler, SequentialSampler) and hasattr(dataset, "samples")
    paths = [str(path) for path, _ in dataset.samples] if in_order else []
    all_probabilities = torch.cat(probabilities)
    return EvaluationResult(torch.cat(labels), all_probabilities.argmax(dim=1), all_probabilities, classes, paths)


def accuracy(result: EvaluationResult) -> float:
    """The share of images whose top prediction is the true class."""
    return float((result.predicted == result.labels).float().mean())


def display_name(folder: str, cat_to_name: Mapping[str, str] | None = None) -> str:
    """``"name (folder)"`` when a name is known, else the folder name itself."""
    name = (cat_to_name or {}).get(folder)
    return f"{name} ({folder})" if name else folder


def per_class_accuracy(result: EvaluationResult, cat_to_name: Mapping[str, str] | None = None) -> list[dict]:
    """One row per class (worst first): its images, how many were right, and the accuracy.

    The overall accuracy can hide classes the model never gets right; this table shows them.
    """
    rows = []
    for index, folder in enumerate(result.classes):
        mine = result.labels == index
        total = int(mine.sum())
        right = int((result.predicted[mine] == index).sum())
        rows.append({"class": display_name(folder, cat_to_name), "images": total, "correct": right,
                     "accuracy": right / total if total else float("nan")})
    return sorted(rows, key=lambda row: (row["accuracy"], row["class"]))


def confused_pairs(result: EvaluationResult, cat_to_name: Mapping[str, str] | None = None,
                   top: int = 5) -> list[dict]:
    """The ``top`` most frequent (true class, predicted class) mistakes, most frequent first.

    ``share`` is the fraction of the true class's images that went to that wrong class.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, not {top}.")
    wrong = result.labels != result.predicted
    pairs = Counter(zip(result.labels[wrong].tolist(), result.predicted[wrong].tolist()))
    per_class = Counter(result.labels.tolist())
    ranked = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))[:top]
    return [{"true class": display_name(result.classes[true], cat_to_name),
             "predicted as": display_name(result.classes[guess], cat_to_name),
             "images": count, "share": count / per_class[true]}
            for (true, guess), count in ranked]


def mistakes(result: EvaluationResult) -> list[int]:
    """Indices of the wrongly predicted images, most confident mistakes first."""
    wrong = (result.labels != result.predicted).nonzero().flatten().tolist()
    confidence = result.probabilities.max(dim=1).values
    return sorted(wrong, key=lambda i: -float(confidence[i]))


def plot_mistakes(result: EvaluationResult, cat_to_name: Mapping[str, str] | None = None,
                  limit: int = 12, columns: int = 6) -> plt.Figure:
    """The most confident mistakes as images, titled "true -> predicted (probability)"."""
    chosen = mistakes(result)[:limit]
    if not chosen:
        figure, axis = plt.subplots(figsize=(5, 1))
        axis.axis("off")
        axis.text(0.5, 0.5, "No mistakes on this split.", ha="center", va="center")
        return figure
    if not result.paths:
        raise ValueError("This result has no image paths (was the loader shuffled?); "
                         "evaluate with an unshuffled loader, e.g. loaders['test'].")
    names = cat_to_name or {}
    titles = [f"{names.get(result.classes[result.labels[i]], result.classes[result.labels[i]])}\n"
              f"-> {names.get(result.classes[result.predicted[i]], result.classes[result.predicted[i]])} "
              f"({float(result.probabilities[i].max()):.0%})" for i in chosen]
    images = [load_rgb_image(result.paths[i]) for i in chosen]
    return show_images(images, titles, columns=columns, normalized=False)


def format_table(rows: Sequence[Mapping[str, object]], percent: Sequence[str] = ("accuracy", "share")) -> str:
    """Rows of equal keys as an aligned text table; columns named in ``percent`` print as %.

    Plain text, so it prints the same in Jupyter, a terminal and a test.
    """
    if not rows:
        return "(no rows)"
    columns = list(rows[0])

    def cell(key: str, value: object) -> str:
        if isinstance(value, float):
            return f"{value:.1%}" if any(word in key for word in percent) else f"{value:.2f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    text = [[cell(key, row[key]) for key in columns] for row in rows]
    widths = [max(len(key), *(len(line[i]) for line in text)) for i, key in enumerate(columns)]
    numeric = [all(isinstance(row[key], (int, float)) for row in rows) for key in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if right else v.ljust(w) for v, w, right in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(values) for values in text)])
