"""Overfitting experiments on cached features: runs, summary tables, subsets, sliders.

Every experiment here trains small heads with
:func:`helpers.features.train_head_on_features` on features the frozen backbone
computed once, so a whole comparison takes seconds. Each run keeps its per-epoch
history; :func:`summary_rows` boils a set of runs down to the numbers that matter
for overfitting: how well the head does on the validation images, and how far that
lags behind the training images (the train-valid gap).
"""

from __future__ import annotations

import time
from typing import Callable, Mapping, NamedTuple, Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from torch import nn

from helpers.config import seed_everything
from helpers.evaluation import format_table
from helpers.features import FeatureSet, train_head_on_features
from helpers.models import build_head, count_parameters
from helpers.plots import plot_history

HIDDEN_UNIT_CHOICES = (16, 32, 64, 128, 256, 512, 1024)
LEARNING_RATE_CHOICES = (0.1, 0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001)
MAX_LAYERS = 3
MAX_DROPOUT = 0.8


class Run(NamedTuple):
    """One trained head: its settings, per-epoch history, parameter count and training time."""

    config: dict
    history: dict[str, list]
    parameters: int
    seconds: float


def run_variants(train: FeatureSet, valid: FeatureSet, variants: Mapping[str, Mapping],
                 **common: object) -> dict[str, Run]:
    """Train one head per variant and return {label: Run}.

    ``common`` holds the settings all runs share (e.g. ``epochs=15``); each variant's
    own settings (e.g. ``{"dropout": 0.5}``) override them. A variant may bring its
    own ``train`` features (a subset, augmented views) under the key ``"train"``.
    """
    if not variants:
        raise ValueError("No variants to run; pass e.g. {'dropout 0': {'dropout': 0.0}}.")
    runs = {}
    for label, variant in variants.items():
        config = {**common, **variant}
        train_data = config.pop("train", train)
        start = time.perf_counter()
        head, history = train_head_on_features(train_data, valid, **config)
        runs[label] = Run(config, history, count_parameters(head)["trainable"], time.perf_counter() - start)
    return runs


def summary_rows(runs: Mapping[str, Run]) -> list[dict]:
    """Per run: final and best valid accuracy, final train accuracy, their gap, parameters, seconds.

    The gap (train minus valid accuracy at the last epoch) is overfitting in one number.
    """
    rows = []
    for label, run in runs.items():
        history = run.history
        best = max(range(len(history["valid_accuracy"])), key=lambda i: history["valid_accuracy"][i])
        rows.append({
            "run": label,
            "final valid accuracy": history["valid_accuracy"][-1],
            "best valid accuracy": history["valid_accuracy"][best],
            "best epoch": history["epoch"][best],
            "final train accuracy": history["train_accuracy"][-1],
            "gap (train - valid)": history["train_accuracy"][-1] - history["valid_accuracy"][-1],
            "parameters": run.parameters,
            "seconds": run.seconds,
        })
    return rows


def summary_table(runs: Mapping[str, Run]) -> str:
    """:func:`summary_rows` as an aligned text table (accuracies and gap in %)."""
    return format_table(summary_rows(runs), percent=("accuracy", "gap"))


def plot_runs(runs: Mapping[str, Run], title: str | None = None) -> plt.Figure:
    """Train (dashed) and valid (solid) loss and accuracy of every run, one colour per run."""
    return plot_history({label: run.history for label, run in runs.items()}, title=title)


def stratified_subset(data: FeatureSet, fraction: float, seed: int = 0) -> FeatureSet:
    """Keep ``fraction`` of each class's examples (at least one per class), chosen at random with ``seed``.

    Stratified, so a smaller training set still has every class in the same proportion;
    the kept examples stay in their stored (class-sorted) order. Works for (N, F) and
    augmented (views, N, F) features.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], not {fraction}.")
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for label in data.labels.unique(sorted=True):
        members = (data.labels == label).nonzero().flatten()
        count = max(1, round(fraction * len(members)))
        keep.append(members[torch.randperm(len(members), generator=generator)[:count]])
    index = torch.cat(keep).sort().values
    features = data.features[:, index] if data.features.dim() == 3 else data.features[index]
    return FeatureSet(features, data.labels[index], list(data.classes))


def hidden_layers(units: int, layers: int) -> list[int]:
    """``layers`` hidden layers of ``units`` each; ``layers=0`` means none (a single linear layer)."""
    if layers < 0 or (layers and units < 1):
        raise ValueError(f"Need layers >= 0 and units >= 1, got layers={layers}, units={units}.")
    return [int(units)] * int(layers)


def step_losses(train: FeatureSet, shuffle: bool, batch_size: int = 8, lr: float = 0.01,
                hidden_units: Sequence[int] = (128,), epochs: int = 1, seed: int = 0) -> dict[str, list]:
    """Train a head and record the loss of every batch, and the classes in it, in the order fed.

    ``train_head_on_features`` reports once per epoch; this shows what happens *inside*
    an epoch when the examples arrive sorted by class (``shuffle=False``): each new
    class starts with a high loss, because the head has just been pulled towards the
    previous one.
    """
    generator = seed_everything(seed)
    features = train.features[0] if train.features.dim() == 3 else train.features
    labels = train.labels.long()
    head = build_head(features.shape[1], int(labels.max()) + 1, hidden_units, dropout=0.0)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    record: dict[str, list] = {"loss": [], "classes": [], "epoch": []}
    head.train()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(labels), generator=generator) if shuffle else torch.arange(len(labels))
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            loss = nn.functional.nll_loss(head(features[index].float()), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            record["loss"].append(loss.item())
            record["classes"].append(sorted(set(labels[index].tolist())))
            record["epoch"].append(epoch)
    return record


def plot_step_losses(records: Mapping[str, Mapping[str, list]], classes: Sequence[str] | None = None) -> plt.Figure:
    """Loss per training step for each record of :func:`step_losses`, one line each.

    Steps whose batch holds a single class are labelled with that class; dotted lines
    mark where a new epoch begins.
    """
    figure, axis = plt.subplots(figsize=(11, 3.5))
    first = next(iter(records.values()))
    for step in range(1, len(first["epoch"])):
        if first["epoch"][step] != first["epoch"][step - 1]:
            axis.axvline(step + 0.5, color="grey", linestyle=":")
    for number, (label, record) in enumerate(records.items()):
        steps = range(1, len(record["loss"]) + 1)
        axis.plot(steps, record["loss"], "o-", color=f"C{number}", label=label)
        for step, (loss, batch) in zip(steps, zip(record["loss"], record["classes"])):
            if len(batch) == 1 and classes is not None:
                axis.annotate(classes[batch[0]], (step, loss), textcoords="offset points", xytext=(0, 6),
                              ha="center", fontsize=7, color=f"C{number}")
    axis.set(xlabel="training step (one batch)", ylabel="batch loss (NLL)",
             title="loss of each batch, in the order the batches were fed")
    axis.legend()
    figure.tight_layout()
    return figure


def retrain_controls() -> dict[str, widgets.Widget]:
    """The sliders of the retrain panel: hidden units, hidden layers, dropout, learning rate."""
    return {
        "hidden_units": widgets.SelectionSlider(options=list(HIDDEN_UNIT_CHOICES), value=128,
                                                description="units/layer"),
        "layers": widgets.IntSlider(value=1, min=0, max=MAX_LAYERS, description="hidden layers"),
        "dropout": widgets.FloatSlider(value=0.2, min=0.0, max=MAX_DROPOUT, step=0.1, description="dropout"),
        "learning_rate": widgets.SelectionSlider(options=[(f"{lr:g}", lr) for lr in LEARNING_RATE_CHOICES],
                                                 value=0.001, description="learning rate"),
    }


def make_retrain_callback(train: FeatureSet, valid: FeatureSet, epochs: int = 15, batch_size: int = 256,
                          seed: int = 0) -> Callable[..., plt.Figure]:
    """A slider callback: train a fresh head on the cached features and return its curves.

    The returned function takes the values of :func:`retrain_controls`
    (``hidden_units, layers, dropout, learning_rate``); the title carries the summary.
    """
    def retrain(hidden_units: int, layers: int, dropout: float, learning_rate: float) -> plt.Figure:
        shape = hidden_layers(hidden_units, layers)
        runs = run_variants(train, valid, {"head": {"hidden_units": shape, "dropout": float(dropout),
                                                    "lr": float(learning_rate)}},
                           epochs=epochs, batch_size=batch_size, seed=seed)
        row = summary_rows(runs)[0]
        title = (f"hidden {shape or 'none'}, dropout {dropout:.1f}, lr {learning_rate:g}: "
                 f"valid {row['final valid accuracy']:.0%} (best {row['best valid accuracy']:.0%}), "
                 f"gap {row['gap (train - valid)']:+.0%}, {row['parameters']:,} parameters")
        return plot_runs(runs, title=title)

    return retrain
