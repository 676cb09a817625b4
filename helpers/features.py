"""Cached features: run the frozen backbone once, then train heads on its outputs in seconds (notebook 05).

A frozen backbone gives the same features every epoch, so it runs once and its outputs are saved to disk;
heads then train on them with the one loop, :func:`helpers.train.fit`, fed by :class:`FeatureBatches`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from helpers.checkpoint import atomic_save
from helpers.config import autocast_dtype, default_num_workers, resolve_device, seed_everything
from helpers.data import FlowerFolder, eval_transform, iter_image_files, train_transform
from helpers.model import build_head, count_parameters
from helpers.plots import format_table
from helpers.train import fit, model_outputs

CACHE_FORMAT = 5  # bump when the way features are computed changes, so old files are not reused
EXTRACTION_BATCH = 64


class FeatureSet(NamedTuple):
    """Backbone features (N, F), their class labels (N,) and the class folder names of one split."""

    features: torch.Tensor
    labels: torch.Tensor
    classes: list[str]


class FeatureBatches:
    """Cached features as ``(features, labels)`` batches, for :func:`helpers.train.fit`.

    Each pass (epoch) shuffles anew when ``shuffle``, else keeps the stored order (sorted by
    class). Given several sets (augmented views), each pass uses the next one.
    """

    def __init__(self, sets: FeatureSet | Sequence[FeatureSet], batch_size: int = 256, shuffle: bool = True,
                 seed: int = 0) -> None:
        self.sets = [sets] if isinstance(sets, FeatureSet) else list(sets)
        self.batch_size, self.shuffle, self.seed, self.passes = batch_size, shuffle, seed, 0
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.sets[0].labels) // self.batch_size)

    def __iter__(self):
        features, labels, _ = self.sets[self.passes % len(self.sets)]
        self.passes += 1
        order = (torch.randperm(len(labels), generator=self.generator) if self.shuffle
                 else torch.arange(len(labels)))
        for start in range(0, len(labels), self.batch_size):
            batch = order[start:start + self.batch_size]  # gathered per batch: it stays in the CPU cache
            yield features[batch], labels[batch]


def backbone_fingerprint(backbone: nn.Module) -> str:
    """A hash of what decides the backbone's features: its modules and their settings (``repr``), the source
    code of module classes defined outside torch (a custom pooling, say), and its weights."""
    digest = hashlib.sha256(repr(backbone).encode())
    own_classes = {type(m) for m in backbone.modules()
                   if type(m).__module__.split(".")[0] not in ("torch", "torchvision")}
    for cls in sorted(own_classes, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        try:
            digest.update(inspect.getsource(cls).encode())
        except (OSError, TypeError):  # defined interactively without a file: its name at least
            digest.update(cls.__qualname__.encode())
    for name, tensor in backbone.state_dict().items():
        raw = tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        digest.update(name.encode() + raw)
    return digest.hexdigest()


def files_fingerprint(folder: Path) -> str:
    """A hash of every image's name, size and modification time (dot-files such as .DS_Store left out)."""
    digest = hashlib.sha256()
    for path in iter_image_files(folder):
        digest.update(f"{path.relative_to(folder)}|{path.stat().st_size}|{path.stat().st_mtime_ns}".encode())
    return digest.hexdigest()


def cached_features(model: nn.Module, root: str | Path, augmented_views: int = 0,
                    cache_dir: str | Path | None = None, num_workers: int | None = None,
                    device: str | None = None, seed: int = 0,
                    verbose: bool = True) -> dict[str, FeatureSet | list[FeatureSet]]:
    """Features of the train, valid and test images, computed once and then read from ``cache_dir``.

    Notebook 05's extraction loop (``model_outputs``), per split. ``model``: a classifier from
    ``build_model`` (its backbone runs) or a bare backbone. ``augmented_views=K`` adds "train_views": K
    passes of the training images through :func:`helpers.data.train_transform`, drawn with ``seed`` (also in
    loader workers). The cache (default ``root/.feature_cache``) is keyed by the backbone's code and
    weights, the split's images, the transform, the precision, the views and the seed.
    """
    if augmented_views < 0:
        raise ValueError(f"augmented_views must be 0 or more, not {augmented_views}.")
    root, device = Path(root).expanduser(), resolve_device(device)
    cache_dir = Path(cache_dir).expanduser() if cache_dir else root / ".feature_cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    backbone = getattr(model, "backbone", model)
    name = None if getattr(model, "custom_backbone", True) else model.backbone_name
    code_and_weights = backbone_fingerprint(backbone)  # once per call: hashing the weights takes a moment
    passes = [(split, split, eval_transform(name), 1) for split in ("train", "valid", "test")]
    passes += [("train_views", "train", train_transform(name), augmented_views)] if augmented_views else []
    result: dict = {}
    for output, split, transform, views in passes:
        key = {"format": CACHE_FORMAT, "backbone": code_and_weights,
               "images": files_fingerprint(root / split), "transform": repr(transform),
               "precision": str(autocast_dtype(device)), "views": views, "seed": seed}
        path = cache_dir / f"{split}-{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:20]}.pt"
        stored = torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None
        if stored is not None and stored["key"] == key:
            sets = [FeatureSet(f, stored["labels"], stored["classes"]) for f in stored["features"]]
        else:
            start, dataset = time.perf_counter(), FlowerFolder(root / split, transform)
            workers = default_num_workers(device) if num_workers is None else num_workers
            loader = DataLoader(dataset, EXTRACTION_BATCH, num_workers=workers,
                                pin_memory=device.startswith("cuda"),
                                persistent_workers=workers > 0,  # started once for all the views
                                generator=torch.Generator().manual_seed(seed))  # seeds the workers' draws
            seed_everything(seed)  # random draws without workers
            sets = [FeatureSet(*model_outputs(backbone, loader, device), dataset.classes)
                    for _ in range(views)]
            atomic_save({"key": key, "features": [s.features for s in sets], "labels": sets[0].labels,
                         "classes": sets[0].classes}, path)
            if verbose:
                print(f"{split}: {views} x {tuple(sets[0].features.shape)} features in "
                      f"{time.perf_counter() - start:.1f} s, cached as {path.name}")
        result[output] = sets if output == "train_views" else sets[0]
    return result


class Run(NamedTuple):
    """One variant: settings, first seed's history (for curves), every seed's history, parameters, seconds."""

    config: dict
    history: dict[str, list]
    histories: list[dict[str, list]]
    parameters: int
    seconds: float


def train_head(train: FeatureSet | Sequence[FeatureSet] | FeatureBatches, valid: FeatureSet,
               hidden_units: Sequence[int] = (512,), dropout: float = 0.2, lr: float = 0.001,
               epochs: int = 10, seed: int = 0,
               train_eval: FeatureSet | None = None) -> tuple[nn.Sequential, dict[str, list]]:
    """A fresh head trained on cached features with :func:`helpers.train.fit`; returns (head, history).

    ``train``: features, several augmented views (one per epoch: pass the un-augmented features as
    ``train_eval``, on which training accuracy is measured in evaluation mode), or a :class:`FeatureBatches`
    for another batch size or order (its own seed draws the order). ``seed`` fixes the head's initial
    weights, its dropout masks and the default batch order. It computes on the settings' device.
    """
    if isinstance(train, FeatureBatches):  # a fresh copy: every call starts from the first pass and order
        batches = FeatureBatches(train.sets, train.batch_size, train.shuffle, train.seed)
    else:
        batches = FeatureBatches(train, seed=seed)
    if train_eval is None and len(batches.sets) > 1:
        raise ValueError("With augmented views, pass train_eval=the un-augmented training features "
                         "(cached_features(...)['train']) to measure training accuracy on.")
    seed_everything(seed)
    head = build_head(batches.sets[0].features.shape[1], len(valid.classes), hidden_units, dropout)
    history = fit(head, batches, FeatureBatches(valid, 4096, shuffle=False), epochs, lr,
                  train_eval_batches=FeatureBatches(train_eval or batches.sets[0], 4096, shuffle=False),
                  progress=False, verbose=False)
    return head.cpu().eval(), history


def run_variants(train: FeatureSet, valid: FeatureSet, variants: Mapping[str, Mapping],
                 seeds: Sequence[int] = (0,), **common) -> dict[str, Run]:
    """Train one head per variant and seed; return {label: Run}.

    ``common`` holds what every run shares (e.g. ``epochs=15``); each variant's own settings
    (e.g. ``{"dropout": 0.5}``) override it, and may bring their own ``train`` features.
    Several ``seeds`` show how much of a difference is noise (:func:`summary_rows`).
    """
    if not variants or not seeds:
        raise ValueError("No variants or no seeds to run; "
                         "pass e.g. {'dropout 0': {'dropout': 0.0}}, seeds=(0, 1, 2).")
    runs = {}
    for label, variant in variants.items():
        config = {**common, **variant}
        data = config.pop("train", train)
        start, histories = time.perf_counter(), []
        for seed in seeds:
            head, history = train_head(data, valid, **config, seed=seed)
            histories.append(history)
        seconds = (time.perf_counter() - start) / len(seeds)
        runs[label] = Run(config, histories[0], histories, count_parameters(head)["trainable"], seconds)
    return runs


SUMMARY_PERCENT = ("final valid accuracy", "spread (final valid)", "best valid accuracy", "train accuracy",
                   "gap (train - valid)")


def summary_table(runs: Mapping[str, Run]) -> str:
    """:func:`summary_rows` as a text table, accuracies, spread and gap as percentages."""
    return format_table(summary_rows(runs), percent=SUMMARY_PERCENT)


def summary_rows(runs: Mapping[str, Run]) -> list[dict]:
    """Per run, averaged over its seeds: final and best validation accuracy, training accuracy, their gap
    (after the last epoch, both in evaluation mode: overfitting in one number), the spread (max - min) of
    the final validation accuracy over the seeds, size and time."""
    rows = []
    for label, run in runs.items():
        def mean(value) -> float:
            return sum(value(h) for h in run.histories) / len(run.histories)

        finals = [h["valid_accuracy"][-1] for h in run.histories]
        rows.append({"run": label, "final valid accuracy": mean(lambda h: h["valid_accuracy"][-1]),
                     "spread (final valid)": max(finals) - min(finals),
                     "best valid accuracy": mean(lambda h: max(h["valid_accuracy"])),
                     "train accuracy": mean(lambda h: h["train_eval_accuracy"][-1]),
                     "gap (train - valid)": mean(lambda h: h["train_eval_accuracy"][-1]
                                                 - h["valid_accuracy"][-1]),
                     "parameters": run.parameters, "seconds": run.seconds})
    return rows
