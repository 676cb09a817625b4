"""Tests for helpers.plots: what the notebooks draw and the numbers behind the drawings."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from helpers import plots
from helpers.data import IMAGENET_MEAN, IMAGENET_STD, eval_transform


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
    return Image.fromarray(array, mode="RGB")


class LabelsOnly(Dataset):
    """A dataset that has labels (``targets``) but fails if anyone opens an image."""

    def __init__(self, targets: list[int], classes: list[str]) -> None:
        self.targets = targets
        self.classes = classes

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        raise AssertionError("batch_label_counts must not load images")


def shown_arrays(figure: plt.Figure) -> list[np.ndarray]:
    """The pixel arrays of every image drawn in ``figure``, in axes order."""
    return [np.asarray(axis.images[0].get_array()) for axis in figure.axes if axis.images]


# --- transforms -----------------------------------------------------------------------------


def test_describe_value_names_size_and_shape(picture):
    assert plots.describe_value(picture) == "PIL image 256 x 256 (RGB)"
    assert plots.describe_value(torch.zeros(3, 224, 224)) == "tensor (3, 224, 224) float32"


def test_transform_steps_follow_resize_crop_tensor_normalize():
    photo = Image.new("RGB", (400, 300), (120, 80, 40))
    steps = plots.transform_steps(photo, eval_transform(224))
    assert [name for name, _ in steps] == ["input", "Resize(256)", "CenterCrop(224)", "ToTensor()", "Normalize()"]
    assert steps[1][1].size == (341, 256)  # the shorter side becomes 256, the aspect ratio stays
    assert steps[2][1].size == (224, 224)
    assert steps[3][1].shape == (3, 224, 224) and float(steps[3][1].max()) <= 1
    expected_red = (120 / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert float(steps[4][1][0].mean()) == pytest.approx(expected_red, abs=1e-4)


def test_step_name_is_short_and_shows_the_size():
    assert plots.step_name(transforms.Resize(256)) == "Resize(256)"
    assert plots.step_name(transforms.CenterCrop(224)) == "CenterCrop(224)"
    assert plots.step_name(transforms.ToTensor()) == "ToTensor()"


def test_transform_steps_needs_a_compose(picture):
    with pytest.raises(TypeError, match="Compose"):
        plots.transform_steps(picture, transforms.ToTensor())


def test_plot_transform_steps_has_a_panel_per_step(picture):
    figure = plots.plot_transform_steps(picture, eval_transform(224))
    assert len(shown_arrays(figure)) == 5
    assert figure.axes[2].get_title().startswith("CenterCrop(224)\nPIL image 224 x 224")
    assert "rescaled" in figure.axes[-1].get_title()  # the normalised tensor is outside [0, 1]


# --- channel statistics ---------------------------------------------------------------------


def test_channel_statistics_per_channel():
    images = torch.zeros(2, 3, 4, 4)
    images[:, 0] = 0.5
    images[0, 2] = 1.0  # blue: half the values 1, half 0
    mean, std = plots.channel_statistics(images)
    assert mean.tolist() == pytest.approx([0.5, 0.0, 0.5])
    assert std[0] == 0 and std[1] == 0 and std[2] > 0.5


def test_channel_statistics_rejects_a_single_image():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        plots.channel_statistics(torch.zeros(3, 8, 8))


def test_normalising_with_the_batch_statistics_gives_zero_mean_unit_std():
    images = torch.rand(4, 3, 16, 16) * 0.5 + 0.2
    mean, std = plots.channel_statistics(images)
    normalised = transforms.Normalize(mean.tolist(), std.tolist())(images)
    new_mean, new_std = plots.channel_statistics(normalised)
    assert new_mean.abs().max() < 1e-5
    assert (new_std - 1).abs().max() < 1e-5


def test_channel_table_has_a_row_per_batch_and_reference():
    images = torch.full((1, 3, 2, 2), 0.25)
    table = plots.channel_table({"batch": images}, {"ImageNet": (IMAGENET_MEAN, IMAGENET_STD)})
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[2].split() == ["batch", "0.250", "0.250", "0.250", "0.000", "0.000", "0.000"]
    assert lines[3].split()[1:] == ["0.485", "0.456", "0.406", "0.229", "0.224", "0.225"]


def test_plot_channel_histograms_one_panel_per_batch():
    figure = plots.plot_channel_histograms({"before": torch.rand(2, 3, 8, 8), "after": torch.randn(2, 3, 8, 8)})
    assert [axis.get_title() for axis in figure.axes] == ["before", "after"]


# --- classes and batches ----------------------------------------------------------------------


def test_class_table_lists_classes_in_index_order():
    class_to_idx = {"1": 0, "10": 1, "100": 2, "2": 3}
    table = plots.class_table(class_to_idx, {"1": "pink primrose", "2": "hard-leaved pocket orchid"})
    rows = [line.split(maxsplit=2) for line in table.splitlines()[1:]]
    assert [row[:2] for row in rows] == [["0", "1"], ["1", "10"], ["2", "100"], ["3", "2"]]
    assert rows[3][2] == "hard-leaved pocket orchid"
    assert rows[1][2] == "?"  # a folder without a name is marked, not hidden


def test_one_per_class_finds_first_index_of_each_label():
    dataset = LabelsOnly([0, 0, 1, 1, 1, 2], ["a", "b", "c"])
    assert plots.one_per_class(dataset) == [0, 2, 5]
    assert plots.one_per_class(dataset, limit=2) == [0, 2]


def test_batch_label_counts_unshuffled_loader_feeds_one_class_at_a_time():
    dataset = LabelsOnly([0] * 4 + [1] * 4 + [2] * 4, ["a", "b", "c"])
    counts = plots.batch_label_counts(DataLoader(dataset, batch_size=4, shuffle=False))
    assert counts.tolist() == [[4, 0, 0], [0, 4, 0], [0, 0, 4]]


def test_batch_label_counts_shuffled_loader_mixes_and_keeps_totals():
    dataset = LabelsOnly([0] * 10 + [1] * 10 + [2] * 10, ["a", "b", "c"])
    loader = DataLoader(dataset, batch_size=10, shuffle=True, generator=torch.Generator().manual_seed(0))
    counts = plots.batch_label_counts(loader)
    assert counts.sum(dim=0).tolist() == [10, 10, 10]  # every image exactly once per epoch
    assert counts.max() < 10  # no batch is all one class
    assert plots.batch_label_counts(loader, max_batches=2).shape == (2, 3)


def test_batch_label_counts_needs_targets():
    loader = DataLoader(torch.utils.data.TensorDataset(torch.zeros(4, 1)), batch_size=2)
    with pytest.raises(TypeError, match="targets"):
        plots.batch_label_counts(loader)


def test_plot_batch_labels_draws_a_bar_per_class_per_batch():
    counts = {"unshuffled": torch.tensor([[4, 0, 0], [0, 4, 0], [0, 0, 4]]),
              "shuffled": torch.tensor([[2, 1, 1], [1, 2, 1], [1, 1, 2]])}
    figure = plots.plot_batch_labels(counts, ["a", "b", "c"], max_batches=2)
    bar_axes = [axis for axis in figure.axes if axis.patches]
    assert len(bar_axes) == 4  # two loaders x two batches
    assert [patch.get_height() for patch in bar_axes[1].patches] == [0, 4, 0]


# --- augmentation -----------------------------------------------------------------------------


def test_augment_many_repeats_with_a_seed_and_leaves_global_rng_alone(picture):
    change = transforms.Compose([transforms.RandomRotation(30), transforms.PILToTensor()])
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = plots.augment_many(picture, change, count=3, seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    second = plots.augment_many(picture, change, count=3, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], first[1])


def test_augmentation_grid_strength_zero_repeats_the_evaluation_view(picture):
    arrays = shown_arrays(plots.augmentation_grid(picture, strength=0, count=4))
    assert len(arrays) == 5
    assert all(np.array_equal(arrays[0], other) for other in arrays[1:])


def test_augmentation_grid_strength_two_changes_every_view(picture):
    arrays = shown_arrays(plots.augmentation_grid(picture, strength=2, count=4, seed=1))
    assert len(arrays) == 5
    assert not any(np.array_equal(arrays[0], other) for other in arrays[1:])
    again = shown_arrays(plots.augmentation_grid(picture, strength=2, count=4, seed=1))
    assert all(np.array_equal(a, b) for a, b in zip(arrays, again))


def test_augmentation_grid_rejects_strength_outside_range(picture):
    with pytest.raises(ValueError, match="strength"):
        plots.augmentation_grid(picture, strength=3)


def test_augmentation_examples_one_row_per_change(picture):
    changes = {"flip": transforms.RandomHorizontalFlip(p=1.0), "rotation": transforms.RandomRotation(45)}
    figure = plots.augmentation_examples(picture, changes, count=3)
    arrays = shown_arrays(figure)
    assert len(arrays) == 2 * 4
    assert np.array_equal(arrays[1], np.asarray(picture)[:, ::-1])  # p=1 flips every time
    assert figure.axes[4].get_ylabel() == "rotation"


# --- the functions other notebooks use -------------------------------------------------------


def test_denormalize_undoes_normalize():
    image = torch.rand(3, 8, 8)
    normalised = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)(image)
    assert torch.allclose(plots.denormalize(normalised), image, atol=1e-6)


def test_show_images_refuses_an_empty_list():
    with pytest.raises(ValueError, match="No images"):
        plots.show_images([])
