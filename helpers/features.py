"""The fast path: run the frozen backbone once, cache its features, train heads on them.

With a frozen backbone every epoch computes the same features again; only the head
changes. Extracting the features once (minutes on a laptop CPU for Flowers102) makes
each head experiment take seconds instead of minutes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from helpers.config import resolve_device, seed_everything
from helpers.models import build_head
from helpers.train import evaluate, new_history, record_epoch, train_epoch, format_epoch
from helpers.data import FlowerFolder, check_layout, default_num_workers, eval_transform, train_transform


class FeatureSet(NamedTuple):
    """Backbone features and labels of one split. ``features`` is (N, F), or (views, N, F)."""

    features: torch.Tensor
    labels: torch.Tensor
    classes: list[str]


def backbone_of(model_or_backbone: nn.Module) -> nn.Module:
    """The backbone of a classifier built by ``build_model``, or the module itself."""
    return getattr(model_or_backbone, "backbone", model_or_backbone)


@contextlib.contextmanager
def cpu_threads_beside_workers(device: str, num_workers: int) -> Iterator[None]:
    """On a CPU, leave one core per loader worker: torch's threads and workers must not fight."""
    previous = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not device.startswith("cuda") and num_workers > 0:
        torch.set_num_threads(max(1, cores - num_workers))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@torch.inference_mode()
def extract_features(model_or_backbone: nn.Module, loader: DataLoader | Sequence, device: str | None = None,
                     progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Run every batch of ``loader`` through the frozen backbone; return (features, labels) on the CPU.

    On CUDA: channels-last images, autocast, pinned memory and non-blocking copies.
    """
    device = resolve_device(device)
    backbone = backbone_of(model_or_backbone).to(device).eval()
    cuda = device.startswith("cuda")
    if cuda:
        backbone.to(memory_format=torch.channels_last)
    features, labels = [], []
    with cpu_threads_beside_workers(device, getattr(loader, "num_workers", 0)):
        for images, batch_labels in tqdm(loader, desc="features", disable=not progress):
            images = images.to(device, non_blocking=cuda)
            if cuda:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=cuda):
                output = backbone(images)
            features.append(output.float().cpu())
            labels.append(batch_labels.cpu())
    if not features:
        raise ValueError("The loader gave no batches; nothing to extract.")
    return torch.cat(features), torch.cat(labels)


def fingerprint_module(module: nn.Module) -> str:
    """A hash of a module's class and every weight: different weights give a different key."""
    digest = hashlib.sha256(type(module).__name__.encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fingerprint_files(split_dir: Path) -> str:
    """A hash of every file's relative path, size and modification time in one split."""
    digest = hashlib.sha256()
    for folder, subfolders, files in sorted(os.walk(split_dir)):
        subfolders.sort()
        for name in sorted(files):
            stat = (Path(folder) / name).stat()
            digest.update(f"{Path(folder, name).relative_to(split_dir)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_key(backbone: nn.Module, split_dir: Path, transform: object, views: int, seed: int) -> dict:
    """Everything that changes the features of one split; the cache file is named by its hash."""
    return {"backbone": fingerprint_module(backbone), "folder": str(split_dir.resolve()),
            "files": fingerprint_files(split_dir), "transform": repr(transform), "views": views, "seed": seed}


def _cache_file(cache_dir: Path, split: str, key: dict) -> Path:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir / f"{split}-{name}.pt"


def _extract_split(backbone: nn.Module, dataset: FlowerFolder, views: int, batch_size: int, num_workers: int,
                   device: str, seed: int, progress: bool) -> FeatureSet:
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.startswith("cuda"), generator=generator)
    if views == 0:
        features, labels = extract_features(backbone, loader, device, progress)
        return FeatureSet(features, labels, list(dataset.classes))
    seed_everything(seed)  # augmentations draw from torch's global generator
    all_views = [extract_features(backbone, loader, device, progress) for _ in range(views)]
    return FeatureSet(torch.stack([f for f, _ in all_views]), all_views[0][1], list(dataset.classes))


def cached_features(model_or_backbone: nn.Module, root: str | os.PathLike, splits: Sequence[str] = ("train", "valid", "test"),
                    cache_dir: str | os.PathLike | None = None, image_size: int = 224, batch_size: int = 64,
                    num_workers: int | None = None, augmented_views: int = 0, device: str | None = None,
                    seed: int = 0, progress: bool = True, verbose: bool = True) -> dict[str, FeatureSet]:
    """Features for each split, from the on-disk cache when its key matches, else extracted and saved.

    The key covers the backbone's weights, the folder and its files, the transform, the
    number of augmented views and the seed. With ``augmented_views=K`` the train split
    gets K randomly augmented views per image, shape (K, N, F), for augmentation
    experiments on the cache; other splits always use the evaluation transform.
    """
    root = Path(root).expanduser()
    check_layout(root, tuple(splits))
    device = resolve_device(device)
    workers = default_num_workers(device) if num_workers is None else num_workers
    cache_dir = Path(cache_dir).expanduser() if cache_dir else root / ".feature_cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    backbone = backbone_of(model_or_backbone)
    result = {}
    for split in splits:
        views = augmented_views if split == "train" else 0
        transform = train_transform(image_size) if views else eval_transform(image_size)
        key = cache_key(backbone, root / split, transform, views, seed)
        path = _cache_file(cache_dir, split, key)
        if path.exists():
            stored = torch.load(path, map_location="cpu", weights_only=True)
            if stored.get("key") == key:
                result[split] = FeatureSet(stored["features"], stored["labels"], stored["classes"])
                if verbose:
                    print(f"{split}: features loaded from cache {path.name} {tuple(result[split].features.shape)}")
                continue
        start = time.perf_counter()
        dataset = FlowerFolder(root / split, transform)
        result[split] = _extract_split(backbone, dataset, views, batch_size, workers, device, seed, progress)
        temporary = path.with_suffix(".tmp")
        torch.save({"key": key, **result[split]._asdict()}, temporary)
        os.replace(temporary, path)
        if verbose:
            print(f"{split}: features extracted in {time.perf_counter() - start:.1f} s "
                  f"{tuple(result[split].features.shape)}, cached as {path.name}")
    return result


def feature_batches(features: torch.Tensor, labels: torch.Tensor, batch_size: int,
                    shuffle: bool, generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches straight from tensors already on the device: no DataLoader, no copies."""
    order = (torch.randperm(len(labels), generator=generator).to(labels.device) if shuffle
             else torch.arange(len(labels), device=labels.device))
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        yield features[index], labels[index]


def _as_pair(data: FeatureSet | tuple) -> tuple[torch.Tensor, torch.Tensor]:
    features, labels = data[0], data[1]
    if features.shape[-2 if features.dim() == 3 else 0] != len(labels):
        raise ValueError(f"{len(labels)} labels for features of shape {tuple(features.shape)}.")
    return features.float(), labels.long()


def train_head_on_features(train: FeatureSet | tuple, valid: FeatureSet | tuple, hidden_units: Sequence[int] = (512,),
                           dropout: float = 0.2, lr: float = 0.001, epochs: int = 10, batch_size: int = 256,
                           num_classes: int | None = None, shuffle: bool = True, device: str | None = None,
                           seed: int = 0, verbose: bool = False) -> tuple[nn.Sequential, dict[str, list]]:
    """Train a fresh head on cached features; returns (head, history) like ``fit``'s history.

    ``train`` is (features, labels); features of shape (views, N, F) use view
    ``epoch % views`` in each epoch, so cached augmentations vary between epochs.
    ``shuffle=False`` feeds the examples in stored order (sorted by class).
    """
    if epochs < 1 or not lr > 0:
        raise ValueError(f"Need epochs >= 1 and lr > 0, got epochs={epochs}, lr={lr}.")
    device = resolve_device(device)
    generator = seed_everything(seed)
    (train_x, train_y), (valid_x, valid_y) = _as_pair(train), _as_pair(valid)
    classes = num_classes or int(max(train_y.max(), valid_y.max())) + 1
    head = build_head(train_x.shape[-1], classes, hidden_units, dropout).to(device)
    train_x, train_y, valid_x, valid_y = (t.to(device) for t in (train_x, train_y, valid_x, valid_y))
    views = train_x if train_x.dim() == 3 else train_x.unsqueeze(0)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    history = new_history()
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        batches = feature_batches(views[(epoch - 1) % len(views)], train_y, batch_size, shuffle, generator)
        trained = train_epoch(head, batches, optimizer, device)
        checked = evaluate(head, feature_batches(valid_x, valid_y, 4096, False), device)
        record_epoch(history, epoch, trained, checked, time.perf_counter() - start)
        if verbose:
            print(format_epoch(history, epochs))
    return head.cpu(), history
