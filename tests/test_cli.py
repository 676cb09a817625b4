"""The command line end to end on the tiny slice: train, then predict; clear one-line errors.

The end-to-end runs start real processes (``python -m helpers ...`` and the installed console
scripts) with random weights, so nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.checkpoint import load_checkpoint, save_checkpoint
from helpers.cli import hidden_units_from_options, main
from helpers.models import build_model

BIN = Path(sys.executable).parent
TINY_NAMES = {"red five-petal", "yellow eight-petal", "blue four-petal", "white six-petal", "pink twelve-petal",
              "purple three-petal"}
PREDICTION_LINE = re.compile(r"^\s+(\d)\.\s+([\d.]+)%\s+(.+)\s+\(class folder (\w+)\)$")


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory) -> dict[str, str]:
    """The environment of the child processes: no GPU, an empty torch cache, no FLOWERS_* settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLOWERS_")}
    env.update({"CUDA_VISIBLE_DEVICES": "", "TORCH_HOME": str(tmp_path_factory.mktemp("torch-home")),
                "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def run(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


def module(*args: str) -> list[str]:
    return [sys.executable, "-m", "helpers", *map(str, args)]


def predictions(stdout: str) -> list[tuple[float, str, str]]:
    """(probability %, name, folder) for each printed guess."""
    found = [PREDICTION_LINE.match(line) for line in stdout.splitlines()]
    return [(float(m[2]), m[3].strip(), m[4]) for m in found if m]


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in lines[0]


# --- end to end -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tiny_root, cli_env, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("cli") / "run"
    result = run(module("train", tiny_root, "--arch", "resnet18", "--learning-rate", "0.01", "--hidden-units", "32",
                        "--hidden-units", "16", "--dropout", "0.1", "--epochs", "2", "--batch-size", "12",
                        "--save-dir", save_dir, "--random-weights", "--workers", "0"), cli_env)
    return result, save_dir / "checkpoint.pth"


def test_train_reports_and_saves_a_checkpoint(trained, tiny_root):
    result, checkpoint = trained
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout
    assert f"data:      {tiny_root} (6 classes; train 24, valid 12, test 12 images)" in out
    assert "backbone:  resnet18, random weights, frozen" in out
    assert "head:      512 -> 32 -> 16 -> 6, dropout 0.1" in out
    assert "training:  2 epochs, learning rate 0.01, batch 12, on cpu" in out
    assert re.search(r"^epoch 1/2 .*\n^epoch 2/2 ", out, re.MULTILINE)
    assert re.search(r"^test: +loss [\d.]+, accuracy [\d.]+% on 12 images$", out, re.MULTILINE)
    assert f"saved:     {checkpoint}" in out
    model = load_checkpoint(checkpoint, device="cpu")
    assert model.backbone_name == "resnet18" and model.hidden_units == [32, 16] and model.epoch == 2
    assert model.class_to_idx == {name: i for i, name in enumerate(["1", "10", "100", "11", "2", "21"])}
    assert set(model.cat_to_name.values()) == TINY_NAMES
    assert len(model.history["train_loss"]) == 2


def test_predict_prints_the_top_k_with_names(trained, tiny_root, cli_env):
    _, checkpoint = trained
    image = tiny_root / "test" / "21" / "test_000.jpg"
    result = run(module("predict", image, checkpoint, "--top-k", "3"), cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"{image} (checkpoint {checkpoint}, backbone resnet18):"
    guesses = predictions(result.stdout)
    assert len(guesses) == 3
    assert [p for p, _, _ in guesses] == sorted((p for p, _, _ in guesses), reverse=True)
    assert all(name in TINY_NAMES for _, name, _ in guesses)
    assert all(folder in {"1", "2", "10", "11", "21", "100"} for _, _, folder in guesses)


def test_console_scripts_train_and_predict(tiny_root, cli_env, tmp_path):
    env = {**cli_env, "FLOWERS_TINY": "1"}  # tiny mode: random weights without the flag
    train = run([str(BIN / "flowers-train"), str(tiny_root), "--arch", "mobilenet_v3_small", "--hidden-units", "0",
                 "--epochs", "1", "--batch-size", "12", "--save-dir", str(tmp_path), "--no-augment"], env)
    assert train.returncode == 0, train.stderr
    assert "mobilenet_v3_small, random weights" in train.stdout and "head:      1024 -> 6" in train.stdout
    names = tmp_path / "names.json"
    names.write_text(json.dumps({folder: f"flower {folder}" for folder in ["1", "2", "10", "11", "21", "100"]}))
    predict = run([str(BIN / "flowers-predict"), str(tiny_root / "valid" / "1" / "valid_000.jpg"),
                   str(tmp_path / "checkpoint.pth"), "--top-k", "6", "--category-names", str(names)], env)
    assert predict.returncode == 0, predict.stderr
    guesses = predictions(predict.stdout)
    assert sorted(folder for _, _, folder in guesses) == sorted(["1", "2", "10", "11", "21", "100"])
    assert all(name == f"flower {folder}" for _, name, folder in guesses)
    assert sum(p for p, _, _ in guesses) == pytest.approx(100, abs=0.5)


def test_tiny_command(tmp_path, cli_env):
    result = run(module("tiny", tmp_path / "tiny"), cli_env)
    assert result.returncode == 0, result.stderr
    assert str(tmp_path / "tiny") in result.stdout
    assert len(list((tmp_path / "tiny" / "train").rglob("*.jpg"))) == 48


# --- errors: one line on stderr, status 2, no traceback ---------------------------------------

def test_missing_data_folder(tmp_path, cli_env):
    result = run(module("train", tmp_path / "no-such-folder", "--random-weights"), cli_env)
    assert_one_line_error(result, str(tmp_path / "no-such-folder"), "ROOT/train/<class>")


def test_unknown_architecture_lists_the_known_ones(tiny_root, cli_env):
    result = run(module("train", tiny_root, "--arch", "resnet-18", "--random-weights"), cli_env)
    assert_one_line_error(result, "resnet-18", "resnet18", "vgg16", "mobilenet_v3_small")


def test_gpu_without_a_gpu(tiny_root, cli_env):
    result = run(module("train", tiny_root, "--gpu", "--random-weights"), cli_env)
    assert_one_line_error(result, "GPU")


def test_predict_gpu_without_a_gpu_console_script(tiny_root, cli_env, tmp_path):
    result = run([str(BIN / "flowers-predict"), str(tiny_root / "test" / "1" / "test_000.jpg"),
                  str(tmp_path / "checkpoint.pth"), "--gpu"], cli_env)
    assert_one_line_error(result, "GPU")


# The remaining error paths run in this process (same code path as the console, faster).

def one_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


@pytest.fixture
def fixed_checkpoint(tmp_path, make_backbone):
    """A checkpoint whose prediction is known: class folder "10" (index 1) always wins."""
    torch.manual_seed(0)
    model = build_model("resnet18", 3, [], pretrained=False, image_size=64)
    with torch.no_grad():
        model.head.output.weight.zero_()
        model.head.output.bias.copy_(torch.tensor([0.0, 3.0, 1.0]))
    return save_checkpoint(tmp_path / "fixed.pth", model, {"1": 0, "10": 1, "2": 2},
                           cat_to_name={"1": "pink primrose", "2": "hard-leaved pocket orchid",
                                        "10": "globe thistle"})


def test_predict_maps_folders_back(fixed_checkpoint, tiny_root, capsys):
    assert main(["predict", str(tiny_root / "test" / "1" / "test_000.jpg"), str(fixed_checkpoint),
                 "--top-k", "3"]) == 0
    guesses = predictions(capsys.readouterr().out)
    assert [(name, folder) for _, name, folder in guesses] == [
        ("globe thistle", "10"), ("hard-leaved pocket orchid", "2"), ("pink primrose", "1")]
    assert guesses[0][0] == pytest.approx(100 * 20.0855 / (1 + 20.0855 + 2.71828), abs=0.06)


@pytest.mark.parametrize("top_k", ["0", "4"])
def test_predict_top_k_out_of_range(fixed_checkpoint, tiny_root, capsys, top_k):
    assert main(["predict", str(tiny_root / "test" / "1" / "test_000.jpg"), str(fixed_checkpoint),
                 "--top-k", top_k]) == 2
    assert "1 to 3" in one_line(capsys)


def test_predict_missing_image_and_folder(fixed_checkpoint, tiny_root, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope.jpg"), str(fixed_checkpoint), "--top-k", "1"]) == 2
    assert str(tmp_path / "nope.jpg") in one_line(capsys)
    assert main(["predict", str(tiny_root / "test"), str(fixed_checkpoint), "--top-k", "1"]) == 2
    assert str(tiny_root / "test") in one_line(capsys)


def test_predict_bad_checkpoints(tmp_path, tiny_root, capsys):
    image = str(tiny_root / "test" / "1" / "test_000.jpg")
    assert main(["predict", image, str(tmp_path / "missing.pth")]) == 2
    assert "missing.pth" in one_line(capsys)
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint")
    assert main(["predict", image, str(garbage)]) == 2
    assert "garbage.pth" in one_line(capsys)
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled.pth")
    assert main(["predict", image, str(tmp_path / "pickled.pth")]) == 2
    assert "torch.save(model)" in one_line(capsys)


def test_train_errors_in_the_data(tiny_copy, tmp_path, capsys):
    (tiny_copy / "valid" / "21").rename(tiny_copy / "valid" / "22")
    assert main(["train", str(tiny_copy), "--random-weights", "--save-dir", str(tmp_path)]) == 2
    line = one_line(capsys)
    assert "missing ['21']" in line and "extra ['22']" in line
    assert not (tmp_path / "checkpoint.pth").exists()


def test_a_broken_names_file_stops_training_before_it_starts(tiny_copy, tmp_path, capsys):
    (tiny_copy / "cat_to_name.json").write_text("{'1': 'single quotes are not JSON'}")
    assert main(["train", str(tiny_copy), "--random-weights", "--save-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "epoch" not in captured.out  # no training time was spent (and lost)
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "cat_to_name.json" in lines[0]


def test_an_unusable_save_dir_stops_training_before_it_starts(tiny_root, tmp_path, capsys):
    occupied = tmp_path / "checkpoints"
    occupied.write_text("a file where the folder should go")
    assert main(["train", str(tiny_root), "--random-weights", "--save-dir", str(occupied)]) == 2
    captured = capsys.readouterr()
    assert "epoch" not in captured.out  # no training time was spent (and lost)
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "checkpoints" in lines[0]


def test_train_pretrained_offline_without_weights(tiny_root, torch_home, no_network, capsys, monkeypatch):
    monkeypatch.delenv("FLOWERS_TINY", raising=False)
    assert main(["train", str(tiny_root), "--arch", "resnet18"]) == 2
    line = one_line(capsys)
    assert "resnet18" in line and "FLOWERS_TINY=1" in line and str(torch_home) in line


def test_prepare_offline(tmp_path, no_network, capsys):
    assert main(["prepare", str(tmp_path / "flowers")]) == 2
    line = one_line(capsys)
    assert "102flowers.tgz" in line and "setid.mat" in line and "FLOWERS_TINY=1" in line


def test_bad_option_values_are_refused(tiny_root, capsys):
    assert main(["train", str(tiny_root), "--random-weights", "--hidden-units", "-5"]) == 2
    assert "--hidden-units" in one_line(capsys)
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage and one error line, status 2
        main(["train", str(tiny_root), "--epochs", "two"])
    assert exit_info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_hidden_layers():
    assert hidden_units_from_options(None) == [512]
    assert hidden_units_from_options([0]) == []
    assert hidden_units_from_options([256, 128]) == [256, 128]
    with pytest.raises(ValueError, match="positive"):
        hidden_units_from_options([256, 0])
