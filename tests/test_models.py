"""helpers.models: the head, build_model with a torchvision name or a custom module, freezing,
and the pretrained-weights path offline (a weight file placed in a temporary TORCH_HOME)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from helpers import models
from helpers.models import (build_head, build_model, check_weights_available, count_parameters, feature_size,
                            freeze, known_backbones, load_backbone, weights_file)
from helpers.network import OfflineError


# --- the head ---------------------------------------------------------------------------------

def test_head_structure_with_two_hidden_layers():
    head = build_head(20, 5, [16, 8], dropout=0.3)
    assert [name for name, _ in head.named_children()] == [
        "fc1", "relu1", "dropout1", "fc2", "relu2", "dropout2", "output", "log_softmax"]
    assert (head.fc1.in_features, head.fc1.out_features) == (20, 16)
    assert (head.fc2.in_features, head.fc2.out_features) == (16, 8)
    assert (head.output.in_features, head.output.out_features) == (8, 5)
    assert isinstance(head.relu1, nn.ReLU) and isinstance(head.log_softmax, nn.LogSoftmax)
    assert head.dropout1.p == head.dropout2.p == 0.3
    log_probs = head.eval()(torch.randn(4, 20))
    assert log_probs.shape == (4, 5)
    assert torch.allclose(log_probs.exp().sum(dim=1), torch.ones(4))


def test_head_without_hidden_layers_is_one_linear_layer():
    head = build_head(20, 3, [], dropout=0.5)
    assert [type(m) for m in head] == [nn.Linear, nn.LogSoftmax]
    assert head.output.in_features == 20


def test_default_head_has_one_hidden_layer_of_512():
    head = build_head(10, 4)
    assert head.fc1.out_features == 512 and head.dropout1.p == 0.2


@pytest.mark.parametrize("args, word", [((0, 3, [8], 0.2), "in_features"), ((8, 1, [8], 0.2), "num_classes"),
                                        ((8, 3, [8], 1.0), "dropout"), ((8, 3, [8], -0.1), "dropout"),
                                        ((8, 3, [8, 0], 0.2), "hidden")])
def test_head_rejects_bad_arguments(args, word):
    with pytest.raises(ValueError, match=word):
        build_head(*args)


# --- build_model with a custom module ---------------------------------------------------------

def test_custom_backbone_feature_size_from_a_dummy_forward(make_backbone):
    backbone = make_backbone(features=8)
    model = build_model(backbone, num_classes=3, hidden_units=[6], dropout=0.1, pretrained=False, image_size=64)
    assert model.backbone is backbone and model.in_features == 8 and model.num_classes == 3
    assert model.custom_backbone is True and model.backbone_name == "Sequential"
    assert model.head.fc1.in_features == 8 and model.head.output.out_features == 3
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 3)


def test_feature_size_keeps_the_training_mode(make_backbone):
    backbone = make_backbone(features=5).train()
    assert feature_size(backbone, 32) == 5
    assert backbone.training is True


def test_backbone_returning_feature_maps_gets_a_clear_error():
    maps = nn.Conv2d(3, 4, 3)  # (batch, 4, H, W): not a feature vector
    with pytest.raises(ValueError) as error:
        build_model(maps, 3, pretrained=False, image_size=32)
    assert "(1, 4, 30, 30)" in str(error.value)
    assert "nn.AdaptiveAvgPool2d(1), nn.Flatten()" in str(error.value)


def test_backbone_must_be_a_name_or_a_module():
    with pytest.raises(TypeError, match="int"):
        build_model(18, 3)


def test_frozen_backbone_stays_in_eval_mode():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = build_model(backbone, 3, [4], pretrained=False, image_size=32)
    running_mean = backbone[1].running_mean.clone()
    model.train()
    assert model.training and model.head.training
    assert not any(module.training for module in model.backbone.modules())
    images = torch.randn(4, 3, 32, 32) * 3 + 1
    model(images)
    assert torch.equal(backbone[1].running_mean, running_mean)  # batch-norm statistics did not drift
    assert torch.equal(model.backbone(images), model.backbone(images))  # no dropout in the backbone
    model.eval()
    assert not model.head.training


def test_a_partly_trainable_backbone_follows_the_model_mode(make_backbone):
    model = build_model(make_backbone(), 3, [4], pretrained=False, image_size=32)
    for parameter in model.backbone[0].parameters():
        parameter.requires_grad = True  # fine-tuning: the backbone trains too
    model.train()
    assert model.backbone.training


def test_freeze_and_count_parameters(make_backbone):
    model = build_model(make_backbone(features=8), 3, [4], pretrained=False, image_size=32)
    counts = count_parameters(model)
    conv = 3 * 8 * 3 * 3 + 8
    head = (8 * 4 + 4) + (4 * 3 + 3)
    assert counts == {"total": conv + head, "trainable": head, "frozen": conv}
    freeze(model)
    assert count_parameters(model)["trainable"] == 0


# --- build_model with a torchvision name ------------------------------------------------------

def test_known_backbones_are_torchvision_classification_models():
    names = known_backbones()
    assert {"resnet18", "vgg16", "mobilenet_v3_small", "efficientnet_b0"} <= set(names)
    assert names == sorted(names)
    assert not any(name.startswith(("fcn_", "deeplab", "fasterrcnn")) for name in names)


def test_resnet18_with_random_weights(no_network):
    model = build_model("resnet18", num_classes=4, hidden_units=[16], pretrained=False, image_size=64)
    assert model.backbone_name == "resnet18" and model.custom_backbone is False and model.pretrained is False
    assert isinstance(model.backbone.fc, nn.Identity)  # ImageNet classifier removed
    assert model.in_features == 512
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert not model.backbone.training and model.head.training
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 4)
    assert no_network == []  # random weights never touch the network


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ValueError) as error:
        build_model("resnet19", 3, pretrained=False)
    assert "resnet19" in str(error.value) and "resnet18" in str(error.value) and "vgg16" in str(error.value)


def test_a_network_without_a_linear_classifier_is_refused():
    with pytest.raises(ValueError, match="nn.Linear"):
        load_backbone("squeezenet1_1", pretrained=False)


# --- pretrained weights, offline --------------------------------------------------------------

def test_weights_file_lives_in_torch_home(torch_home):
    path = weights_file("resnet18")
    assert path.parent == torch_home / "hub" / "checkpoints"
    assert path.name.startswith("resnet18-") and path.suffix == ".pth"


def test_pretrained_weights_load_from_the_cache_without_network(fake_imagenet_weights, no_network, hang_guard):
    stand_in = fake_imagenet_weights("resnet18")
    with hang_guard(60):
        model = build_model("resnet18", num_classes=3, hidden_units=[8], pretrained=True, image_size=64)
    assert model.pretrained is True and isinstance(model.backbone.fc, nn.Identity)
    assert torch.equal(model.backbone.conv1.weight, stand_in.conv1.weight)
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, stand_in.layer4[1].bn2.running_var)
    assert not torch.equal(model.backbone.conv1.weight, torchvision.models.resnet18().conv1.weight)
    assert no_network == []  # the cached file was enough: nothing was even looked up


def test_pretrained_weights_missing_and_offline_fail_fast_with_advice(torch_home, no_network, hang_guard):
    with hang_guard(30), pytest.raises(OfflineError) as error:
        build_model("resnet18", num_classes=3, pretrained=True)
    message = str(error.value)
    assert str(weights_file("resnet18")) in message  # where to put the file
    assert "download.pytorch.org" in message  # what to download
    assert "pretrained=False" in message and "FLOWERS_TINY=1" in message  # the offline alternative
    assert "TORCH_HOME" in message
    assert no_network  # it looked, once, and gave up instead of hanging
    assert not weights_file("resnet18").exists()


def test_check_weights_available_when_the_network_is_there(torch_home, monkeypatch):
    monkeypatch.setattr(models, "can_reach", lambda url, timeout=3.0: True)
    assert check_weights_available("resnet18") is None


@pytest.mark.parametrize("damage", ["truncated", "other model"])
def test_a_damaged_cached_weights_file_is_named(fake_imagenet_weights, no_network, damage):
    fake_imagenet_weights("resnet18")
    path = weights_file("resnet18")
    if damage == "truncated":  # a copy that stopped part-way
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # the right name, the wrong contents
        torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(RuntimeError) as error:
        build_model("resnet18", 3, pretrained=True, image_size=64)
    assert str(path) in str(error.value) and "Delete that file" in str(error.value)
