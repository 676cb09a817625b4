"""helpers.plots: what the notebooks draw (checked in the figures' data) and the one table formatter."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from helpers import plots
from helpers.data import IMAGENET_MEAN, IMAGENET_STD
from helpers.inference import Prediction


@pytest.fixture(autouse=True)
def close_figures():
    """Every test starts and ends without open figures."""
    plt.close("all")
    yield
    plt.close("all")


@pytest.fixture
def picture() -> Image.Image:
    """A 256 x 256 RGB image with a gradient and an off-centre square, so any change shows."""
    y, x = np.mgrid[0:256, 0:256]
    array = np.stack([x, y, 255 - x], axis=-1).astype(np.uint8)
    array[40:90, 150:220] = (255, 255, 0)
    return Image.fromarray(array)


def shown_arrays(figure: plt.Figure) -> list[np.ndarray]:
    """The pixel arrays of every image drawn in ``figure``, in axes order."""
    return [np.asarray(axis.images[0].get_array()) for axis in figure.axes if axis.images]


# --- images ------------------------------------------------------------------------------------------

def test_denormalize_undoes_normalize_and_clips():
    image = torch.rand(3, 8, 8)
    normalised = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)(image)
    assert torch.allclose(plots.denormalize(normalised), image, atol=1e-6)
    extreme = plots.denormalize(torch.full((3, 2, 2), 10.0))
    assert extreme.max() == 1.0 and plots.denormalize(torch.full((3, 2, 2), -10.0)).min() == 0.0


def test_show_images_draws_each_image_with_its_title():
    tensors = [transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)(torch.full((3, 4, 4), v)) for v in (0.2, 0.8)]
    pil = Image.new("RGB", (4, 4), (255, 0, 0))
    figure = plots.show_images([*tensors, pil], titles=["dark", "light", "red"], columns=2)
    arrays = shown_arrays(figure)
    assert len(arrays) == 3 and len(figure.axes) == 4  # a 2 x 2 grid, the last cell empty
    assert np.allclose(arrays[0], 0.2, atol=1e-5) and np.allclose(arrays[1], 0.8, atol=1e-5)  # denormalised
    assert np.array_equal(arrays[2], np.asarray(pil))
    assert [axis.get_title() for axis in figure.axes if axis.images] == ["dark", "light", "red"]


def test_show_images_refuses_an_empty_list():
    with pytest.raises(ValueError, match="No images"):
        plots.show_images([])


# --- training curves ---------------------------------------------------------------------------------

def history(eval_mode: bool = True) -> dict[str, list]:
    return {"epoch": [1, 2, 3], "train_loss": [1.2, 0.8, 0.6], "train_accuracy": [0.5, 0.7, 0.8],
            "train_eval_loss": [1.0, 0.6, 0.4] if eval_mode else [],
            "train_eval_accuracy": [0.6, 0.8, 0.9] if eval_mode else [],
            "valid_loss": [1.1, 0.9, 0.85], "valid_accuracy": [0.55, 0.7, 0.72]}


def test_plot_history_draws_every_curve_it_has():
    figure = plots.plot_history({"a": history(), "b": history(eval_mode=False)})
    loss_axis, accuracy_axis = figure.axes[:2]
    assert len(loss_axis.get_lines()) == 3 + 2  # run a: while training, evaluation mode, valid; run b: no eval mode
    curves = [list(line.get_ydata()) for line in accuracy_axis.get_lines()]
    assert curves[:3] == [[0.5, 0.7, 0.8], [0.6, 0.8, 0.9], [0.55, 0.7, 0.72]]
    assert [list(line.get_xdata()) for line in accuracy_axis.get_lines()][0] == [1, 2, 3]
    colours = {line.get_color() for line in accuracy_axis.get_lines()[:3]}
    assert len(colours) == 1 and accuracy_axis.get_lines()[3].get_color() not in colours  # one colour per run


# --- predictions -------------------------------------------------------------------------------------

def test_plot_prediction_shows_the_most_probable_class_on_top(picture):
    guesses = [Prediction("10", "globe thistle", 0.7), Prediction("2", "orchid", 0.2), Prediction("1", "primrose", 0.1)]
    figure = plots.plot_prediction(picture, guesses, title="my photo")
    image_axis, bar_axis = figure.axes
    assert np.array_equal(shown_arrays(figure)[0], np.asarray(picture)) and image_axis.get_title() == "my photo"
    bars = sorted(bar_axis.patches, key=lambda bar: bar.get_y(), reverse=True)  # top to bottom
    assert [bar.get_width() for bar in bars] == pytest.approx([0.7, 0.2, 0.1])
    labels = {tick.get_text() for tick in bar_axis.get_yticklabels()}
    assert {"globe thistle (10)", "orchid (2)", "primrose (1)"} <= labels


# --- the table formatter -------------------------------------------------------------------------------

def test_format_table_aligns_columns_and_formats_numbers():
    rows = [{"class": "long name", "images": 1200, "accuracy": 0.5, "seconds": 2.0, "top-1 %": 69.758},
            {"class": "b", "images": 3, "accuracy": 0.125, "seconds": 12.25, "top-1 %": 80.0}]
    lines = plots.format_table(rows, percent=["accuracy"]).splitlines()
    assert lines[0].split() == ["class", "images", "accuracy", "seconds", "top-1", "%"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].split() == ["long", "name", "1,200", "50.0%", "2.00", "69.76"]
    assert lines[3].split() == ["b", "3", "12.5%", "12.25", "80.00"]
    assert len({len(line) for line in lines}) == 1  # every line equally wide: numbers right-aligned
    assert lines[3].startswith("b ")  # text left-aligned


def test_only_the_columns_named_print_as_percentages():
    rows = [{"accuracy": 0.5, "gap (train - valid)": 0.25}]
    assert plots.format_table(rows).splitlines()[2].split() == ["0.50", "0.25"]  # no name magic
    assert plots.format_table(rows, percent=["gap (train - valid)"]).splitlines()[2].split() == ["0.50", "25.0%"]


def test_format_table_of_nothing():
    assert plots.format_table([]) == "(no rows)"
