"""The fast path: run the frozen backbone once, cache its features, train heads on them.

With a frozen backbone every epoch computes the same features again; only the head
changes. Extracting the features once (minutes on a laptop CPU for Flowers102) makes
each head experiment take seconds instead of minutes.

Three things make extraction use the machine well:

- **Decoding at reduced scale.** Flowers102's JPEGs are about 630 x 534 pixels, but the
  network sees 224 x 224. PIL's ``Image.draft`` asks the JPEG decoder for a 1/2, 1/4 or
  1/8 scale image directly (the decoder skips the fine detail instead of computing and
  then throwing it away), never smaller than the resize step needs.
- **Bytes, not floats, between loading and the network.** The loader makes uint8 image
  tensors (4x smaller to copy); :func:`extract_features` converts and normalises whole
  batches on the device.
- **No fight over the cores.** On a CPU, loader worker processes and torch's own threads
  share the same cores; :func:`cpu_threads_beside_workers` gives torch the cores the
  workers do not use. Channels-last memory layout speeds up convolutions on recent CPUs
  and GPUs. Mixed precision (autocast): float16 on CUDA, bfloat16 on CPUs that compute it
  in hardware. On CUDA also pinned memory and non-blocking copies.

Head training keeps the features on the device, uses a fused Adam step and counts loss
and accuracy on the device, so an epoch is little more than its matrix multiplications.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torchvision import transforms
from tqdm.auto import tqdm

from helpers.config import cpu_cores, resolve_device, seed_everything
from helpers.data import (IMAGENET_MEAN, IMAGENET_STD, FlowerFolder, check_layout, default_num_workers,
                          resize_size, train_transform)
from helpers.images import load_rgb_image
from helpers.models import build_head
from helpers.train import format_epoch, new_history, record_epoch

# Bump when the way features are computed changes, so that old cache files are not reused.
CACHE_FORMAT = 2


class FeatureSet(NamedTuple):
    """Backbone features and labels of one split. ``features`` is (N, F), or (views, N, F)."""

    features: torch.Tensor
    labels: torch.Tensor
    classes: list[str]


def backbone_of(model_or_backbone: nn.Module) -> nn.Module:
    """The backbone of a classifier built by ``build_model``, or the module itself."""
    return getattr(model_or_backbone, "backbone", model_or_backbone)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch threads, then restore the previous number."""
    previous = torch.get_num_threads()
    if count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


@contextlib.contextmanager
def cpu_threads_beside_workers(device: str, num_workers: int) -> Iterator[None]:
    """On a CPU, leave one core per loader worker: torch's threads and workers must not fight."""
    count = torch.get_num_threads()
    if not device.startswith("cuda") and num_workers > 0:
        count = max(1, cpu_cores() - num_workers)
    with torch_threads(count):
        yield


# ----------------------------------------------------------------------------------------------
# Loading images for extraction
# ----------------------------------------------------------------------------------------------

class ReducedDecodeFolder(FlowerFolder):
    """A :class:`FlowerFolder` that decodes JPEGs at reduced scale (``load_rgb_image(path, min_side)``).

    ``min_side`` should be the first resize step's size (256 for 224-pixel crops).
    """

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None, min_side: int = 256) -> None:
        super().__init__(root, transform)
        self.loader = functools.partial(load_rgb_image, min_side=min_side)
        self.min_side = min_side


def eval_transform_uint8(image_size: int = 224) -> transforms.Compose:
    """The evaluation pipeline up to a uint8 tensor: resize, centre crop, no float conversion.

    :func:`extract_features` scales and normalises uint8 batches itself (on the device),
    which gives the same numbers as ``ToTensor`` + ``Normalize`` and moves 4x fewer bytes.
    """
    return transforms.Compose([
        transforms.Resize(resize_size(image_size)),
        transforms.CenterCrop(image_size),
        transforms.PILToTensor(),
    ])


def default_batch_size(device: str) -> int:
    """Images per extraction batch: 32 on a CPU (larger batches run no faster there), 256 on a GPU."""
    return 256 if device.startswith("cuda") else 32


def extraction_loader(split_dir: str | os.PathLike, image_size: int = 224, batch_size: int | None = None,
                      num_workers: int | None = None, device: str | None = None, transform: Callable | None = None,
                      reduced_decode: bool = True, generator: torch.Generator | None = None) -> DataLoader:
    """An unshuffled DataLoader made for feature extraction from one split folder.

    Default transform: :func:`eval_transform_uint8` (normalised later, on the device).
    ``reduced_decode`` decodes large JPEGs at reduced scale. Pinned memory on CUDA.
    ``batch_size=None`` picks :func:`default_batch_size`.
    """
    device = resolve_device(device)
    batch_size = batch_size or default_batch_size(device)
    workers = default_num_workers(device) if num_workers is None else num_workers
    transform = eval_transform_uint8(image_size) if transform is None else transform
    dataset = (ReducedDecodeFolder(split_dir, transform, resize_size(image_size)) if reduced_decode
               else FlowerFolder(split_dir, transform))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=device.startswith("cuda"), generator=generator)


# ----------------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------------

def normalise_on_device(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (0-255) become floats normalised with ImageNet's statistics; floats pass through."""
    if images.dtype != torch.uint8:
        return images
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1) * 255
    return (images.float() - mean) / std


def cpu_has_native_bf16() -> bool:
    """True if this CPU multiplies bfloat16 numbers in hardware (AVX512-BF16 or AMX)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_dtype(device: str, amp: bool | None = None) -> torch.dtype | None:
    """The reduced precision the backbone runs in during extraction, or ``None`` for float32.

    ``amp=None`` decides by hardware: float16 on CUDA; bfloat16 on a CPU that computes
    it natively (there it runs convolutions about twice as fast as float32), float32 on
    other CPUs, where bfloat16 is emulated and slower. Frozen features lose nothing a
    head can use at this precision (about three significant digits).
    """
    if amp is False:
        return None
    if device.startswith("cuda"):
        return torch.float16
    if amp is None and not cpu_has_native_bf16():
        return None
    return torch.bfloat16


@torch.no_grad()  # not inference_mode: its tensors could not be used to train a head afterwards
def extract_features(model_or_backbone: nn.Module, loader: DataLoader | Sequence, device: str | None = None,
                     progress: bool = True, *, amp: bool | None = None,
                     channels_last: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run every batch of ``loader`` through the frozen backbone; return float32 (features, labels) on the CPU.

    Batches may hold normalised float images (any ordinary loader) or uint8 images
    (:func:`extraction_loader`), which are normalised here, on the device. ``amp``:
    mixed precision, see :func:`autocast_dtype` (default: on for CUDA and for CPUs with
    native bfloat16). ``channels_last`` memory layout is on by default everywhere
    (faster convolutions with oneDNN on CPUs and with cuDNN on GPUs). The backbone is
    moved to ``device``, switched to that layout and put in eval mode.
    """
    device = resolve_device(device)
    cuda = device.startswith("cuda")
    dtype = autocast_dtype(device, amp)
    channels_last = True if channels_last is None else channels_last
    backbone = backbone_of(model_or_backbone).to(device).eval()
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
    features, labels = [], []
    with cpu_threads_beside_workers(device, getattr(loader, "num_workers", 0)):
        for images, batch_labels in tqdm(loader, desc="features", disable=not progress):
            images = normalise_on_device(images.to(device, non_blocking=cuda))
            if channels_last and images.dim() == 4:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
                features.append(backbone(images).float())  # stays on the device: no sync per batch
            labels.append(torch.as_tensor(batch_labels))
    if not features:
        raise ValueError("The loader gave no batches; nothing to extract.")
    return torch.cat(features).cpu(), torch.cat(labels).cpu()


# ----------------------------------------------------------------------------------------------
# The cache
# ----------------------------------------------------------------------------------------------

def fingerprint_module(module: nn.Module) -> str:
    """A hash of a module's class and every weight: different weights give a different key."""
    digest = hashlib.sha256(type(module).__name__.encode())
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
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


def cache_key(backbone: nn.Module, split_dir: Path, transform: object, views: int, seed: int,
              image_size: int = 224, reduced_decode: bool = False, precision: str = "float32") -> dict:
    """Everything that changes the features of one split; the cache file is named by its hash."""
    return {"format": CACHE_FORMAT, "backbone": fingerprint_module(backbone), "folder": str(split_dir.resolve()),
            "files": fingerprint_files(split_dir), "image_size": image_size, "transform": repr(transform),
            "decode": f"reduced to >= {resize_size(image_size)} px" if reduced_decode else "full",
            "precision": precision, "views": views, "seed": seed}


def _cache_file(cache_dir: Path, split: str, key: dict) -> Path:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir / f"{split}-{name}.pt"


def _extract_split(backbone: nn.Module, loader: DataLoader, views: int, device: str, seed: int,
                   progress: bool, amp: bool | None) -> FeatureSet:
    classes = list(loader.dataset.classes)
    if views == 0:
        features, labels = extract_features(backbone, loader, device, progress, amp=amp)
        return FeatureSet(features, labels, classes)
    seed_everything(seed)  # augmentations draw from torch's global generator
    all_views = [extract_features(backbone, loader, device, progress, amp=amp) for _ in range(views)]
    return FeatureSet(torch.stack([f for f, _ in all_views]), all_views[0][1], classes)


def cached_features(model_or_backbone: nn.Module, root: str | os.PathLike, splits: Sequence[str] = ("train", "valid", "test"),
                    cache_dir: str | os.PathLike | None = None, image_size: int = 224, batch_size: int | None = None,
                    num_workers: int | None = None, augmented_views: int = 0, device: str | None = None,
                    seed: int = 0, progress: bool = True, verbose: bool = True,
                    reduced_decode: bool = True, amp: bool | None = None) -> dict[str, FeatureSet]:
    """Features for each split, from the on-disk cache when its key matches, else extracted and saved.

    The key covers the backbone's weights, the folder and its files (names, sizes,
    modification times), the image size, the transform and decoding, the number of
    augmented views and the seed. With ``augmented_views=K`` the train split gets K
    randomly augmented views per image, shape (K, N, F), for augmentation experiments on
    the cache; other splits always use the evaluation transform. ``batch_size=None``
    picks :func:`default_batch_size`. ``reduced_decode`` decodes large JPEGs at
    reduced scale (``load_rgb_image(path, min_side)``); the features differ from
    full-size decoding only by the resize's rounding. ``amp``: the precision the backbone
    runs in (:func:`autocast_dtype`; default by hardware), also part of the key.
    """
    if augmented_views < 0:
        raise ValueError(f"augmented_views must be 0 or more, not {augmented_views}.")
    root = Path(root).expanduser()
    check_layout(root, tuple(splits))
    device = resolve_device(device)
    batch_size = batch_size or default_batch_size(device)
    workers = default_num_workers(device) if num_workers is None else num_workers
    cache_dir = Path(cache_dir).expanduser() if cache_dir else root / ".feature_cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    backbone = backbone_of(model_or_backbone)
    precision = str(autocast_dtype(device, amp) or torch.float32).replace("torch.", "")
    result = {}
    for split in splits:
        views = augmented_views if split == "train" else 0
        transform = train_transform(image_size) if views else eval_transform_uint8(image_size)
        key = cache_key(backbone, root / split, transform, views, seed, image_size, reduced_decode, precision)
        path = _cache_file(cache_dir, split, key)
        if path.exists():
            stored = torch.load(path, map_location="cpu", weights_only=True)
            if stored.get("key") == key:
                result[split] = FeatureSet(stored["features"], stored["labels"], stored["classes"])
                if verbose:
                    print(f"{split}: features loaded from cache {path.name} {tuple(result[split].features.shape)}")
                continue
        start = time.perf_counter()
        loader = extraction_loader(root / split, image_size, batch_size, workers, device, transform, reduced_decode,
                                   generator=torch.Generator().manual_seed(seed))
        result[split] = _extract_split(backbone, loader, views, device, seed, progress, amp)
        temporary = path.with_suffix(".tmp")
        torch.save({"key": key, **result[split]._asdict()}, temporary)
        os.replace(temporary, path)
        if verbose:
            print(f"{split}: features extracted in {time.perf_counter() - start:.1f} s "
                  f"{tuple(result[split].features.shape)}, cached as {path.name}")
    return result


# ----------------------------------------------------------------------------------------------
# Training heads on cached features
# ----------------------------------------------------------------------------------------------

def feature_batches(features: torch.Tensor, labels: torch.Tensor, batch_size: int,
                    shuffle: bool, generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches straight from tensors already on the device: no DataLoader.

    Shuffling gathers the whole set in the new order once; each batch is then a slice
    (a view, no copy) of it.
    """
    if shuffle:
        order = torch.randperm(len(labels), generator=generator).to(labels.device)
        features, labels = features.index_select(0, order), labels.index_select(0, order)
    for start in range(0, len(labels), batch_size):
        yield features[start:start + batch_size], labels[start:start + batch_size]


def _as_pair(data: FeatureSet | tuple) -> tuple[torch.Tensor, torch.Tensor]:
    features, labels = data[0], data[1]
    if features.dim() not in (2, 3) or features.shape[-2] != len(labels):
        raise ValueError(f"Features must be (N, F) or (views, N, F) with N = {len(labels)} labels; "
                         f"got shape {tuple(features.shape)}.")
    return features.float(), labels.long()


def make_adam(parameters: Sequence[nn.Parameter] | Iterator[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with the fused implementation (one kernel per step) where this torch has it."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(parameters, lr=lr)


def training_forward(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The head's forward pass in training mode, with a cheaper dropout on CPUs.

    ``nn.Dropout`` draws its random mask with ``bernoulli_``, which on a CPU takes longer
    than the layer's matrix product; comparing uniform random numbers with ``p`` draws
    the same mask (each unit kept with probability 1 - p, scaled by 1 / (1 - p)) in
    about half the time. Elsewhere, and for heads that are not ``nn.Sequential``, the
    layers run as they are.
    """
    if features.device.type != "cpu" or not isinstance(head, nn.Sequential):
        return head(features)
    x = features
    for layer in head:
        if isinstance(layer, nn.Dropout) and layer.training and 0 < layer.p < 1:
            keep = (torch.rand_like(x) >= layer.p).to(x.dtype)
            x = x * keep.mul_(1 / (1 - layer.p))
        else:
            x = layer(x)
    return x


def head_autocast(device: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision for a head's matrix products, or nothing when ``dtype`` is None."""
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None)


def train_head_epoch(head: nn.Module, optimizer: torch.optim.Optimizer,
                     batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
                     dtype: torch.dtype | None = None) -> dict[str, float]:
    """One epoch over feature batches; loss and correct answers add up on the device, read once.

    ``dtype`` (bfloat16 on CPUs that compute it natively) runs the matrix products in
    mixed precision; weights, gradients and Adam's state stay float32.
    """
    head.train()
    total_loss, correct, seen = None, None, 0
    for features, labels in batches:
        with head_autocast(features.device.type, dtype):
            log_probs = training_forward(head, features)
        loss = F.nll_loss(log_probs.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            batch_loss = loss.detach() * len(labels)
            batch_correct = (log_probs.detach().argmax(dim=1) == labels).sum()
            total_loss = batch_loss if total_loss is None else total_loss + batch_loss
            correct = batch_correct if correct is None else correct + batch_correct
        seen += len(labels)
    if seen == 0:
        raise ValueError("The training features are empty.")
    return {"loss": float(total_loss) / seen, "accuracy": int(correct) / seen}


@torch.no_grad()
def evaluate_head(head: nn.Module, features: torch.Tensor, labels: torch.Tensor,
                  batch_size: int = 8192, dtype: torch.dtype | None = None) -> dict[str, float]:
    """Mean NLL loss and accuracy of ``head`` on features, in eval mode (no dropout)."""
    head.eval()
    total_loss = torch.zeros((), device=labels.device)
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    for start in range(0, len(labels), batch_size):
        with head_autocast(features.device.type, dtype):
            log_probs = head(features[start:start + batch_size]).float()
        batch_labels = labels[start:start + batch_size]
        total_loss += F.nll_loss(log_probs, batch_labels, reduction="sum")
        correct += (log_probs.argmax(dim=1) == batch_labels).sum()
    if len(labels) == 0:
        raise ValueError("The validation features are empty.")
    return {"loss": float(total_loss) / len(labels), "accuracy": int(correct) / len(labels)}


SMALL_PRODUCT = 4_000_000  # multiply-adds below which one thread beats sharing a matrix product


def threads_for_head(batch_size: int, in_features: int, hidden_units: Sequence[int], classes: int) -> int:
    """Torch threads worth using for a head: one when its largest matrix product per step is small.

    Sharing a small product between threads costs more in waiting than it saves, and
    much more on a busy machine, where a waiting thread may have lost its core; big
    products (the classic split's 256 x 1280 x 512) do run faster on every core.
    """
    sizes = [in_features, *hidden_units, classes]
    largest = batch_size * max(a * b for a, b in zip(sizes, sizes[1:]))
    return 1 if largest < SMALL_PRODUCT else torch.get_num_threads()


def train_head_on_features(train: FeatureSet | tuple, valid: FeatureSet | tuple, hidden_units: Sequence[int] = (512,),
                           dropout: float = 0.2, lr: float = 0.001, epochs: int = 10, batch_size: int = 256,
                           num_classes: int | None = None, shuffle: bool = True, device: str | None = None,
                           seed: int = 0, verbose: bool = False,
                           amp: bool | None = None) -> tuple[nn.Sequential, dict[str, list]]:
    """Train a fresh head on cached features; returns (head, history) like ``fit``'s history.

    ``train`` is (features, labels); features of shape (views, N, F) use view
    ``epoch % views`` in each epoch, so cached augmentations vary between epochs.
    ``shuffle=False`` feeds the examples in stored order (sorted by class). The same
    ``seed`` gives the same head and history on the same machine. ``amp=None`` runs the
    matrix products in bfloat16 on CPUs that compute it natively (about 1.6x faster
    there) and in float32 everywhere else, including GPUs, where a head this small is
    quick anyway; ``amp=False`` forces float32.
    """
    if epochs < 1 or not lr > 0 or batch_size < 1:
        raise ValueError(f"Need epochs >= 1, lr > 0 and batch_size >= 1, got epochs={epochs}, lr={lr}, "
                         f"batch_size={batch_size}.")
    device = resolve_device(device)
    generator = seed_everything(seed)
    (train_x, train_y), (valid_x, valid_y) = _as_pair(train), _as_pair(valid)
    if train_x.shape[-1] != valid_x.shape[-1]:
        raise ValueError(f"Train features have {train_x.shape[-1]} numbers per image, valid {valid_x.shape[-1]}; "
                         "were they extracted with the same backbone?")
    classes = num_classes or int(max(train_y.max(), valid_y.max())) + 1
    head = build_head(train_x.shape[-1], classes, hidden_units, dropout).to(device)
    train_x, train_y, valid_x, valid_y = (t.to(device) for t in (train_x, train_y, valid_x, valid_y))
    views = train_x if train_x.dim() == 3 else train_x.unsqueeze(0)
    optimizer = make_adam(head.parameters(), lr)
    history = new_history()
    dtype = None if device.startswith("cuda") else autocast_dtype(device, amp)
    threads = torch.get_num_threads()
    if not device.startswith("cuda"):
        threads = threads_for_head(min(batch_size, len(train_y)), train_x.shape[-1], list(hidden_units), classes)
    with torch_threads(threads):
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            batches = feature_batches(views[(epoch - 1) % len(views)], train_y, batch_size, shuffle, generator)
            trained = train_head_epoch(head, optimizer, batches, dtype)
            checked = evaluate_head(head, valid_x, valid_y, dtype=dtype)
            record_epoch(history, epoch, trained, checked, time.perf_counter() - start)
            if verbose:
                print(format_epoch(history, epochs))
    return head.cpu().eval(), history
