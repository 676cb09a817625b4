"""helpers.check (``python -m helpers check``): a report that ends with its verdict, and a non-zero exit
with a one-line fix when something is wrong. Runs on the CPU with random weights (no download)."""

from __future__ import annotations

import pytest
import torch

from helpers import check
from helpers.cli import main


@pytest.fixture
def offline_tiny(monkeypatch, tmp_path):
    """Random weights (nothing to download), a small backbone, the CPU, the default precision."""
    for name in ("FLOWERS_PRECISION", "FLOWERS_DEVICE", "FLOWERS_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLOWERS_TINY", "1")
    monkeypatch.setenv("FLOWERS_BACKBONE", "mobilenet_v3_small")
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)


def report(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_a_ready_machine(offline_tiny, capsys):
    assert main(["check"]) == 0
    lines = report(capsys)
    assert lines[-1] == "verdict:     ready"
    found = {line.split(":")[0] for line in lines}
    assert {"python", "torch", "torchvision", "ipywidgets", "device", "precision", "cpu", "train step", "data loader",
            "forward"} <= found
    assert "precision:   float32 (FLOWERS_PRECISION=auto)" in lines
    assert "largest difference from float32 0" in next(line for line in lines if line.startswith("train step"))
    assert not any(line.startswith("problem") for line in lines)


def test_reduced_precision_is_compared_with_float32(offline_tiny, monkeypatch, capsys):
    monkeypatch.setenv("FLOWERS_PRECISION", "bfloat16")
    assert main(["check"]) == 0
    lines = report(capsys)
    assert "precision:   bfloat16 (FLOWERS_PRECISION=bfloat16)" in lines
    step = next(line for line in lines if line.startswith("train step"))
    assert float(step.rsplit(" ", 1)[1]) > 0  # bfloat16 really ran (emulated where the CPU lacks it)


def test_a_failing_data_loader_is_a_problem_with_its_fix(offline_tiny, monkeypatch, capsys):
    class BrokenWorkers(list):
        num_workers = 2

        def __iter__(self):
            raise RuntimeError("DataLoader worker (pid 123) is killed by signal: Bus error.")

    monkeypatch.setattr(check, "make_loaders", lambda *args, **kwargs: {"train": BrokenWorkers()})
    assert main(["check"]) == 1
    lines = report(capsys)
    assert any(line.startswith("problem:") and "Bus error" in line and "FLOWERS_WORKERS=0" in line for line in lines)
    assert lines[-1] == "verdict:     not ready (1 problem above)"


def test_unusable_settings_and_missing_weights_are_problems(offline_tiny, monkeypatch, capsys, no_network, torch_home):
    monkeypatch.setenv("FLOWERS_PRECISION", "half")
    assert main(["check"]) == 1
    lines = report(capsys)
    assert any("FLOWERS_PRECISION='half'" in line for line in lines if line.startswith("problem:"))
    monkeypatch.delenv("FLOWERS_PRECISION")
    monkeypatch.delenv("FLOWERS_TINY")  # the full course: pretrained weights, not cached here, no network
    assert main(["check"]) == 1
    lines = report(capsys)
    assert any("no pretrained mobilenet_v3_small weights" in line and "FLOWERS_TINY=1" in line for line in lines)
    assert lines[-1].startswith("verdict:     not ready")
