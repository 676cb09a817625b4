"""Saving and loading a trained classifier safely.

A checkpoint holds only plain Python types and tensors, so it loads with ``weights_only=True`` (loading
never runs code from the file). Saves are atomic; everything is checked before any weights load.
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
from helpers.model import FlowerClassifier, build_head, freeze, load_backbone

FORMAT = "flowers-classifier/1"
REQUIRED = ("format", "backbone", "custom_backbone", "pretrained", "in_features", "num_classes",
            "hidden_units", "dropout", "class_to_idx", "head_state_dict")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used as asked. The message names the file and the fix."""


def atomic_save(data: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: the old file survives any failure."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(data, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def save_checkpoint(path: str | os.PathLike, model: FlowerClassifier,
                    class_to_idx: dict[str, int] | None = None, epoch: int | None = None,
                    history: dict | None = None, cat_to_name: dict[str, str] | None = None) -> Path:
    """Save ``model`` (backbone name and weights, head shape and weights, class mapping, names) to ``path``.

    The backbone's weights are always stored (about 45 MB for resnet18): the file is the whole
    classifier, loads offline, and a backbone fine-tuned in any way, by ``unfreeze`` or by hand, is kept.
    """
    if not isinstance(model, FlowerClassifier):
        raise TypeError("save_checkpoint expects a model made by helpers.model.build_model.")
    class_to_idx = class_to_idx or model.class_to_idx
    if not class_to_idx:
        raise ValueError("Pass class_to_idx (e.g. loaders['train'].dataset.class_to_idx): "
                         "without it predictions cannot be mapped back to class folders.")
    if len(class_to_idx) != model.num_classes:
        raise ValueError(f"class_to_idx has {len(class_to_idx)} classes, the head {model.num_classes}.")
    names = cat_to_name or model.cat_to_name
    return atomic_save({
        "format": FORMAT, "backbone": model.backbone_name, "custom_backbone": bool(model.custom_backbone),
        "pretrained": bool(model.pretrained), "in_features": int(model.in_features),
        "num_classes": int(model.num_classes), "hidden_units": list(model.hidden_units),
        "dropout": float(model.dropout), "class_to_idx": {str(k): int(v) for k, v in class_to_idx.items()},
        "head_state_dict": {k: v.detach().cpu() for k, v in model.head.state_dict().items()},
        "backbone_state_dict": {k: v.detach().cpu() for k, v in model.backbone.state_dict().items()},
        "epoch": None if epoch is None else int(epoch),
        "history": {str(k): [v if v is None or isinstance(v, int) else float(v) for v in values]
                    for k, values in history.items()}
        if history else None,
        "cat_to_name": {str(k): str(v) for k, v in names.items()} if names else None,
    }, path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file as a plain dict (``weights_only=True``) and check its contents."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the file, e.g. {path / 'checkpoint.pth'}.")
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if "weights only load failed" not in str(error).lower() or not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path} is not a PyTorch checkpoint or is corrupt ({reason}). "
                                  "Save or copy it again.") from None
        raise CheckpointError(f"{path} holds pickled Python objects (probably a whole model saved with "
                              "torch.save(model)), which we do not unpickle: that could run arbitrary "
                              "code. Load it where it was made and re-save it with "
                              "helpers.checkpoint.save_checkpoint.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, KeyError, ValueError, IndexError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"{path} is incomplete or corrupt (truncated copy or interrupted save?): "
                              f"{reason}. Save or copy it again.") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path} is not a checkpoint written by helpers.checkpoint.save_checkpoint "
                              f"(format {found!r}).")
    missing = [key for key in REQUIRED if data.get(key) is None]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}, which prediction needs. Save it again.")
    if len(data["class_to_idx"]) != data["num_classes"]:
        raise CheckpointError(f"{path}: class_to_idx has {len(data['class_to_idx'])} classes, "
                              f"the head {data['num_classes']}.")
    return data


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in state.items()}


def load_checkpoint(path: str | os.PathLike, device: str | None = None,
                    backbone: str | nn.Module | None = None) -> FlowerClassifier:
    """Rebuild the classifier at ``path`` on ``device``, in evaluation mode (CUDA checkpoints load on CPUs).

    ``backbone``: the name you expect (another backbone's checkpoint is refused before any
    weights load), or the module a custom-backbone checkpoint needs.
    """
    path = Path(path).expanduser()
    data = read_checkpoint(path)
    if isinstance(backbone, str) and backbone != data["backbone"]:
        raise CheckpointError(f"{path} was trained on backbone {data['backbone']!r}, not {backbone!r}. "
                              f"Pass backbone={data['backbone']!r}, or use another checkpoint.")
    if data["custom_backbone"] and not isinstance(backbone, nn.Module):
        raise CheckpointError(f"{path} uses a custom backbone ({data['backbone']}); pass the same module "
                              "as load_checkpoint(path, backbone=module).")
    head = build_head(data["in_features"], data["num_classes"], data["hidden_units"], data["dropout"])
    if _shapes(head.state_dict()) != _shapes(data["head_state_dict"]):
        raise CheckpointError(f"{path}: the head weights do not match the stored head shape (expected "
                              f"{_shapes(head.state_dict())}, found {_shapes(data['head_state_dict'])}).")
    stored = data["backbone_state_dict"]
    pretrained = stored is None  # older checkpoints stored only what torchvision could not rebuild
    module = backbone if isinstance(backbone, nn.Module) else load_backbone(data["backbone"], pretrained)
    if stored is not None:
        if _shapes(module.state_dict()) != _shapes(stored):
            raise CheckpointError(f"{path}: the stored backbone weights do not fit {data['backbone']}.")
        module.load_state_dict(stored)
    head.load_state_dict(data["head_state_dict"])
    model = FlowerClassifier(freeze(module), head, data["backbone"], data["hidden_units"], data["dropout"],
                             data["pretrained"], data["custom_backbone"])
    model.class_to_idx, model.cat_to_name = dict(data["class_to_idx"]), data.get("cat_to_name")
    model.epoch, model.history = data.get("epoch"), data.get("history")
    return model.to(resolve_device(device)).eval()
