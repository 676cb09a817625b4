"""helpers.data: transforms, the layout check, datasets and loaders, cat_to_name, ensure_dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import RandomSampler, SequentialSampler
from torchvision import transforms

from helpers.config import get_settings
from helpers.data import (IMAGENET_MEAN, IMAGENET_STD, check_layout, default_num_workers, ensure_dataset,
                          eval_transform, load_cat_to_name, make_datasets, make_loaders, resize_size,
                          train_transform)

TEXT_ORDER = ["1", "10", "100", "11", "2", "21"]  # ImageFolder sorts folder names as text
RANDOM_STEPS = (transforms.RandomAffine, transforms.RandomHorizontalFlip, transforms.ColorJitter)


def loaders_for(root: Path, **kwargs):
    return make_loaders(root, batch_size=kwargs.pop("batch_size", 4), num_workers=kwargs.pop("num_workers", 0),
                        image_size=64, device="cpu", **kwargs)


def is_random(transform: transforms.Compose) -> bool:
    return any(isinstance(step, RANDOM_STEPS) for step in transform.transforms)


# --- transforms -------------------------------------------------------------------------------

def test_resize_size_keeps_the_classic_ratio():
    assert resize_size(224) == 256
    assert resize_size(64) == 73


def test_eval_transform_gives_a_normalised_tensor_of_the_right_size():
    image = Image.new("RGB", (100, 80), (124, 116, 104))  # about the ImageNet mean colour
    tensor = eval_transform(64)(image)
    assert tensor.shape == (3, 64, 64)
    assert tensor.abs().max() < 0.05  # mean colour -> about 0 after normalisation
    white = eval_transform(64)(Image.new("RGB", (80, 80), (255, 255, 255)))
    expected = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    assert torch.allclose(white[:, 0, 0], expected, atol=1e-5)
    assert not is_random(eval_transform(64))


def test_train_transform_is_random_and_strength_zero_is_the_eval_pipeline():
    assert is_random(train_transform(64))
    assert train_transform(64, strength=0).transforms.__repr__() == eval_transform(64).transforms.__repr__()
    assert not any(isinstance(step, transforms.ColorJitter) for step in train_transform(64, colour=False).transforms)
    image = Image.radial_gradient("L").convert("RGB")
    torch.manual_seed(0)
    augmented = [train_transform(64)(image) for _ in range(2)]
    assert augmented[0].shape == (3, 64, 64)
    assert not torch.equal(augmented[0], augmented[1])


@pytest.mark.parametrize("strength", [-0.1, 2.5])
def test_train_transform_rejects_strength_out_of_range(strength):
    with pytest.raises(ValueError, match="strength"):
        train_transform(64, strength=strength)


# --- loaders on the tiny slice ----------------------------------------------------------------

def test_loaders_shapes_and_sizes(tiny_root):
    loaders = loaders_for(tiny_root)
    assert set(loaders) == {"train", "valid", "test"}
    assert [len(loaders[s].dataset) for s in ("train", "valid", "test")] == [24, 12, 12]
    images, labels = next(iter(loaders["valid"]))
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.float32
    assert labels.shape == (4,) and labels.dtype == torch.int64


def test_class_list_comes_from_train_and_is_sorted_as_text(tiny_root):
    loaders = loaders_for(tiny_root)
    for loader in loaders.values():
        assert loader.dataset.classes == TEXT_ORDER
        assert loader.dataset.class_to_idx == {name: i for i, name in enumerate(TEXT_ORDER)}
    assert check_layout(tiny_root) == TEXT_ORDER


def test_only_train_is_shuffled(tiny_root):
    loaders = loaders_for(tiny_root)
    assert isinstance(loaders["train"].sampler, RandomSampler)
    assert isinstance(loaders["valid"].sampler, SequentialSampler)
    assert isinstance(loaders["test"].sampler, SequentialSampler)
    assert isinstance(loaders_for(tiny_root, shuffle=False)["train"].sampler, SequentialSampler)
    labels = torch.cat([labels for _, labels in loaders["test"]]).tolist()
    assert labels == sorted(labels)  # unshuffled: class after class


def test_only_train_is_augmented(tiny_root):
    loaders = loaders_for(tiny_root, augment=True)
    assert is_random(loaders["train"].dataset.transform)
    assert not is_random(loaders["valid"].dataset.transform)
    assert not is_random(loaders["test"].dataset.transform)
    assert not is_random(loaders_for(tiny_root, augment=False)["train"].dataset.transform)
    # And in behaviour: the same valid image twice is identical, the same train image is not.
    valid, train = loaders["valid"].dataset, loaders["train"].dataset
    assert torch.equal(valid[0][0], valid[0][0])
    torch.manual_seed(0)
    assert not torch.equal(train[0][0], train[0][0])


def test_seeded_loaders_repeat_the_shuffling_order(tiny_root):
    def order(seed):
        loader = loaders_for(tiny_root, seed=seed, augment=False, batch_size=24)
        return torch.cat([labels for _, labels in loader["train"]]).tolist()
    assert order(1) == order(1)
    assert order(1) != order(2)


def test_batch_size_must_be_positive(tiny_root):
    with pytest.raises(ValueError, match="batch_size"):
        make_loaders(tiny_root, batch_size=0)


@pytest.mark.parametrize("cores, device, expected", [(2, "cpu", 0), (1, "cpu", 0), (8, "cpu", 4), (16, "cpu", 4),
                                                     (2, "cuda", 2), (16, "cuda", 8)])
def test_default_num_workers(monkeypatch, cores, device, expected):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert default_num_workers(device) == expected


def test_num_workers_none_picks_the_default(tiny_root, monkeypatch):
    monkeypatch.setattr("helpers.data.default_num_workers", lambda device: 0)
    assert make_loaders(tiny_root, num_workers=None, image_size=64, device="cpu")["train"].num_workers == 0


# --- bad layouts ------------------------------------------------------------------------------

def test_dot_folders_are_not_classes(tiny_copy):
    for split in ("train", "valid"):
        hidden = tiny_copy / split / ".ipynb_checkpoints"
        hidden.mkdir()
        shutil.copy(tiny_copy / split / "1" / f"{split}_000.jpg", hidden / "copy.jpg")
    (tiny_copy / "test" / ".cache").mkdir()
    loaders = loaders_for(tiny_copy)
    assert loaders["train"].dataset.classes == TEXT_ORDER
    assert len(loaders["train"].dataset) == 24


def test_dot_files_and_dot_folders_inside_a_class_are_skipped(tiny_copy):
    class_dir = tiny_copy / "train" / "1"
    (class_dir / "._train_000.jpg").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (class_dir / ".ipynb_checkpoints").mkdir()
    (class_dir / ".ipynb_checkpoints" / "broken.jpg").write_bytes(b"not a picture")
    dataset = loaders_for(tiny_copy)["train"].dataset
    assert len(dataset) == 24
    assert all(".ipynb" not in path and "._" not in path for path, _ in dataset.samples)
    for index in range(len(dataset)):
        dataset[index]  # every sample loads


def test_a_class_missing_from_valid_is_listed(tiny_copy):
    shutil.rmtree(tiny_copy / "valid" / "21")
    with pytest.raises(ValueError) as error:
        loaders_for(tiny_copy)
    message = str(error.value)
    assert str(tiny_copy / "valid") in message and "missing ['21']" in message and "extra none" in message


def test_an_extra_class_in_test_is_listed(tiny_copy):
    (tiny_copy / "test" / "999").mkdir()
    shutil.copy(tiny_copy / "test" / "1" / "test_000.jpg", tiny_copy / "test" / "999" / "x.jpg")
    shutil.rmtree(tiny_copy / "test" / "2")
    with pytest.raises(ValueError) as error:
        loaders_for(tiny_copy)
    message = str(error.value)
    assert str(tiny_copy / "test") in message and "missing ['2']" in message and "extra ['999']" in message


def test_root_without_train_names_the_root_and_the_layout(tiny_copy):
    shutil.rmtree(tiny_copy / "train")
    with pytest.raises(FileNotFoundError) as error:
        loaders_for(tiny_copy)
    assert str(tiny_copy) in str(error.value) and "train/" in str(error.value)
    assert "Expected layout" in str(error.value)


def test_missing_root_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="Expected layout") as error:
        loaders_for(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(error.value)


def test_split_without_class_folders(tiny_copy):
    valid = tiny_copy / "valid"
    for image in list(valid.rglob("*.jpg")):
        image.rename(valid / f"{image.parent.name}_{image.name}")  # images straight in valid/
    for folder in [p for p in valid.iterdir() if p.is_dir()]:
        folder.rmdir()
    (valid / ".ipynb_checkpoints").mkdir()  # a dot-folder does not count as a class either
    with pytest.raises(FileNotFoundError) as error:
        loaders_for(tiny_copy)
    assert str(valid) in str(error.value) and "Expected layout" in str(error.value)


def test_empty_class_folder_names_the_folder(tiny_copy):
    empty = tiny_copy / "train" / "2"
    for image in empty.iterdir():
        image.unlink()
    (empty / ".DS_Store").write_bytes(b"")  # hidden files are not images
    with pytest.raises(ValueError) as error:
        loaders_for(tiny_copy)
    assert str(empty) in str(error.value) and "Expected layout" in str(error.value)


def test_make_datasets_matches_make_loaders(tiny_root):
    sets = make_datasets(tiny_root, augment=False, image_size=64)
    assert [len(sets[s]) for s in ("train", "valid", "test")] == [24, 12, 12]
    assert sets["train"][0][0].shape == (3, 64, 64)


# --- cat_to_name and ensure_dataset -----------------------------------------------------------

def test_load_cat_to_name_from_file_or_folder(tiny_root):
    names = load_cat_to_name(tiny_root / "cat_to_name.json")
    assert names == load_cat_to_name(tiny_root)
    assert names["1"] == "red five-petal" and set(names) == set(TEXT_ORDER)


def test_load_cat_to_name_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="cat_to_name.json"):
        load_cat_to_name(tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        load_cat_to_name(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(["pink primrose"]))
    with pytest.raises(ValueError, match="wrong.json"):
        load_cat_to_name(wrong)


def test_ensure_dataset_generates_the_tiny_slice(tmp_path):
    settings = get_settings({"FLOWERS_TINY": "1", "FLOWERS_DATA_ROOT": str(tmp_path), "FLOWERS_DEVICE": "cpu"})
    root = ensure_dataset(settings)
    assert root == tmp_path / "tiny"
    assert check_layout(root) == TEXT_ORDER
    assert len(list((root / "train").rglob("*.jpg"))) == 48


def test_ensure_dataset_full_data_offline_says_what_to_do(tmp_path, no_network, hang_guard):
    settings = get_settings({"FLOWERS_DATA_ROOT": str(tmp_path), "FLOWERS_DEVICE": "cpu"})
    with hang_guard(60), pytest.raises(Exception) as error:
        ensure_dataset(settings)
    assert type(error.value).__name__ == "OfflineError"
    assert str(tmp_path / "downloads" / "flowers-102") in str(error.value)
    assert "FLOWERS_TINY=1" in str(error.value)


def test_ensure_dataset_uses_an_own_folder_after_checking_it(tmp_path, tiny_root, no_network):
    settings = get_settings({"FLOWERS_DATASET_DIR": str(tiny_root), "FLOWERS_DEVICE": "cpu"})
    assert ensure_dataset(settings) == tiny_root and no_network == []
    (tmp_path / "mine").mkdir()
    broken = get_settings({"FLOWERS_DATASET_DIR": str(tmp_path / "mine"), "FLOWERS_DEVICE": "cpu"})
    with pytest.raises(FileNotFoundError, match="has no train/ folder"):
        ensure_dataset(broken)
