"""Saving and loading a trained classifier safely.

A checkpoint holds only plain Python types and tensors, so it loads with
``torch.load(..., weights_only=True)``: loading never runs code from the file. It is
written atomically (a temporary file, then a rename), so an interrupted save never
leaves a broken file under the final name. Everything is checked before any weights
are loaded, and each error names the file and what to do.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from helpers.config import resolve_device
from helpers.models import FlowerClassifier, build_head, freeze, load_backbone

FORMAT = "flowers-classifier/1"
REQUIRED = ("format", "backbone", "custom_backbone", "pretrained", "in_features", "num_classes",
            "hidden_units", "dropout", "class_to_idx", "head_state_dict")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used as asked. The message names the file and the fix."""


def _plain_history(history: dict | None) -> dict[str, list] | None:
    if history is None:
        return None
    return {str(key): [float(v) if not isinstance(v, int) else v for v in values] for key, values in history.items()}


def save_checkpoint(path: str | os.PathLike, model: FlowerClassifier, class_to_idx: dict[str, int] | None = None,
                    epoch: int | None = None, history: dict | None = None, image_size: int | None = None,
                    cat_to_name: dict[str, str] | None = None) -> Path:
    """Save ``model`` (backbone name, head shape and weights, class mapping) to ``path``.

    The backbone's weights are stored only when they cannot be rebuilt from torchvision
    (random weights, a custom backbone, or a backbone you unfroze and trained); a
    checkpoint of a frozen pretrained backbone stays small.
    ``cat_to_name`` (folder -> flower name) travels along so predictions can show names.
    """
    if not isinstance(model, FlowerClassifier):
        raise TypeError("save_checkpoint expects a model made by helpers.models.build_model.")
    class_to_idx = class_to_idx if class_to_idx is not None else model.class_to_idx
    if not class_to_idx:
        raise ValueError("Pass class_to_idx (e.g. loaders['train'].dataset.class_to_idx): "
                         "without it predictions cannot be mapped back to class folders.")
    if len(class_to_idx) != model.num_classes:
        raise ValueError(f"class_to_idx has {len(class_to_idx)} classes but the head outputs {model.num_classes}.")
    fine_tuned = any(p.requires_grad for p in model.backbone.parameters())
    store_backbone = model.custom_backbone or not model.pretrained or fine_tuned
    checkpoint: dict[str, Any] = {
        "format": FORMAT,
        "backbone": model.backbone_name,
        "custom_backbone": bool(model.custom_backbone),
        "pretrained": bool(model.pretrained),
        "in_features": int(model.in_features),
        "num_classes": int(model.num_classes),
        "hidden_units": [int(u) for u in model.hidden_units],
        "dropout": float(model.dropout),
        "image_size": int(image_size or getattr(model, "image_size", 224)),
        "class_to_idx": {str(k): int(v) for k, v in class_to_idx.items()},
        "head_state_dict": {k: v.detach().cpu() for k, v in model.head.state_dict().items()},
        "backbone_state_dict": ({k: v.detach().cpu() for k, v in model.backbone.state_dict().items()}
                                if store_backbone else None),
        "epoch": None if epoch is None else int(epoch),
        "history": _plain_history(history),
        "cat_to_name": {str(k): str(v) for k, v in cat_to_name.items()} if cat_to_name else None,
    }
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(checkpoint, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _first_line(error: Exception) -> str:
    """The first line of an error message, or the error's type when the message is empty."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file as a plain dict (``weights_only=True``) and check its contents."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the checkpoint file (e.g. {path / 'checkpoint.pth'}).")
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only load failed" not in str(error).lower():  # not a pickle at all: garbage bytes
            raise CheckpointError(f"{path} is not a PyTorch checkpoint or is corrupt ({_first_line(error)}). "
                                  "Save or copy it again.") from None
        raise CheckpointError(
            f"{path} holds pickled Python objects (probably a whole model saved with torch.save(model)), "
            "which we do not unpickle: that could run arbitrary code. Load it where it was made and "
            f"re-save it with helpers.checkpoint.save_checkpoint. ({_first_line(error)})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, KeyError, ValueError, IndexError) as error:
        # A cut-off or garbled file fails inside torch's reader with any of these.
        raise CheckpointError(f"{path} is incomplete or corrupt (truncated copy or interrupted save?): "
                              f"{_first_line(error)}. Save or copy it again.") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint written by helpers.checkpoint.save_checkpoint "
                              f"(format {data.get('format') if isinstance(data, dict) else type(data).__name__!r}).")
    missing = [key for key in REQUIRED if data.get(key) is None]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; it cannot be used for prediction. Save it again.")
    if len(data["class_to_idx"]) != data["num_classes"]:
        raise CheckpointError(f"{path}: class_to_idx has {len(data['class_to_idx'])} classes, "
                              f"the head {data['num_classes']}.")
    return data


def _check_head(path: Path, data: dict[str, Any]) -> nn.Sequential:
    """Build the stored head's shape and compare every tensor shape before loading weights."""
    head = build_head(data["in_features"], data["num_classes"], data["hidden_units"], data["dropout"])
    expected = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in data["head_state_dict"].items()}
    if expected != stored:
        raise CheckpointError(f"{path}: the head weights do not match the stored head shape "
                              f"(expected {expected}, found {stored}).")
    return head


def _check_expectations(path: Path, data: dict[str, Any], backbone: str | nn.Module | None,
                        num_classes: int | None) -> None:
    if isinstance(backbone, str) and backbone != data["backbone"]:
        raise CheckpointError(f"{path} was trained on backbone {data['backbone']!r}, not {backbone!r}. "
                              f"Use --arch {data['backbone']} or another checkpoint.")
    if num_classes is not None and num_classes != data["num_classes"]:
        raise CheckpointError(f"{path} predicts {data['num_classes']} classes, not {num_classes}.")
    if data["custom_backbone"] and not isinstance(backbone, nn.Module):
        raise CheckpointError(f"{path} uses a custom backbone ({data['backbone']}); pass the same module "
                              "as load_checkpoint(path, backbone=module).")


def _load_backbone_for(path: Path, data: dict[str, Any], backbone: str | nn.Module | None) -> nn.Module:
    if isinstance(backbone, nn.Module):
        module = backbone
    else:
        module = load_backbone(data["backbone"], pretrained=data["backbone_state_dict"] is None)
    stored = data["backbone_state_dict"]
    if stored is not None:
        own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        if own != {k: tuple(v.shape) for k, v in stored.items()}:
            raise CheckpointError(f"{path}: the stored backbone weights do not fit {data['backbone']}.")
        module.load_state_dict(stored)
    return freeze(module)


def load_checkpoint(path: str | os.PathLike, device: str | None = None, backbone: str | nn.Module | None = None,
                    num_classes: int | None = None) -> FlowerClassifier:
    """Rebuild the classifier saved at ``path`` on ``device`` (a CUDA checkpoint loads on CPU too).

    ``backbone`` and ``num_classes``, when given, are what you expect: a checkpoint for
    another backbone or class count is refused before any weights are loaded. A custom
    backbone module must be passed as ``backbone``. The model gets ``class_to_idx``,
    ``epoch`` and ``history`` attributes.
    """
    path = Path(path).expanduser()
    data = read_checkpoint(path)
    _check_expectations(path, data, backbone, num_classes)
    head = _check_head(path, data)
    module = _load_backbone_for(path, data, backbone)
    head.load_state_dict(data["head_state_dict"])
    model = FlowerClassifier(module, head, data["backbone"], data["hidden_units"], data["dropout"], data["pretrained"])
    model.custom_backbone = data["custom_backbone"]
    model.class_to_idx = dict(data["class_to_idx"])
    model.epoch = data.get("epoch")
    model.history = data.get("history")
    model.image_size = data.get("image_size", 224)
    model.cat_to_name = data.get("cat_to_name")
    return model.to(resolve_device(device)).eval()
