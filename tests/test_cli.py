"""The command line on the tiny slice: the classic course project's commands unchanged, our own
spellings, fine-tuning, and clear one-line errors.

One test starts a real ``python -m helpers`` process (random weights, so nothing is
downloaded); the rest call :func:`helpers.cli.main` in this process, the same code path. Runs
that push images through resnet18 use the 3-class micro slice (2/1/1 images per class).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from helpers import cli
from helpers.checkpoint import load_checkpoint, save_checkpoint
from helpers.cli import hidden_units_from_options, main
from helpers.data import check_layout
from helpers.model import build_model

MICRO_FOLDERS = {"1", "2", "10"}
MICRO_NAMES = {"red five-petal", "yellow eight-petal", "blue four-petal"}
PREDICTION_LINE = re.compile(r"^\s+(\d)\.\s+([\d.]+)%\s+(.+)\s+\(class folder (\w+)\)$")


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory) -> dict[str, str]:
    """The environment of the child processes: no GPU, an empty torch cache, only FLOWERS_TINY=1 set."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLOWERS_")}
    env.update({"CUDA_VISIBLE_DEVICES": "", "TORCH_HOME": str(tmp_path_factory.mktemp("torch-home")),
                "PYTHONDONTWRITEBYTECODE": "1", "FLOWERS_TINY": "1"})
    return env


def run(args: list, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helpers", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def predictions(stdout: str) -> list[tuple[float, str, str]]:
    """(probability %, name, folder) for each printed guess."""
    found = [PREDICTION_LINE.match(line) for line in stdout.splitlines()]
    return [(float(m[2]), m[3].strip(), m[4]) for m in found if m]


def assert_one_line_error(stderr: str, *words: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


def one_line(capsys) -> str:
    return assert_one_line_error(capsys.readouterr().err)


# --- the classic course project's commands, unchanged ----------------------------------------------

@pytest.fixture(scope="module")
def classic_train(micro_root, cli_env, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("classic") / "run"
    result = run(["train", micro_root, "--save_dir", save_dir, "--arch", "resnet18", "--learning_rate", "0.01",
                  "--hidden_units", "16", "--epochs", "1"], cli_env)
    return result, save_dir / "checkpoint.pth"


def test_classic_train_command_trains_and_saves(classic_train):
    result, checkpoint = classic_train
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(r"^epoch 1/1 ", result.stdout, re.MULTILINE)
    assert re.search(r"^test: +accuracy [\d.]+% .* on 3 images", result.stdout, re.MULTILINE)
    model = load_checkpoint(checkpoint, device="cpu")
    assert model.backbone_name == "resnet18" and model.hidden_units == [16] and model.epoch == 1
    assert model.class_to_idx == {"1": 0, "10": 1, "2": 2}
    assert set(model.cat_to_name.values()) == MICRO_NAMES
    assert model.history["lr"] == [0.01]


def test_classic_predict_command_prints_the_top_k_with_names(classic_train, micro_root, capsys):
    _, checkpoint = classic_train
    image = micro_root / "test" / "10" / "test_000.jpg"
    assert main(["predict", str(image), str(checkpoint), "--top_k", "3", "--category_names",
                 str(micro_root / "cat_to_name.json")]) == 0
    out = capsys.readouterr().out
    assert str(image) in out.splitlines()[0]
    guesses = predictions(out)
    assert len(guesses) == 3
    assert [p for p, _, _ in guesses] == sorted((p for p, _, _ in guesses), reverse=True)
    names = json.loads((micro_root / "cat_to_name.json").read_text())
    assert {folder for _, _, folder in guesses} == MICRO_FOLDERS
    assert all(name == names[folder] for _, name, folder in guesses)


@pytest.fixture
def no_gpu(monkeypatch):
    """Make torch report no CUDA or MPS device, whatever the machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)


@pytest.mark.parametrize("accelerator", ["cuda", "mps"])
def test_the_gpu_option_means_the_machines_accelerator(monkeypatch, accelerator):
    from helpers.cli import gpu_or_cpu

    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda: torch.device(accelerator))
    assert gpu_or_cpu(True) == accelerator and gpu_or_cpu(False) == "cpu"


def test_classic_gpu_option_on_a_machine_without_one(micro_root, tmp_path, capsys, no_gpu):
    assert main(["train", str(micro_root), "--save_dir", str(tmp_path), "--arch", "resnet18", "--learning_rate",
                 "0.01", "--hidden_units", "16", "--epochs", "1", "--gpu"]) == 2
    captured = capsys.readouterr()
    assert "GPU" in assert_one_line_error(captured.err)
    assert "epoch" not in captured.out and not (tmp_path / "checkpoint.pth").exists()


# --- our spellings, and fine-tuning -----------------------------------------------------------------

@pytest.fixture(scope="module")
def fine_tuned(micro_root, tmp_path_factory):
    """Train with our spellings and ``--unfreeze layer4``, recording the model train builds (with its
    initial weights) and the optimizer it makes."""
    seen, save_dir = {}, tmp_path_factory.mktemp("fine-tuned")
    real_build, real_optimizer = cli.build_model, cli.make_optimizer

    def build(*args, **kwargs):
        seen["model"] = real_build(*args, **kwargs)
        seen["initial"] = {k: v.clone() for k, v in seen["model"].backbone.state_dict().items()}
        return seen["model"]

    def optimizer(*args, **kwargs):
        seen["optimizer"] = real_optimizer(*args, **kwargs)
        return seen["optimizer"]

    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()) as out:
        patch.setattr(cli, "build_model", build)
        patch.setattr(cli, "make_optimizer", optimizer)
        seen["status"] = main(["train", str(micro_root), "--arch", "resnet18", "--learning-rate", "0.01",
                               "--hidden-units", "32", "--hidden-units", "16", "--dropout", "0.1", "--epochs", "1",
                               "--batch-size", "4", "--save-dir", str(save_dir), "--random-weights", "--workers",
                               "0", "--no-augment", "--unfreeze", "layer4", "--backbone-lr", "0.0001"])
    seen["out"], seen["checkpoint"] = out.getvalue(), save_dir / "checkpoint.pth"
    return seen


def test_fine_tuning_trains_the_last_stage_and_saves_its_weights(fine_tuned):
    assert fine_tuned["status"] == 0
    assert re.search(r"^epoch 1/1 ", fine_tuned["out"], re.MULTILINE)
    assert [group["lr"] for group in fine_tuned["optimizer"].param_groups] == [0.01, 0.0001]
    stored = torch.load(fine_tuned["checkpoint"], weights_only=True)
    assert stored["hidden_units"] == [32, 16] and stored["dropout"] == pytest.approx(0.1)
    weights, initial = stored["backbone_state_dict"], fine_tuned["initial"]
    assert weights is not None and weights.keys() == initial.keys()
    changed = {key.split(".")[0] for key in weights if not torch.equal(weights[key], initial[key])}
    assert changed == {"layer4"}  # the unfrozen stage trained; nothing else moved


def test_our_spellings_predict_with_a_fine_tuned_checkpoint(fine_tuned, micro_root, tmp_path, capsys):
    names = tmp_path / "names.json"
    names.write_text(json.dumps({folder: f"flower {folder}" for folder in MICRO_FOLDERS}))
    assert main(["predict", str(micro_root / "valid" / "1" / "valid_000.jpg"), str(fine_tuned["checkpoint"]),
                 "--top-k", "3", "--category-names", str(names)]) == 0
    guesses = predictions(capsys.readouterr().out)
    assert {folder for _, _, folder in guesses} == MICRO_FOLDERS
    assert all(name == f"flower {folder}" for _, name, folder in guesses)
    assert sum(p for p, _, _ in guesses) == pytest.approx(100, abs=0.5)


def test_unfreezing_a_stage_the_backbone_lacks(micro_root, tmp_path, capsys):
    assert main(["train", str(micro_root), "--random-weights", "--workers", "0", "--unfreeze", "layer9",
                 "--save-dir", str(tmp_path)]) == 2
    line = one_line(capsys)
    assert "layer9" in line and "layer4" in line
    assert not (tmp_path / "checkpoint.pth").exists()


def test_cached_features_train_the_head_and_save_a_checkpoint(micro_root, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(micro_root, data)  # the feature cache is written beside the images
    assert main(["train", str(data), "--no-augment", "--cached-features", "--epochs", "3", "--batch-size", "4",
                 "--hidden-units", "8", "--random-weights", "--workers", "0", "--save-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^test: +accuracy [\d.]+% .* on 3 images", out, re.MULTILINE)
    model = load_checkpoint(tmp_path / "checkpoint.pth", device="cpu")
    assert model.hidden_units == [8] and len(model.history["epoch"]) == 3
    assert main(["predict", str(data / "test" / "2" / "test_000.jpg"), str(tmp_path / "checkpoint.pth"),
                 "--top-k", "2"]) == 0
    assert len(predictions(capsys.readouterr().out)) == 2


@pytest.mark.parametrize("options", [["--cached-features"], ["--cached-features", "--no-augment", "--unfreeze",
                                                                                  "layer4"]])
def test_cached_features_need_a_frozen_backbone_and_no_augmentation(micro_root, tmp_path, capsys, options):
    assert main(["train", str(micro_root), "--random-weights", "--workers", "0", "--save-dir", str(tmp_path),
                 *options]) == 2
    captured = capsys.readouterr()
    assert "--cached-features" in assert_one_line_error(captured.err) and "epoch" not in captured.out
    assert not (tmp_path / "checkpoint.pth").exists()


def test_tiny_command(tmp_path, capsys):
    assert main(["tiny", str(tmp_path / "tiny")]) == 0
    assert str(tmp_path / "tiny") in capsys.readouterr().out
    assert check_layout(tmp_path / "tiny") == ["1", "10", "100", "11", "2", "21"]


# --- errors: one line on stderr, status 2, no traceback ---------------------------------------------

@pytest.fixture
def fixed_checkpoint(tmp_path):
    """A checkpoint whose prediction is known: class folder "10" (index 1) always wins."""
    torch.manual_seed(0)
    model = build_model("mobilenet_v3_small", 3, [], pretrained=False)
    with torch.no_grad():
        model.head.output.weight.zero_()
        model.head.output.bias.copy_(torch.tensor([0.0, 3.0, 1.0]))
    return save_checkpoint(tmp_path / "fixed.pth", model, {"1": 0, "10": 1, "2": 2},
                           cat_to_name={"1": "pink primrose", "2": "hard-leaved pocket orchid", "10": "globe thistle"})


def test_predict_maps_folders_back(fixed_checkpoint, tiny_root, capsys):
    assert main(["predict", str(tiny_root / "test" / "1" / "test_000.jpg"), str(fixed_checkpoint),
                 "--top-k", "3"]) == 0
    guesses = predictions(capsys.readouterr().out)
    assert [(name, folder) for _, name, folder in guesses] == [
        ("globe thistle", "10"), ("hard-leaved pocket orchid", "2"), ("pink primrose", "1")]
    assert guesses[0][0] == pytest.approx(100 * 20.0855 / (1 + 20.0855 + 2.71828), abs=0.06)


def test_predict_gpu_without_a_gpu(fixed_checkpoint, tiny_root, capsys, no_gpu):
    assert main(["predict", str(tiny_root / "test" / "1" / "test_000.jpg"), str(fixed_checkpoint), "--gpu"]) == 2
    assert "GPU" in one_line(capsys)


@pytest.mark.parametrize("top_k", ["0", "4"])
def test_predict_top_k_out_of_range(fixed_checkpoint, tiny_root, capsys, top_k):
    assert main(["predict", str(tiny_root / "test" / "1" / "test_000.jpg"), str(fixed_checkpoint),
                 "--top-k", top_k]) == 2
    assert top_k in one_line(capsys)


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
    assert "pickled.pth" in one_line(capsys)


def test_missing_data_folder(tmp_path, capsys):
    assert main(["train", str(tmp_path / "no-such-folder"), "--random-weights"]) == 2
    assert str(tmp_path / "no-such-folder") in one_line(capsys)


def test_unknown_architecture_lists_the_known_ones(tiny_root, capsys):
    assert main(["train", str(tiny_root), "--arch", "resnet-18", "--random-weights"]) == 2
    line = one_line(capsys)
    assert "resnet-18" in line and "resnet18" in line and "mobilenet_v3_small" in line


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
    assert "cat_to_name.json" in assert_one_line_error(captured.err)


def test_an_unusable_save_dir_stops_training_before_it_starts(tiny_root, tmp_path, capsys):
    occupied = tmp_path / "checkpoints"
    occupied.write_text("a file where the folder should go")
    assert main(["train", str(tiny_root), "--random-weights", "--save-dir", str(occupied)]) == 2
    captured = capsys.readouterr()
    assert "epoch" not in captured.out
    assert "checkpoints" in assert_one_line_error(captured.err)


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


def test_hidden_units_from_options():
    assert hidden_units_from_options(None) == [512]
    assert hidden_units_from_options([0]) == []
    assert hidden_units_from_options([256, 128]) == [256, 128]
    with pytest.raises(ValueError, match="positive"):
        hidden_units_from_options([256, 0])


def test_errors_from_torch_keep_their_traceback(fixed_checkpoint, tiny_root, monkeypatch):
    from helpers import cli

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(cli, "predict", broken)
    with pytest.raises(RuntimeError, match="device-side assert"):  # not swallowed into one line
        main(["predict", str(tiny_root / "test" / "1" / "test_000.jpg"), str(fixed_checkpoint)])
