"""helpers.features (the feature cache and head training on it) and the ``bench`` command's smoke test.

The cache tests count how many images go through the backbone: a cache hit must run
none, a changed key must run the whole split again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from helpers.data import FlowerFolder, eval_transform
from helpers.images import load_rgb_image
from helpers.features import (FeatureSet, cached_features, extract_features, extraction_loader, feature_batches,
                              normalise_on_device, threads_for_head,
                              train_head_on_features)
from helpers.train import HISTORY_KEYS

IMAGE_SIZE = 64  # as in conftest: the tiny slice's images are 64 px
REPOSITORY = Path(__file__).resolve().parents[1]


class CountingBackbone(nn.Module):
    """Wraps a backbone and counts the images it sees, to tell a cache hit from a recomputation."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.images_seen = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.images_seen += len(images)
        return self.inner(images)


def cache(backbone: nn.Module, root: Path, cache_dir: Path, **options) -> dict[str, FeatureSet]:
    """``cached_features`` with the test's image size, quietly, on the CPU."""
    options = {"splits": ("train", "valid"), "image_size": IMAGE_SIZE, "device": "cpu", "num_workers": 0,
               "progress": False, "verbose": False, **options}
    return cached_features(backbone, root, cache_dir=cache_dir, **options)


# ---------------------------------------------------------------------------------------------- the cache

def test_a_matching_key_loads_without_running_the_backbone(tiny_root, make_backbone, tmp_path):
    first = CountingBackbone(make_backbone())
    extracted = cache(first, tiny_root, tmp_path)
    assert first.images_seen == 6 * (4 + 2)  # 6 classes, 4 train + 2 valid images each
    again = CountingBackbone(make_backbone())  # same weights, a new object
    loaded = cache(again, tiny_root, tmp_path)
    assert again.images_seen == 0
    for split in ("train", "valid"):
        assert torch.equal(loaded[split].features, extracted[split].features)
        assert torch.equal(loaded[split].labels, extracted[split].labels)
        assert loaded[split].classes == extracted[split].classes == ["1", "10", "100", "11", "2", "21"]
    assert extracted["train"].features.shape == (24, 8)
    assert extracted["train"].features.dtype == torch.float32


def test_different_weights_recompute(tiny_root, make_backbone, tmp_path):
    cache(CountingBackbone(make_backbone(seed=0)), tiny_root, tmp_path)
    other = CountingBackbone(make_backbone(seed=1))
    cache(other, tiny_root, tmp_path)
    assert other.images_seen == 36


@pytest.mark.parametrize("change", ["edit", "add"])
def test_a_changed_or_added_file_recomputes_that_split_only(tiny_copy, make_backbone, tmp_path, change):
    cache(CountingBackbone(make_backbone()), tiny_copy, tmp_path / "cache")
    image = next((tiny_copy / "train" / "1").glob("*.jpg"))
    if change == "edit":
        Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (0, 0, 255)).save(image)
    else:
        Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (0, 0, 255)).save(image.with_name("new.jpg"))
    backbone = CountingBackbone(make_backbone())
    result = cache(backbone, tiny_copy, tmp_path / "cache")
    train_images = 24 + (change == "add")
    assert backbone.images_seen == train_images  # train again; valid still from the cache
    assert len(result["train"].labels) == train_images


@pytest.mark.parametrize("options", [{"image_size": 48}, {"reduced_decode": False}, {"amp": False},
                                     {"augmented_views": 1}])
def test_another_transform_size_decoding_or_precision_recomputes(tiny_root, make_backbone, tmp_path, options):
    cache(CountingBackbone(make_backbone()), tiny_root, tmp_path, splits=("train",))
    backbone = CountingBackbone(make_backbone())
    cache(backbone, tiny_root, tmp_path, splits=("train",), **options)
    assert backbone.images_seen == 24


def test_a_cache_file_with_a_different_key_is_not_trusted(tiny_root, make_backbone, tmp_path):
    cache(make_backbone(), tiny_root, tmp_path, splits=("valid",))
    (path,) = tmp_path.glob("valid-*.pt")
    stored = torch.load(path, weights_only=True)
    stored["key"]["files"] = "something else"
    torch.save(stored, path)
    backbone = CountingBackbone(make_backbone())
    cache(backbone, tiny_root, tmp_path, splits=("valid",))
    assert backbone.images_seen == 12


def test_augmented_views_have_shape_k_n_f_and_differ(tiny_root, make_backbone, tmp_path):
    result = cache(make_backbone(), tiny_root, tmp_path, augmented_views=3)
    train, valid = result["train"], result["valid"]
    assert train.features.shape == (3, 24, 8)
    assert valid.features.shape == (12, 8)  # other splits: the plain evaluation transform
    assert not torch.allclose(train.features[0], train.features[1])
    assert not torch.allclose(train.features[1], train.features[2])
    assert torch.equal(train.labels, torch.tensor([label for label in range(6) for _ in range(4)]))


def test_negative_views_are_an_error(tiny_root, make_backbone, tmp_path):
    with pytest.raises(ValueError, match="augmented_views"):
        cache(make_backbone(), tiny_root, tmp_path, augmented_views=-1)


# ---------------------------------------------------------------------------------------------- extraction

def test_the_uint8_loader_gives_the_features_of_the_usual_float_pipeline(tiny_root, make_backbone):
    backbone = make_backbone()
    plain = torch.utils.data.DataLoader(FlowerFolder(tiny_root / "valid", eval_transform(IMAGE_SIZE)), batch_size=5)
    fast = extraction_loader(tiny_root / "valid", IMAGE_SIZE, batch_size=5, num_workers=0, device="cpu")
    expected, expected_labels = extract_features(backbone, plain, "cpu", progress=False, amp=False)
    features, labels = extract_features(backbone, fast, "cpu", progress=False, amp=False)
    assert torch.equal(labels, expected_labels)
    assert torch.allclose(features, expected, atol=1e-4)
    assert next(iter(fast))[0].dtype == torch.uint8


def test_normalising_uint8_on_the_device_matches_to_tensor_and_normalize():
    pixels = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    expected = eval_transform().transforms[-1](pixels.float() / 255)
    assert torch.allclose(normalise_on_device(pixels), expected, atol=1e-5)
    floats = torch.randn(2, 3, 4, 4)
    assert normalise_on_device(floats) is floats


def test_reduced_decoding_keeps_enough_pixels_and_the_picture(tmp_path):
    path = tmp_path / "large.jpg"
    Image.new("RGB", (630, 534), (200, 30, 40)).save(path)
    image = load_rgb_image(path, min_side=256)
    assert image.mode == "RGB"
    assert image.size == (315, 267)  # decoded at half scale: both sides still >= 256
    assert abs(image.getpixel((100, 100))[0] - 200) <= 3
    assert load_rgb_image(path, min_side=400).size == (630, 534)  # half scale would be too small


def test_reduced_decoding_names_a_broken_file(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_rgb_image(broken, 256)


def test_extract_features_of_an_empty_loader_is_an_error(make_backbone):
    with pytest.raises(ValueError, match="no batches"):
        extract_features(make_backbone(), [], "cpu", progress=False)


# ---------------------------------------------------------------------------------------------- head training

def separable(n: int, features: int = 16, classes: int = 4, seed: int = 0, views: int = 0) -> FeatureSet:
    """An easy problem: each class is a cluster around its own random centre."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, features, generator=torch.Generator().manual_seed(99)) * 3
    labels = torch.arange(n) % classes
    shape = (views, n, features) if views else (n, features)
    points = centres[labels] + torch.randn(shape, generator=generator)
    return FeatureSet(points, labels, [str(c) for c in range(classes)])


def test_history_has_fits_keys_and_one_entry_per_epoch():
    head, history = train_head_on_features(separable(64), separable(32, seed=1), [8], 0.0, 0.01, epochs=3,
                                           batch_size=16, device="cpu")
    assert tuple(history) == HISTORY_KEYS
    assert history["epoch"] == [1, 2, 3]
    assert all(len(values) == 3 for values in history.values())
    assert all(0 <= value <= 1 for value in history["train_accuracy"] + history["valid_accuracy"])
    assert head[0].in_features == 16 and head.output.out_features == 4
    assert not head.training


def test_an_easy_problem_is_learned():
    head, history = train_head_on_features(separable(256), separable(128, seed=1), [32], 0.2, 0.01, epochs=8,
                                           batch_size=32, device="cpu")
    assert history["valid_accuracy"][-1] >= 0.95
    assert history["train_loss"][-1] < history["train_loss"][0]
    log_probs = head(separable(128, seed=1).features)
    assert torch.allclose(log_probs.exp().sum(dim=1), torch.ones(128), atol=1e-5)


def test_same_seed_same_result_and_another_seed_differs():
    def run(seed: int) -> dict:
        return train_head_on_features(separable(96), separable(32, seed=1), [8], 0.3, 0.01, epochs=2,
                                      batch_size=16, device="cpu", seed=seed)[1]
    first, again, other = run(0), run(0), run(1)
    for key in ("train_loss", "train_accuracy", "valid_loss", "valid_accuracy"):
        assert first[key] == again[key]
    assert first["train_loss"] != other["train_loss"]


def test_views_are_used_one_per_epoch():
    train = separable(64, views=2)
    valid = separable(32, seed=1)
    _, with_views = train_head_on_features(train, valid, [8], 0.0, 0.01, epochs=2, batch_size=64, device="cpu",
                                           shuffle=False)
    _, first_only = train_head_on_features(FeatureSet(train.features[0], train.labels, train.classes), valid,
                                           [8], 0.0, 0.01, epochs=2, batch_size=64, device="cpu", shuffle=False)
    assert with_views["train_loss"][0] == first_only["train_loss"][0]  # epoch 1 uses view 0 in both
    assert with_views["train_loss"][1] != first_only["train_loss"][1]  # epoch 2: view 1 versus view 0 again


def test_feature_batches_keep_the_stored_order_unless_shuffled():
    features, labels = torch.arange(10.0).view(10, 1), torch.arange(10)
    batches = list(feature_batches(features, labels, 4, shuffle=False))
    assert [b.tolist() for _, b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    shuffled = list(feature_batches(features, labels, 4, shuffle=True, generator=torch.Generator().manual_seed(0)))
    order = torch.cat([b for _, b in shuffled])
    assert sorted(order.tolist()) == list(range(10)) and order.tolist() != list(range(10))
    assert all(torch.equal(x.view(-1), y.float()) for x, y in shuffled)  # features stay with their labels


def test_shuffle_false_trains_on_the_stored_order():
    train = separable(64)
    order = torch.argsort(train.labels, stable=True)  # sorted by class, as the cache stores it
    ordered = FeatureSet(train.features[order], train.labels[order], train.classes)
    valid = separable(32, seed=1)
    kwargs = dict(hidden_units=[8], dropout=0.0, lr=0.05, epochs=2, batch_size=16, device="cpu")
    _, unshuffled = train_head_on_features(ordered, valid, shuffle=False, **kwargs)
    _, unshuffled_again = train_head_on_features(ordered, valid, shuffle=False, **kwargs)
    _, shuffled = train_head_on_features(ordered, valid, shuffle=True, **kwargs)
    assert unshuffled == {**unshuffled_again, "seconds": unshuffled["seconds"]}
    assert unshuffled["train_loss"] != shuffled["train_loss"]


def test_no_hidden_layer_and_bad_input_are_handled():
    head, history = train_head_on_features(separable(32), separable(16, seed=1), [], 0.0, 0.01, epochs=1,
                                           device="cpu")
    assert isinstance(head[0], nn.Linear) and len(history["epoch"]) == 1
    with pytest.raises(ValueError, match="labels"):
        train_head_on_features((torch.zeros(5, 4), torch.zeros(6)), separable(4), epochs=1, device="cpu")
    with pytest.raises(ValueError, match="epochs"):
        train_head_on_features(separable(8), separable(8), epochs=0, device="cpu")
    with pytest.raises(ValueError, match="same backbone"):
        train_head_on_features(separable(8, features=16), separable(8, features=12), epochs=1, device="cpu")


def test_small_heads_train_on_one_thread_and_big_ones_on_all():
    assert threads_for_head(16, 512, [128], 6) == 1  # the tiny slice's heads
    assert threads_for_head(256, 1280, [512], 102) == torch.get_num_threads()  # the classic split's
    before = torch.get_num_threads()
    train_head_on_features(separable(32), separable(16, seed=1), [8], 0.0, 0.01, epochs=1, device="cpu")
    assert torch.get_num_threads() == before  # restored afterwards


# ---------------------------------------------------------------------------------------------- the benchmark

def test_bench_quick_prints_its_table():
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--images", "4", "--device", "cpu",
                           "--threads", "1"],
                          cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("measurement"))
    assert lines[header].split() == ["measurement", "images", "seconds", "images/s", "ratio", "target", "met"]
    table = "\n".join(lines[header:])
    for stage in ("decode + eval transform, full-size", "decode + eval transform, prepared", "backbone forward",
                  "training epoch", "extraction: plain DataLoader(num_workers=2)",
                  "extraction: extract_features(extraction_loader)", "head on features"):
        assert stage in table, stage
    assert ">= 2.5x" in table and ">= 1.5x" in table
    assert "x vs full-size" in table and "x vs plain" in table
    assert "random weights" in done.stdout and "load average" in done.stdout


def test_freshly_extracted_features_train_a_head_in_stored_order(tiny_root, make_backbone, tmp_path):
    extracted = cache(make_backbone(), tiny_root, tmp_path)  # extracted now, not loaded from the cache
    head, history = train_head_on_features(extracted["train"], extracted["valid"], [8], epochs=2,
                                           batch_size=4, shuffle=False, device="cpu")
    assert len(history["epoch"]) == 2 and history["train_loss"][0] > 0
