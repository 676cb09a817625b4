"""helpers.config: settings from environment variables, device choice, seeding, workers, precision."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import config
from helpers.config import (Settings, autocast_dtype, default_num_workers, get_settings, resolve_device,
                            seed_everything)


@pytest.fixture
def no_gpu(monkeypatch):
    """Make torch report no CUDA or MPS device, whatever the machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)


def pretend_accelerator(monkeypatch, kind: str) -> None:
    """Make torch report one accelerator, ``cuda`` or ``mps``, as on a GPU machine or a Mac."""
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda: torch.device(kind))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: kind == "cuda")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: kind == "mps")


def test_defaults_without_any_variable(no_gpu):
    settings = get_settings({})
    assert settings == Settings(data_root=Path.home() / "flowers-data", tiny=False, split="classic",
                                backbone="resnet18", device="cpu", num_workers=None, batch_size=32, resize_to=256,
                                own_dataset=None)
    assert settings.pretrained is True
    assert settings.dataset_dir == Path.home() / "flowers-data" / "flowers102-classic-256"
    assert settings.checkpoint_path == Path.home() / "flowers-data" / "checkpoints" / "flowers102-classic-256-resnet18.pth"


def test_reads_every_variable(tmp_path):
    env = {"FLOWERS_DATA_ROOT": str(tmp_path), "FLOWERS_TINY": "1", "FLOWERS_SPLIT": "Official",
           "FLOWERS_BACKBONE": "mobilenet_v3_small", "FLOWERS_DEVICE": "cpu", "FLOWERS_WORKERS": "3",
           "FLOWERS_BATCH_SIZE": "8", "FLOWERS_RESIZE_TO": "0", "FLOWERS_DATASET_DIR": str(tmp_path / "mine")}
    settings = get_settings(env)
    assert settings == Settings(data_root=tmp_path, tiny=True, split="official", backbone="mobilenet_v3_small",
                                device="cpu", num_workers=3, batch_size=8, resize_to=None,
                                own_dataset=tmp_path / "mine")
    assert settings.pretrained is False


def test_reads_the_process_environment_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWERS_DATA_ROOT", str(tmp_path / "first"))
    first = get_settings()
    monkeypatch.setenv("FLOWERS_DATA_ROOT", str(tmp_path / "second"))
    assert first.data_root == tmp_path / "first"
    assert get_settings().data_root == tmp_path / "second"


def test_data_root_expands_the_home_folder():
    assert get_settings({"FLOWERS_DATA_ROOT": "~/somewhere"}).data_root == Path.home() / "somewhere"


@pytest.mark.parametrize("raw, expected", [
    ("1", True), ("true", True), (" YES ", True), ("on", True), ("0", False), ("", False), ("false", False),
    ("No", False), ("off", False),
])
def test_tiny_switch_accepts_usual_spellings(raw, expected):
    assert get_settings({"FLOWERS_TINY": raw}).tiny is expected


@pytest.mark.parametrize("env, names", [
    ({"FLOWERS_TINY": "maybe"}, ["FLOWERS_TINY", "maybe"]),
    ({"FLOWERS_WORKERS": "two"}, ["FLOWERS_WORKERS", "two"]),
    ({"FLOWERS_WORKERS": "-1"}, ["FLOWERS_WORKERS", "-1"]),
    ({"FLOWERS_BATCH_SIZE": "0"}, ["FLOWERS_BATCH_SIZE"]),
    ({"FLOWERS_BATCH_SIZE": "3.5"}, ["FLOWERS_BATCH_SIZE", "3.5"]),
    ({"FLOWERS_RESIZE_TO": "big"}, ["FLOWERS_RESIZE_TO", "big"]),
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
                             "FLOWERS_BATCH_SIZE": "", "FLOWERS_RESIZE_TO": "", "FLOWERS_DATASET_DIR": " "})
    assert (settings.num_workers, settings.backbone, settings.split, settings.batch_size, settings.resize_to,
            settings.own_dataset) == (None, "resnet18", "classic", 32, 256, None)


def test_zero_workers_is_kept_not_replaced_by_the_default():
    assert get_settings({"FLOWERS_WORKERS": "0"}).num_workers == 0


def test_tiny_settings_use_the_tiny_folder_and_random_weights(tmp_path):
    settings = get_settings({"FLOWERS_TINY": "1", "FLOWERS_DATA_ROOT": str(tmp_path), "FLOWERS_DEVICE": "cpu"})
    assert settings.dataset_dir == tmp_path / "tiny" and settings.pretrained is False
    assert settings.checkpoint_path == tmp_path / "checkpoints" / "tiny-resnet18.pth"
    text = settings.describe()
    assert str(tmp_path / "tiny") in text and "resnet18" in text


@pytest.mark.parametrize("env, folder", [
    ({"FLOWERS_RESIZE_TO": "256"}, "flowers102-classic-256"),
    ({"FLOWERS_RESIZE_TO": "0"}, "flowers102-classic"),
    ({"FLOWERS_RESIZE_TO": "128", "FLOWERS_SPLIT": "official"}, "flowers102-official-128"),
])
def test_each_stored_size_and_split_gets_its_own_folder(tmp_path, env, folder):
    settings = get_settings({"FLOWERS_DATA_ROOT": str(tmp_path), "FLOWERS_DEVICE": "cpu", **env})
    assert settings.dataset_dir == tmp_path / folder
    assert str(settings.dataset_dir) in settings.describe()


def test_own_dataset_folder_replaces_flowers102_and_the_tiny_slice(tmp_path):
    mine = tmp_path / "my photos"
    settings = get_settings({"FLOWERS_DATASET_DIR": str(mine), "FLOWERS_TINY": "1", "FLOWERS_DEVICE": "cpu"})
    assert settings.dataset_dir == mine
    assert str(mine) in settings.describe()
    assert settings.checkpoint_path.name == "my photos-resnet18.pth"


# --- devices, workers, precision -------------------------------------------------------------

def test_resolve_device(no_gpu):
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(" CPU ") == "cpu"
    assert resolve_device(None) == resolve_device("auto") == "cpu"
    with pytest.raises(ValueError, match="tpu"):
        resolve_device("tpu")


@pytest.mark.parametrize("kind", ["cuda", "mps"])
def test_auto_picks_the_accelerator_there_is(monkeypatch, kind):
    pretend_accelerator(monkeypatch, kind)
    assert resolve_device("auto") == resolve_device(None) == kind
    assert get_settings({"FLOWERS_DEVICE": kind}).device == kind


def test_auto_ignores_accelerators_the_course_does_not_support(monkeypatch):
    pretend_accelerator(monkeypatch, "xpu")
    assert resolve_device("auto") == "cpu"


def test_asking_for_a_missing_device_is_an_error_that_says_what_to_do(no_gpu):
    with pytest.raises(RuntimeError, match="GPU"):
        resolve_device("cuda")
    with pytest.raises(RuntimeError, match="GPU"):
        get_settings({"FLOWERS_DEVICE": "cuda:0"})
    with pytest.raises(RuntimeError, match="Apple silicon"):
        resolve_device("mps")


def test_every_device_parameter_resolves_none_the_same_way(monkeypatch, tiny_root):
    from helpers.data import make_loaders

    pretend_accelerator(monkeypatch, "cuda")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(4)), raising=False)
    loader = make_loaders(tiny_root, batch_size=4)["train"]  # device=None: the GPU the batches will go to
    assert loader.pin_memory and loader.num_workers == default_num_workers("cuda") == 4
    monkeypatch.setenv("FLOWERS_DEVICE", "cpu")  # the settings choose the CPU: None follows them, "auto" does not
    assert resolve_device(None) == "cpu" and resolve_device("auto") == "cuda"
    assert not make_loaders(tiny_root, batch_size=4)["train"].pin_memory


@pytest.mark.parametrize("cores, device, expected", [(2, "cpu", 0), (8, "cpu", 4), (2, "cuda", 2), (16, "cuda", 8),
                                                     (2, "mps", 2), (10, "mps", 4)])
def test_default_num_workers(monkeypatch, cores, device, expected):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert default_num_workers(device) == expected


@pytest.mark.parametrize("native_bf16", [False, True])
def test_auto_precision_is_float16_on_cuda_and_float32_elsewhere_whatever_the_cpu(monkeypatch, native_bf16):
    monkeypatch.setattr(config, "cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.delenv("FLOWERS_PRECISION", raising=False)
    assert autocast_dtype("cpu") is None and autocast_dtype("mps") is None
    assert autocast_dtype("cuda") == autocast_dtype("cuda:1") == torch.float16


@pytest.mark.parametrize("precision, expected", [("float32", None), ("bfloat16", torch.bfloat16),
                                                 ("float16", torch.float16)])
def test_a_chosen_precision_applies_on_every_device(monkeypatch, precision, expected):
    monkeypatch.setenv("FLOWERS_PRECISION", precision)
    assert autocast_dtype("cpu") == autocast_dtype("cuda") == expected
    assert autocast_dtype("cpu", "auto") is None  # an explicit argument wins over the variable


def test_precision_setting_is_read_and_checked(monkeypatch):
    assert get_settings({}).precision == "auto"
    assert get_settings({"FLOWERS_PRECISION": " BFloat16 "}).precision == "bfloat16"
    assert "precision bfloat16 (bfloat16)" in get_settings({"FLOWERS_PRECISION": "bfloat16"}).describe()
    with pytest.raises(ValueError, match="FLOWERS_PRECISION='half'.*float16"):
        get_settings({"FLOWERS_PRECISION": "half"})
    monkeypatch.setenv("FLOWERS_PRECISION", "fp8")
    with pytest.raises(ValueError, match="FLOWERS_PRECISION"):
        autocast_dtype("cpu")


def test_native_bf16_is_read_from_the_cpu_flags_once(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    real_path, reads = config.Path, []

    def fake_path(name, *rest):
        reads.append(name)
        return cpuinfo if str(name) == "/proc/cpuinfo" else real_path(name, *rest)

    monkeypatch.setattr(config, "Path", fake_path)
    uncached = config.cpu_has_native_bf16.__wrapped__
    cpuinfo.write_text("flags\t\t: fpu sse avx2 avx512f\n")
    assert uncached() is False
    cpuinfo.write_text("flags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    assert uncached() is True
    cpuinfo.unlink()  # not Linux: no flags to read
    assert uncached() is False
    config.cpu_has_native_bf16.cache_clear()
    try:
        first = config.cpu_has_native_bf16()
        assert config.cpu_has_native_bf16() is first and len(reads) == 4  # the second call reads nothing
    finally:
        config.cpu_has_native_bf16.cache_clear()


# --- seeding ----------------------------------------------------------------------------------

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
    assert torch.equal(torch.randperm(20, generator=a), torch.randperm(20, generator=b))
    assert not torch.equal(torch.randperm(20, generator=seed_everything(8)), torch.randperm(20, generator=b))
