"""helpers.widgets: the head sliders and the slider panel."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from helpers import widgets
from helpers.model import build_head


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
    # exactly the keyword arguments of notebook 05's slider callback, in the panel's order
    assert list(controls) == ["hidden_layers", "units", "dropout", "learning_rate"]


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
