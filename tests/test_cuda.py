"""Smoke tests of the CUDA path: float16 autocast with one GradScaler, a one-cycle schedule, feature
extraction and a fine-tuned checkpoint, on a real GPU. They skip where torch sees none (CI's machines),
and run with ``make test`` on a machine that has one."""

from __future__ import annotations

import math

import pytest
import torch

from helpers.checkpoint import load_checkpoint, save_checkpoint
from helpers.data import eval_transform, make_loaders, train_transform
from helpers.features import cached_features
from helpers.model import build_model, unfreeze
from helpers.train import autocast, fit, make_optimizer, make_scaler, model_outputs, parameter_groups

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


@pytest.fixture
def auto_precision(monkeypatch):
    monkeypatch.setenv("FLOWERS_PRECISION", "auto")  # float16 and a GradScaler on CUDA


def test_the_cuda_policy_is_float16_with_a_scaler(auto_precision):
    assert isinstance(make_scaler("cuda"), torch.amp.GradScaler)
    with autocast("cuda"):
        assert torch.mm(torch.ones(2, 2, device="cuda"), torch.ones(2, 2, device="cuda")).dtype == torch.float16


def test_a_fine_tuning_epoch_with_one_cycle_then_a_checkpoint_round_trip(auto_precision, tiny_root, tmp_path):
    loaders = make_loaders(tiny_root, 8, train_transform("resnet18"), eval_transform("resnet18"), device="cuda")
    model = build_model("resnet18", len(loaders["train"].dataset.classes), [16], pretrained=False)
    unfreeze(model, ["layer4"])
    optimizer = make_optimizer(parameter_groups(model, 1e-3, 1e-4), 1e-3)
    one_cycle = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[1e-3, 1e-4], total_steps=len(loaders["train"]))
    history = fit(model, loaders["train"], loaders["valid"], 1, optimizer=optimizer, batch_scheduler=one_cycle,
                  device="cuda", progress=False, verbose=False)
    assert math.isfinite(history["train_loss"][0]) and math.isfinite(history["valid_loss"][0])
    assert next(model.parameters()).is_cuda
    path = save_checkpoint(tmp_path / "fine.pth", model, loaders["train"].dataset.class_to_idx)
    loaded = load_checkpoint(path, device="cuda")
    ours, theirs = (model_outputs(m, loaders["valid"], "cuda")[0] for m in (model, loaded))
    assert torch.allclose(ours, theirs, atol=1e-3)


def test_features_extracted_on_the_gpu_match_the_cpu_ones(auto_precision, tiny_root, tmp_path, monkeypatch):
    model = build_model("resnet18", 6, [16], pretrained=False)
    on_gpu = cached_features(model, tiny_root, cache_dir=tmp_path / "gpu", device="cuda", verbose=False)
    monkeypatch.setenv("FLOWERS_PRECISION", "float32")
    on_cpu = cached_features(model, tiny_root, cache_dir=tmp_path / "cpu", device="cpu", verbose=False)
    assert on_gpu["valid"].features.dtype == torch.float32
    assert torch.allclose(on_gpu["valid"].features, on_cpu["valid"].features, rtol=0.02, atol=0.02)  # float16
