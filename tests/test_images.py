"""helpers.images: broken files are found and named; every image mode becomes upright RGB."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.data import make_loaders, verify_images
from helpers.images import BadImageError, check_image_path, load_rgb_image, to_rgb
from helpers.predict import process_image


def jpeg_bytes(size=(64, 48), seed=0) -> bytes:
    pixels = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_bad_files(folder: Path) -> dict[str, str]:
    """Write one file of each broken kind into ``folder``; return name -> expected words."""
    good = jpeg_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("these are my notes, not a photo\n")
    (folder / "corrupt.jpg").write_bytes(good[:2] + bytes(range(256)) * 8)  # JPEG start, garbage after
    return {"truncated.jpg": "truncated", "empty.jpg": "empty", "notes.jpg": "not an image",
            "corrupt.jpg": ""}


# --- verify_images ----------------------------------------------------------------------------

def test_verify_images_finds_and_names_every_broken_file(tiny_copy):
    expected = write_bad_files(tiny_copy / "train" / "10")
    bad = verify_images(tiny_copy)
    assert sorted(item.path.name for item in bad) == sorted(expected)
    for item in bad:
        assert item.path.parent == tiny_copy / "train" / "10"
        assert expected[item.path.name] in item.problem
        assert str(item.path) in str(item)


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
    write_bad_files(tmp_path)
    with pytest.raises(BadImageError) as error:
        load_rgb_image(tmp_path / name)
    assert isinstance(error.value, ValueError)
    assert str(tmp_path / name) in str(error.value) and "verify_images" in str(error.value)


def test_missing_file_and_folder_are_told_apart(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_rgb_image(tmp_path / "missing.jpg")
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        load_rgb_image(tmp_path)
    image = tmp_path / "ok.jpg"
    image.write_bytes(jpeg_bytes())
    assert check_image_path(str(image)) == image


@pytest.mark.parametrize("workers", [0, 2])
def test_a_broken_image_in_a_dataloader_names_the_file(tiny_copy, hang_guard, workers):
    broken = tiny_copy / "valid" / "2" / "valid_001.jpg"
    broken.write_bytes(broken.read_bytes()[:300])
    loaders = make_loaders(tiny_copy, batch_size=4, num_workers=workers, image_size=64, device="cpu")
    batches = iter(loaders["valid"])
    with hang_guard(60), pytest.raises(Exception) as error:
        for _ in batches:
            pass
    # torch's worker shutdown after a worker error waits 5 s per worker; end them now (speed only).
    for worker in getattr(batches, "_workers", []):
        worker.terminate()
    assert str(broken) in str(error.value)
    assert "BadImageError" in type(error.value).__name__ or isinstance(error.value, BadImageError)


# --- modes -> RGB -----------------------------------------------------------------------------

def saved(tmp_path: Path, image: Image.Image, name: str, **kwargs) -> Path:
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


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


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    path = saved(tmp_path, Image.fromarray(values), "deep.png")
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    image = load_rgb_image(path)
    assert image.mode == "RGB"
    pixels = np.asarray(image)
    assert pixels.min() == 0 and pixels.max() == 255  # the whole range survives
    assert len(np.unique(pixels[..., 0])) > 100  # not clipped to a few values


@pytest.mark.parametrize("mode", ["1", "LA", "CMYK", "I", "F", "RGB"])
def test_to_rgb_handles_other_modes(mode):
    image = to_rgb(Image.new(mode, (8, 6)))
    assert image.mode == "RGB" and image.size == (8, 6)


def test_every_mode_goes_through_the_prediction_pipeline(tmp_path):
    paths = [saved(tmp_path, Image.new("L", (40, 40), 9), "a.png"),
             saved(tmp_path, Image.new("RGBA", (40, 40)), "b.png"),
             saved(tmp_path, Image.fromarray(np.zeros((40, 40), np.uint16)), "c.png")]
    for path in paths:
        assert process_image(path, 32).shape == (3, 32, 32)


# --- EXIF orientation ------------------------------------------------------------------------

def two_colour_image() -> Image.Image:
    """60 x 40 px: left half red, right half blue, so a rotation is easy to see."""
    image = Image.new("RGB", (60, 40), (220, 20, 20))
    image.paste((20, 20, 220), (30, 0, 60, 40))
    return image


@pytest.mark.parametrize("orientation, stored_as", [(6, Image.Transpose.ROTATE_90),
                                                     (8, Image.Transpose.ROTATE_270)])
def test_exif_rotated_photo_is_loaded_as_a_person_sees_it(tmp_path, orientation, stored_as):
    upright = two_colour_image()
    exif = Image.Exif()
    exif[0x0112] = orientation  # the camera says: turn the stored pixels to show them
    path = saved(tmp_path, upright.transpose(stored_as), "photo.jpg", exif=exif, quality=95)
    with Image.open(path) as raw:
        assert raw.size == (40, 60)  # the file stores the pixels turned
    image = load_rgb_image(path)
    assert image.size == (60, 40)
    assert image.getpixel((5, 20))[0] > 150 and image.getpixel((55, 20))[2] > 150  # red left, blue right
    # The network sees the same picture as for the upright original.
    as_seen = process_image(path, 32)
    assert (as_seen - process_image(upright, 32)).abs().mean() < 0.05
    assert (as_seen - process_image(upright.transpose(stored_as), 32)).abs().mean() > 0.5


def test_exif_rotated_pil_image_is_turned_too(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = saved(tmp_path, two_colour_image().transpose(Image.Transpose.ROTATE_90), "photo.jpg", exif=exif)
    with Image.open(path) as opened:
        tensor = process_image(opened, 32)
    assert (tensor - process_image(two_colour_image(), 32)).abs().mean() < 0.05
