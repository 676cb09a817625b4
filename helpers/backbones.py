"""Compare torchvision backbones before downloading any: size, cost and ImageNet accuracy.

torchvision ships a metadata record with every set of pretrained weights: the number
of parameters, the operations per image, the ImageNet accuracy it reached, the size of
the file. Reading it downloads nothing. The one number it lacks, how many features the
backbone hands to our head, is found by building the network on PyTorch's ``meta``
device: layers with shapes but no memory and no values, so even a 600-million-parameter
network is built in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torchvision

from helpers.models import build_head, count_parameters, feature_size, known_backbones, load_backbone

# A spread of families, small to large, all with 224-pixel ImageNet weights.
DEFAULT_BACKBONES = ("mobilenet_v3_large", "efficientnet_b0", "resnet18", "densenet121",
                     "resnet50", "convnext_tiny", "vgg16", "vit_b_16")


@dataclass(frozen=True)
class BackboneInfo:
    """One row of the comparison: what a backbone costs and what it reached on ImageNet."""

    name: str
    weights: str           # which pretrained weights "DEFAULT" means, e.g. IMAGENET1K_V1
    features: int          # length of the feature vector our head receives
    params_millions: float  # parameters of the whole ImageNet network, in millions
    gflops: float          # billions of operations per image, as torchvision reports them
    top1: float            # ImageNet-1K top-1 accuracy of these weights, in percent
    top5: float            # ImageNet-1K top-5 accuracy, in percent
    crop: int              # image size the accuracy was measured at
    download_mb: float     # size of the weights file
    head_params: int       # parameters of our head on these features (the part that trains)


def default_weights(name: str) -> torchvision.models.WeightsEnum:
    """The ``DEFAULT`` pretrained weights of a torchvision classification model (no download)."""
    if name not in known_backbones():
        raise ValueError(f"Unknown backbone {name!r}. Known torchvision names: {', '.join(known_backbones())}")
    return torchvision.models.get_model_weights(name).DEFAULT


def backbone_feature_size(name: str) -> int:
    """How many features ``name`` outputs once its ImageNet classifier is removed.

    Built on the ``meta`` device (shapes only), with random weights, so nothing is
    downloaded and almost no memory is used. The few models whose construction needs
    real values (the regnets) are built on the CPU instead.
    """
    try:
        with torch.device("meta"):
            backbone = load_backbone(name, pretrained=False)
    except NotImplementedError:  # construction copied values out of a meta tensor
        backbone = load_backbone(name, pretrained=False)
    return feature_size(backbone)


def backbone_info(name: str, num_classes: int = 102, hidden_units: Sequence[int] = (512,)) -> BackboneInfo:
    """Metadata of ``name``'s default weights plus its feature size and our head's size on it."""
    weights = default_weights(name)
    meta = weights.meta
    features = backbone_feature_size(name)
    imagenet = meta["_metrics"]["ImageNet-1K"]
    head = build_head(features, num_classes, hidden_units, dropout=0.0)
    return BackboneInfo(
        name=name,
        weights=weights.name,
        features=features,
        params_millions=meta["num_params"] / 1e6,
        gflops=float(meta["_ops"]),
        top1=float(imagenet["acc@1"]),
        top5=float(imagenet["acc@5"]),
        crop=int(weights.transforms().crop_size[0]),
        download_mb=float(meta["_file_size"]),
        head_params=count_parameters(head)["trainable"],
    )


def backbone_table(names: Sequence[str] = DEFAULT_BACKBONES, num_classes: int = 102,
                   hidden_units: Sequence[int] = (512,)) -> list[BackboneInfo]:
    """One :class:`BackboneInfo` per name, cheapest (fewest GFLOPs) first."""
    if not names:
        raise ValueError("Give at least one backbone name, e.g. ['resnet18', 'resnet50'].")
    rows = [backbone_info(name, num_classes, hidden_units) for name in names]
    return sorted(rows, key=lambda row: row.gflops)


def format_backbone_table(rows: Sequence[BackboneInfo]) -> str:
    """The rows as an aligned plain-text table (one line per backbone)."""
    header = ("backbone", "weights", "features", "params (M)", "GFLOPs", "top-1 %", "top-5 %",
              "crop", "download MB", "head params")
    lines = [header] + [
        (row.name, row.weights, f"{row.features:,}", f"{row.params_millions:.1f}", f"{row.gflops:.2f}",
         f"{row.top1:.1f}", f"{row.top5:.1f}", str(row.crop), f"{row.download_mb:.0f}", f"{row.head_params:,}")
        for row in rows
    ]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    text = []
    for number, line in enumerate(lines):
        cells = [line[0].ljust(widths[0]), line[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(line[2:], widths[2:])]
        text.append("  ".join(cells).rstrip())
        if number == 0:
            text.append("  ".join("-" * width for width in widths))
    return "\n".join(text)
