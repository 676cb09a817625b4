"""Experiment runners, summary tables, training-set subsets and the retrain-slider callback.

Synthetic, well-separated features stand in for a backbone's output, so every test runs
in well under a second and a head that trains properly *must* learn them.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from helpers.experiments import (LEARNING_RATE_CHOICES, MAX_DROPOUT, MAX_LAYERS, Run, hidden_layers,
                                 make_retrain_callback, plot_runs, plot_step_losses, retrain_controls,
                                 run_variants, step_losses, stratified_subset, summary_rows, summary_table)
from helpers.features import FeatureSet
from helpers.widgets import slider_panel

CLASSES = 3
PER_CLASS = 10
FEATURES = 16


def separable(per_class: int = PER_CLASS, seed: int = 0) -> FeatureSet:
    """Features sorted by class, each class a tight cloud around its own far-away centre."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.eye(CLASSES, FEATURES) * 6
    labels = torch.arange(CLASSES).repeat_interleave(per_class)
    features = centres[labels] + 0.3 * torch.randn(len(labels), FEATURES, generator=generator)
    return FeatureSet(features, labels, [str(c) for c in range(CLASSES)])


@pytest.fixture
def train() -> FeatureSet:
    return separable(seed=0)


@pytest.fixture
def valid() -> FeatureSet:
    return separable(per_class=4, seed=1)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_stratified_subset_keeps_the_fraction_of_every_class(train):
    subset = stratified_subset(train, 0.5, seed=0)
    assert subset.labels.bincount().tolist() == [5, 5, 5]
    assert subset.classes == train.classes
    # the kept rows are the original rows of those examples, still sorted by class
    assert torch.equal(subset.labels, subset.labels.sort().values)
    for row, label in zip(subset.features, subset.labels):
        matches = (train.features == row).all(dim=1).nonzero().flatten()
        assert len(matches) == 1 and train.labels[matches[0]] == label


def test_stratified_subset_keeps_at_least_one_per_class_and_repeats_with_its_seed(train):
    assert stratified_subset(train, 0.01).labels.tolist() == [0, 1, 2]
    assert torch.equal(stratified_subset(train, 0.3, seed=4).features, stratified_subset(train, 0.3, seed=4).features)
    assert not torch.equal(stratified_subset(train, 0.3, seed=4).features, stratified_subset(train, 0.3, seed=5).features)
    assert torch.equal(stratified_subset(train, 1.0).features, train.features)


def test_stratified_subset_of_augmented_views_keeps_the_views_aligned(train):
    views = FeatureSet(torch.stack([train.features, train.features + 100]), train.labels, train.classes)
    subset = stratified_subset(views, 0.5, seed=0)
    assert subset.features.shape == (2, 15, FEATURES)
    assert torch.equal(subset.features[1], subset.features[0] + 100)


@pytest.mark.parametrize("fraction", [0, -0.5, 1.5])
def test_stratified_subset_rejects_impossible_fractions(train, fraction):
    with pytest.raises(ValueError, match="fraction"):
        stratified_subset(train, fraction)


def test_hidden_layers_builds_the_shape_and_zero_layers_means_none():
    assert hidden_layers(128, 0) == []
    assert hidden_layers(64, 2) == [64, 64]
    with pytest.raises(ValueError):
        hidden_layers(64, -1)
    with pytest.raises(ValueError):
        hidden_layers(0, 1)


def test_run_variants_overrides_common_settings_and_counts_parameters(train, valid):
    runs = run_variants(train, valid, {"none": {"hidden_units": []}, "one": {"hidden_units": [8]}},
                        epochs=3, dropout=0.0, seed=0)
    assert list(runs) == ["none", "one"]
    assert runs["none"].parameters == FEATURES * CLASSES + CLASSES
    assert runs["one"].parameters == (FEATURES * 8 + 8) + (8 * CLASSES + CLASSES)
    assert runs["one"].config == {"epochs": 3, "dropout": 0.0, "seed": 0, "hidden_units": [8]}
    assert runs["one"].history["epoch"] == [1, 2, 3]
    assert runs["one"].seconds > 0


def test_run_variants_can_train_a_variant_on_its_own_training_set(train, valid):
    small = stratified_subset(train, 0.1)
    runs = run_variants(train, valid, {"all": {}, "small": {"train": small}}, epochs=1, batch_size=4, lr=0.01)
    assert "train" not in runs["small"].config
    # with batch 4: 30 examples give 8 steps, 3 examples give 1; different data, different loss
    assert runs["all"].history["train_loss"] != runs["small"].history["train_loss"]


def test_a_sensible_head_learns_separable_features(train, valid):
    runs = run_variants(train, valid, {"small": {"hidden_units": [16]}}, epochs=20, lr=0.01, batch_size=8)
    assert runs["small"].history["valid_accuracy"][-1] == 1.0


def test_run_variants_needs_at_least_one_variant(train, valid):
    with pytest.raises(ValueError, match="No variants"):
        run_variants(train, valid, {})


def fake_run(train_accuracy, valid_accuracy) -> Run:
    epochs = list(range(1, len(valid_accuracy) + 1))
    history = {"epoch": epochs, "train_loss": [1.0] * len(epochs), "valid_loss": [1.0] * len(epochs),
               "train_accuracy": train_accuracy, "valid_accuracy": valid_accuracy, "seconds": [0.1] * len(epochs)}
    return Run({}, history, 1234, 0.5)


def test_summary_rows_report_final_best_and_gap():
    rows = summary_rows({"a": fake_run([0.5, 0.9, 1.0], [0.4, 0.8, 0.7])})
    assert rows == [{"run": "a", "final valid accuracy": 0.7, "best valid accuracy": 0.8, "best epoch": 2,
                     "final train accuracy": 1.0, "gap (train - valid)": pytest.approx(0.3),
                     "parameters": 1234, "seconds": 0.5}]


def test_summary_table_prints_one_line_per_run_with_percentages():
    table = summary_table({"first": fake_run([0.5], [0.25]), "second": fake_run([1.0], [0.5])})
    lines = table.splitlines()
    assert len(lines) == 4 and lines[0].startswith("run")
    assert "25.0%" in lines[2] and "1,234" in lines[2]
    assert lines[3].startswith("second") and "50.0%" in lines[3]


def test_plot_runs_draws_train_and_valid_for_every_run():
    figure = plot_runs({"a": fake_run([0.5, 0.6], [0.4, 0.5]), "b": fake_run([0.7, 0.8], [0.6, 0.6])}, "title")
    loss_axis, accuracy_axis = figure.axes[:2]
    assert len(accuracy_axis.get_lines()) == 4  # two runs x (train, valid)


def test_step_losses_in_stored_order_feed_one_class_per_batch(train):
    record = step_losses(train, shuffle=False, batch_size=PER_CLASS, epochs=2)
    assert record["classes"] == [[0], [1], [2]] * 2
    assert record["epoch"] == [1, 1, 1, 2, 2, 2]
    assert all(math.isfinite(loss) for loss in record["loss"])


def test_step_losses_shuffled_mix_the_classes(train):
    record = step_losses(train, shuffle=True, batch_size=PER_CLASS, epochs=1)
    assert len(record["loss"]) == 3
    assert any(len(classes) > 1 for classes in record["classes"])


def test_sorted_batches_start_every_new_class_with_a_higher_loss(train):
    """The effect the notebook shows: after a batch of one class, the next class is confidently wrong."""
    record = step_losses(train, shuffle=False, batch_size=PER_CLASS, lr=0.05, epochs=1)
    first, second, third = record["loss"]
    assert second > first and third > first


def test_plot_step_losses_marks_epochs(train):
    records = {"sorted": step_losses(train, shuffle=False, batch_size=PER_CLASS, epochs=2)}
    figure = plot_step_losses(records, classes=train.classes)
    lines = figure.axes[0].get_lines()
    assert len(lines) == 2  # the loss line and one epoch boundary
    assert [text.get_text() for text in figure.axes[0].texts] == ["0", "1", "2"] * 2


def slider_extremes() -> list[dict]:
    controls = retrain_controls()
    defaults = {name: control.value for name, control in controls.items()}
    units = controls["hidden_units"].options
    extremes = [
        {"layers": controls["layers"].min},
        {"layers": controls["layers"].max, "hidden_units": units[-1]},
        {"hidden_units": units[0]},
        {"dropout": controls["dropout"].min},
        {"dropout": controls["dropout"].max},
        {"learning_rate": min(LEARNING_RATE_CHOICES)},
        {"learning_rate": max(LEARNING_RATE_CHOICES)},
    ]
    return [{**defaults, **extreme} for extreme in extremes]


def test_the_sliders_cover_the_documented_ranges():
    controls = retrain_controls()
    assert controls["layers"].min == 0 and controls["layers"].max == MAX_LAYERS
    assert controls["dropout"].min == 0 and controls["dropout"].max == pytest.approx(MAX_DROPOUT)
    assert {value for _, value in controls["learning_rate"].options} == set(LEARNING_RATE_CHOICES)


@pytest.mark.parametrize("values", slider_extremes(), ids=lambda v: ",".join(f"{k}={v[k]}" for k in sorted(v)))
def test_retrain_callback_gives_a_figure_at_every_slider_extreme(train, valid, values):
    retrain = make_retrain_callback(train, valid, epochs=2, batch_size=8)
    figure = retrain(**values)
    assert isinstance(figure, plt.Figure)
    title = figure.get_suptitle()
    assert f"lr {values['learning_rate']:g}" in title and "nan" not in title.lower()
    if values["layers"] == 0:
        assert "hidden none" in title and f"{FEATURES * CLASSES + CLASSES:,} parameters" in title
    else:
        assert f"hidden {[values['hidden_units']] * values['layers']}" in title


def test_retrain_callback_works_inside_the_slider_panel(train, valid):
    panel = slider_panel(retrain_controls(), make_retrain_callback(train, valid, epochs=1))
    assert len(panel.children) >= 2
