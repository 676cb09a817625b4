"""helpers.data: images (broken files named, every mode as upright RGB), transforms, layouts, loaders."""

from __future__ import annotations

import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from PIL import Image
from torch.utils.data import RandomSampler, SequentialSampler
from torchvision import transforms

from helpers.data import (IMAGENET_MEAN, IMAGENET_STD, BadImageError, FlowerFolder, check_layout, eval_transform,
                          load_cat_to_name, load_rgb_image, make_loaders, preprocessing, to_rgb, train_transform,
                          verify_images)

TEXT_ORDER = ["1", "10", "100", "11", "2", "21"]  # ImageFolder sorts folder names as text
RANDOM_STEPS = (transforms.RandomAffine, transforms.RandomHorizontalFlip, transforms.ColorJitter)
# The tiny slice's 64 px images as they are: fast, and enough to test the loaders themselves.
PLAIN = transforms.Compose([transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def loaders_for(root: Path, **kwargs):
    options = {"batch_size": 4, "train_tf": PLAIN, "eval_tf": PLAIN, "num_workers": 0, "device": "cpu", **kwargs}
    return make_loaders(root, **options)


def is_random(transform: transforms.Compose) -> bool:
    return any(isinstance(step, RANDOM_STEPS) for step in transform.transforms)


def jpeg_bytes(size=(64, 48), seed=0) -> bytes:
    pixels = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_bad_files(folder: Path) -> dict[str, str]:
    """Write one file of each broken kind into ``folder``; return name -> a word its error must contain."""
    good = jpeg_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("these are my notes, not a photo\n")
    (folder / "corrupt.jpg").write_bytes(good[:2] + bytes(range(256)) * 8)  # JPEG start, garbage after
    return {"truncated.jpg": "truncated", "empty.jpg": "empty", "notes.jpg": "not an image", "corrupt.jpg": ""}


def saved(folder: Path, image: Image.Image, name: str, **kwargs) -> Path:
    path = folder / name
    image.save(path, **kwargs)
    return path


# --- broken images: found and named ------------------------------------------------------------

def test_verify_images_finds_and_names_every_broken_file(tiny_copy):
    folder = tiny_copy / "train" / "10"
    expected = write_bad_files(folder)
    problems = verify_images(tiny_copy)
    assert len(problems) == len(expected)
    for name, word in expected.items():
        (line,) = [line for line in problems if str(folder / name) in line]
        assert word in line


def test_verify_images_on_clean_data_is_empty(tiny_root):
    assert verify_images(tiny_root) == []


def test_verify_images_skips_dot_files_and_dot_folders(tiny_copy):
    write_bad_files(tiny_copy / "train" / ".ipynb_checkpoints")
    (tiny_copy / "train" / "1" / "._train_000.jpg").write_bytes(b"resource fork")
    assert verify_images(tiny_copy) == []


def test_verify_images_on_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        verify_images(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["truncated.jpg", "empty.jpg", "notes.jpg", "corrupt.jpg"])
def test_load_rgb_image_error_names_the_file(tmp_path, name):
    expected = write_bad_files(tmp_path)
    with pytest.raises(BadImageError) as error:
        load_rgb_image(tmp_path / name)
    assert str(tmp_path / name) in str(error.value) and expected[name] in str(error.value)
    assert "verify_images" in str(error.value)  # the way to find the others




def test_a_phones_heic_photo_names_the_file_and_the_format(tmp_path):
    photo = tmp_path / "IMG_0001.HEIC"
    photo.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00")  # the start of a HEIC file
    with pytest.raises(BadImageError) as error:
        load_rgb_image(photo)
    assert str(photo) in str(error.value) and "HEIC" in str(error.value)


def test_an_image_over_the_size_limit_names_the_file(tmp_path, monkeypatch):
    path = saved(tmp_path, Image.new("RGB", (64, 64), (10, 200, 10)), "huge.png")
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 500)  # 4,096 pixels: over twice the limit
    with pytest.raises(BadImageError) as error:
        load_rgb_image(path)
    assert str(path) in str(error.value) and "MAX_IMAGE_PIXELS" in str(error.value)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 10_000)
    assert load_rgb_image(path).size == (64, 64)


def test_missing_file_and_folder_are_told_apart(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_rgb_image(tmp_path / "missing.jpg")
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        load_rgb_image(tmp_path)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_broken_image_in_a_dataloader_names_the_file(tiny_copy, hang_guard, workers):
    broken = tiny_copy / "valid" / "2" / "valid_001.jpg"
    broken.write_bytes(broken.read_bytes()[:300])
    loaders = loaders_for(tiny_copy, num_workers=workers)
    batches = iter(loaders["valid"])
    with hang_guard(60), pytest.raises(Exception) as error:
        for _ in batches:
            pass
    # torch's worker shutdown after a worker error waits 5 s per worker; end them now (speed only).
    for worker in getattr(batches, "_workers", []):
        worker.terminate()
    assert str(broken) in str(error.value)
    assert isinstance(error.value, BadImageError)


# --- every image mode becomes RGB --------------------------------------------------------------

def test_grayscale_becomes_rgb(tmp_path):
    path = saved(tmp_path, Image.new("L", (30, 20), 77), "gray.jpg")
    image = load_rgb_image(path)
    assert image.mode == "RGB" and image.size == (30, 20)
    assert np.abs(np.asarray(image).astype(int) - 77).max() <= 2


def test_palette_keeps_its_colours(tmp_path):
    rgb = Image.new("RGB", (20, 20), (200, 30, 40))
    path = saved(tmp_path, rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4), "palette.png")
    with Image.open(path) as check:
        assert check.mode == "P"
    image = load_rgb_image(path)
    assert image.mode == "RGB" and image.getpixel((5, 5)) == (200, 30, 40)


def test_palette_with_transparency_gets_a_white_background(tmp_path):
    palette = Image.new("P", (20, 20), 0)
    palette.putpalette([0, 0, 0, 200, 30, 40] + [0] * (254 * 3))
    palette.paste(1, (10, 0, 20, 20))
    path = saved(tmp_path, palette, "transparent.png", transparency=0)
    with Image.open(path) as check:
        assert check.mode == "P" and "transparency" in check.info
    image = load_rgb_image(path)
    assert image.mode == "RGB"
    assert image.getpixel((2, 2)) == (255, 255, 255)  # transparent black -> white, not black
    assert image.getpixel((15, 2)) == (200, 30, 40)


def test_rgba_png_gets_a_white_background(tmp_path):
    rgba = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    rgba.paste((10, 120, 10, 255), (0, 0, 10, 20))
    image = load_rgb_image(saved(tmp_path, rgba, "rgba.png"))
    assert image.mode == "RGB"
    assert image.getpixel((15, 5)) == (255, 255, 255)
    assert image.getpixel((5, 5)) == (10, 120, 10)


def test_grayscale_with_alpha_gets_a_white_background(tmp_path):
    la = Image.new("LA", (20, 20), (0, 0))
    la.paste((40, 255), (0, 0, 10, 20))
    image = load_rgb_image(saved(tmp_path, la, "la.png"))
    assert image.mode == "RGB"
    assert image.getpixel((15, 5)) == (255, 255, 255) and image.getpixel((5, 5)) == (40, 40, 40)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    path = saved(tmp_path, Image.fromarray(values), "deep.png")
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    pixels = np.asarray(load_rgb_image(path))
    assert pixels.min() == 0 and pixels.max() == 255  # the whole range survives
    assert len(np.unique(pixels[..., 0])) > 100  # not clipped to a few values


@pytest.mark.parametrize("mode, values", [("I", np.arange(64, dtype=np.int32) * 1000),
                                          ("F", np.linspace(-3.0, 7.0, 64, dtype=np.float32))])
def test_32_bit_integer_and_float_images_are_scaled(mode, values):
    original = Image.fromarray(values.reshape(8, 8))
    assert original.mode == mode
    image = to_rgb(original)
    pixels = np.asarray(image)
    assert image.mode == "RGB" and pixels.min() == 0 and pixels.max() == 255
    assert np.array_equal(pixels[..., 0], pixels[..., 2])  # grey, not tinted
    assert len(np.unique(pixels[..., 0])) == 64


def test_cmyk_jpeg_keeps_its_colour(tmp_path):
    path = saved(tmp_path, Image.new("RGB", (16, 16), (200, 30, 40)).convert("CMYK"), "print.jpg", quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    image = load_rgb_image(path)
    assert image.mode == "RGB"
    assert np.abs(np.asarray(image).astype(int) - (200, 30, 40)).max() <= 8


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "CMYK", "I", "I;16", "F", "RGBA", "RGB"])
def test_to_rgb_handles_every_mode(mode):
    image = to_rgb(Image.new(mode, (8, 6)))
    assert image.mode == "RGB" and image.size == (8, 6)


# --- EXIF orientation --------------------------------------------------------------------------

def two_colour_image() -> Image.Image:
    """60 x 40 px: left half red, right half blue, so a rotation is easy to see."""
    image = Image.new("RGB", (60, 40), (220, 20, 20))
    image.paste((20, 20, 220), (30, 0, 60, 40))
    return image


@pytest.mark.parametrize("orientation, stored_as", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270),
                                                    (3, Image.Transpose.ROTATE_180)])
def test_exif_rotated_photo_is_loaded_as_a_person_sees_it(tmp_path, orientation, stored_as):
    exif = Image.Exif()
    exif[0x0112] = orientation  # the camera says: turn the stored pixels to show them
    path = saved(tmp_path, two_colour_image().transpose(stored_as), "photo.jpg", exif=exif, quality=95)
    image = load_rgb_image(path)
    assert image.size == (60, 40)
    assert image.getpixel((5, 20))[0] > 150 and image.getpixel((55, 20))[2] > 150  # red left, blue right



# --- transforms follow the backbone ------------------------------------------------------------

def steps(transform: transforms.Compose, kind: type) -> list:
    return [step for step in transform.transforms if isinstance(step, kind)]


def test_preprocessing_of_no_backbone_is_the_classic_256_224():
    p = preprocessing(None)
    assert (p["resize"], p["crop"], p["interpolation"]) == (256, 224, transforms.InterpolationMode.BILINEAR)
    assert (p["mean"], p["std"]) == (IMAGENET_MEAN, IMAGENET_STD)


@pytest.mark.parametrize("backbone, resize, interpolation", [
    ("resnet18", 256, transforms.InterpolationMode.BILINEAR),
    ("resnet50", 232, transforms.InterpolationMode.BILINEAR),
    ("efficientnet_b0", 256, transforms.InterpolationMode.BICUBIC),
])
def test_eval_transform_follows_the_backbone_preset(backbone, resize, interpolation):
    (resize_step,) = steps(eval_transform(backbone), transforms.Resize)
    assert resize_step.size in (resize, [resize]) and resize_step.interpolation == interpolation
    (crop,) = steps(eval_transform(backbone), transforms.CenterCrop)
    assert tuple(crop.size) == (224, 224)
    (train_resize,) = steps(train_transform(backbone), transforms.Resize)
    assert train_resize.size in (resize, [resize]) and train_resize.interpolation == interpolation


def test_eval_transform_gives_a_normalised_tensor():
    tensor = eval_transform(None)(Image.new("RGB", (100, 80), (124, 116, 104)))  # about the ImageNet mean colour
    assert tensor.shape == (3, 224, 224) and tensor.dtype == torch.float32
    assert tensor.abs().max() < 0.05
    white = eval_transform(None)(Image.new("RGB", (80, 80), (255, 255, 255)))
    expected = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    assert torch.allclose(white[:, 0, 0], expected, atol=1e-5)
    assert not is_random(eval_transform(None))






def test_train_transform_is_random_and_strength_zero_is_the_eval_pipeline():
    assert is_random(train_transform(None))
    assert repr(train_transform(None, strength=0)) == repr(eval_transform(None))
    image = Image.radial_gradient("L").convert("RGB")
    torch.manual_seed(0)
    augmented = [train_transform(None)(image) for _ in range(2)]
    assert augmented[0].shape == (3, 224, 224)
    assert not torch.equal(augmented[0], augmented[1])


@pytest.mark.parametrize("strength", [-0.1, 2.5])
def test_train_transform_rejects_strength_out_of_range(strength):
    with pytest.raises(ValueError, match="strength"):
        train_transform(None, strength=strength)


# --- loaders on the tiny slice -----------------------------------------------------------------

def test_loaders_shapes_and_sizes(tiny_root):
    loaders = loaders_for(tiny_root)
    assert set(loaders) == {"train", "valid", "test", "train_eval"}
    assert [len(loaders[s].dataset) for s in ("train", "valid", "test", "train_eval")] == [24, 12, 12, 12]
    images, labels = next(iter(loaders["valid"]))
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.float32
    assert labels.shape == (4,) and labels.dtype == torch.int64


def test_default_transforms_are_resnet18s(tiny_root):
    loaders = make_loaders(tiny_root, batch_size=2, num_workers=0)
    assert repr(loaders["valid"].dataset.transform) == repr(eval_transform("resnet18"))
    assert repr(loaders["train"].dataset.transform) == repr(train_transform("resnet18"))
    assert next(iter(loaders["test"]))[0].shape == (2, 3, 224, 224)


def test_class_list_comes_from_train_and_is_sorted_as_text(tiny_root):
    loaders = loaders_for(tiny_root)
    for split in ("train", "valid", "test"):
        assert loaders[split].dataset.classes == TEXT_ORDER
        assert loaders[split].dataset.class_to_idx == {name: i for i, name in enumerate(TEXT_ORDER)}
    assert check_layout(tiny_root) == TEXT_ORDER
    # text order is the index order: the images of folder "100" carry label 2, not 99 or 3
    dataset = loaders["train"].dataset
    assert {Path(path).parent.name for path, label in dataset.samples if label == 2} == {"100"}


def test_only_train_is_shuffled(tiny_root):
    loaders = loaders_for(tiny_root)
    assert isinstance(loaders["train"].sampler, RandomSampler)
    for split in ("valid", "test", "train_eval"):
        assert isinstance(loaders[split].sampler, SequentialSampler)
    assert isinstance(loaders_for(tiny_root, shuffle=False)["train"].sampler, SequentialSampler)
    labels = torch.cat([labels for _, labels in loaders["test"]]).tolist()
    assert labels == sorted(labels)  # unshuffled: class after class


def test_only_train_is_augmented(tiny_root):
    loaders = make_loaders(tiny_root, batch_size=4, num_workers=0)
    assert is_random(loaders["train"].dataset.transform)
    for split in ("valid", "test"):
        assert not is_random(loaders[split].dataset.transform)
    # And in behaviour: the same valid or train_eval image twice is identical, the same train image is not.
    for split in ("valid", "train_eval"):
        dataset = loaders[split].dataset
        assert torch.equal(dataset[0][0], dataset[0][0])
    train = loaders["train"].dataset
    torch.manual_seed(0)
    assert not torch.equal(train[0][0], train[0][0])


def test_train_eval_is_a_fixed_sample_of_the_training_images(tiny_root):
    loaders = loaders_for(tiny_root)
    sample = loaders["train_eval"].dataset
    train = loaders["train"].dataset
    # Half of a small training set (1,000 images of a large one), in stored order, the same every time.
    assert sample.indices == sorted(sample.indices) and len(set(sample.indices)) == len(train) // 2
    assert sample.indices == loaders_for(tiny_root)["train_eval"].dataset.indices
    assert sample.dataset.samples == train.samples
    images, _ = next(iter(loaders["train_eval"]))
    expected = torch.stack([PLAIN(load_rgb_image(train.samples[i][0])) for i in sample.indices[:len(images)]])
    assert torch.allclose(images, expected)


def test_seeded_loaders_repeat_the_shuffling_order(tiny_root):
    def order(seed):
        loader = loaders_for(tiny_root, seed=seed, batch_size=24)["train"]
        return torch.cat([labels for _, labels in loader]).tolist()
    assert order(1) == order(1)
    assert order(1) != order(2)


def test_batch_size_must_be_positive(tiny_root):
    with pytest.raises(ValueError, match="batch_size"):
        loaders_for(tiny_root, batch_size=0)


def test_num_workers_none_picks_the_default(tiny_root, monkeypatch):
    monkeypatch.setattr("helpers.data.default_num_workers", lambda device: 0)
    assert loaders_for(tiny_root, num_workers=None)["train"].num_workers == 0


# --- layouts -----------------------------------------------------------------------------------

def test_dot_folders_are_not_classes(tiny_copy):
    for split in ("train", "valid"):
        hidden = tiny_copy / split / ".ipynb_checkpoints"
        hidden.mkdir()
        shutil.copy(tiny_copy / split / "1" / f"{split}_000.jpg", hidden / "copy.jpg")
    (tiny_copy / "test" / ".cache").mkdir()
    loaders = loaders_for(tiny_copy)
    assert loaders["train"].dataset.classes == TEXT_ORDER
    assert len(loaders["train"].dataset) == 24


def test_dot_files_and_dot_folders_inside_a_class_are_skipped_quietly(tiny_copy):
    class_dir = tiny_copy / "train" / "1"
    (class_dir / "._train_000.jpg").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (class_dir / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (class_dir / ".ipynb_checkpoints").mkdir()
    (class_dir / ".ipynb_checkpoints" / "broken.jpg").write_bytes(b"not a picture")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # hidden files are not the learner's photos: no warning
        dataset = FlowerFolder(tiny_copy / "train", PLAIN)
    assert len(dataset) == 24 and dataset.skipped == []
    assert all(".ipynb" not in path and "._" not in path for path, _ in dataset.samples)
    for index in range(len(dataset)):
        dataset[index]  # every sample loads


def test_files_that_are_not_readable_images_are_reported(tiny_copy):
    class_dir = tiny_copy / "train" / "10"
    for name in ("IMG_0001.heic", "IMG_0002.heic", "notes.txt"):
        (class_dir / name).write_bytes(b"a phone's photo or a note")
    with pytest.warns(UserWarning) as caught:
        dataset = FlowerFolder(tiny_copy / "train", PLAIN)
    assert sorted(path.name for path in dataset.skipped) == ["IMG_0001.heic", "IMG_0002.heic", "notes.txt"]
    assert all(path.parent == class_dir for path in dataset.skipped)
    assert len(dataset) == 24  # the others still load
    (message,) = [str(w.message) for w in caught if "heic" in str(w.message)]
    assert "3 file" in message and "IMG_0001.heic" in message and str(tiny_copy / "train") in message
    with pytest.warns(UserWarning, match="IMG_0001.heic"):
        loaders_for(tiny_copy)  # make_loaders reports them too


def test_make_loaders_reports_unreadable_files_once(tiny_copy):
    (tiny_copy / "train" / "10" / "IMG_0001.heic").write_bytes(b"a phone's photo")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaders_for(tiny_copy)
    assert len([w for w in caught if "IMG_0001.heic" in str(w.message)]) == 1


def test_a_class_folder_of_only_unreadable_files_is_an_error(tiny_copy):
    class_dir = tiny_copy / "train" / "2"
    for image in class_dir.iterdir():
        image.rename(image.with_suffix(".heic"))
    with pytest.raises(ValueError) as error:
        loaders_for(tiny_copy)
    assert str(class_dir) in str(error.value)


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


def test_root_without_train_names_the_root_and_the_split(tiny_copy):
    shutil.rmtree(tiny_copy / "train")
    with pytest.raises(FileNotFoundError) as error:
        loaders_for(tiny_copy)
    assert str(tiny_copy) in str(error.value) and "train/" in str(error.value)


def test_missing_root_names_it(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
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
    assert str(valid) in str(error.value)
    with pytest.raises(FileNotFoundError, match=str(valid)):
        FlowerFolder(valid)


def test_empty_class_folder_names_the_folder(tiny_copy):
    empty = tiny_copy / "train" / "2"
    for image in empty.iterdir():
        image.unlink()
    (empty / ".DS_Store").write_bytes(b"")  # hidden files are not images
    with pytest.raises(ValueError) as error:
        loaders_for(tiny_copy)
    assert str(empty) in str(error.value)


# --- cat_to_name -------------------------------------------------------------------------------

def test_load_cat_to_name_from_file_or_folder(tiny_root):
    names = load_cat_to_name(tiny_root / "cat_to_name.json")
    assert names == load_cat_to_name(tiny_root)
    assert names["1"] == "red five-petal" and set(names) == set(TEXT_ORDER)


def test_load_cat_to_name_keys_become_text(tmp_path):
    (tmp_path / "names.json").write_text('{"1": "pink primrose", "21": "fire lily"}')
    assert load_cat_to_name(tmp_path / "names.json") == {"1": "pink primrose", "21": "fire lily"}


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


def test_loaders_work_when_workers_are_spawned(tiny_root):
    """macOS and Windows start loader workers as fresh processes (spawn): datasets and transforms must pickle."""
    loader = make_loaders(tiny_root, batch_size=4, num_workers=1, device="cpu")["train"]
    loader.multiprocessing_context = "spawn"
    images, labels = next(iter(loader))
    assert images.shape == (4, 3, 224, 224) and labels.shape == (4,)
