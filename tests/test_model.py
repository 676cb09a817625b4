"""helpers.model: the head, build_model with a torchvision name or a custom module, freezing and
unfreezing, batch norm when fine-tuning, and the pretrained-weights path offline (a weight file placed
in a temporary TORCH_HOME)."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from helpers import model as model_module
from helpers.download import OfflineError
from helpers.model import (FlowerClassifier, Float32LogSoftmax, build_head, build_model,
                           check_weights_available, count_parameters, feature_size, freeze, known_backbones,
                           load_backbone, unfreeze, weights_file)


@pytest.fixture(scope="module")
def resnet18_random() -> FlowerClassifier:
    torch.manual_seed(0)
    return build_model("resnet18", 4, [16], pretrained=False)


@pytest.fixture
def resnet(resnet18_random) -> FlowerClassifier:
    """A private copy of a resnet18 classifier with random weights (frozen backbone)."""
    return copy.deepcopy(resnet18_random)


def trainable_names(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def batchnorms(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


# --- the head ----------------------------------------------------------------------------------

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
    assert [type(m) for m in head] == [nn.Linear, Float32LogSoftmax]
    assert head.output.in_features == 20


def test_default_head_has_one_hidden_layer_of_512():
    head = build_head(10, 4)
    assert head.fc1.out_features == 512 and head.dropout1.p == 0.2


@pytest.mark.parametrize("args, word", [((0, 3, [8], 0.2), "in_features"), ((8, 1, [8], 0.2), "num_classes"),
                                        ((8, 3, [8], 1.0), "dropout"), ((8, 3, [8], -0.1), "dropout"),
                                        ((8, 3, [8, 0], 0.2), "unit")])
def test_head_rejects_bad_arguments(args, word):
    with pytest.raises(ValueError, match=word):
        build_head(*args)


# --- build_model with a custom module ----------------------------------------------------------

def test_custom_backbone_feature_size_from_a_dummy_forward(make_backbone):
    backbone = make_backbone(features=8)
    model = build_model(backbone, num_classes=3, hidden_units=[6], dropout=0.1, pretrained=False)
    assert model.backbone is backbone and model.in_features == 8 and model.num_classes == 3
    assert model.custom_backbone is True and model.backbone_name == "Sequential"
    assert model.head.fc1.in_features == 8 and model.head.output.out_features == 3
    assert trainable_names(model) == {name for name, _ in model.named_parameters() if name.startswith("head.")}
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_feature_size_keeps_the_training_mode(make_backbone):
    backbone = make_backbone(features=5).train()
    assert feature_size(backbone, 32) == 5
    assert backbone.training is True


def test_backbone_returning_feature_maps_gets_a_clear_error():
    maps = nn.Conv2d(3, 4, 3)  # (batch, 4, H, W): not a feature vector
    with pytest.raises(ValueError) as error:
        build_model(maps, 3, pretrained=False)
    assert "(1, 4, 222, 222)" in str(error.value)  # what it returned for a 224 px image
    assert "nn.AdaptiveAvgPool2d(1)" in str(error.value) and "nn.Flatten()" in str(error.value)  # the fix


def test_backbone_must_be_a_name_or_a_module():
    with pytest.raises(TypeError, match="int"):
        build_model(18, 3)


def test_frozen_backbone_stays_in_eval_mode():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = build_model(backbone, 3, [4], pretrained=False)
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


def test_dropout_inside_a_backbone_that_trains_stays_on():
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = build_model(backbone, 3, [4], pretrained=False, freeze_backbone=False).train()
    assert backbone[1].training  # it has no parameters of its own, but it belongs to a part that trains
    freeze(backbone)
    assert not model.train().backbone[1].training


def test_freeze_and_count_parameters(make_backbone):
    model = build_model(make_backbone(features=8), 3, [4], pretrained=False)
    conv = 3 * 8 * 3 * 3 + 8
    head = (8 * 4 + 4) + (4 * 3 + 3)
    assert count_parameters(model) == {"total": conv + head, "trainable": head, "frozen": conv}
    assert freeze(model) is model
    assert count_parameters(model)["trainable"] == 0


# --- build_model with a torchvision name -------------------------------------------------------

def test_known_backbones_are_torchvision_classification_models():
    names = known_backbones()
    assert {"resnet18", "vgg16", "mobilenet_v3_small", "efficientnet_b0"} <= set(names)
    assert names == sorted(names)
    assert not any(name.startswith(("fcn_", "deeplab", "fasterrcnn", "raft", "r3d")) for name in names)


def test_resnet18_with_random_weights(resnet, no_network):
    assert resnet.backbone_name == "resnet18" and resnet.custom_backbone is False and resnet.pretrained is False
    assert isinstance(resnet.backbone.fc, nn.Identity)  # ImageNet classifier removed
    assert resnet.in_features == 512
    assert all(not p.requires_grad for p in resnet.backbone.parameters())
    assert not resnet.backbone.training and resnet.head.training
    with torch.no_grad():
        assert resnet.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 4)
    assert no_network == []  # random weights never touch the network


def test_random_weights_are_the_same_every_time_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = load_backbone("mobilenet_v3_small", pretrained=False)
    assert torch.equal(torch.rand(1), expected_next)
    torch.manual_seed(7)  # whatever the notebook seeded before
    second = load_backbone("mobilenet_v3_small", pretrained=False)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ValueError) as error:
        build_model("resnet19", 3, pretrained=False)
    assert "resnet19" in str(error.value) and "resnet18" in str(error.value) and "vgg16" in str(error.value)


def test_a_network_without_a_linear_classifier_is_refused():
    with pytest.raises(ValueError, match="nn.Linear"):
        load_backbone("squeezenet1_1", pretrained=False)


def test_another_family_loses_its_last_linear_layer_and_its_feature_size_is_the_same_on_the_meta_device():
    backbone = load_backbone("mobilenet_v3_small", pretrained=False)  # its classifier is classifier[3]
    assert isinstance(backbone.classifier[-1], nn.Identity)
    assert not any(isinstance(m, nn.Linear) and m.out_features == 1000 for m in backbone.modules())
    real = feature_size(backbone, image_size=64)
    with torch.device("meta"):  # notebook 03's backbone table measures shapes without values
        meta = feature_size(load_backbone("mobilenet_v3_small", pretrained=False))
    assert real == 1024 and meta == real


# --- unfreezing, and batch norm when a stage trains ---------------------------------------------

def test_unfreeze_layer4_trains_only_layer4_and_the_head(resnet):
    assert unfreeze(resnet, ["layer4"]) == ["layer4"]
    expected = {f"backbone.layer4.{n}" for n, _ in resnet.backbone.layer4.named_parameters()} | \
               {f"head.{n}" for n, _ in resnet.head.named_parameters()}
    assert trainable_names(resnet) == expected
    counts = count_parameters(resnet)
    assert counts["trainable"] == sum(p.numel() for p in resnet.backbone.layer4.parameters()) + \
        sum(p.numel() for p in resnet.head.parameters())


def test_unfreeze_an_unknown_stage_names_the_existing_ones(resnet):
    with pytest.raises(ValueError) as error:
        unfreeze(resnet, ["layer5"])
    for name in ("layer5", "layer1", "layer4", "conv1"):
        assert name in str(error.value)
    assert trainable_names(resnet) == {f"head.{n}" for n, _ in resnet.head.named_parameters()}


def test_training_mode_with_an_unfrozen_stage_whose_batch_norm_is_asked_to_train(resnet):
    unfreeze(resnet, ["layer4"])
    resnet.freeze_batchnorm = False
    resnet.train()
    assert all(bn.training for bn in batchnorms(resnet.backbone.layer4))
    others = [bn for name, child in resnet.backbone.named_children() if name != "layer4" for bn in batchnorms(child)]
    assert others and not any(bn.training for bn in others)
    layer4_bn = resnet.backbone.layer4[0].bn1
    before = layer4_bn.running_mean.clone()
    frozen_bn = resnet.backbone.layer1[0].bn1.running_mean.clone()
    resnet(torch.randn(4, 3, 64, 64) * 2 + 1)
    assert not torch.equal(layer4_bn.running_mean, before)  # the trained stage's statistics follow the data
    assert torch.equal(resnet.backbone.layer1[0].bn1.running_mean, frozen_bn)  # the frozen ones do not


def test_by_default_an_unfrozen_stage_keeps_its_batch_norm_statistics(resnet):
    unfreeze(resnet, ["layer4"])
    assert resnet.freeze_batchnorm  # the default for a model built on a frozen backbone (notebook 07's advice)
    resnet.train()
    assert not any(bn.training for bn in batchnorms(resnet.backbone))
    assert all(bn.weight.requires_grad for bn in batchnorms(resnet.backbone.layer4))  # their weights still train
    before = {name: buffer.clone() for name, buffer in resnet.backbone.named_buffers()}
    resnet(torch.randn(4, 3, 64, 64) * 2 + 1).sum().backward()
    assert all(torch.equal(buffer, before[name]) for name, buffer in resnet.backbone.named_buffers())
    assert resnet.backbone.layer4[0].bn1.weight.grad is not None
    assert resnet.head.training and resnet.head.dropout1.training  # the head's dropout still works


def test_from_scratch_model_trains_everything_and_has_no_pretrained_weights(fake_imagenet_weights, no_network):
    stand_in = fake_imagenet_weights("resnet18")  # what "pretrained" would load, were it asked for
    torch.manual_seed(0)
    model = build_model("resnet18", 4, [16], pretrained=False, freeze_backbone=False)
    assert model.pretrained is False
    assert trainable_names(model) == {name for name, _ in model.named_parameters()}
    assert model.freeze_batchnorm is False  # from scratch, batch norm learns its statistics
    model.train()
    assert all(bn.training for bn in batchnorms(model.backbone))
    assert not torch.equal(model.backbone.conv1.weight, stand_in.conv1.weight)
    assert not torch.equal(model.backbone.layer4[1].bn2.running_var, stand_in.layer4[1].bn2.running_var)
    assert no_network == []


# --- batch-norm calibration of a random, frozen backbone --------------------------------------------

def placeholder_statistics(backbone: nn.Module) -> bool:
    """True while every batch norm still holds a fresh layer's mean 0 and variance 1."""
    layers = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    return all(torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) and
               torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in layers)


@pytest.mark.parametrize("options, calibrated", [({}, True), ({"freeze_backbone": False}, False)])
def test_a_random_frozen_torchvision_backbone_is_calibrated_by_itself(options, calibrated, no_network):
    model = build_model("mobilenet_v3_small", 3, [8], pretrained=False, **options)
    assert placeholder_statistics(model.backbone) is not calibrated


def test_calibrated_features_tell_drawn_flowers_apart(tiny_root, no_network):
    from helpers.data import FlowerFolder, eval_transform

    images = FlowerFolder(tiny_root / "valid", eval_transform("mobilenet_v3_small"))
    batch = torch.stack([images[i][0] for i in range(len(images))])
    calibrated = build_model("mobilenet_v3_small", 6, [8], pretrained=False).backbone
    placeholders = load_backbone("mobilenet_v3_small", pretrained=False).eval()
    with torch.no_grad():
        similarity = [mean_cosine_similarity(net(batch)) for net in (calibrated, placeholders)]
    assert similarity[0] < similarity[1] - 0.015  # placeholders give nearly the same direction for every image


def mean_cosine_similarity(features: torch.Tensor) -> float:
    """How alike the feature vectors of different images are, on average (1: all the same direction)."""
    unit = nn.functional.normalize(features, dim=1)
    return float((unit @ unit.T)[~torch.eye(len(features), dtype=torch.bool)].mean())


def test_a_custom_backbone_is_left_as_it_is():
    torch.manual_seed(0)
    custom = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    build_model(custom, 2, [4], pretrained=False)
    assert placeholder_statistics(custom)


# --- pretrained weights, offline ---------------------------------------------------------------

def test_weights_file_lives_in_torch_home(torch_home):
    path = weights_file("resnet18")
    assert path.parent == torch_home / "hub" / "checkpoints"
    assert path.name.startswith("resnet18-") and path.suffix == ".pth"


def test_pretrained_weights_load_from_the_cache_without_network(fake_imagenet_weights, no_network, hang_guard):
    stand_in = fake_imagenet_weights("resnet18")
    with hang_guard(60):
        model = build_model("resnet18", num_classes=3, hidden_units=[8], pretrained=True)
    assert model.pretrained is True and isinstance(model.backbone.fc, nn.Identity)
    assert torch.equal(model.backbone.conv1.weight, stand_in.conv1.weight)
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, stand_in.layer4[1].bn2.running_var)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert no_network == []  # the cached file was enough: nothing was even looked up


def test_pretrained_weights_missing_and_offline_fail_fast_with_advice(torch_home, no_network, hang_guard):
    with hang_guard(30), pytest.raises(OfflineError) as error:
        build_model("resnet18", num_classes=3, pretrained=True)
    message = str(error.value)
    assert str(weights_file("resnet18")) in message  # where to put the file
    assert torchvision.models.ResNet18_Weights.DEFAULT.url in message  # what to download
    assert "FLOWERS_TINY=1" in message and "pretrained=False" in message  # the offline alternatives
    assert no_network  # it looked, once, and gave up instead of hanging
    assert not weights_file("resnet18").exists()


def test_check_weights_available_when_the_network_is_there(torch_home, monkeypatch):
    asked = []
    monkeypatch.setattr(model_module, "can_reach", lambda url, timeout=3.0: asked.append(url) or True)
    check_weights_available("resnet18")  # no error
    assert asked == [torchvision.models.ResNet18_Weights.DEFAULT.url]


@pytest.mark.parametrize("damage", ["truncated", "other model"])
def test_a_damaged_cached_weights_file_is_named(fake_imagenet_weights, no_network, damage):
    fake_imagenet_weights("resnet18")
    path = weights_file("resnet18")
    if damage == "truncated":  # a copy that stopped part-way
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # the right name, the wrong contents
        torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(OSError) as error:
        build_model("resnet18", 3, pretrained=True)
    assert str(path) in str(error.value)


def test_no_classifier_dropout_is_left_to_switch_on_when_a_stage_is_unfrozen():
    backbone = load_backbone("efficientnet_b0", pretrained=False)
    assert isinstance(backbone.classifier, nn.Identity)  # was Sequential(Dropout(0.2), Linear)
    assert not any(isinstance(m, nn.Dropout) for m in backbone.modules())
    vgg = load_backbone("vgg11", pretrained=False)  # a classifier that keeps parameters keeps its layers
    assert isinstance(vgg.classifier, nn.Sequential) and isinstance(vgg.classifier[-1], nn.Identity)


def test_a_backbone_that_takes_larger_images_is_measured_at_its_own_size(monkeypatch):
    def vit_h_14_as_its_weights_build_it(name, pretrained=True):
        model = torchvision.models.get_model(name, weights=None, image_size=518)  # the pretrained weights' size
        model.heads.head = nn.Identity()
        return model

    monkeypatch.setattr(model_module, "load_backbone", vit_h_14_as_its_weights_build_it)
    with torch.device("meta"):  # shapes only: vit_h_14 has 632 million parameters
        model = build_model("vit_h_14", 5, [8], pretrained=False)
    assert model.in_features == 1280
