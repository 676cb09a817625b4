"""helpers.config: settings from environment variables, device choice, seeding."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

import helpers
from helpers.config import Settings, get_settings, resolve_device, seed_everything


def test_defaults_without_any_variable():
    settings = get_settings({})
    assert settings.data_root == Path.home() / "flowers-data"
    assert settings.tiny is False and settings.pretrained is True
    assert settings.split == "classic"
    assert settings.backbone == "resnet18"
    assert settings.device in ("cpu", "cuda")
    assert settings.num_workers is None
    assert settings.batch_size == 32
    assert settings.dataset_dir == Path.home() / "flowers-data" / "flowers102-classic"


def test_reads_every_variable(tmp_path):
    env = {"FLOWERS_DATA_ROOT": str(tmp_path), "FLOWERS_TINY": "1", "FLOWERS_SPLIT": "Official",
           "FLOWERS_BACKBONE": "mobilenet_v3_small", "FLOWERS_DEVICE": "cpu", "FLOWERS_WORKERS": "3",
           "FLOWERS_BATCH_SIZE": "8"}
    settings = get_settings(env)
    assert settings == Settings(data_root=tmp_path, tiny=True, split="official", backbone="mobilenet_v3_small",
                                device="cpu", num_workers=3, batch_size=8)
    assert settings.pretrained is False
    assert settings.dataset_dir == tmp_path / "tiny"


def test_reads_the_process_environment_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWERS_DATA_ROOT", str(tmp_path / "first"))
    first = get_settings()
    monkeypatch.setenv("FLOWERS_DATA_ROOT", str(tmp_path / "second"))
    assert first.data_root == tmp_path / "first"
    assert get_settings().data_root == tmp_path / "second"


def test_data_root_expands_the_home_folder():
    assert get_settings({"FLOWERS_DATA_ROOT": "~/somewhere"}).data_root == Path.home() / "somewhere"


@pytest.mark.parametrize("raw, expected", [("1", True), ("true", True), (" YES ", True), ("on", True),
                                           ("0", False), ("", False), ("false", False), ("No", False)])
def test_tiny_switch_accepts_usual_spellings(raw, expected):
    assert get_settings({"FLOWERS_TINY": raw}).tiny is expected


@pytest.mark.parametrize("env, names", [
    ({"FLOWERS_TINY": "maybe"}, ["FLOWERS_TINY", "maybe"]),
    ({"FLOWERS_WORKERS": "two"}, ["FLOWERS_WORKERS", "two"]),
    ({"FLOWERS_WORKERS": "-1"}, ["FLOWERS_WORKERS", "-1"]),
    ({"FLOWERS_BATCH_SIZE": "0"}, ["FLOWERS_BATCH_SIZE"]),
    ({"FLOWERS_BATCH_SIZE": "3.5"}, ["FLOWERS_BATCH_SIZE", "3.5"]),
    ({"FLOWERS_SPLIT": "random"}, ["FLOWERS_SPLIT", "random", "classic", "official"]),
    ({"FLOWERS_DEVICE": "tpu"}, ["tpu", "cpu", "cuda"]),
])
def test_bad_values_name_the_variable_and_value(env, names):
    with pytest.raises(ValueError) as error:
        get_settings(env)
    for name in names:
        assert name in str(error.value)


def test_empty_values_mean_the_default():
    settings = get_settings({"FLOWERS_WORKERS": " ", "FLOWERS_BACKBONE": "", "FLOWERS_SPLIT": "",
                             "FLOWERS_BATCH_SIZE": ""})
    assert (settings.num_workers, settings.backbone, settings.split, settings.batch_size) == (None, "resnet18",
                                                                                               "classic", 32)


def test_zero_workers_is_kept_not_replaced_by_the_default():
    assert get_settings({"FLOWERS_WORKERS": "0"}).num_workers == 0


def test_describe_and_as_dict(tmp_path):
    settings = get_settings({"FLOWERS_TINY": "1", "FLOWERS_DATA_ROOT": str(tmp_path), "FLOWERS_DEVICE": "cpu"})
    text = settings.describe()
    assert "tiny" in text and "random" in text and str(tmp_path / "tiny") in text and "resnet18" in text
    assert "workers auto" in text
    plain = settings.as_dict()
    assert plain["data_root"] == str(tmp_path) and plain["tiny"] is True
    assert all(isinstance(value, (str, bool, int, type(None))) for value in plain.values())


def test_full_data_settings_say_pretrained():
    text = get_settings({"FLOWERS_DEVICE": "cpu", "FLOWERS_SPLIT": "official"}).describe()
    assert "Flowers102, official split" in text and "pretrained" in text


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(" CPU ") == "cpu"
    assert resolve_device(None) == resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="mps"):
        resolve_device("mps")


def test_asking_for_cuda_without_a_gpu_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="GPU"):
        resolve_device("cuda")
    with pytest.raises(RuntimeError, match="GPU"):
        get_settings({"FLOWERS_DEVICE": "cuda:0"})
    assert resolve_device("auto") == "cpu"


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_seed_everything_repeats_python_numpy_and_torch():
    seed_everything(123)
    first = _draws()
    seed_everything(123)
    assert _draws() == first
    seed_everything(124)
    assert _draws() != first


def test_seed_everything_returns_a_seeded_generator():
    a = seed_everything(7)
    b = seed_everything(7)
    assert isinstance(a, torch.Generator)
    assert torch.equal(torch.randperm(20, generator=a), torch.randperm(20, generator=b))


def test_package_level_seed_everything_is_the_same():
    helpers.seed_everything(5)
    first = _draws()
    seed_everything(5)
    assert _draws() == first


def test_resize_to_gets_its_own_dataset_folder(tmp_path):
    settings = get_settings({"FLOWERS_DATA_ROOT": str(tmp_path), "FLOWERS_RESIZE_TO": "256", "FLOWERS_DEVICE": "cpu"})
    assert settings.resize_to == 256
    assert settings.dataset_dir == tmp_path / "flowers102-classic-256"
    assert get_settings({"FLOWERS_DATA_ROOT": str(tmp_path)}).dataset_dir == tmp_path / "flowers102-classic"


def test_own_dataset_folder_replaces_flowers102_and_the_tiny_slice(tmp_path):
    mine = tmp_path / "my photos"
    settings = get_settings({"FLOWERS_DATASET_DIR": str(mine), "FLOWERS_TINY": "1", "FLOWERS_DEVICE": "cpu"})
    assert settings.dataset_dir == mine
    assert "FLOWERS_DATASET_DIR" in settings.describe()
    assert settings.checkpoint_path.name == "my photos-resnet18.pth"
