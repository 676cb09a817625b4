"""Tests for helpers.widgets: the head explorer's callback and controls, at the sliders' extremes."""

from __future__ import annotations

import inspect

import pytest
from torch import nn

from helpers import widgets


def expected_parameters(features: int, classes: int, layers: int, units: int) -> int:
    """Weights and biases of features -> units (x layers) -> classes, counted by hand."""
    sizes = [features, *([units] * layers), classes]
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


EXTREMES = [(layers, units, dropout)
            for layers in widgets.HIDDEN_LAYER_RANGE
            for units in (widgets.UNIT_CHOICES[0], widgets.UNIT_CHOICES[-1])
            for dropout in widgets.DROPOUT_RANGE]


@pytest.mark.parametrize("layers, units, dropout", EXTREMES)
def test_describe_head_at_the_slider_extremes(layers, units, dropout):
    summary = widgets.describe_head(512, 102, layers, units, dropout)
    linears = [m for m in summary.head if isinstance(m, nn.Linear)]
    dropouts = [m for m in summary.head if isinstance(m, nn.Dropout)]
    assert len(linears) == layers + 1
    assert linears[0].in_features == 512 and linears[-1].out_features == 102
    assert all(layer.out_features == units for layer in linears[:-1])
    assert len(dropouts) == layers and all(d.p == dropout for d in dropouts)
    assert isinstance(summary.head[-1], nn.LogSoftmax)
    assert summary.trainable == expected_parameters(512, 102, layers, units)
    assert f"= {summary.trainable:,} trainable" in summary.text
    assert repr(summary) == summary.text


def test_no_hidden_layer_is_a_single_linear_layer_without_dropout():
    summary = widgets.describe_head(512, 6, 0, 512, 0.5)
    assert [type(m) for m in summary.head] == [nn.Linear, nn.LogSoftmax]
    assert "no hidden layer" in summary.text and "no dropout" in summary.text
    assert "widths:      512 -> 6" in summary.text


def test_text_reports_widths_cost_and_dropout():
    summary = widgets.describe_head(2048, 102, 2, 256, 0.3)
    assert "widths:      2,048 -> 256 -> 256 -> 102" in summary.text
    assert f"{2048 * 256 + 256 * 256 + 256 * 102:,} multiply-adds per image" in summary.text
    assert "dropout p=0.3 after each hidden layer" in summary.text
    assert "(off)" in widgets.describe_head(512, 6, 1, 64, 0.0).text


def test_parameters_per_training_image_only_when_the_count_is_given():
    without = widgets.describe_head(512, 6, 1, 512, 0.2)
    with_images = widgets.describe_head(512, 6, 1, 512, 0.2, train_images=48)
    assert "per training image" not in without.text
    assert f"{expected_parameters(512, 6, 1, 512) / 48:,.0f} parameters per training image (48 images)" in with_images.text


@pytest.mark.parametrize("kwargs, message", [
    ({"hidden_layers": -1}, "hidden_layers"),
    ({"dropout": 1.0}, "dropout"),
    ({"units": 0}, "at least 1 unit"),
])
def test_bad_values_are_refused_with_the_value_named(kwargs, message):
    values = {"hidden_layers": 1, "units": 64, "dropout": 0.2, **kwargs}
    with pytest.raises(ValueError, match=message):
        widgets.describe_head(512, 6, **values)


def test_controls_match_the_callback_and_the_published_ranges():
    controls = widgets.head_explorer_controls()
    assert set(controls) <= set(inspect.signature(widgets.describe_head).parameters)
    layers, units, dropout = controls["hidden_layers"], controls["units"], controls["dropout"]
    assert (layers.min, layers.max, layers.value) == (*widgets.HIDDEN_LAYER_RANGE, 1)
    assert tuple(units.options) == widgets.UNIT_CHOICES and units.value == 512
    assert (dropout.min, dropout.max) == widgets.DROPOUT_RANGE and dropout.value == pytest.approx(0.2)
    # the largest dropout the slider allows must be one build_head accepts
    widgets.describe_head(512, 6, 1, 16, dropout.max)


def test_controls_refuse_a_unit_count_the_slider_does_not_offer():
    with pytest.raises(ValueError, match="units must be one of"):
        widgets.head_explorer_controls(units=500)


def test_slider_panel_runs_the_explorer_with_defaults_and_again_on_change():
    calls = []

    def callback(**values):
        calls.append(values)
        return widgets.describe_head(512, 6, **values)

    controls = widgets.head_explorer_controls(hidden_layers=2, units=64, dropout=0.4)
    widgets.slider_panel(controls, callback)
    assert calls == [{"hidden_layers": 2, "units": 64, "dropout": pytest.approx(0.4)}]
    controls["hidden_layers"].value = 0
    assert calls[-1]["hidden_layers"] == 0 and len(calls) == 2
