"""A pretrained backbone, frozen, with our own small classifier head on top.

The backbone turns an image into a feature vector (what ImageNet training taught it
to see); the head turns that vector into flower classes. Only the head trains.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
import torchvision

from helpers.network import OfflineError, can_reach


def known_backbones() -> list[str]:
    """Every torchvision classification model name (``resnet18``, ``vgg16``, ...)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def weights_file(name: str) -> Path:
    """Where torch's hub cache keeps ``name``'s default pretrained weights."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def check_weights_available(name: str) -> None:
    """Raise :class:`OfflineError` within seconds if the weights are neither cached nor downloadable."""
    path = weights_file(name)
    url = torchvision.models.get_model_weights(name).DEFAULT.url
    if path.exists() or can_reach(url):
        return
    raise OfflineError(
        f"The pretrained weights of {name} are not in torch's cache and {url} cannot be reached.\n"
        f"Download that file on a machine with internet and copy it to\n  {path}\n"
        "(set TORCH_HOME to move the cache), then run this again; "
        "or work offline with random weights: pretrained=False, or FLOWERS_TINY=1."
    )


def _replace_last_linear(model: nn.Module) -> int:
    """Swap the model's final ``nn.Linear`` (its ImageNet classifier) for ``nn.Identity``.

    Works for every torchvision classification family: resnet ``fc``, vgg/densenet/
    mobilenet/efficientnet ``classifier[...]``, vit ``heads.head``. Returns the removed
    layer's input size.
    """
    last_name, last = None, None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last_name, last = name, module
    if last is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to replace.")
    parent = model.get_submodule(last_name.rpartition(".")[0]) if "." in last_name else model
    setattr(parent, last_name.rpartition(".")[2], nn.Identity())
    return last.in_features


def load_backbone(name: str, pretrained: bool = True) -> nn.Module:
    """A torchvision classification model without its ImageNet classifier layer."""
    names = known_backbones()
    if name not in names:
        raise ValueError(f"Unknown backbone {name!r}. Known torchvision names: {', '.join(names)}")
    if pretrained:
        check_weights_available(name)
    cached = pretrained and weights_file(name).exists()
    try:
        model = torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None)
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        if not cached:
            raise
        # A weights file copied by hand can be cut off or belong to another model.
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise RuntimeError(f"The cached weights of {name} at {weights_file(name)} cannot be loaded ({reason}). "
                           "Delete that file and run again to download it, or copy a complete file there.") from None
    if hasattr(model, "aux_logits"):  # inception/googlenet: no auxiliary outputs when only extracting
        model.aux_logits = False
        for attr in ("AuxLogits", "aux1", "aux2"):
            if hasattr(model, attr):
                setattr(model, attr, None)
    _replace_last_linear(model)
    return model


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients for every parameter of ``module`` (it will not train); returns it."""
    for parameter in module.parameters():
        parameter.requires_grad = False
    return module


def feature_size(backbone: nn.Module, image_size: int = 224) -> int:
    """How many numbers the backbone outputs per image, found by one dummy forward pass."""
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            device = next(backbone.parameters(), torch.empty(0)).device
            out = backbone(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        backbone.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"The backbone must map a batch of images to a batch of feature vectors (batch, features); "
            f"it returned {shape}. End it with pooling and flattening, e.g. "
            "nn.Sequential(backbone, nn.AdaptiveAvgPool2d(1), nn.Flatten())."
        )
    return int(out.shape[1])


def build_head(in_features: int, num_classes: int, hidden_units: Sequence[int] = (512,),
               dropout: float = 0.2) -> nn.Sequential:
    """Linear -> ReLU -> Dropout for each hidden size, then Linear -> LogSoftmax.

    LogSoftmax outputs log-probabilities, which is what ``nn.NLLLoss`` expects.
    ``hidden_units=[]`` gives a single linear layer (logistic regression on features).
    """
    if in_features < 1 or num_classes < 2:
        raise ValueError(f"Need in_features >= 1 and num_classes >= 2, got {in_features} and {num_classes}.")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout is a probability in [0, 1), not {dropout}.")
    hidden = [int(units) for units in hidden_units]
    if any(units < 1 for units in hidden):
        raise ValueError(f"Every hidden layer needs at least 1 unit: {hidden}.")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    size = in_features
    for number, units in enumerate(hidden, start=1):
        layers[f"fc{number}"] = nn.Linear(size, units)
        layers[f"relu{number}"] = nn.ReLU()
        layers[f"dropout{number}"] = nn.Dropout(dropout)
        size = units
    layers["output"] = nn.Linear(size, num_classes)
    layers["log_softmax"] = nn.LogSoftmax(dim=1)
    return nn.Sequential(layers)


class FlowerClassifier(nn.Module):
    """A frozen ``backbone`` followed by a trainable ``head``.

    The frozen backbone stays in eval mode even when the model trains: its batch-norm
    statistics and dropout belong to ImageNet training and must not drift on our data.
    """

    def __init__(self, backbone: nn.Module, head: nn.Sequential, backbone_name: str,
                 hidden_units: Sequence[int], dropout: float, pretrained: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.backbone_name = backbone_name
        self.hidden_units = [int(units) for units in hidden_units]
        self.dropout = float(dropout)
        self.pretrained = pretrained
        self.in_features = head[0].in_features
        self.num_classes = head.output.out_features
        self.class_to_idx: dict[str, int] | None = None
        self.custom_backbone = False
        self.image_size = 224

    def train(self, mode: bool = True) -> "FlowerClassifier":
        """Train mode for the head only; a frozen backbone stays in eval mode."""
        super().train(mode)
        if not any(p.requires_grad for p in self.backbone.parameters()):
            self.backbone.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (batch, classes) for a batch of normalised images."""
        return self.head(self.backbone(images))


def build_model(backbone: str | nn.Module, num_classes: int, hidden_units: Sequence[int] = (512,),
                dropout: float = 0.2, pretrained: bool = True, image_size: int = 224) -> FlowerClassifier:
    """A frozen backbone plus a new head for ``num_classes`` classes.

    ``backbone`` is a torchvision classification model name (ImageNet weights "DEFAULT"
    when ``pretrained``) or any ``nn.Module`` mapping images to feature vectors; its
    feature size is found with a dummy forward pass.
    """
    if isinstance(backbone, str):
        name, module = backbone, load_backbone(backbone, pretrained)
    elif isinstance(backbone, nn.Module):
        name, module = type(backbone).__name__, backbone
    else:
        raise TypeError(f"backbone must be a torchvision model name or an nn.Module, not {type(backbone).__name__}.")
    freeze(module)
    head = build_head(feature_size(module, image_size), num_classes, hidden_units, dropout)
    model = FlowerClassifier(module, head, name, hidden_units, dropout, pretrained)
    model.custom_backbone = not isinstance(backbone, str)
    model.image_size = image_size
    return model.train()


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total, trainable and frozen parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "frozen": total - trainable}
