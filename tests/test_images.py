"""Image files as model inputs (nncli.data.images): folders, colour, transparency, resizing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nncli.data.images import IMAGE_SUFFIXES, image_files, image_shape, read_images
from nncli.data.mnist import load_mnist_small
from nncli.errors import DataError


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """Eight MNIST test digits, uint8 (8, 1, 28, 28), light on dark."""
    data = load_mnist_small(data_dir=Path("."), rng=np.random.default_rng(0))
    return data.x_test[::125]


def save(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(pixels, mode).save(path) if mode else Image.fromarray(pixels).save(path)
    return path


def as_picture(digit: np.ndarray, size: int = 200) -> Image.Image:
    """An MNIST digit (28, 28) as a photo of it would be: dark on light, large, smooth."""
    return Image.fromarray(255 - digit).resize((size, size), Image.Resampling.BICUBIC)


def test_a_large_dark_on_light_picture_of_a_digit_reads_back_as_the_digit(tmp_path, digits):
    files = []
    for i, digit in enumerate(digits):
        files.append(tmp_path / f"{i}.png")
        as_picture(digit[0]).save(files[-1])
    x = read_images(files, (1, 28, 28), invert=True)
    assert x.shape == digits.shape and x.dtype == np.float32
    error = np.abs(x - digits).mean(axis=(1, 2, 3))
    # Measured (LANCZOS): 2.0 to 3.9 per digit out of 255, 3.0 on average; BOX gives 4.0 on
    # average, BICUBIC 3.7, BILINEAR 6.1. Correlations are 0.995 to 0.998.
    assert error.max() < 4.5 and error.mean() < 3.5, error
    for got, want in zip(x, digits.astype(np.float32), strict=True):
        assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99


def test_an_rgb_file_of_a_gray_picture_reads_as_the_gray_file(tmp_path, digits):
    gray = as_picture(digits[1, 0], 90)
    gray.save(tmp_path / "gray.png")
    gray.convert("RGB").save(tmp_path / "rgb.png")
    x = read_images([tmp_path / "gray.png", tmp_path / "rgb.png"], (1, 28, 28), invert=True)
    np.testing.assert_array_equal(x[0], x[1])


def test_three_channels_come_in_rgb_order_at_the_model_size(tmp_path):
    pixels = np.zeros((40, 50, 3), np.uint8)  # the model's aspect ratio: nothing to pad
    pixels[..., 0] = 255
    pixels[:, 25:, 1] = 255  # the right half is yellow
    x = read_images([save(tmp_path / "red.png", pixels)], (3, 8, 10))
    assert x.shape == (1, 3, 8, 10)
    np.testing.assert_array_equal(x[0, :, :, 0], np.tile([[255.0], [0.0], [0.0]], 8))
    np.testing.assert_array_equal(x[0, :, :, -1], np.tile([[255.0], [255.0], [0.0]], 8))


def test_a_colour_picture_read_as_gray_weights_the_channels_as_luma(tmp_path):
    pixels = np.zeros((4, 4, 3), np.uint8)
    pixels[..., 1] = 255  # pure green: 0.587 * 255
    x = read_images([save(tmp_path / "green.bmp", pixels)], (1, 4, 4))
    np.testing.assert_allclose(x, 150, atol=1)


def test_transparency_is_flattened_onto_white(tmp_path):
    # A black stroke on a transparent background, as a drawing program saves a digit; the
    # transparent pixels hold black too, which must not show through.
    rgba = np.zeros((50, 50, 4), np.uint8)
    rgba[20:30, 10:40, 3] = 255
    x = read_images([save(tmp_path / "stroke.png", rgba, "RGBA")], (1, 50, 50), invert=True)
    assert x[0, 0, 0, 0] == 0 and x[0, 0].sum() == 255 * 10 * 30
    assert (x[0, 0, 20:30, 10:40] == 255).all()
    # Half-transparent black is mid gray, and palette transparency counts as well.
    rgba[..., 3] = 128
    half = read_images([save(tmp_path / "half.png", rgba, "RGBA")], (3, 50, 50))
    np.testing.assert_allclose(half, 127, atol=1)
    palette = Image.fromarray(np.zeros((8, 8), np.uint8), "P")
    palette.info["transparency"] = 0
    palette.save(tmp_path / "palette.gif")
    assert (read_images([tmp_path / "palette.gif"], (1, 8, 8)) == 255).all()


def test_jpeg_and_16_bit_gray_files_read(tmp_path, digits):
    as_picture(digits[2, 0], 112).convert("RGB").save(tmp_path / "digit.jpg", quality=90)
    jpeg = read_images([tmp_path / "digit.jpg"], (1, 28, 28), invert=True)
    assert np.abs(jpeg - digits[2]).mean() < 6
    ramp = np.arange(256, dtype=np.uint16).reshape(16, 16) * 257
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    wide = read_images([tmp_path / "ramp16.png"], (1, 16, 16))
    np.testing.assert_array_equal(wide[0, 0], np.arange(256).reshape(16, 16))


def test_pixel_max_scales_to_the_models_range(tmp_path):
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    path = save(tmp_path / "ramp.png", ramp)
    x = read_images([path], (1, 16, 16), pixel_max=1.0)
    assert x.dtype == np.float32 and x.min() == 0 and x.max() == 1
    np.testing.assert_allclose(x[0, 0], ramp / 255, atol=1e-6)
    inverted = read_images([path], (1, 16, 16), invert=True, pixel_max=1.0)
    np.testing.assert_allclose(inverted, 1 - x, atol=1e-6)


def test_folders_expand_to_their_image_files_sorted(tmp_path):
    folder = tmp_path / "pics"
    folder.mkdir()
    for name in ("b.PNG", "a.jpg", "c.webp", "notes.txt", ".hidden.png", "README"):
        (folder / name).write_bytes(b"")
    (folder / "sub.png").mkdir()
    (tmp_path / "first.dat").write_text("not an image")
    got = image_files([tmp_path / "first.dat", folder])
    assert got == [tmp_path / "first.dat", folder / "a.jpg", folder / "b.PNG", folder / "c.webp"]
    assert {".png", ".jpg", ".jpeg", ".gif", ".webp"} <= set(IMAGE_SUFFIXES)


def test_missing_paths_and_folders_without_images_are_data_errors(tmp_path):
    with pytest.raises(DataError, match=r"nope\.png does not exist"):
        image_files([tmp_path / "nope.png"])
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=rf"{tmp_path} has no image files \(looked for \.png .*\.webp\)"):
        image_files([tmp_path])


def test_a_file_that_is_not_an_image_is_a_data_error_naming_it(tmp_path, digits):
    fake = tmp_path / "x.png"
    fake.write_text("just text")
    good = tmp_path / "good.png"
    as_picture(digits[0, 0], 28).save(good)
    with pytest.raises(DataError, match=r"cannot read .*x\.png as an image: "):
        read_images([good, fake], (1, 28, 28))
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:60])
    with pytest.raises(DataError, match=r"cannot read .*cut\.png as an image: \w"):
        read_images([truncated], (1, 28, 28))


def test_image_shape_accepts_gray_and_rgb_pictures_only():
    assert image_shape((1, 28, 28)) == (1, 28, 28)
    assert image_shape([3, 32, 32]) == (3, 32, 32)
    assert image_shape((2,)) is None and image_shape((4, 8, 8)) is None
    assert image_shape((1, 0, 28)) is None and image_shape((28, 28)) is None
    with pytest.raises(ValueError, match="C 1 or 3"):
        read_images([], (2, 8, 8))
    assert read_images([], (3, 5, 7)).shape == (0, 3, 5, 7)
