"""A pretrained backbone, frozen, with our own small classifier head on top: the code of notebook 03.

The backbone turns an image into a feature vector (what ImageNet training taught it to
see); the head turns that vector into flower classes. Only the head trains, unless a
stage of the backbone is unfrozen for fine-tuning (notebook 07).
"""

from __future__ import annotations

import os
import random
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
import torchvision
from torch import nn
from torch.optim.swa_utils import update_bn

from helpers.data import eval_transform, preprocessing
from helpers.download import TINY_CLASSES, OfflineError, can_reach, draw_flower


def known_backbones() -> list[str]:
    """Every torchvision classification model name (``resnet18``, ``vgg16``, ...)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_backbone_name(name: str) -> None:
    """Raise a ``ValueError`` listing the known names if ``name`` is not a torchvision classifier."""
    if name not in known_backbones():
        raise ValueError(f"Unknown backbone {name!r}. Torchvision's names: {', '.join(known_backbones())}")


def weights_file(name: str) -> Path:
    """Where torch's hub cache keeps ``name``'s default pretrained weights (``TORCH_HOME`` moves it)."""
    url = torchvision.models.get_model_weights(name).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def check_weights_available(name: str) -> None:
    """Raise :class:`OfflineError` within seconds if the weights are neither cached nor downloadable."""
    check_backbone_name(name)
    url = torchvision.models.get_model_weights(name).DEFAULT.url
    if weights_file(name).exists() or can_reach(url):
        return
    raise OfflineError(f"{name}'s pretrained weights are not in torch's cache and {url} cannot be reached.\n"
                       f"Download that file on a machine with internet, copy it to\n  {weights_file(name)}\n"
                       "(set TORCH_HOME to move the cache), then run this again; or work offline with random "
                       "weights: pretrained=False, --random-weights, or FLOWERS_TINY=1.")


def architecture_options(name: str) -> dict:
    """Constructor arguments that torchvision sets itself when it loads ``name``'s pretrained weights.

    Random weights, and a checkpoint's stored ones, then get the same architecture: vit's and
    maxvit's input size (vit_h_14 takes 518 px), googlenet's and inception's input transform.
    """
    size = torchvision.models.get_model_weights(name).DEFAULT.meta.get("min_size")
    if name.startswith("vit_"):
        return {"image_size": size[0]}
    if name.startswith("maxvit"):
        return {"input_size": size}
    return {"transform_input": True} if name in ("googlenet", "inception_v3") else {}


def load_backbone(name: str, pretrained: bool = True) -> nn.Module:
    """A torchvision classification model whose last ``nn.Linear`` (ImageNet classifier) is ``nn.Identity``.

    That rule fits nearly every family: resnet's ``fc``, vgg's ``classifier[6]``, vit's ``heads.head``
    (squeezenet has no ``nn.Linear`` and is refused). A classifier left without parameters (efficientnet's
    ``Dropout, Identity``) becomes ``nn.Identity`` too; random weights are drawn with seed 0.
    """
    check_backbone_name(name)
    if pretrained:
        check_weights_available(name)
    try:
        with torch.random.fork_rng(devices=[]):  # random weights: the same ones in every run and notebook
            torch.manual_seed(0)
            model = (torchvision.models.get_model(name, weights="DEFAULT") if pretrained
                     else torchvision.models.get_model(name, weights=None, **architecture_options(name)))
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        if not pretrained:
            raise
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise OSError(f"The cached weights of {name} at {weights_file(name)} cannot be loaded ({reason}). "
                      "Delete that file and rerun to download it, or copy a complete file there.") from None
    if hasattr(model, "aux_logits"):  # inception/googlenet: no auxiliary classifiers
        model.aux_logits = False
        for attr in ("AuxLogits", "aux1", "aux2"):
            if hasattr(model, attr):
                setattr(model, attr, None)
    last = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not last:
        raise ValueError(f"{name} has no nn.Linear classifier to replace; choose another backbone.")
    parent, _, attribute = last[-1].rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attribute, nn.Identity())
    if parent and not any(True for _ in model.get_submodule(parent).parameters()):
        # the rest of the classifier (efficientnet's Dropout before its Linear) goes too: our head has its own
        grandparent, _, attribute = parent.rpartition(".")
        setattr(model.get_submodule(grandparent) if grandparent else model, attribute, nn.Identity())
    return model


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients for every parameter of ``module`` (it will not train); returns it."""
    for parameter in module.parameters():
        parameter.requires_grad = False
    return module


def unfreeze(model: nn.Module, stages: Sequence[str]) -> list[str]:
    """Let the named submodules of ``model.backbone`` train again (e.g. ``["layer4"]``); returns their names.

    A backbone's stages are its children: ``[n for n, _ in model.backbone.named_children()]``.
    They switch to training mode at the next ``model.train()`` (``fit`` calls it).
    """
    for stage in stages:
        try:
            module = model.backbone.get_submodule(stage)
        except AttributeError:
            names = ", ".join(n for n, _ in model.backbone.named_children())
            raise ValueError(f"The backbone has no stage {stage!r}; its stages are {names}.") from None
        for parameter in module.parameters():
            parameter.requires_grad = True
    return list(stages)


@torch.no_grad()
def feature_size(backbone: nn.Module, image_size: int = 224) -> int:
    """How many numbers the backbone outputs per image, found by one dummy forward pass."""
    was_training = backbone.training
    device = next(backbone.parameters(), torch.empty(0)).device
    out = backbone.eval()(torch.zeros(1, 3, image_size, image_size, device=device))
    backbone.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"The backbone must map images to feature vectors (batch, features); "
                         f"it returned {shape}. End it with nn.AdaptiveAvgPool2d(1) and nn.Flatten().")
    return int(out.shape[1])


class Float32LogSoftmax(nn.LogSoftmax):
    """``nn.LogSoftmax`` computed in float32 whatever the precision around it.

    CPU autocast would keep it in bfloat16 or float16, whose rounding shows in losses and probabilities.
    """

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of ``scores`` along ``dim``, in float32."""
        return super().forward(scores.float())


def build_head(in_features: int, num_classes: int, hidden_units: Sequence[int] = (512,),
               dropout: float = 0.2) -> nn.Sequential:
    """Linear -> ReLU -> Dropout for each hidden size, then Linear -> LogSoftmax (what ``NLLLoss`` expects).

    The LogSoftmax is :class:`Float32LogSoftmax`, so log-probabilities are float32 in any precision.
    ``hidden_units=[]`` gives a single linear layer: a linear classifier on the features.
    """
    if in_features < 1 or num_classes < 2:
        raise ValueError(f"Need in_features >= 1 and num_classes >= 2, got {in_features} and {num_classes}.")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout is a probability in [0, 1), not {dropout}.")
    if any(int(units) < 1 for units in hidden_units):
        raise ValueError(f"Every hidden layer needs at least 1 unit: {list(hidden_units)}.")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    size = in_features
    for number, units in enumerate(hidden_units, start=1):
        layers[f"fc{number}"] = nn.Linear(size, int(units))
        layers[f"relu{number}"] = nn.ReLU()
        layers[f"dropout{number}"] = nn.Dropout(dropout)
        size = int(units)
    layers["output"] = nn.Linear(size, num_classes)
    layers["log_softmax"] = Float32LogSoftmax(dim=1)
    return nn.Sequential(layers)


class FlowerClassifier(nn.Module):
    """A ``backbone`` followed by a ``head``, and what is needed to rebuild and use them.

    In training mode, frozen parts of the backbone (modules whose parameters all stay fixed, with everything
    inside them) stay in evaluation mode: their batch-norm statistics must not drift, their dropout stays
    off. While ``freeze_batchnorm`` is True (the default for a model built on a frozen backbone, and for
    loaded checkpoints), the batch norms of unfrozen stages stay in evaluation mode too (their weights still
    train): with small batches from a few hundred images, batch statistics are noisy and fine-tuning did
    better without them (notebook 07). From scratch it is False: batch norms must learn their statistics.
    """

    def __init__(self, backbone: nn.Module, head: nn.Sequential, backbone_name: str,
                 hidden_units: Sequence[int], dropout: float, pretrained: bool,
                 custom_backbone: bool = False) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.backbone_name, self.pretrained, self.custom_backbone = backbone_name, pretrained, custom_backbone
        self.hidden_units, self.dropout = [int(u) for u in hidden_units], float(dropout)
        self.in_features, self.num_classes = head[0].in_features, head.output.out_features
        self.class_to_idx: dict[str, int] | None = None
        self.cat_to_name: dict[str, str] | None = None
        self.epoch: int | None = None
        self.history: dict | None = None
        self.freeze_batchnorm = True

    def train(self, mode: bool = True) -> "FlowerClassifier":
        """Training mode for what trains; frozen parts (and, if asked, batch norm) stay in evaluation mode."""
        super().train(mode)
        batch_norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
        for module in self.backbone.modules():
            parameters = list(module.parameters())
            frozen = bool(parameters) and not any(p.requires_grad for p in parameters)
            if frozen or (self.freeze_batchnorm and isinstance(module, batch_norms)):
                module.eval()  # reaches everything inside the module too
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (batch, classes) for a batch of normalised images."""
        return self.head(self.backbone(images))


@torch.no_grad()
def calibrate_random_backbone(backbone: nn.Module, name: str, images: int = 24) -> nn.Module:
    """Let a random backbone's batch norms measure real statistics; returns it in evaluation mode.

    Fresh batch-norm layers hold placeholders (mean 0, variance 1), with which a random backbone gives
    nearly the same features for every image, and no head can learn. One pass over drawn flowers, the tiny
    slice's kind of image, sets their running means and variances (``torch.optim.swa_utils.update_bn``).
    Only offline runs need this: pretrained weights come with real statistics.
    """
    rng, transform = random.Random(0), eval_transform(name)
    pictures = [transform(draw_flower(TINY_CLASSES[i % len(TINY_CLASSES)], rng, 256)) for i in range(images)]
    batches = [torch.stack(pictures[start:start + 12]) for start in range(0, images, 12)]
    update_bn(batches, backbone)
    return backbone.eval()


def build_model(backbone: str | nn.Module, num_classes: int, hidden_units: Sequence[int] = (512,),
                dropout: float = 0.2, pretrained: bool = True,
                freeze_backbone: bool = True) -> FlowerClassifier:
    """A (frozen) backbone plus a new head for ``num_classes`` classes.

    ``backbone``: a torchvision model name or any ``nn.Module`` that maps images to feature
    vectors. ``freeze_backbone=False`` trains everything (notebook 07's from-scratch run). A
    torchvision backbone with random weights (``pretrained=False``: the tiny slice, offline)
    that stays frozen is calibrated first (:func:`calibrate_random_backbone`), so heads can learn on it.
    """
    if isinstance(backbone, str):
        name, module = backbone, load_backbone(backbone, pretrained)
    elif isinstance(backbone, nn.Module):
        name, module = type(backbone).__name__, backbone
    else:
        raise TypeError(f"backbone must be a torchvision model name or an nn.Module, "
                        f"not {type(backbone).__name__}.")
    if freeze_backbone:
        freeze(module)
        if not pretrained and isinstance(backbone, str) and not module_on_meta(module):
            calibrate_random_backbone(module, name)
    size = preprocessing(name)["crop"] if isinstance(backbone, str) else 224  # vit_h_14 takes 518 px only
    head = build_head(feature_size(module, size), num_classes, hidden_units, dropout)
    model = FlowerClassifier(module, head, name, hidden_units, dropout, pretrained,
                             custom_backbone=not isinstance(backbone, str))
    model.freeze_batchnorm = freeze_backbone  # from scratch, batch norm must learn its statistics
    return model.train()


def module_on_meta(module: nn.Module) -> bool:
    """True for a module built on the ``meta`` device (shapes without values), which cannot compute."""
    return any(p.is_meta for p in module.parameters())


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total, trainable and frozen parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "frozen": total - trainable}
