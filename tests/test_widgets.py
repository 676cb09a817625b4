"""helpers.widgets: the head sliders, their callbacks at the sliders' extremes, and the slider panel."""

from __future__ import annotations

import inspect

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from helpers import widgets
from helpers.features import FeatureSet
from helpers.model import build_head

CLASSES, FEATURES = 3, 16


def expected_parameters(features: int, classes: int, layers: int, units: int) -> int:
    """Weights and biases of features -> units (x layers) -> classes, counted by hand."""
    sizes = [features, *([units] * layers), classes]
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_controls_cover_the_published_ranges():
    controls = widgets.head_controls()
    assert set(controls) == {"hidden_layers", "units", "dropout"}  # what notebook 03's slider callback takes
    layers, units, dropout = controls["hidden_layers"], controls["units"], controls["dropout"]
    assert (layers.min, layers.max, layers.value) == (0, widgets.MAX_HIDDEN_LAYERS, 1)
    assert tuple(units.options) == widgets.UNIT_CHOICES and units.value == 512
    assert (dropout.min, dropout.max, dropout.value) == (0, pytest.approx(widgets.MAX_DROPOUT), pytest.approx(0.2))
    build_head(512, 6, [16], dropout.max)  # the largest dropout the slider allows is one build_head accepts


def test_a_learning_rate_slider_only_when_asked():
    controls = widgets.head_controls(hidden_layers=0, units=64, dropout=0.0, learning_rate=0.001)
    assert {value for _, value in controls["learning_rate"].options} == set(widgets.LEARNING_RATES)
    assert controls["learning_rate"].value == 0.001
    assert (controls["hidden_layers"].value, controls["units"].value) == (0, 64)
    retrain = widgets.retrain_callback(clusters(10, 0), clusters(4, 1))  # notebook 05 passes these controls to it
    assert set(controls) == set(inspect.signature(retrain).parameters)


def test_controls_refuse_a_unit_count_the_slider_does_not_offer():
    with pytest.raises(ValueError, match="500"):
        widgets.head_controls(units=500)


def test_slider_panel_runs_the_callback_with_defaults_and_again_on_release():
    calls = []

    def callback(**values):
        calls.append(values)
        return str(build_head(512, 6, [values["units"]] * values["hidden_layers"], values["dropout"]))

    controls = widgets.head_controls(hidden_layers=2, units=64, dropout=0.4)
    widgets.slider_panel(controls, callback)
    assert calls == [{"hidden_layers": 2, "units": 64, "dropout": pytest.approx(0.4)}]
    assert not any(control.continuous_update for control in controls.values())  # not while a slider moves
    controls["hidden_layers"].value = 0
    assert len(calls) == 2 and calls[-1]["hidden_layers"] == 0


def test_slider_panel_closes_the_figures_it_shows():
    def draw(**values):
        figure, axis = plt.subplots()
        axis.set_title(str(values))
        return figure

    controls = widgets.head_controls()
    widgets.slider_panel(controls, draw)
    controls["units"].value = 64
    assert plt.get_fignums() == []  # shown once each, not piling up


# --- retraining on cached features ------------------------------------------------------------------

def clusters(per_class: int, seed: int) -> FeatureSet:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(CLASSES).repeat_interleave(per_class)
    features = torch.eye(CLASSES, FEATURES)[labels] * 6 + 0.3 * torch.randn(len(labels), FEATURES, generator=generator)
    return FeatureSet(features, labels, [str(c) for c in range(CLASSES)])


def slider_extremes() -> list[dict]:
    controls = widgets.head_controls(learning_rate=0.001)
    defaults = {name: control.value for name, control in controls.items()}
    extremes = [{"hidden_layers": 0}, {"hidden_layers": widgets.MAX_HIDDEN_LAYERS, "units": widgets.UNIT_CHOICES[-1]},
                {"units": widgets.UNIT_CHOICES[0]}, {"dropout": widgets.MAX_DROPOUT},
                {"learning_rate": min(widgets.LEARNING_RATES)}, {"learning_rate": max(widgets.LEARNING_RATES)}]
    return [{**defaults, **extreme} for extreme in extremes]


@pytest.mark.parametrize("values", slider_extremes(), ids=lambda v: ",".join(f"{k}={v[k]}" for k in sorted(v)))
def test_retrain_callback_gives_a_figure_at_every_slider_extreme(values):
    retrain = widgets.retrain_callback(clusters(10, 0), clusters(4, 1), epochs=2, batch_size=8)
    figure = retrain(**values)
    assert isinstance(figure, plt.Figure)
    title = figure.get_suptitle()
    assert f"lr {values['learning_rate']:g}" in title and "nan" not in title.lower()
    if values["hidden_layers"] == 0:
        assert "hidden none" in title and f"{FEATURES * CLASSES + CLASSES:,} parameters" in title
    else:
        assert f"hidden {[values['units']] * values['hidden_layers']}" in title


def test_retrain_callback_trains_what_the_sliders_say():
    retrain = widgets.retrain_callback(clusters(10, 0), clusters(4, 1), epochs=15, batch_size=8)
    title = retrain(hidden_layers=1, units=16, dropout=0.0, learning_rate=0.01).get_suptitle()
    assert "valid 100%" in title  # well-separated clusters: a sensible head learns them
    assert f"{expected_parameters(FEATURES, CLASSES, 1, 16):,} parameters" in title
