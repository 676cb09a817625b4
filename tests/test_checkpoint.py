"""helpers.checkpoint: round trips, refusing wrong or unsafe files before loading, atomic writes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers.checkpoint import CheckpointError, atomic_save, load_checkpoint, read_checkpoint, save_checkpoint
from helpers.inference import predict
from helpers.model import build_model, freeze, unfreeze, weights_file

CLASS_TO_IDX = {"1": 0, "10": 1, "2": 2}


@pytest.fixture
def custom_model(make_backbone):
    torch.manual_seed(3)
    model = build_model(make_backbone(features=8, seed=0), 3, [6], dropout=0.1, pretrained=False)
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter.add_(torch.randn_like(parameter))  # not the freshly initialised values
    return model


@pytest.fixture
def saved(tmp_path, custom_model):
    return save_checkpoint(tmp_path / "run" / "checkpoint.pth", custom_model, CLASS_TO_IDX, epoch=4,
                           history={"train_loss": [1.5, 0.5], "epoch": [1, 2]},
                           cat_to_name={"1": "red", "10": "blue", "2": "yellow"})


@pytest.fixture
def spies(monkeypatch):
    """Record every torch.load call's keyword arguments and every load_state_dict call."""
    calls = {"torch.load": [], "load_state_dict": []}
    real_load, real_load_state_dict = torch.load, nn.Module.load_state_dict

    def load(*args, **kwargs):
        calls["torch.load"].append(kwargs)
        return real_load(*args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        calls["load_state_dict"].append(type(self).__name__)
        return real_load_state_dict(self, *args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    monkeypatch.setattr(nn.Module, "load_state_dict", load_state_dict)
    return calls


def rewrite(path, change):
    """Load a checkpoint as a dict, let ``change`` edit it, save it back."""
    data = torch.load(path, weights_only=True)
    change(data)
    torch.save(data, path)


def outputs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(images)


# --- round trips ---------------------------------------------------------------------------------

def test_round_trip_with_a_custom_backbone(saved, custom_model, make_backbone, spies):
    images = torch.randn(5, 3, 32, 32)
    expected = outputs(custom_model, images)
    other_weights = make_backbone(features=8, seed=99)  # same shape, other weights: the file's are loaded
    model = load_checkpoint(saved, device="cpu", backbone=other_weights)
    assert torch.allclose(outputs(model, images), expected, atol=1e-6)
    assert model.class_to_idx == CLASS_TO_IDX and model.epoch == 4
    assert model.history == {"train_loss": [1.5, 0.5], "epoch": [1, 2]}
    assert model.cat_to_name == {"1": "red", "10": "blue", "2": "yellow"}
    assert model.hidden_units == [6] and model.dropout == pytest.approx(0.1) and model.custom_backbone
    assert spies["torch.load"] and all(call.get("weights_only") is True for call in spies["torch.load"])
    assert all(call.get("map_location") == "cpu" for call in spies["torch.load"])


def test_a_loaded_model_is_ready_for_inference(saved, make_backbone):
    model = load_checkpoint(saved, device="cpu", backbone=make_backbone())
    assert not model.training and not model.head.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert model.freeze_batchnorm  # fine-tuning a loaded model keeps batch-norm statistics, as after build_model


def test_the_file_holds_plain_types_and_tensors_only(saved):
    data = torch.load(saved, weights_only=True)  # would raise for any pickled object
    assert data["format"] == "flowers-classifier/1"
    assert data["class_to_idx"] == CLASS_TO_IDX and data["num_classes"] == 3 and data["hidden_units"] == [6]
    assert all(isinstance(v, torch.Tensor) and v.device.type == "cpu" for v in data["head_state_dict"].values())
    assert data["backbone_state_dict"] is not None  # a custom backbone cannot be rebuilt from a name


def test_round_trip_with_a_torchvision_backbone_and_random_weights(tmp_path, no_network):
    torch.manual_seed(0)
    model = build_model("mobilenet_v3_small", 3, [4], pretrained=False)
    images = torch.randn(2, 3, 64, 64)
    path = save_checkpoint(tmp_path / "c.pth", model, CLASS_TO_IDX)
    loaded = load_checkpoint(path, device="cpu")
    assert torch.allclose(outputs(loaded, images), outputs(model, images), atol=1e-5)
    assert loaded.backbone_name == "mobilenet_v3_small" and loaded.pretrained is False
    assert no_network == []


def test_a_pretrained_checkpoint_stores_its_backbone_and_reloads_without_the_weights_file(tmp_path,
                                                                                        fake_imagenet_weights,
                                                                                        no_network):
    fake_imagenet_weights("mobilenet_v3_small")
    model = build_model("mobilenet_v3_small", 3, [4], pretrained=True)
    path = save_checkpoint(tmp_path / "c.pth", model, CLASS_TO_IDX)
    assert torch.load(path, weights_only=True)["backbone_state_dict"] is not None
    weights_file("mobilenet_v3_small").unlink()  # offline, and torchvision's file is gone: the checkpoint is enough
    images = torch.randn(2, 3, 64, 64)
    assert torch.equal(outputs(load_checkpoint(path, device="cpu"), images), outputs(model, images))


def test_a_backbone_unfrozen_by_hand_fine_tuned_and_frozen_again_is_saved(tmp_path, fake_imagenet_weights,
                                                                            no_network):
    fake_imagenet_weights("resnet18")
    model = build_model("resnet18", 3, [4], pretrained=True)
    for parameter in model.backbone.layer4.parameters():  # notebook 07's way, without unfreeze()
        parameter.requires_grad = True
    with torch.no_grad():
        for parameter in model.backbone.layer4.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    freeze(model.backbone)  # then frozen again for more head training
    loaded = load_checkpoint(save_checkpoint(tmp_path / "c.pth", model, CLASS_TO_IDX), device="cpu")
    images = torch.randn(2, 3, 64, 64)
    assert torch.equal(outputs(loaded, images), outputs(model, images))


def test_a_fine_tuned_checkpoint_stores_its_backbone_and_round_trips(tmp_path, fake_imagenet_weights, no_network,
                                                                      tiny_root):
    fake_imagenet_weights("resnet18")
    model = build_model("resnet18", 3, [4], pretrained=True)
    unfreeze(model, ["layer4"])
    with torch.no_grad():  # as after fine-tuning: layer4's weights and statistics are no longer ImageNet's
        for parameter in model.backbone.layer4.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        model.backbone.layer4[1].bn2.running_mean.add_(0.3)
    path = save_checkpoint(tmp_path / "fine.pth", model, CLASS_TO_IDX)
    stored = torch.load(path, weights_only=True)["backbone_state_dict"]
    assert stored is not None and torch.equal(stored["layer4.0.conv1.weight"], model.backbone.layer4[0].conv1.weight)
    weights_file("resnet18").unlink()  # the stored weights are enough: no download, no cache
    loaded = load_checkpoint(path, device="cpu", backbone="resnet18")
    images = torch.randn(2, 3, 64, 64)
    assert torch.equal(outputs(loaded, images), outputs(model, images))
    model.class_to_idx = CLASS_TO_IDX
    flower = tiny_root / "test" / "1" / "test_000.jpg"
    assert predict(flower, loaded, topk=3, device="cpu") == predict(flower, model, topk=3, device="cpu")
    again = load_checkpoint(save_checkpoint(tmp_path / "again.pth", loaded), device="cpu")  # loaded models are frozen
    assert torch.equal(outputs(again, images), outputs(model, images))  # the fine-tuned backbone was saved again


def test_save_uses_the_models_own_class_to_idx(tmp_path, custom_model, make_backbone):
    custom_model.class_to_idx = CLASS_TO_IDX
    path = save_checkpoint(tmp_path / "c.pth", custom_model)
    assert load_checkpoint(path, backbone=make_backbone()).class_to_idx == CLASS_TO_IDX


# --- what save refuses -----------------------------------------------------------------------------

def test_save_refuses_other_models_and_missing_or_wrong_classes(tmp_path, custom_model):
    with pytest.raises(TypeError, match="build_model"):
        save_checkpoint(tmp_path / "c.pth", nn.Linear(2, 2), CLASS_TO_IDX)
    with pytest.raises(ValueError, match="class_to_idx"):
        save_checkpoint(tmp_path / "c.pth", custom_model)
    with pytest.raises(ValueError, match="2 classes"):
        save_checkpoint(tmp_path / "c.pth", custom_model, {"1": 0, "2": 1})
    assert not (tmp_path / "c.pth").exists()


# --- what load refuses, before any weights are loaded ----------------------------------------------

def test_another_backbone_is_refused(saved, spies):
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(saved, backbone="vgg11")
    assert "vgg11" in str(error.value) and "Sequential" in str(error.value) and str(saved) in str(error.value)
    assert spies["load_state_dict"] == []


def test_another_torchvision_backbone_is_refused(tmp_path, spies):
    model = build_model("mobilenet_v3_small", 3, [4], pretrained=False)
    path = save_checkpoint(tmp_path / "c.pth", model, CLASS_TO_IDX)
    spies["load_state_dict"].clear()
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path, backbone="resnet18")
    assert "resnet18" in str(error.value) and "mobilenet_v3_small" in str(error.value)
    assert spies["load_state_dict"] == []


@pytest.mark.parametrize("key", ["class_to_idx", "custom_backbone", "head_state_dict", "backbone", "hidden_units",
                                 "num_classes"])
def test_missing_entries_are_refused(saved, make_backbone, spies, key):
    rewrite(saved, lambda data: data.pop(key))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(saved, backbone=make_backbone())
    assert key in str(error.value) and str(saved) in str(error.value)
    assert spies["load_state_dict"] == []


def test_class_to_idx_of_the_wrong_size_is_refused(saved, make_backbone, spies):
    rewrite(saved, lambda data: data.update(class_to_idx={"1": 0, "2": 1}))
    with pytest.raises(CheckpointError, match="class_to_idx has 2 classes"):
        load_checkpoint(saved, backbone=make_backbone())
    assert spies["load_state_dict"] == []


def test_head_weights_that_do_not_fit_are_refused(saved, make_backbone, spies):
    def grow(data):
        data["head_state_dict"]["output.weight"] = torch.zeros(4, 6)
    rewrite(saved, grow)
    with pytest.raises(CheckpointError, match="head weights"):
        load_checkpoint(saved, backbone=make_backbone())
    assert spies["load_state_dict"] == []


def test_backbone_weights_that_do_not_fit_the_module_are_refused(saved, make_backbone, spies):
    with pytest.raises(CheckpointError, match="backbone weights"):
        load_checkpoint(saved, backbone=make_backbone(features=5))
    assert spies["load_state_dict"] == []


def test_custom_backbone_needs_the_module(saved, spies):
    with pytest.raises(CheckpointError, match="backbone=module"):
        load_checkpoint(saved)
    assert spies["load_state_dict"] == []


@pytest.mark.parametrize("cut", [0, 10, 0.5, -20])
def test_truncated_file_is_refused(saved, make_backbone, spies, cut):
    data = saved.read_bytes()
    end = int(len(data) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(data) + cut)
    saved.write_bytes(data[:end])
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(saved, backbone=make_backbone())
    assert str(saved) in str(error.value)
    assert all(call.get("weights_only") is True for call in spies["torch.load"])
    assert spies["load_state_dict"] == []


@pytest.mark.parametrize("content", [b"these are not weights\n", b"\x80\x02}q\x00.", bytes(range(256))])
def test_a_file_that_is_no_checkpoint_is_refused(tmp_path, spies, content):
    path = tmp_path / "checkpoint.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="checkpoint.pth"):
        load_checkpoint(path)
    assert all(call.get("weights_only") is True for call in spies["torch.load"])
    assert spies["load_state_dict"] == []


def test_a_whole_pickled_model_is_refused_without_unpickling_it(tmp_path, custom_model, spies):
    path = tmp_path / "model.pth"
    torch.save(custom_model, path)  # the classic mistake: pickles the classes too
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value) and "save_checkpoint" in str(error.value)  # what to do instead
    assert spies["torch.load"] and all(call.get("weights_only") is True for call in spies["torch.load"])
    assert spies["load_state_dict"] == []


def test_a_plain_state_dict_is_not_a_checkpoint(tmp_path, custom_model, spies):
    path = tmp_path / "weights.pth"
    torch.save(custom_model.state_dict(), path)
    with pytest.raises(CheckpointError, match="weights.pth"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert spies["load_state_dict"] == []


def test_missing_path_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_checkpoint(tmp_path / "nothing.pth")
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        load_checkpoint(tmp_path)


# --- atomic writes ---------------------------------------------------------------------------------

def failing_save(written: list):
    """A torch.save that writes half a file and then dies (a full disk, a killed kernel)."""
    def save(obj, f, *args, **kwargs):
        written.append(str(f))
        with open(f, "wb") as handle:
            handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")
    return save


def test_an_interrupted_save_leaves_the_old_checkpoint_untouched(saved, custom_model, monkeypatch):
    before = saved.read_bytes()
    written = []
    monkeypatch.setattr(torch, "save", failing_save(written))
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(saved, custom_model, CLASS_TO_IDX)
    assert written and written[0] != str(saved)  # it wrote to a temporary file, not the final name
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["checkpoint.pth"]  # no temporary file left


def test_an_interrupted_first_save_leaves_nothing(tmp_path, custom_model, monkeypatch):
    monkeypatch.setattr(torch, "save", failing_save([]))
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "new.pth", custom_model, CLASS_TO_IDX)
    assert list(tmp_path.iterdir()) == []


def test_a_keyboard_interrupt_during_save_leaves_the_old_file_and_no_temporary_file(saved, custom_model,
                                                                                    monkeypatch):
    before = saved.read_bytes()

    def interrupted(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"PK\x03\x04")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(saved, custom_model, CLASS_TO_IDX)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["checkpoint.pth"]


def test_saving_twice_replaces_the_file(saved, custom_model, make_backbone):
    save_checkpoint(saved, custom_model, CLASS_TO_IDX, epoch=9)
    assert load_checkpoint(saved, backbone=make_backbone()).epoch == 9
    assert sorted(p.name for p in saved.parent.iterdir()) == ["checkpoint.pth"]


def test_atomic_save_creates_the_folder(tmp_path):
    path = atomic_save({"a": torch.ones(2)}, tmp_path / "new" / "folder" / "x.pt")
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))


@pytest.mark.parametrize("name, option, value", [("googlenet", "transform_input", True)])
def test_a_reloaded_backbone_keeps_what_its_pretrained_weights_set(tmp_path, fake_imagenet_weights, no_network,
                                                                   name, option, value):
    model = build_model(name, 3, [4], pretrained=False)  # random weights get the pretrained architecture too
    assert getattr(model.backbone, option) is value
    loaded = load_checkpoint(save_checkpoint(tmp_path / "c.pth", model, CLASS_TO_IDX), device="cpu")
    assert getattr(loaded.backbone, option) is value
    images = torch.randn(2, 3, 64, 64)
    assert torch.equal(outputs(loaded, images), outputs(model, images))
