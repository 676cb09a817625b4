"""Evaluation of a trained classifier: predictions over a loader, per-class accuracy, confusions, mistakes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
from torch.utils.data import DataLoader

from helpers.data import make_loaders
from helpers.evaluation import (EvaluationResult, accuracy, confused_pairs, display_name, format_table, mistakes,
                                per_class_accuracy, plot_mistakes, predict_loader)
from helpers.models import build_model

IMAGE_SIZE = 64  # as in conftest: the tiny slice of the tests has 64 px images


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def made_up_result(paths: list[str] | None = None) -> EvaluationResult:
    """Three classes; class "a" all right, "b" one of two wrong (as "c"), "c" both wrong (as "a")."""
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 0, 1, 2, 0, 0])
    probabilities = torch.full((6, 3), 0.1)
    for row, (guess, confidence) in enumerate(zip(predicted.tolist(), [0.8, 0.8, 0.8, 0.6, 0.7, 0.5])):
        probabilities[row, guess] = confidence
    return EvaluationResult(labels, predicted, probabilities, ["a", "b", "c"], paths or [])


def test_accuracy_is_the_share_of_right_answers():
    assert accuracy(made_up_result()) == pytest.approx(3 / 6)


def test_per_class_accuracy_lists_the_worst_class_first():
    rows = per_class_accuracy(made_up_result(), {"a": "aster", "c": "crocus"})
    assert [row["class"] for row in rows] == ["crocus (c)", "b", "aster (a)"]
    assert [(row["images"], row["correct"], row["accuracy"]) for row in rows] == [(2, 0, 0.0), (2, 1, 0.5), (2, 2, 1.0)]


def test_confused_pairs_count_the_most_frequent_mistakes_first():
    pairs = confused_pairs(made_up_result())
    assert pairs == [{"true class": "c", "predicted as": "a", "images": 2, "share": 1.0},
                     {"true class": "b", "predicted as": "c", "images": 1, "share": 0.5}]
    assert len(confused_pairs(made_up_result(), top=1)) == 1
    with pytest.raises(ValueError, match="top"):
        confused_pairs(made_up_result(), top=0)


def test_mistakes_come_most_confident_first():
    assert mistakes(made_up_result()) == [4, 3, 5]  # confidences 0.7, 0.6, 0.5


def test_display_name_falls_back_to_the_folder():
    assert display_name("12", {"12": "tulip"}) == "tulip (12)"
    assert display_name("12", None) == "12"


def test_format_table_aligns_columns_and_formats_percentages():
    table = format_table([{"class": "long name", "images": 1200, "accuracy": 0.5},
                          {"class": "b", "images": 3, "accuracy": 0.125}])
    lines = table.splitlines()
    assert lines[0].split() == ["class", "images", "accuracy"]
    assert "1,200" in lines[2] and "50.0%" in lines[2] and "12.5%" in lines[3]
    assert len({len(line) for line in lines}) == 1  # every line equally wide: right-aligned numbers
    assert format_table([]) == "(no rows)"


@pytest.fixture
def tiny_model_and_loaders(tiny_root, make_backbone):
    loaders = make_loaders(tiny_root, batch_size=4, augment=False, num_workers=0, image_size=IMAGE_SIZE)
    model = build_model(make_backbone(), len(loaders["train"].dataset.classes), hidden_units=[8],
                        pretrained=False, image_size=IMAGE_SIZE)
    return model, loaders


def test_predict_loader_keeps_every_prediction_in_dataset_order(tiny_model_and_loaders):
    model, loaders = tiny_model_and_loaders
    dataset = loaders["test"].dataset
    result = predict_loader(model, loaders["test"], device="cpu")
    assert result.labels.tolist() == dataset.targets
    assert result.paths == [path for path, _ in dataset.samples]
    assert result.classes == dataset.classes
    assert result.probabilities.shape == (len(dataset), len(dataset.classes))
    assert torch.allclose(result.probabilities.sum(dim=1), torch.ones(len(dataset)), atol=1e-5)
    assert torch.equal(result.predicted, result.probabilities.argmax(dim=1))
    assert not model.training  # evaluation mode: no dropout while predicting


def test_a_shuffled_loader_gives_no_paths_and_the_gallery_says_why(tiny_model_and_loaders):
    model, loaders = tiny_model_and_loaders
    shuffled = DataLoader(loaders["test"].dataset, batch_size=4, shuffle=True)
    result = predict_loader(model, shuffled, device="cpu")
    assert result.paths == []
    if mistakes(result):
        with pytest.raises(ValueError, match="unshuffled"):
            plot_mistakes(result)


def test_plot_mistakes_shows_one_image_per_mistake(tiny_model_and_loaders):
    model, loaders = tiny_model_and_loaders
    result = predict_loader(model, loaders["test"], device="cpu")
    wrong = result.labels != result.predicted
    result = result._replace(predicted=torch.where(wrong, result.predicted, (result.labels + 1) % len(result.classes)))
    figure = plot_mistakes(result, limit=5, columns=5)
    shown = [axis for axis in figure.axes if axis.images]
    assert len(shown) == 5
    true_folder = result.classes[result.labels[mistakes(result)[0]]]
    assert shown[0].get_title().startswith(true_folder)


def test_plot_mistakes_without_mistakes_says_so():
    result = made_up_result()
    perfect = result._replace(predicted=result.labels.clone())
    figure = plot_mistakes(perfect)
    assert "No mistakes" in figure.axes[0].texts[0].get_text()


def test_predict_loader_refuses_an_empty_loader(tiny_model_and_loaders):
    model, _ = tiny_model_and_loaders
    with pytest.raises(ValueError, match="no batches"):
        predict_loader(model, [], device="cpu")
