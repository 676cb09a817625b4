"""Tests for helpers.backbones: the comparison table read from torchvision's weight metadata."""

from __future__ import annotations

import pytest
import torch
import torchvision

from helpers import backbones
from helpers.models import feature_size, load_backbone


def head_size(features: int, classes: int, hidden: list[int]) -> int:
    """Parameters of Linear layers features -> hidden... -> classes, counted independently of build_head."""
    sizes = [features, *hidden, classes]
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def test_resnet18_row_matches_torchvision_metadata():
    row = backbones.backbone_info("resnet18", num_classes=102, hidden_units=[512])
    meta = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta
    assert row.name == "resnet18" and row.weights == "IMAGENET1K_V1"
    assert row.features == 512
    assert row.params_millions == pytest.approx(meta["num_params"] / 1e6)
    assert row.gflops == pytest.approx(meta["_ops"])
    assert row.top1 == pytest.approx(meta["_metrics"]["ImageNet-1K"]["acc@1"])
    assert row.top5 == pytest.approx(meta["_metrics"]["ImageNet-1K"]["acc@5"])
    assert row.crop == 224
    assert row.download_mb == pytest.approx(meta["_file_size"])
    assert row.head_params == head_size(512, 102, [512])


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "vgg11", "vit_b_32"])
def test_meta_device_feature_size_equals_a_real_forward_pass(name):
    torch.manual_seed(0)
    real = feature_size(load_backbone(name, pretrained=False), image_size=224)
    assert backbones.backbone_feature_size(name) == real


def test_models_that_cannot_be_built_on_meta_fall_back_to_the_cpu():
    # regnet construction copies values out of tensors, which the meta device cannot do (torchvision 0.29)
    assert backbones.backbone_feature_size("regnet_x_400mf") == 400


def test_head_params_follow_the_hidden_units_and_classes():
    no_hidden = backbones.backbone_info("resnet18", num_classes=6, hidden_units=[])
    two_hidden = backbones.backbone_info("resnet18", num_classes=6, hidden_units=[256, 128])
    assert no_hidden.head_params == 512 * 6 + 6
    assert two_hidden.head_params == head_size(512, 6, [256, 128])


def test_table_is_sorted_by_cost_and_downloads_nothing(no_network, torch_home):
    rows = backbones.backbone_table()
    assert [row.name for row in rows] != [] and sorted(row.name for row in rows) == sorted(backbones.DEFAULT_BACKBONES)
    assert [row.gflops for row in rows] == sorted(row.gflops for row in rows)
    assert list(no_network) == [], "building the table tried to reach the network"
    assert not any(torch_home.rglob("*.pth")), "building the table downloaded weights"


def test_unknown_backbone_names_the_bad_value():
    with pytest.raises(ValueError, match="resnet_18"):
        backbones.backbone_info("resnet_18")


def test_backbone_without_a_linear_classifier_is_refused():
    with pytest.raises(ValueError, match="no nn.Linear"):
        backbones.backbone_info("squeezenet1_0")


def test_empty_name_list_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        backbones.backbone_table([])


def test_formatted_table_has_a_header_a_rule_and_one_aligned_line_per_row():
    rows = backbones.backbone_table(["resnet18", "vgg16"], num_classes=102)
    lines = backbones.format_backbone_table(rows).splitlines()
    assert len(lines) == 4
    assert lines[0].split()[:2] == ["backbone", "weights"]
    assert set(lines[1]) == {"-", " "}
    resnet = next(line for line in lines if line.startswith("resnet18"))
    assert resnet.split() == ["resnet18", "IMAGENET1K_V1", "512", "11.7", "1.81", "69.8", "89.1", "224", "45",
                              f"{head_size(512, 102, [512]):,}"]
    assert lines[2].startswith("resnet18") and lines[3].startswith("vgg16")  # cheaper first
    # right-aligned numbers: every data line ends in the same column as the header
    assert len({len(line) for line in lines}) == 1
