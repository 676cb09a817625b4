"""The measured stages. Each function times one comparison and returns table rows.

Every candidate gets its own copy of the backbone: the helpers switch the module they run
to channels-last memory layout, which would otherwise speed up the candidates timed after it.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bench.table import Row
from bench.timing import best_times
from helpers.config import cpu_has_native_bf16, default_num_workers
from helpers.data import FlowerFolder, eval_transform, load_rgb_image, make_loaders, train_transform
from helpers.features import EXTRACTION_BATCH, FeatureSet, train_head
from helpers.model import build_head, build_model
from helpers.train import fit, model_outputs

BATCH_SIZE = 32
CLASSIC_HEAD = (6552, 818, 1280, 10)  # classic split: train and valid features, feature size, epochs


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch threads, then restore the previous number."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _decode_all(files: list[Path], load: Callable, transform: Callable) -> None:
    for path in files:
        transform(load(path))


def decoding(full_dir: Path, prepared_dir: Path, repeats: int) -> list[Row]:
    """Open + eval transform (resize 256, crop 224, tensor, normalise), one thread, as a loader worker does."""
    full, prepared = sorted(full_dir.rglob("*.jpg")), sorted(prepared_dir.rglob("*.jpg"))
    transform = eval_transform()
    with torch_threads(1):
        times = best_times({
            "full": lambda: _decode_all(full, load_rgb_image, transform),
            "prepared": lambda: _decode_all(prepared, load_rgb_image, transform),
        }, repeats, warmup=True)
    base = "vs full-size"
    return [
        Row("decode + eval transform, full-size JPEGs", len(full), times["full"]),
        Row("decode + eval transform, stored at 256 px (the default)", len(prepared), times["prepared"],
            times["full"] / times["prepared"], base, ">= 2.5x", times["full"] / times["prepared"] >= 2.5),
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
    else:  # emulated bfloat16 is several times slower than float32: measured only where it is native
        variants = {"fp32": (None, False), "channels_last": (None, True)}
        if cpu_has_native_bf16():
            variants["bfloat16 (native) + channels_last"] = (torch.bfloat16, True)
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


def _plain_epoch(model: nn.Module, loaders: dict, device: str) -> Callable:
    """Notebook 04's hand-written loop: float32, contiguous layout, then validation."""
    def run() -> None:
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.001)
        model.to(device).train()
        for images, labels in loaders["train"]:
            optimizer.zero_grad()
            loss = nn.functional.nll_loss(model(images.to(device)), labels.to(device))
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for images, _ in loaders["valid"]:
                model(images.to(device))
    return run


def training_epoch(backbone: nn.Module, data_dir: Path, device: str, repeats: int) -> list[Row]:
    """One epoch through backbone + head: the plain float32 loop against ``fit`` (channels-last, autocast policy)."""
    loaders = make_loaders(data_dir, BATCH_SIZE, train_transform(), eval_transform(), seed=0, device=device)
    classes = len(loaders["train"].dataset.classes)
    plain = build_model(copy.deepcopy(backbone), classes, pretrained=False)
    ours = build_model(copy.deepcopy(backbone), classes, pretrained=False)
    times = best_times({"plain": _plain_epoch(plain, loaders, device),
                        "fit": lambda: fit(ours, loaders["train"], loaders["valid"], 1, device=device,
                                           progress=False, verbose=False)}, repeats, device)
    count = len(loaders["train"].dataset) + len(loaders["valid"].dataset)
    return [Row("training epoch, plain loop (fp32, contiguous)", count, times["plain"]),
            Row("training epoch, fit (channels_last, autocast policy)", count, times["fit"],
                times["plain"] / times["fit"], "vs plain")]


def extraction(backbone: nn.Module, data_dir: Path, device: str, repeats: int) -> list[Row]:
    """A plain DataLoader(num_workers=2) loop against cached_features' loop (its loader and ``model_outputs``)."""
    plain_loader = DataLoader(FlowerFolder(data_dir / "train", eval_transform()), batch_size=BATCH_SIZE, num_workers=2)
    plain_backbone = copy.deepcopy(backbone).to(device).eval()

    @torch.no_grad()
    def plain() -> None:
        for images, _ in plain_loader:
            plain_backbone(images.to(device))

    ours_loader = DataLoader(FlowerFolder(data_dir / "train", eval_transform()), EXTRACTION_BATCH,
                             num_workers=default_num_workers(device), pin_memory=device.startswith("cuda"))
    ours_backbone = copy.deepcopy(backbone)
    times = best_times({"plain": plain, "ours": lambda: model_outputs(ours_backbone, ours_loader, device)},
                       repeats, device)
    count = len(plain_loader.dataset)
    ratio = times["plain"] / times["ours"]
    return [Row("extraction: plain DataLoader(num_workers=2) loop", count, times["plain"]),
            Row("extraction: cached_features' loop (channels_last, autocast policy)", count, times["ours"], ratio,
                "vs plain", ">= 1.5x", ratio >= 1.5)]


def _fit_with_dataloader(train: TensorDataset, valid: TensorDataset, classes: int, epochs: int,
                         device: str) -> Callable:
    def run() -> None:
        torch.manual_seed(0)
        head = build_head(train.tensors[0].shape[1], classes, [512], 0.2)
        fit(head, DataLoader(train, batch_size=64, shuffle=True), DataLoader(valid, batch_size=64),
            epochs, device=device, progress=False, verbose=False)
    return run


def _minimal_loop(train: FeatureSet, valid: FeatureSet, epochs: int) -> Callable:
    """The least a loop can do for the same arithmetic: no devices, history, best-epoch copies or checks."""
    def run() -> None:
        torch.manual_seed(0)
        head = build_head(train.features.shape[1], len(train.classes), [512], 0.2)
        optimizer = torch.optim.Adam(head.parameters(), lr=0.001)
        for _ in range(epochs):
            head.train()
            order = torch.randperm(len(train.labels))
            for start in range(0, len(order), 256):
                batch = order[start:start + 256]
                optimizer.zero_grad()
                nn.functional.nll_loss(head(train.features[batch]), train.labels[batch]).backward()
                optimizer.step()
            head.eval()
            with torch.no_grad():
                head(train.features), head(valid.features)
    return run


def head_experiment(train_size: int, valid_size: int, features: int, classes: int, epochs: int, device: str,
                    repeats: int) -> list[Row]:
    """Build + train + evaluate a head (hidden 512) on random tensors of cached-feature size."""
    generator = torch.Generator().manual_seed(0)
    names = [str(i) for i in range(classes)]
    train = FeatureSet(torch.randn(train_size, features, generator=generator).relu(),
                       torch.randint(0, classes, (train_size,), generator=generator), names)
    valid = FeatureSet(torch.randn(valid_size, features, generator=generator).relu(),
                       torch.randint(0, classes, (valid_size,), generator=generator), names)
    runs = {"ours": lambda: train_head(train, valid, [512], 0.2, 0.001, epochs),  # on FLOWERS_DEVICE, which main() sets
            "fit": _fit_with_dataloader(TensorDataset(*train[:2]), TensorDataset(*valid[:2]), classes, epochs,
                                        device)}
    if device == "cpu":
        runs["minimal"] = _minimal_loop(train, valid, epochs)
    times = best_times(runs, repeats, device)
    size = f"{train_size:,} x {features:,}, {epochs} epoch{'s' if epochs != 1 else ''}"
    classic = (train_size, valid_size, features, epochs) == CLASSIC_HEAD  # the target's size
    rows = [Row(f"head on features ({size}): fit over a DataLoader, batch 64", train_size * epochs, times["fit"])]
    if "minimal" in times:
        rows.append(Row(f"head on features ({size}): minimal hand-written loop, batch 256, same arithmetic",
                        train_size * epochs, times["minimal"]))
    return rows + [
        Row(f"head on features ({size}): train_head (FeatureBatches, batch 256)", train_size * epochs,
            times["ours"], times["fit"] / times["ours"], "vs DataLoader", "<= 2 s" if classic else "",
            times["ours"] <= 2.0 if classic else None)]
