"""The training loop of notebook 04, saved: one epoch, evaluation, and ``fit``.

One loop trains every model of the course, on images or on cached features alike: it takes any iterable of
``(inputs, labels)`` batches; one inference path, :func:`model_outputs`, serves every evaluation. The loss is
``nn.NLLLoss`` because the head ends in ``LogSoftmax`` (together: ``nn.CrossEntropyLoss``).
"""

from __future__ import annotations

import time
from typing import Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from helpers.config import autocast_dtype, resolve_device, seed_everything

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def batch_to_device(inputs: torch.Tensor, device: str) -> torch.Tensor:
    """Move a batch to ``device``; a batch of images (4 dimensions) goes channels-last there."""
    inputs = inputs.to(device, non_blocking=device.startswith("cuda"))
    if inputs.dim() == 4:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs


def model_to_device(model: nn.Module, device: str) -> nn.Module:
    """Move the model to ``device`` in channels-last layout (faster convolutions on CPUs and GPUs)."""
    return model.to(device=device, memory_format=torch.channels_last)


def progress_bar(batches: Batches, description: str, show: bool) -> Batches:
    """``batches`` with a tqdm progress bar when ``show`` (a notebook widget in Jupyter, text elsewhere).

    The bar gets one iterator, made here: tqdm.auto's bar would otherwise start a second one over a
    DataLoader, which draws from its random generator (another batch order) and starts its workers twice.
    """
    return tqdm(iter(batches), total=len(batches), desc=description, leave=False) if show else batches


def autocast(device: str) -> torch.autocast:
    """Autocast in the precision :func:`helpers.config.autocast_dtype` chooses (off for float32)."""
    dtype = autocast_dtype(device)
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None)


def make_scaler(device: str) -> torch.amp.GradScaler | None:
    """A ``GradScaler`` when computing in float16 (small gradients would round to 0), else ``None``."""
    return torch.amp.GradScaler(device.split(":")[0]) if autocast_dtype(device) == torch.float16 else None


def train_epoch(model: nn.Module, batches: Batches, optimizer: torch.optim.Optimizer,
                device: str | None = None,
                batch_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                scaler: torch.amp.GradScaler | None = None, progress: bool = False) -> dict:
    """One pass over ``batches``, a gradient step per batch, on ``device`` (``None``: see ``resolve_device``).

    Returns the mean loss and accuracy *while training* (dropout on, weights changing) and
    every batch's loss. In float16 the loss is scaled by ``scaler`` (``fit`` passes one for
    the whole run; ``None`` makes one for this epoch). ``batch_scheduler`` steps after every
    batch whose optimizer step was taken (a float16 step is skipped when gradients overflow).
    """
    device = resolve_device(device)
    model_to_device(model, device)
    scaler = scaler or make_scaler(device)
    criterion = nn.NLLLoss()
    model.train()
    batch_losses, total_loss, correct, seen = [], 0.0, 0, 0
    for inputs, labels in progress_bar(batches, "train", progress):
        inputs, labels = batch_to_device(inputs, device), labels.to(device)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            log_probs = model(inputs)
        loss = criterion(log_probs.float(), labels)
        (loss if scaler is None else scaler.scale(loss)).backward()
        stepped = True
        if scaler is None:
            optimizer.step()
        else:  # steps only if the unscaled gradients are finite; after a skipped step the scale drops
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            stepped = scaler.get_scale() >= scale
        if batch_scheduler is not None and stepped:
            batch_scheduler.step()
        batch_losses.append(loss.item())
        total_loss += batch_losses[-1] * len(labels)
        correct += (log_probs.argmax(dim=1) == labels).sum().item()
        seen += len(labels)
    if seen == 0:
        raise ValueError("The training data gave no batches; is the training set empty?")
    return {"loss": total_loss / seen, "accuracy": correct / seen, "batch_losses": batch_losses}


@torch.no_grad()
def model_outputs(model: nn.Module, batches: Batches, device: str | None = None,
                  progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` over every batch; return float32 outputs and int64 labels, on the CPU.

    The one inference path: validation, test accuracy, prediction and feature extraction. It
    leaves ``model`` in evaluation mode on ``device`` (``None``: see ``resolve_device``).
    """
    device = resolve_device(device)
    model_to_device(model, device).eval()
    outputs, labels = [], []
    for inputs, batch_labels in progress_bar(batches, "evaluate", progress):
        with autocast(device):
            outputs.append(model(batch_to_device(inputs, device)).float())  # stays on the device: no sync
        labels.append(torch.as_tensor(batch_labels))
    if not outputs:
        raise ValueError("The data gave no batches; is that split empty?")
    return torch.cat(outputs).cpu(), torch.cat(labels).cpu()


def evaluate(model: nn.Module, batches: Batches, device: str | None = None,
             progress: bool = False) -> dict[str, float]:
    """Mean NLL loss and accuracy in evaluation mode (no dropout, no gradients)."""
    log_probs, labels = model_outputs(model, batches, device, progress)
    return {"loss": nn.functional.nll_loss(log_probs, labels).item(),
            "accuracy": (log_probs.argmax(dim=1) == labels).float().mean().item()}


def make_optimizer(parameters, lr: float) -> torch.optim.Adam:
    """Adam over ``parameters`` (a list of tensors or of parameter-group dicts), fused where torch has it."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(parameters, lr=lr)


def default_optimizer(model: nn.Module, lr: float, verbose: bool = False) -> torch.optim.Adam:
    """Adam over what requires gradients: the head at ``lr``, a partly unfrozen backbone at ``lr / 10``."""
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("The model has no trainable parameters; did you freeze the head too?")
    backbone = getattr(model, "backbone", None)
    if backbone is None or not any(p.requires_grad for p in backbone.parameters()):
        return make_optimizer([p for p in model.parameters() if p.requires_grad], lr)
    if verbose:
        print(f"optimizer: Adam, head at learning rate {lr:g}, "
              f"unfrozen backbone stages at {lr / 10:g} (a tenth)")
    return make_optimizer(parameter_groups(model, lr, lr / 10), lr)


def parameter_groups(model: nn.Module, head_lr: float, backbone_lr: float) -> list[dict]:
    """Optimizer groups of what trains: the head at ``head_lr``, the backbone at ``backbone_lr``."""
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    groups = [{"params": [p for p in model.head.parameters() if p.requires_grad], "lr": head_lr}]
    return groups + ([{"params": backbone, "lr": backbone_lr}] if backbone else [])


def best_epoch(history: dict[str, list]) -> int:
    """The epoch with the highest validation accuracy (the earliest of equals)."""
    accuracies = history["valid_accuracy"]
    return history["epoch"][accuracies.index(max(accuracies))]


def fit(model: nn.Module, train_batches: Batches, valid_batches: Batches, epochs: int, lr: float = 0.001, *,
        optimizer: torch.optim.Optimizer | None = None,
        batch_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        train_eval_batches: Batches | None = None, keep_best: bool = True, device: str | None = None,
        seed: int | None = None, progress: bool = True, verbose: bool = True) -> dict[str, list]:
    """Train with NLLLoss and Adam (on what requires gradients), validating after every epoch.

    Notebook 04's loop plus devices, mixed precision and progress bars. Returns the history per epoch:
    training loss and accuracy while training and (given ``train_eval_batches``) in evaluation mode,
    validation loss and accuracy, the first group's learning rate, seconds. ``keep_best`` ends with the best
    epoch's weights. Without an ``optimizer``, :func:`default_optimizer` trains a partly unfrozen backbone
    at a tenth of ``lr`` (at the head's rate, a pretrained stage loses what it learned). ``batch_scheduler``
    steps after every batch (one-cycle, or any schedule counted in batches); ``seed`` makes runs repeat on
    the CPU (on CUDA only approximately: some kernels add in varying order), given loaders whose workers
    start anew (persistent workers keep their first seeds).
    """
    if epochs < 1 or not lr > 0:
        raise ValueError(f"Need epochs >= 1 and a positive learning rate, got epochs={epochs}, lr={lr}.")
    if seed is not None:
        seed_everything(seed)  # dropout, and augmentation in the main process
        for batches in (train_batches, valid_batches, train_eval_batches):
            if isinstance(batches, DataLoader) and batches.generator is not None:
                batches.generator.manual_seed(seed)  # shuffling, and workers' augmentation when they start
    device = resolve_device(device)
    model_to_device(model, device)
    if isinstance(batch_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise ValueError("ReduceLROnPlateau needs a validation metric every epoch, but fit steps its "
                         "scheduler after every batch. Use a schedule counted in batches (OneCycleLR, or "
                         "LinearLR/CosineAnnealingLR with total steps = epochs x batches), or write the "
                         "epoch loop yourself with train_epoch.")
    if optimizer is None and batch_scheduler is not None:
        raise ValueError("A batch_scheduler steps the optimizer it was made with: pass that optimizer too "
                         "(fit(..., optimizer=optimizer, batch_scheduler=scheduler)).")
    if optimizer is None:
        optimizer = default_optimizer(model, lr, verbose)
    scaler = make_scaler(device)  # one for the whole run: its scale carries over from epoch to epoch
    keys = ("epoch", "train_loss", "train_accuracy", "train_eval_loss", "train_eval_accuracy", "valid_loss",
            "valid_accuracy", "lr", "seconds")
    history: dict[str, list] = {key: [] for key in keys}
    best_state, best_accuracy = None, -1.0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        trained = train_epoch(model, train_batches, optimizer, device, batch_scheduler, scaler, progress)
        checked = evaluate(model, train_eval_batches, device) if train_eval_batches is not None else None
        valid = evaluate(model, valid_batches, device, progress)
        for key, value in (("epoch", epoch), ("train_loss", trained["loss"]),
                           ("train_accuracy", trained["accuracy"]), ("valid_loss", valid["loss"]),
                           ("valid_accuracy", valid["accuracy"]), ("lr", optimizer.param_groups[0]["lr"]),
                           ("seconds", time.perf_counter() - start)):
            history[key].append(value)
        if checked is not None:
            history["train_eval_loss"].append(checked["loss"])
            history["train_eval_accuracy"].append(checked["accuracy"])
        if keep_best and valid["accuracy"] > best_accuracy:
            best_accuracy = valid["accuracy"]
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if verbose:
            print(format_epoch(history, epochs))
    if best_state is not None:
        model.load_state_dict(best_state)
        if verbose and best_epoch(history) != epochs:
            print(f"kept the weights of epoch {best_epoch(history)} "
                  f"(best validation accuracy {best_accuracy:.1%})")
    return history


def format_epoch(history: dict[str, list], epochs: int) -> str:
    """The last epoch of ``history`` as one line."""
    line = (f"epoch {history['epoch'][-1]}/{epochs}  train loss {history['train_loss'][-1]:.3f} "
            f"acc {history['train_accuracy'][-1]:.1%}")
    if history["train_eval_accuracy"]:
        line += f" (eval mode {history['train_eval_accuracy'][-1]:.1%})"
    return line + (f"  |  valid loss {history['valid_loss'][-1]:.3f} "
                   f"acc {history['valid_accuracy'][-1]:.1%}  ({history['seconds'][-1]:.1f} s)")
