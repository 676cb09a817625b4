"""The measured stages. Each function times one comparison and returns table rows.

Every candidate gets its own copy of the backbone: ``extract_features`` switches the
module it runs to channels-last memory layout, which would otherwise speed up the
candidates timed after it.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bench.table import Row
from bench.timing import best_times
from helpers.data import FlowerFolder, eval_transform, make_loaders
from helpers.features import (cpu_has_native_bf16, extract_features, extraction_loader,
                              torch_threads, train_head_on_features)
from helpers.images import load_rgb_image
from helpers.models import build_head, build_model
from helpers.train import fit

BATCH_SIZE = 32
CLASSIC_HEAD = (6552, 818, 1280, 10)  # classic split: train and valid features, feature size, epochs


def _decode_all(files: list[Path], load: Callable, transform: Callable) -> None:
    for path in files:
        transform(load(path))


def decoding(full_dir: Path, prepared_dir: Path, repeats: int) -> list[Row]:
    """Open + eval transform (resize 256, crop 224, tensor, normalise), one thread, as a loader worker does."""
    full = sorted(full_dir.rglob("*.jpg"))
    prepared = sorted(prepared_dir.rglob("*.jpg"))
    transform = eval_transform(224)
    reduced = functools.partial(load_rgb_image, min_side=256)
    with torch_threads(1):
        times = best_times({
            "full": lambda: _decode_all(full, load_rgb_image, transform),
            "prepared": lambda: _decode_all(prepared, load_rgb_image, transform),
            "reduced": lambda: _decode_all(full, reduced, transform),
        }, repeats, warmup=True)
    base = "vs full-size"
    return [
        Row("decode + eval transform, full-size JPEGs", len(full), times["full"]),
        Row("decode + eval transform, prepared (shorter side 256)", len(prepared), times["prepared"],
            times["full"] / times["prepared"], base, ">= 2.5x", times["full"] / times["prepared"] >= 2.5),
        Row("decode + eval transform, full-size with Image.draft", len(full), times["reduced"],
            times["full"] / times["reduced"], base),
    ]


def _forward_batches(backbone: nn.Module, images: int, device: str, dtype: torch.dtype | None,
                     channels_last: bool) -> Callable:
    batch = torch.randn(min(BATCH_SIZE, images), 3, 224, 224, device=device)
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
        backbone = backbone.to(memory_format=torch.channels_last)
    steps = max(1, images // len(batch))

    @torch.inference_mode()
    def run() -> None:
        for _ in range(steps):
            with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
                backbone(batch)
    return run


def forward_pass(backbone: nn.Module, images: int, device: str, repeats: int) -> list[Row]:
    """The frozen backbone alone, on random 224 x 224 batches (no loading); the first repeat warms up."""
    if device.startswith("cuda"):
        variants = {"fp32": (None, False), "channels_last": (None, True), "AMP float16": (torch.float16, False),
                    "AMP float16 + channels_last": (torch.float16, True)}
    else:
        native = "native" if cpu_has_native_bf16() else "emulated"
        variants = {"fp32": (None, False), "channels_last": (None, True),
                    f"bfloat16 ({native}) + channels_last": (torch.bfloat16, True)}
    runs = {name: _forward_batches(copy.deepcopy(backbone).to(device).eval(), images, device, dtype, cl)
            for name, (dtype, cl) in variants.items()}
    times = best_times(runs, repeats + 1, device)
    batch = min(BATCH_SIZE, images)
    count = max(1, images // BATCH_SIZE) * batch
    rows = [Row(f"backbone forward, batch {batch}, {device} fp32", count, times["fp32"])]
    for name in list(variants)[1:]:
        rows.append(Row(f"backbone forward, batch {batch}, {device} {name}", count, times[name],
                        times["fp32"] / times[name], "vs fp32"))
    return rows


def training_epoch(backbone: nn.Module, data_dir: Path, device: str) -> list[Row]:
    """One epoch of ``helpers.train.fit``: augmented train images and plain valid images through backbone + head."""
    loaders = make_loaders(data_dir, batch_size=BATCH_SIZE, augment=True, seed=0, device=device)
    model = build_model(copy.deepcopy(backbone), num_classes=len(loaders["train"].dataset.classes), pretrained=False)
    count = len(loaders["train"].dataset) + len(loaders["valid"].dataset)
    seconds = best_times({"epoch": lambda: fit(model, loaders["train"], loaders["valid"], epochs=1, device=device,
                                               progress=False, verbose=False)}, 1, device)["epoch"]
    return [Row("training epoch (fit: backbone + head, train + valid)", count, seconds)]


def _plain_extraction(backbone: nn.Module, split_dir: Path, device: str) -> Callable:
    loader = DataLoader(FlowerFolder(split_dir, eval_transform(224)), batch_size=BATCH_SIZE, num_workers=2)

    @torch.no_grad()
    def run() -> None:
        for images, _ in loader:
            backbone(images.to(device))
    return run


def extraction(backbone: nn.Module, split_dir: Path, device: str, repeats: int) -> list[Row]:
    """A plain DataLoader(num_workers=2) loop against ``extract_features`` with its own loader."""
    def ours(reduced: bool, **options: bool) -> Callable:
        module = copy.deepcopy(backbone)
        loader = extraction_loader(split_dir, device=device, reduced_decode=reduced)  # its default batch size
        return lambda: extract_features(module, loader, device, progress=False, **options)

    runs = {"plain": _plain_extraction(copy.deepcopy(backbone).to(device).eval(), split_dir, device),
            "ours": ours(True), "full decode": ours(False), "no AMP": ours(True, amp=False),
            "no AMP, no channels_last": ours(True, amp=False, channels_last=False)}
    times = best_times(runs, repeats, device)
    count = len(FlowerFolder(split_dir).samples)
    ratio = times["plain"] / times["ours"]
    rows = [Row("extraction: plain DataLoader(num_workers=2) loop", count, times["plain"]),
            Row("extraction: extract_features(extraction_loader)", count, times["ours"], ratio, "vs plain",
                ">= 1.5x", ratio >= 1.5),
            Row("extraction: extract_features, full-size decoding", count, times["full decode"],
                times["plain"] / times["full decode"], "vs plain")]
    for name in ("no AMP", "no AMP, no channels_last"):
        rows.append(Row(f"extraction: extract_features, {name} (fp32)", count, times[name],
                        times["plain"] / times[name], "vs plain"))
    return rows


def _fit_on_features(train: TensorDataset, valid: TensorDataset, classes: int, epochs: int, device: str) -> Callable:
    def run() -> None:
        torch.manual_seed(0)
        head = build_head(train.tensors[0].shape[1], classes, [512], 0.2)
        fit(head, DataLoader(train, batch_size=64, shuffle=True), DataLoader(valid, batch_size=64),
            epochs=epochs, device=device, progress=False, verbose=False)
    return run


def head_experiment(train_size: int, valid_size: int, features: int, classes: int, epochs: int, device: str,
                    repeats: int) -> list[Row]:
    """Build + train + evaluate a head (hidden 512) on random cached-feature-sized tensors."""
    generator = torch.Generator().manual_seed(0)
    train = (torch.randn(train_size, features, generator=generator).relu(),
             torch.randint(0, classes, (train_size,), generator=generator))
    valid = (torch.randn(valid_size, features, generator=generator).relu(),
             torch.randint(0, classes, (valid_size,), generator=generator))
    runs = {"ours": lambda: train_head_on_features(train, valid, [512], 0.2, 0.001, epochs, device=device),
            "fp32": lambda: train_head_on_features(train, valid, [512], 0.2, 0.001, epochs, device=device, amp=False),
            "fit": _fit_on_features(TensorDataset(*train), TensorDataset(*valid), classes, epochs, device)}
    times = best_times(runs, repeats, device)
    size = f"{train_size:,} x {features:,}, {epochs} epoch{'s' if epochs != 1 else ''}"
    classic = (train_size, valid_size, features, epochs) == CLASSIC_HEAD  # the target's size
    return [Row(f"head on features ({size}): fit, DataLoader batch 64", train_size * epochs, times["fit"]),
            Row(f"head on features ({size}): train_head_on_features, no AMP (fp32)", train_size * epochs,
                times["fp32"], times["fit"] / times["fp32"], "vs fit"),
            Row(f"head on features ({size}): train_head_on_features", train_size * epochs, times["ours"],
                times["fit"] / times["ours"], "vs fit", "<= 2 s" if classic else "",
                times["ours"] <= 2.0 if classic else None)]
