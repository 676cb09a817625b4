"""helpers.features: the feature cache, FeatureBatches, heads trained on features, experiments.

The cache tests count how many images go through the backbone: a cache hit must run none, a
changed key must run the split again. Synthetic, well-separated features stand in for a
backbone's output elsewhere, so a head that trains properly *must* learn them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from helpers import features as features_module
from helpers.data import FlowerFolder, eval_transform
from helpers.features import (FeatureBatches, FeatureSet, Run, cached_features, run_variants,
                              summary_rows, train_head)
from helpers.model import Float32LogSoftmax, build_model
from helpers.train import best_epoch, evaluate, model_outputs

ALL_IMAGES = 3 * (2 + 1 + 1)  # the micro slice: 3 classes ("1", "10", "2"), 2 train + 1 valid + 1 test image each


class CountingBackbone(nn.Module):
    """Wraps a backbone and counts the images it sees, to tell a cache hit from a recomputation."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.images_seen = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.images_seen += len(images)
        return self.inner(images)


@pytest.fixture
def micro_copy(micro_root, tmp_path) -> Path:
    return Path(shutil.copytree(micro_root, tmp_path / "micro"))


def cache(backbone: nn.Module, root: Path, cache_dir: Path, **options) -> dict:
    """``cached_features`` quietly, on the CPU, without worker processes."""
    return cached_features(backbone, root, cache_dir=cache_dir, **{"device": "cpu", "num_workers": 0,
                                                                   "verbose": False, **options})


# --- the cache -----------------------------------------------------------------------------------

def test_a_matching_key_loads_without_running_the_backbone(micro_root, make_backbone, tmp_path):
    first = CountingBackbone(make_backbone())
    extracted = cache(first, micro_root, tmp_path)
    assert first.images_seen == ALL_IMAGES
    again = CountingBackbone(make_backbone())  # same weights, a new object
    loaded = cache(again, micro_root, tmp_path)
    assert again.images_seen == 0
    for split in ("train", "valid", "test"):
        assert torch.equal(loaded[split].features, extracted[split].features)
        assert torch.equal(loaded[split].labels, extracted[split].labels)
        assert loaded[split].classes == extracted[split].classes == ["1", "10", "2"]
    assert extracted["train"].features.shape == (6, 8) and extracted["train"].features.dtype == torch.float32
    assert extracted["train"].labels.tolist() == [0, 0, 1, 1, 2, 2]  # sorted by class
    assert sorted(path.suffix for path in tmp_path.iterdir()) == [".pt"] * 3  # no temporary files left


def test_the_extracted_features_are_those_of_the_plain_float_pipeline(micro_root, make_backbone, tmp_path):
    backbone = make_backbone()
    extracted = cache(backbone, micro_root, tmp_path)["valid"]
    plain = DataLoader(FlowerFolder(micro_root / "valid", eval_transform(None)), batch_size=5)
    expected, labels = model_outputs(backbone, plain, "cpu")
    assert torch.equal(extracted.labels, labels)
    assert torch.allclose(extracted.features, expected, atol=1e-4)


def test_a_classifier_is_reduced_to_its_backbone(micro_root, make_backbone, tmp_path):
    counting = CountingBackbone(make_backbone(features=8))
    model = build_model(counting, 6, [16], pretrained=False)
    counting.images_seen = 0  # build_model's one dummy image
    result = cache(model, micro_root, tmp_path)
    assert counting.images_seen == ALL_IMAGES
    assert result["valid"].features.shape == (3, 8)  # features, not the head's 6 class scores


def test_different_weights_recompute(micro_root, make_backbone, tmp_path):
    cache(CountingBackbone(make_backbone(seed=0)), micro_root, tmp_path)
    other = CountingBackbone(make_backbone(seed=1))
    cache(other, micro_root, tmp_path)
    assert other.images_seen == ALL_IMAGES


@pytest.mark.parametrize("change", ["edit", "add"])
def test_a_changed_or_added_file_recomputes_that_split_only(micro_copy, make_backbone, tmp_path, change):
    cache(CountingBackbone(make_backbone()), micro_copy, tmp_path / "cache")
    image = next((micro_copy / "train" / "1").glob("*.jpg"))
    if change == "edit":
        Image.new("RGB", (64, 64), (0, 0, 255)).save(image)
    else:
        Image.new("RGB", (64, 64), (0, 0, 255)).save(image.with_name("new.jpg"))
    backbone = CountingBackbone(make_backbone())
    result = cache(backbone, micro_copy, tmp_path / "cache")
    train_images = 6 + (change == "add")
    assert backbone.images_seen == train_images  # train again; valid and test still from the cache
    assert len(result["train"].labels) == train_images


def test_another_precision_recomputes(micro_root, make_backbone, tmp_path, monkeypatch):
    cache(CountingBackbone(make_backbone()), micro_root, tmp_path)
    monkeypatch.setattr(features_module, "autocast_dtype", lambda device: torch.bfloat16)
    backbone = CountingBackbone(make_backbone())
    cache(backbone, micro_root, tmp_path)
    assert backbone.images_seen == ALL_IMAGES


def test_a_cache_file_with_a_different_key_is_not_trusted(micro_root, make_backbone, tmp_path):
    cache(CountingBackbone(make_backbone()), micro_root, tmp_path)
    (path,) = tmp_path.glob("valid-*.pt")
    stored = torch.load(path, weights_only=True)
    stored["key"]["inputs"] = "something else"
    torch.save(stored, path)
    backbone = CountingBackbone(make_backbone())
    cache(backbone, micro_root, tmp_path)
    assert backbone.images_seen == 3  # the valid split only


def test_augmented_views_differ_and_are_cached_too(micro_root, make_backbone, tmp_path):
    plain = cache(CountingBackbone(make_backbone()), micro_root, tmp_path)
    result = cache(CountingBackbone(make_backbone()), micro_root, tmp_path, augmented_views=2)
    views = result["train_views"]
    assert len(views) == 2 and all(view.features.shape == (6, 8) for view in views)
    assert not torch.allclose(views[0].features, views[1].features)
    assert not torch.allclose(views[0].features, plain["train"].features)
    assert all(torch.equal(view.labels, plain["train"].labels) for view in views)
    assert torch.equal(result["train"].features, plain["train"].features)  # the plain view stays plain
    again = CountingBackbone(make_backbone())
    assert all(torch.equal(a.features, b.features)
               for a, b in zip(cache(again, micro_root, tmp_path, augmented_views=2)["train_views"], views))
    assert again.images_seen == 0


def test_negative_views_are_an_error(micro_root, make_backbone, tmp_path):
    with pytest.raises(ValueError, match="augmented_views"):
        cache(make_backbone(), micro_root, tmp_path, augmented_views=-1)


def test_dot_files_do_not_invalidate_the_cache(micro_copy, make_backbone, tmp_path):
    cache(CountingBackbone(make_backbone()), micro_copy, tmp_path / "cache")
    (micro_copy / "train" / "1" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    backbone = CountingBackbone(make_backbone())
    cache(backbone, micro_copy, tmp_path / "cache")
    assert backbone.images_seen == 0


class MaxPooled(nn.Module):
    """A custom backbone whose forward pools one way; a subclass pools another way with the same weights."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, stride=4)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images).amax(dim=(2, 3))


class MeanPooled(MaxPooled):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images).mean(dim=(2, 3))


def test_a_backbone_whose_code_changes_is_recomputed(micro_root, tmp_path):
    first = cache(MaxPooled(), micro_root, tmp_path)["valid"].features
    second = cache(MeanPooled(), micro_root, tmp_path)["valid"].features  # same weights, other pooling
    assert not torch.allclose(first, second)


def test_the_seed_reaches_the_loader_workers(micro_root, make_backbone, tmp_path):
    def views(seed: int) -> torch.Tensor:
        return cache(make_backbone(), micro_root, tmp_path / f"cache-{seed}", augmented_views=1, num_workers=1,
                     seed=seed)["train_views"][0].features

    assert not torch.allclose(views(0), views(1))
    assert torch.equal(views(1), cache(make_backbone(), micro_root, tmp_path / "again", augmented_views=1,
                                       num_workers=1, seed=1)["train_views"][0].features)


# --- FeatureBatches --------------------------------------------------------------------------------

def numbered(n: int, offset: float = 0.0) -> FeatureSet:
    """Features that say which example they are: row i is [i + offset], label i."""
    return FeatureSet(torch.arange(n, dtype=torch.float32).view(n, 1) + offset, torch.arange(n), ["x"])


def test_feature_batches_keep_the_stored_order_unless_shuffled():
    batches = FeatureBatches(numbered(10), batch_size=4, shuffle=False)
    assert len(batches) == 3
    for _ in range(2):  # every pass the same
        assert [labels.tolist() for _, labels in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_feature_batches_shuffle_anew_every_pass():
    batches = FeatureBatches(numbered(20), batch_size=8, shuffle=True, seed=3)
    orders = []
    for _ in range(2):
        passed = list(batches)
        assert [len(labels) for _, labels in passed] == [8, 8, 4]
        assert all(torch.equal(x.view(-1), y.float()) for x, y in passed)  # features stay with their labels
        orders.append(torch.cat([labels for _, labels in passed]).tolist())
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(20))
    assert orders[0] != list(range(20)) and orders[0] != orders[1]
    again = FeatureBatches(numbered(20), batch_size=8, shuffle=True, seed=3)
    assert [torch.cat([y for _, y in again]).tolist() for _ in range(2)] == orders  # the seed repeats it


def test_feature_batches_use_the_next_view_each_pass():
    batches = FeatureBatches([numbered(6), numbered(6, offset=100), numbered(6, offset=200)], batch_size=6,
                             shuffle=False)
    firsts = [next(iter(batches))[0][0].item() for _ in range(4)]
    assert firsts == [0.0, 100.0, 200.0, 0.0]


# --- heads on features -----------------------------------------------------------------------------

def separable(n: int, features: int = 16, classes: int = 4, seed: int = 0) -> FeatureSet:
    """An easy problem: each class is a cluster around its own random centre."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, features, generator=torch.Generator().manual_seed(99)) * 3
    labels = torch.arange(n) % classes
    return FeatureSet(centres[labels] + torch.randn(n, features, generator=generator), labels,
                      [str(c) for c in range(classes)])


def test_a_head_learns_separable_features():
    head, history = train_head(FeatureBatches(separable(128), 16), separable(64, seed=1), [16], 0.2, lr=0.01,
                               epochs=10)
    assert history["valid_accuracy"][-1] >= 0.9  # chance is 0.25
    assert len(history["train_eval_accuracy"]) == 10 and history["train_eval_accuracy"][-1] >= 0.9
    assert not head.training and next(head.parameters()).device.type == "cpu"
    log_probs = head(separable(32, seed=2).features)
    assert torch.allclose(log_probs.exp().sum(dim=1), torch.ones(32), atol=1e-5)


def test_features_from_the_cache_train_a_head(tiny_root, make_backbone, tmp_path):
    extracted = cache(make_backbone(), tiny_root, tmp_path)
    head, history = train_head(FeatureBatches(extracted["train"], 4), extracted["valid"], [8], epochs=2)
    assert history["epoch"] == [1, 2] and head.output.out_features == 6 and len(extracted["train"].labels) == 24


def test_same_seed_same_result_and_another_seed_differs():
    def run(seed: int) -> dict:
        return train_head(separable(96), separable(32, seed=1), [8], 0.3, 0.01, epochs=2, seed=seed)[1]
    first, again, other = run(0), run(0), run(1)
    for key in ("train_loss", "train_accuracy", "train_eval_loss", "valid_loss", "valid_accuracy"):
        assert first[key] == again[key]
    assert first["train_loss"] != other["train_loss"]


def test_views_are_used_one_per_epoch():
    views = [separable(64, seed=0), separable(64, seed=5)]
    plain, valid = separable(64, seed=7), separable(32, seed=1)
    options = {"hidden_units": [8], "dropout": 0.0, "lr": 0.01, "epochs": 2}
    _, with_views = train_head(FeatureBatches(views, 64, shuffle=False), valid, train_eval=plain, **options)
    _, first_only = train_head(FeatureBatches(views[0], 64, shuffle=False), valid, train_eval=plain, **options)
    assert with_views["train_loss"][0] == first_only["train_loss"][0]  # epoch 1 uses view 0 in both
    assert with_views["train_loss"][1] != first_only["train_loss"][1]  # epoch 2: view 1 versus view 0 again


def test_training_accuracy_is_measured_on_the_plain_features():
    views, plain, valid = [separable(64, seed=0), separable(64, seed=5)], separable(48, seed=7), separable(32, seed=1)
    head, history = train_head(FeatureBatches(views, 16), valid, [8], 0.0, 0.01, epochs=2, train_eval=plain)
    kept = best_epoch(history) - 1  # the head returned has the best epoch's weights
    on_plain = evaluate(head, FeatureBatches(plain, 64, shuffle=False), device="cpu")
    on_view = evaluate(head, FeatureBatches(views[0], 64, shuffle=False), device="cpu")
    assert history["train_eval_loss"][kept] == pytest.approx(on_plain["loss"], rel=1e-5)
    assert history["train_eval_loss"][kept] != pytest.approx(on_view["loss"], rel=1e-3)
    with pytest.raises(ValueError, match="train_eval"):  # several views and nothing plain to measure on
        train_head(views, valid, [8], epochs=1)


def test_shuffle_false_trains_on_the_stored_order():
    train = separable(64)
    order = torch.argsort(train.labels, stable=True)  # sorted by class, as the cache stores it
    ordered = FeatureSet(train.features[order], train.labels[order], train.classes)
    options = {"hidden_units": [8], "dropout": 0.0, "lr": 0.05, "epochs": 2}
    sorted_batches = FeatureBatches(ordered, 16, shuffle=False)
    unshuffled = train_head(sorted_batches, separable(32, seed=1), **options)[1]
    unshuffled["seconds"] = None
    again = train_head(sorted_batches, separable(32, seed=1), **options)[1]  # the same batches again: a fresh pass
    again["seconds"] = None
    shuffled = train_head(FeatureBatches(ordered, 16, shuffle=True), separable(32, seed=1), **options)[1]
    assert unshuffled == again
    assert unshuffled["train_loss"] != shuffled["train_loss"]


def test_no_hidden_layer_is_a_linear_classifier():
    head, history = train_head(separable(32), separable(16, seed=1), [], 0.0, 0.01, epochs=1)
    assert [type(layer) for layer in head] == [nn.Linear, Float32LogSoftmax] and len(history["epoch"]) == 1


# --- experiments -----------------------------------------------------------------------------------

CLASSES, PER_CLASS, FEATURES = 3, 10, 16


def clusters(per_class: int = PER_CLASS, seed: int = 0) -> FeatureSet:
    """Features sorted by class, each class a tight cloud around its own far-away centre."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(CLASSES).repeat_interleave(per_class)
    features = torch.eye(CLASSES, FEATURES)[labels] * 6 + 0.3 * torch.randn(len(labels), FEATURES, generator=generator)
    return FeatureSet(features, labels, [str(c) for c in range(CLASSES)])


def test_run_variants_overrides_common_settings_and_counts_parameters():
    runs = run_variants(clusters(), clusters(4, seed=1), {"none": {"hidden_units": []}, "one": {"hidden_units": [8]}},
                        epochs=3, dropout=0.0)
    assert list(runs) == ["none", "one"]
    assert runs["none"].parameters == FEATURES * CLASSES + CLASSES
    assert runs["one"].parameters == (FEATURES * 8 + 8) + (8 * CLASSES + CLASSES)
    assert runs["one"].config == {"epochs": 3, "dropout": 0.0, "hidden_units": [8]}
    assert runs["one"].history["epoch"] == [1, 2, 3]


def test_run_variants_can_train_a_variant_on_its_own_training_set():
    train = clusters()
    small = FeatureSet(train.features[::PER_CLASS], train.labels[::PER_CLASS], train.classes)  # one per class
    runs = run_variants(clusters(), clusters(4, seed=1), {"all": {}, "small": {"train": small}}, epochs=1, lr=0.01)
    assert "train" not in runs["small"].config
    # different data, different evaluation-mode training accuracy denominators and losses
    assert runs["all"].history["train_loss"] != runs["small"].history["train_loss"]


def test_run_variants_needs_at_least_one_variant():
    with pytest.raises(ValueError, match="variants"):
        run_variants(clusters(), clusters(4, seed=1), {})


def fake_run(while_training, eval_mode, valid) -> Run:
    epochs = list(range(1, len(valid) + 1))
    history = {"epoch": epochs, "train_loss": [1.0] * len(epochs), "valid_loss": [1.0] * len(epochs),
               "train_accuracy": while_training, "train_eval_accuracy": eval_mode, "valid_accuracy": valid,
               "seconds": [0.1] * len(epochs)}
    return Run({}, history, [history], 1234, 0.5)


def test_summary_rows_report_final_best_and_the_evaluation_mode_gap():
    rows = summary_rows({"a": fake_run([0.4, 0.6, 0.7], [0.5, 0.9, 1.0], [0.4, 0.8, 0.75])})
    assert rows == [{"run": "a", "final valid accuracy": 0.75, "spread (final valid)": 0.0, "best valid accuracy": 0.8,
                     "train accuracy": 1.0, "gap (train - valid)": pytest.approx(0.25),
                     "parameters": 1234, "seconds": 0.5}]


def test_summary_rows_average_over_seeds_and_show_their_spread():
    one, other = fake_run([0.5], [1.0], [0.7]), fake_run([0.5], [0.9], [0.8])
    runs = {"a": Run({}, one.history, [one.history, other.history], 10, 0.5)}
    row = summary_rows(runs)[0]
    assert row["final valid accuracy"] == pytest.approx(0.75) and row["spread (final valid)"] == pytest.approx(0.1)
    assert row["gap (train - valid)"] == pytest.approx(0.2)


def test_run_variants_trains_every_seed_and_keeps_the_first_seeds_curves():
    runs = run_variants(clusters(), clusters(4, seed=1), {"one": {"hidden_units": [8]}}, seeds=(0, 1, 2),
                        epochs=2, lr=0.01)
    histories = runs["one"].histories
    assert len(histories) == 3 and runs["one"].history is histories[0]
    assert histories[0]["train_loss"] != histories[1]["train_loss"]  # another seed, another start
    alone = train_head(clusters(), clusters(4, seed=1), [8], lr=0.01, epochs=2, seed=1)[1]
    assert alone["train_loss"] == histories[1]["train_loss"]  # each seed's run is the run train_head gives
