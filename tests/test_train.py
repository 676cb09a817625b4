"""helpers.train: the one training loop, the one inference path, fit keeping its best epoch,
parameter groups, and runs that repeat exactly with a seed."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torchvision import transforms

from helpers.config import seed_everything
from helpers.data import make_loaders
from helpers.model import build_model, freeze, unfreeze
from helpers.train import (autocast, best_epoch, evaluate, fit, format_epoch, make_optimizer, make_scaler,
                           model_outputs, parameter_groups, batch_to_device, train_epoch)

HISTORY_KEYS = {"epoch", "train_loss", "train_accuracy", "train_eval_loss", "train_eval_accuracy", "valid_loss",
                "valid_accuracy", "lr", "seconds"}


def colour_batches(n_batches: int = 4, batch: int = 8, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """An easy, separable problem: class 0 images are reddish, class 1 bluish (plus noise)."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        labels = torch.randint(0, 2, (batch,), generator=generator)
        images = torch.randn(batch, 3, 8, 8, generator=generator) * 0.5
        images[:, 0] += torch.where(labels == 0, 1.0, -1.0)[:, None, None]
        images[:, 2] += torch.where(labels == 1, 1.0, -1.0)[:, None, None]
        batches.append((images, labels))
    return batches


def mean_colour_model(hidden=(8,), dropout=0.0) -> nn.Module:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # 3 features: the mean colour
    return build_model(backbone, 2, list(hidden), dropout, pretrained=False)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


QUIET = {"device": "cpu", "progress": False, "verbose": False}


# --- fit ---------------------------------------------------------------------------------------

def test_fit_returns_the_history_and_the_loss_goes_down(capsys):
    model = mean_colour_model()
    history = fit(model, colour_batches(seed=0), colour_batches(seed=1), epochs=8, lr=0.05, device="cpu",
                  progress=False, verbose=True)
    assert set(history) == HISTORY_KEYS
    assert all(len(history[key]) == 8 for key in HISTORY_KEYS - {"train_eval_loss", "train_eval_accuracy"})
    assert history["train_eval_loss"] == history["train_eval_accuracy"] == []  # none asked for
    assert history["epoch"] == list(range(1, 9))
    assert history["lr"] == [0.05] * 8
    assert history["train_loss"][-1] < history["train_loss"][0] / 2
    assert history["valid_loss"][-1] < history["valid_loss"][0]
    assert history["valid_accuracy"][-1] == 1.0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert len(printed) == 8 and printed[-1].startswith("epoch 8/8")


def test_fit_with_progress_bars(capsys):
    history = fit(mean_colour_model(), colour_batches(), colour_batches(1), epochs=1, lr=0.05, device="cpu",
                  progress=True, verbose=False)
    assert history["epoch"] == [1]
    assert "train" in capsys.readouterr().err  # the bar, outside a notebook, goes to stderr


def test_progress_bars_leave_the_batch_order_alone(tiny_root):
    """A bar must not start an iterator of its own: over a DataLoader that would draw another shuffle (and
    start the workers twice), so a run with bars would differ from the same run without them."""
    def first_epoch(progress: bool) -> list[float]:
        loaders = make_loaders(tiny_root, 4, seed=0, num_workers=0, device="cpu")
        torch.manual_seed(0)
        model = build_model(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), 6, [8], pretrained=False)
        return fit(model, loaders["train"], loaders["valid"], 1, seed=0, device="cpu", progress=progress,
                   verbose=False)["train_loss"]
    assert first_epoch(progress=True) == first_epoch(progress=False)


def test_fit_trains_only_the_head(make_backbone):
    model = build_model(make_backbone(), 2, [4], pretrained=False)
    backbone_before, head_before = state(model.backbone), state(model.head)
    batches = [(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 0, 1]))]
    fit(model, batches, batches, epochs=2, lr=0.01, **QUIET)
    assert same_state(state(model.backbone), backbone_before)
    assert not same_state(state(model.head), head_before)


class Judge:
    """Validation batches whose labels agree with the model's answers in epoch ``good`` only.

    That makes epoch ``good`` the best by construction, whatever training does, and records
    the model's weights each time it is validated.
    """

    def __init__(self, model: nn.Module, good: int) -> None:
        self.model, self.good, self.epoch, self.states = model, good, 0, []
        self.images = colour_batches(1, batch=16, seed=5)[0][0]

    def __iter__(self):
        self.epoch += 1
        self.states.append(state(self.model))
        predicted = self.model(self.images).argmax(dim=1)
        yield self.images, predicted if self.epoch == self.good else 1 - predicted


def test_fit_keeps_the_weights_of_the_best_epoch(capsys):
    model = mean_colour_model()
    judge = Judge(model, good=2)
    history = fit(model, colour_batches(), judge, epochs=4, lr=0.05, device="cpu", progress=False)
    assert history["valid_accuracy"] == [0.0, 1.0, 0.0, 0.0]
    assert best_epoch(history) == 2
    assert same_state(state(model), judge.states[1])
    assert not same_state(judge.states[1], judge.states[3])  # training did move on after epoch 2
    assert "epoch 2" in capsys.readouterr().out.splitlines()[-1]  # and it says which epoch it kept


def test_fit_can_keep_the_last_epoch_instead():
    model = mean_colour_model()
    judge = Judge(model, good=2)
    fit(model, colour_batches(), judge, epochs=4, lr=0.05, keep_best=False, **QUIET)
    assert same_state(state(model), judge.states[3])


def test_fit_measures_training_data_in_evaluation_mode_when_asked():
    model = mean_colour_model(hidden=(16,), dropout=0.5)
    train = colour_batches(seed=0)
    history = fit(model, train, colour_batches(seed=1), epochs=3, lr=0.05, train_eval_batches=train[:2],
                  keep_best=False, **QUIET)
    assert len(history["train_eval_loss"]) == len(history["train_eval_accuracy"]) == 3
    after = evaluate(model, train[:2], device="cpu")  # the last epoch's weights, in evaluation mode
    assert history["train_eval_loss"][-1] == pytest.approx(after["loss"])
    assert history["train_eval_accuracy"][-1] == pytest.approx(after["accuracy"])
    assert history["train_eval_loss"] != history["train_loss"]  # not the running average with dropout on


def test_a_scheduler_steps_after_every_batch():
    model = mean_colour_model()
    optimizer = make_optimizer(model.head.parameters(), lr=0.08)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    history = fit(model, colour_batches(n_batches=4), colour_batches(1), epochs=2, lr=0.08, optimizer=optimizer,
                  batch_scheduler=scheduler, **QUIET)
    assert history["lr"] == pytest.approx([0.08 * 0.5 ** 4, 0.08 * 0.5 ** 8])


def test_empty_data_is_an_error_not_a_division_by_zero():
    model = mean_colour_model()
    with pytest.raises(ValueError, match="no batches"):
        evaluate(model, [], device="cpu")
    with pytest.raises(ValueError, match="no batches"):
        fit(model, [], colour_batches(1), epochs=1, **QUIET)


@pytest.mark.parametrize("kwargs, word", [({"epochs": 0}, "epochs"), ({"epochs": 1, "lr": 0}, "learning rate"),
                                          ({"epochs": 1, "lr": -1e-3}, "learning rate")])
def test_fit_rejects_bad_settings(kwargs, word):
    with pytest.raises(ValueError, match=word):
        fit(mean_colour_model(), colour_batches(1), colour_batches(1), **QUIET, **kwargs)


def test_a_fully_frozen_model_cannot_train():
    with pytest.raises(ValueError, match="no trainable parameters"):
        fit(freeze(mean_colour_model()), colour_batches(1), colour_batches(1), epochs=1, **QUIET)


def test_best_epoch_is_the_earliest_of_equals():
    assert best_epoch({"epoch": [1, 2, 3, 4], "valid_accuracy": [0.5, 0.75, 0.75, 0.25]}) == 2


def test_format_epoch():
    history = {"epoch": [1], "train_loss": [0.5], "train_accuracy": [0.25], "train_eval_accuracy": [],
               "valid_loss": [0.75], "valid_accuracy": [0.5], "seconds": [1.25]}
    assert format_epoch(history, 3) == "epoch 1/3  train loss 0.500 acc 25.0%  |  valid loss 0.750 acc 50.0%  (1.2 s)"
    history["train_eval_accuracy"] = [0.375]
    assert "(eval mode 37.5%)" in format_epoch(history, 3)


# --- one epoch -----------------------------------------------------------------------------------

def test_train_epoch_returns_every_batch_loss_in_order():
    model = mean_colour_model()
    batches = [(images[:size], labels[:size]) for (images, labels), size in zip(colour_batches(3, seed=2), (8, 5, 2))]
    with torch.no_grad():
        expected = [nn.functional.nll_loss(model(images), labels).item() for images, labels in batches]
    frozen_in_place = torch.optim.SGD(model.head.parameters(), lr=0.0)  # weights stay: losses can be recomputed
    result = train_epoch(model, batches, frozen_in_place, "cpu")
    assert result["batch_losses"] == pytest.approx(expected, rel=1e-5)
    assert result["loss"] == pytest.approx(sum(loss * size for loss, size in zip(expected, (8, 5, 2))) / 15, rel=1e-5)


def test_train_epoch_steps_once_per_batch():
    model = mean_colour_model()
    optimizer = make_optimizer(model.head.parameters(), lr=0.05)
    result = train_epoch(model, colour_batches(5), optimizer, "cpu")
    assert len(result["batch_losses"]) == 5
    assert all(group["params"][0] in optimizer.state and optimizer.state[group["params"][0]]["step"] == 5
               for group in optimizer.param_groups)
    with pytest.raises(ValueError, match="no batches"):
        train_epoch(model, [], optimizer, "cpu")


# --- the one inference path ----------------------------------------------------------------------

def test_evaluate_runs_in_eval_mode_without_gradients():
    model = mean_colour_model(dropout=0.5)
    seen = []
    model.head.register_forward_hook(lambda module, args, out: seen.append((torch.is_grad_enabled(),
                                                                            module.training, out.requires_grad)))
    model.train()
    batches = colour_batches(n_batches=2)
    first = evaluate(model, batches, device="cpu")
    second = evaluate(model, batches, device="cpu")
    assert seen and all(record == (False, False, False) for record in seen)
    assert first == second  # no dropout: the same numbers twice
    assert torch.is_grad_enabled()  # switched back on afterwards


def test_evaluate_is_model_outputs_scored():
    model = mean_colour_model()
    batches = colour_batches(n_batches=3, batch=5)
    log_probs, labels = model_outputs(model, batches, "cpu")
    assert log_probs.dtype == torch.float32 and log_probs.device.type == "cpu" and log_probs.shape == (15, 2)
    assert torch.equal(labels, torch.cat([b[1] for b in batches]))  # in the batches' order
    with torch.no_grad():
        assert torch.allclose(log_probs, model.eval()(torch.cat([b[0] for b in batches])), atol=1e-6)
    result = evaluate(model, batches, device="cpu")
    assert result["loss"] == pytest.approx(nn.functional.nll_loss(log_probs, labels).item(), rel=1e-6)
    assert result["accuracy"] == pytest.approx((log_probs.argmax(1) == labels).float().mean().item())


def test_model_outputs_of_a_backbone_are_its_features(make_backbone):
    backbone = make_backbone(features=5)
    images = torch.randn(6, 3, 32, 32)
    features, _ = model_outputs(backbone, [(images[:4], torch.zeros(4)), (images[4:], torch.zeros(2))], "cpu")
    with torch.no_grad():
        assert torch.allclose(features, backbone(images), atol=1e-6)


def test_batch_to_device_keeps_float_values():
    images = torch.randn(2, 3, 5, 5)
    moved = batch_to_device(images, "cpu")
    assert torch.equal(moved, images) and moved.is_contiguous(memory_format=torch.channels_last)
    features = torch.randn(4, 7)  # cached features pass through as they are
    assert torch.equal(batch_to_device(features, "cpu"), features)


# --- parameter groups ----------------------------------------------------------------------------

def test_parameter_groups_give_head_and_backbone_their_own_learning_rates(make_backbone):
    model = build_model(make_backbone(features=8), 2, [4], pretrained=False)
    assert [group["lr"] for group in parameter_groups(model, 0.1, 0.001)] == [0.1]  # frozen backbone: head only
    unfreeze(model, ["0"])  # the backbone's convolution
    groups = parameter_groups(model, head_lr=0.1, backbone_lr=0.001)
    assert [group["lr"] for group in groups] == [0.1, 0.001]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.head.parameters()}
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.backbone.parameters()}
    # Adam's first step moves every weight by about its group's learning rate.
    before_head, before_backbone = state(model.head), state(model.backbone)
    batches = [(torch.randn(8, 3, 16, 16), torch.tensor([0, 1] * 4))]
    fit(model, batches, batches, epochs=1, lr=0.1, optimizer=make_optimizer(groups, lr=0.1), **QUIET)
    head_step = max((model.head.state_dict()[k] - v).abs().max().item() for k, v in before_head.items())
    backbone_step = max((model.backbone.state_dict()[k] - v).abs().max().item() for k, v in before_backbone.items())
    assert head_step == pytest.approx(0.1, rel=0.01)
    assert backbone_step == pytest.approx(0.001, rel=0.01)


# --- reproducibility -----------------------------------------------------------------------------

# Random augmentation at the tiny slice's own scale (the course's 224 px pipeline costs 40 ms an image here).
SMALL_AUGMENT = transforms.Compose([transforms.RandomResizedCrop(32, scale=(0.5, 1.0)), transforms.RandomHorizontalFlip(),
                                    transforms.ColorJitter(0.2, 0.2, 0.2), transforms.ToTensor()])
SMALL_EVAL = transforms.Compose([transforms.Resize(32), transforms.ToTensor()])


def seeded_run(tiny_root, seed: int) -> dict[str, list]:
    """Everything random (weights, shuffling, augmentation, dropout) follows ``seed``."""
    seed_everything(seed)
    loaders = make_loaders(tiny_root, batch_size=8, train_tf=SMALL_AUGMENT, eval_tf=SMALL_EVAL, num_workers=0,
                           seed=seed, device="cpu")
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = build_model(backbone, 6, [16], dropout=0.3, pretrained=False, freeze_backbone=False)
    history = fit(model, loaders["train"], loaders["valid"], epochs=2, lr=0.01, seed=seed, **QUIET)
    return {key: values for key, values in history.items() if key != "seconds"}


def test_same_seed_same_history(tiny_root):
    first = seeded_run(tiny_root, seed=11)
    assert seeded_run(tiny_root, seed=11) == first
    assert seeded_run(tiny_root, seed=12) != first  # the seed matters: the check above can fail


# --- precision: every path runs on any CPU ------------------------------------------------------

@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_log_probabilities_are_float32_in_any_precision(monkeypatch, precision):
    monkeypatch.setenv("FLOWERS_PRECISION", precision)
    model = mean_colour_model().eval()
    images, _ = colour_batches(1)[0]
    with torch.no_grad(), autocast("cpu"):
        assert model(images).dtype == torch.float32
    outputs, _ = model_outputs(model, colour_batches(1), device="cpu")
    assert outputs.dtype == torch.float32


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_reduced_precision_trains_and_stays_close_to_float32(monkeypatch, precision):
    histories = {}
    for name in ("float32", precision):
        monkeypatch.setenv("FLOWERS_PRECISION", name)
        histories[name] = fit(mean_colour_model(), colour_batches(seed=0), colour_batches(seed=1), epochs=4, lr=0.05,
                              seed=0, **QUIET)
    reduced, full = histories[precision], histories["float32"]
    assert reduced["train_loss"][-1] < reduced["train_loss"][0]
    assert reduced["valid_loss"] != full["valid_loss"]  # the reduced precision really ran
    assert reduced["valid_loss"] == pytest.approx(full["valid_loss"], rel=0.05, abs=0.01)


class CountingScaler(torch.amp.GradScaler):
    """A CPU GradScaler that counts how often the loss was scaled and steps were asked for."""

    def __init__(self) -> None:
        super().__init__("cpu")
        self.scaled = self.steps = 0

    def scale(self, outputs):
        self.scaled += 1
        return super().scale(outputs)

    def step(self, optimizer, *args, **kwargs):
        self.steps += 1
        return super().step(optimizer, *args, **kwargs)


def test_float16_scales_every_backward_with_one_scaler_for_the_whole_run(monkeypatch):
    from helpers import train

    monkeypatch.setenv("FLOWERS_PRECISION", "float16")
    made = []
    monkeypatch.setattr(train, "make_scaler", lambda device: made.append(CountingScaler()) or made[-1])
    fit(mean_colour_model(), colour_batches(n_batches=3), colour_batches(1), epochs=2, lr=0.05, **QUIET)
    assert len(made) == 1  # its scale carries over from epoch to epoch
    assert made[0].scaled == made[0].steps == 6


def test_no_scaler_in_float32_and_bfloat16(monkeypatch):
    for precision in ("float32", "bfloat16"):
        monkeypatch.setenv("FLOWERS_PRECISION", precision)
        assert make_scaler("cpu") is None
    monkeypatch.setenv("FLOWERS_PRECISION", "float16")
    assert isinstance(make_scaler("cpu"), torch.amp.GradScaler)


def test_an_overflowing_float16_step_is_skipped_and_the_scheduler_waits(monkeypatch):
    monkeypatch.setenv("FLOWERS_PRECISION", "float16")
    model = mean_colour_model()
    optimizer = make_optimizer(model.head.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    scaler = CountingScaler()
    images, labels = colour_batches(1)[0]
    images[0, 0, 0, 0] = float("inf")  # the gradients overflow
    before, scale = state(model), scaler.get_scale()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        train_epoch(model, [(images, labels)], optimizer, "cpu", scheduler, scaler)
    assert same_state(state(model), before)  # the step was skipped
    assert scaler.get_scale() < scale  # and the scale lowered
    assert scheduler.last_epoch == 0 and optimizer.param_groups[0]["lr"] == 0.1
    train_epoch(model, colour_batches(2), optimizer, "cpu", scheduler, scaler)  # finite gradients: steps again
    assert not same_state(state(model), before)
    assert scheduler.last_epoch == 2


def test_train_epoch_without_a_device_uses_the_default_one_and_moves_the_model(monkeypatch):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    model = mean_colour_model()
    result = train_epoch(model, colour_batches(2), make_optimizer(model.head.parameters(), 0.05))
    assert len(result["batch_losses"]) == 2


# --- the default optimizer and the batch scheduler ---------------------------------------------------

def test_fit_trains_an_unfrozen_backbone_stage_at_a_tenth_of_the_head_rate(monkeypatch, make_backbone, capsys):
    from helpers import train

    made = []
    monkeypatch.setattr(train, "make_optimizer", lambda params, lr: made.append(torch.optim.Adam(params, lr)) or made[-1])
    model = build_model(make_backbone(), 2, [4], pretrained=False)
    unfreeze(model, ["0"])  # the backbone's convolution trains too
    fit(model, colour_batches(2), colour_batches(1), epochs=1, lr=0.01, device="cpu", progress=False, verbose=True)
    groups = made[0].param_groups
    assert [group["lr"] for group in groups] == [0.01, pytest.approx(0.001)]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.backbone.parameters()}
    assert "backbone stages at 0.001 (a tenth)" in capsys.readouterr().out


def test_a_frozen_backbone_gets_one_group_at_the_given_rate(monkeypatch, make_backbone):
    from helpers import train

    made = []
    monkeypatch.setattr(train, "make_optimizer", lambda params, lr: made.append(torch.optim.Adam(params, lr)) or made[-1])
    model = build_model(make_backbone(), 2, [4], pretrained=False)
    fit(model, colour_batches(2), colour_batches(1), epochs=1, lr=0.01, **QUIET)
    assert [group["lr"] for group in made[0].param_groups] == [0.01]


def test_a_scheduler_that_needs_a_metric_is_refused_with_the_reason():
    model = mean_colour_model()
    optimizer = make_optimizer(model.head.parameters(), lr=0.01)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    with pytest.raises(ValueError, match="needs a validation metric.*every batch"):
        fit(model, colour_batches(1), colour_batches(1), epochs=1, optimizer=optimizer, batch_scheduler=plateau, **QUIET)


def test_the_seed_of_fit_reaches_a_loaders_shuffling(monkeypatch):
    from torch.utils.data import DataLoader, TensorDataset

    images, labels = map(torch.cat, zip(*colour_batches(4)))

    def run(seed: int) -> list[float]:
        loader = DataLoader(TensorDataset(images, labels), batch_size=8, shuffle=True,
                            generator=torch.Generator().manual_seed(0))  # as make_loaders builds them
        return fit(mean_colour_model(dropout=0.0), loader, colour_batches(1), epochs=1, lr=0.05, seed=seed,
                   **QUIET)["train_loss"]

    assert run(1) == run(1)
    assert run(1) != run(2)  # another seed, another order of the same images


def test_a_batch_scheduler_without_its_optimizer_is_refused():
    model = mean_colour_model()
    other = make_optimizer(model.head.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(other, step_size=1)
    with pytest.raises(ValueError, match="pass that optimizer too"):
        fit(model, colour_batches(1), colour_batches(1), epochs=1, batch_scheduler=scheduler, **QUIET)
