"""Training the head: one epoch, evaluation, and ``fit`` with a per-epoch history.

The loss is ``nn.NLLLoss`` because the head ends in ``LogSoftmax``; together they
compute exactly what ``nn.CrossEntropyLoss`` computes on raw scores. Only parameters
that require gradients (the head's) go to the optimizer. On CUDA the forward pass
runs under autocast (mixed precision) with images in channels-last memory layout.
"""

from __future__ import annotations

import time
from typing import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from helpers.config import resolve_device, seed_everything

HISTORY_KEYS = ("epoch", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy", "seconds")
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def new_history() -> dict[str, list]:
    """An empty history: one list per quantity, one entry per epoch."""
    return {key: [] for key in HISTORY_KEYS}


def _to_device(images: torch.Tensor, labels: torch.Tensor, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    cuda = device.startswith("cuda")
    images = images.to(device, non_blocking=cuda)
    if cuda and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=cuda)


def prepare_model(model: nn.Module, device: str) -> nn.Module:
    """Move the model to ``device``; on CUDA also use channels-last layout (faster convolutions)."""
    model.to(device)
    if device.startswith("cuda"):
        model.to(memory_format=torch.channels_last)
    return model


def train_epoch(model: nn.Module, batches: Batches, optimizer: torch.optim.Optimizer, device: str,
                scaler: torch.amp.GradScaler | None = None, progress: bool = False,
                description: str = "train") -> dict[str, float]:
    """One pass over ``batches`` with gradient steps; returns mean loss and accuracy."""
    criterion = nn.NLLLoss(reduction="sum")
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    cuda = device.startswith("cuda")
    for images, labels in tqdm(batches, desc=description, leave=False, disable=not progress):
        images, labels = _to_device(images, labels, device)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=cuda):
            log_probs = model(images)
            loss = criterion(log_probs.float(), labels)
        if scaler is not None and cuda:
            scaler.scale(loss / len(labels)).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            (loss / len(labels)).backward()
            optimizer.step()
        total_loss += loss.item()
        correct += (log_probs.argmax(dim=1) == labels).sum().item()
        seen += len(labels)
    if seen == 0:
        raise ValueError("The training data gave no batches; is the training set empty?")
    return {"loss": total_loss / seen, "accuracy": correct / seen}


@torch.no_grad()
def evaluate(model: nn.Module, loader: Batches, device: str | None = None, progress: bool = False,
             description: str = "evaluate") -> dict[str, float]:
    """Mean NLL loss and accuracy over ``loader``, in eval mode (no dropout) without gradients."""
    device = resolve_device(device)
    prepare_model(model, device)  # the images go to ``device``; the model must be there too
    model.eval()
    criterion = nn.NLLLoss(reduction="sum")
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in tqdm(loader, desc=description, leave=False, disable=not progress):
        images, labels = _to_device(images, labels, device)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=device.startswith("cuda")):
            log_probs = model(images).float()
        total_loss += criterion(log_probs, labels).item()
        correct += (log_probs.argmax(dim=1) == labels).sum().item()
        seen += len(labels)
    if seen == 0:
        raise ValueError("The evaluation data gave no batches; is that split empty?")
    return {"loss": total_loss / seen, "accuracy": correct / seen}


def record_epoch(history: dict[str, list], epoch: int, train: dict, valid: dict, seconds: float) -> None:
    """Append one epoch's numbers to ``history``."""
    history["epoch"].append(epoch)
    history["train_loss"].append(train["loss"])
    history["train_accuracy"].append(train["accuracy"])
    history["valid_loss"].append(valid["loss"])
    history["valid_accuracy"].append(valid["accuracy"])
    history["seconds"].append(seconds)


def format_epoch(history: dict[str, list], epochs: int) -> str:
    """The last epoch of ``history`` as one readable line."""
    i = -1
    return (f"epoch {history['epoch'][i]}/{epochs}  "
            f"train loss {history['train_loss'][i]:.3f} acc {history['train_accuracy'][i]:.1%}  |  "
            f"valid loss {history['valid_loss'][i]:.3f} acc {history['valid_accuracy'][i]:.1%}  "
            f"({history['seconds'][i]:.1f} s)")


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that require gradients; an error if there are none."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("The model has no trainable parameters; did you freeze the head too?")
    return params


def fit(model: nn.Module, train_loader: Batches, valid_loader: Batches, epochs: int, lr: float = 0.001,
        device: str | None = None, progress: bool = True, verbose: bool = True,
        seed: int | None = None) -> dict[str, list]:
    """Train the trainable part (the head) with NLLLoss and Adam; validate after every epoch.

    Returns the history: per epoch, train/valid loss and accuracy and the seconds it took.
    ``seed`` re-seeds torch first so a run repeats exactly (with a seeded loader).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, not {epochs}.")
    if not lr > 0:
        raise ValueError(f"The learning rate must be positive, not {lr}.")
    if seed is not None:
        seed_everything(seed)
    device = resolve_device(device)
    prepare_model(model, device)
    optimizer = torch.optim.Adam(trainable_parameters(model), lr=lr)
    scaler = torch.amp.GradScaler("cuda") if device.startswith("cuda") else None
    history = new_history()
    for epoch in tqdm(range(1, epochs + 1), desc="epochs", disable=not progress):
        start = time.perf_counter()
        train = train_epoch(model, train_loader, optimizer, device, scaler, progress, f"epoch {epoch} train")
        valid = evaluate(model, valid_loader, device, progress, f"epoch {epoch} valid")
        record_epoch(history, epoch, train, valid, time.perf_counter() - start)
        if verbose:
            print(format_epoch(history, epochs))
    return history
