"""Image files as model inputs (nncli.data.images): folders, colour, transparency, resizing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nncli.data.images import (
    IMAGE_SUFFIXES,
    check_profile,
    image_files,
    image_profile,
    image_shape,
    read_images,
    read_pictures,
)
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


# What the training images look like, and pictures made to look like them (issue 18).

MNIST_LIKE = {"background": 0.0, "uniform": True, "light_ink": True, "ink_box": 20,
              "centre": [14.0, 14.0], "framed": True}


@pytest.fixture(scope="module")
def training() -> np.ndarray:
    """2,000 MNIST training digits, uint8 (2000, 1, 28, 28)."""
    return load_mnist_small(data_dir=Path("."), rng=np.random.default_rng(0)).x_train[::3]


def test_the_profile_of_mnist_is_light_ink_framed_in_20x20_on_black(training):
    profile = image_profile(training, 255.0)
    assert profile["background"] == 0 and profile["uniform"] and profile["light_ink"]
    assert profile["ink_box"] == 20 and profile["framed"]
    np.testing.assert_allclose(profile["centre"], [14, 14], atol=0.25)
    # plain builtins: it goes into pickles and the export's JSON
    assert json.loads(json.dumps(profile)) == profile
    # the same digits dark on white, in 0..1: the background is the paper, the ink dark
    negative = image_profile(1 - training.astype(np.float32) / 255, 1.0)
    assert negative["background"] == 1 and not negative["light_ink"] and negative["framed"]


def test_photos_have_no_one_background_and_are_not_framed():
    rng = np.random.default_rng(0)
    light = rng.integers(0, 120, (300, 1, 1, 1))  # each photo its own light
    photos = rng.integers(0, 136, (300, 3, 16, 16)) + light
    profile = image_profile(photos, 255.0)
    assert not profile["uniform"] and not profile["framed"] and profile["ink_box"] == 16


def _digit_picture(digit: np.ndarray, size: int, dark_on_light: bool) -> np.ndarray:
    big = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC))
    return 255 - big if dark_on_light else big


def _likeness(x: np.ndarray, digit: np.ndarray) -> float:
    """The correlation of a 28x28 image with an MNIST digit, at the best shift by up to a pixel:
    centring by mass puts the centre at a whole pixel, MNIST's own rounding may differ by one."""
    target = digit.ravel().astype(np.float64)
    return max(
        np.corrcoef(np.roll(x, (dy, dx), axis=(0, 1)).ravel(), target)[0, 1]
        for dy in (-1, 0, 1) for dx in (-1, 0, 1)
    )


def test_polarity_follows_the_background_unless_forced(tmp_path, digits):
    dark = save(tmp_path / "dark_on_light.png", _digit_picture(digits[0, 0], 28, True))
    light = save(tmp_path / "light_on_dark.png", _digit_picture(digits[0, 0], 28, False))
    unframed = {**MNIST_LIKE, "framed": False}
    got = read_pictures([dark, light], (1, 28, 28), profile=unframed)
    assert got.inverted == [True, False]
    np.testing.assert_array_equal(got.x[0], got.x[1])
    np.testing.assert_array_equal(got.x[1], digits[0])
    for forced in (False, True):
        got = read_pictures([dark, light], (1, 28, 28), invert=forced, profile=unframed)
        assert got.inverted == [forced, forced]
    # a model trained on dark-on-light images inverts the light-on-dark picture instead
    paper = {**unframed, "background": 255.0, "light_ink": False}
    assert read_pictures([dark, light], (1, 28, 28), profile=paper).inverted == [False, True]
    # photos (no one background) are never inverted; nor without a profile, for an RGB model
    photos = {**unframed, "uniform": False, "background": 200.0}
    assert read_pictures([dark, light], (1, 28, 28), profile=photos).inverted == [False, False]
    assert read_pictures([dark, light], (3, 28, 28), invert=None).inverted == [False, False]
    # without a profile (an older checkpoint) a gray model is taken to be light on dark
    assert read_pictures([dark, light], (1, 28, 28), invert=None).inverted == [True, False]


def test_white_strokes_on_transparency_are_composited_on_black(tmp_path):
    rgba = np.full((50, 50, 4), 255, np.uint8)
    rgba[..., 3] = 0
    rgba[20:30, 10:40, 3] = 255
    x = read_images([save(tmp_path / "white.png", rgba, "RGBA")], (1, 50, 50))
    assert (x[0, 0, 20:30, 10:40] == 255).all() and x[0, 0].sum() == 255 * 10 * 30
    # dark strokes on transparency still go on white
    rgba[..., :3] = 10
    x = read_images([save(tmp_path / "dark.png", rgba, "RGBA")], (1, 50, 50))
    assert (x[0, 0, 20:30, 10:40] == 10).all() and x[0, 0, 0, 0] == 255


def test_a_picture_of_another_aspect_is_padded_with_its_background_not_stretched(tmp_path):
    pixels = np.full((50, 100), 255, np.uint8)  # white, twice as wide as tall
    pixels[:, 25:75] = 0  # a black square in the middle
    x = read_images([save(tmp_path / "wide.png", pixels)], (1, 20, 20))[0, 0]
    dark = x < 128
    rows, cols = np.flatnonzero(dark.any(axis=1)), np.flatnonzero(dark.any(axis=0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (5, 14, 5, 14)  # still a square, 10x10
    assert (x[:4] > 230).all() and (x[16:] > 230).all()  # padded with the white (Lanczos rings)


def test_a_small_digit_off_centre_is_framed_as_mnist_frames_it(tmp_path, digits):
    for i, digit in enumerate(digits):
        page = np.full((400, 300), 255, np.uint8)
        page[30:80, 200:250] = _digit_picture(digit[0], 50, True)
        path = save(tmp_path / f"page{i}.png", page)
        got = read_pictures([path], (1, 28, 28), profile=MNIST_LIKE)
        assert got.inverted == [True] and got.framed == [True]
        x = got.x[0, 0]
        lit = x > 25
        rows, cols = np.flatnonzero(lit.any(axis=1)), np.flatnonzero(lit.any(axis=0))
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 21
        ys, xs = np.mgrid[:28, :28]
        assert abs((x * ys).sum() / x.sum() - 14) <= 0.5 and abs((x * xs).sum() / x.sum() - 14) <= 0.5
        assert _likeness(x, digit[0]) > 0.9, i


def test_noisy_paper_is_background_not_ink(tmp_path, digits):
    rng = np.random.default_rng(1)
    ink = _digit_picture(digits[3, 0], 200, False) / 255.0
    paper = 230 + rng.normal(0, 7, ink.shape)
    Image.fromarray(np.clip(paper * (1 - 0.85 * ink), 0, 255).astype(np.uint8)).convert("RGB").save(
        tmp_path / "paper.jpg", quality=85
    )
    got = read_pictures([tmp_path / "paper.jpg"], (1, 28, 28), profile=MNIST_LIKE)
    x = got.x[0, 0]
    assert got.inverted == [True] and got.framed == [True]
    # the paper is clean: its border is black, and no more pixels are lit than the digit has
    assert (x[[0, -1]] == 0).all() and (x[:, [0, -1]] == 0).all()
    assert (x > 25).sum() <= 1.2 * (digits[3] > 25).sum()
    assert x.max() == 255 and _likeness(x, digits[3, 0]) > 0.9


def test_float_images_in_0_to_1_read_as_such(tmp_path):
    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(ramp, "F").save(tmp_path / "unit.tif")
    Image.fromarray(ramp * 255, "F").save(tmp_path / "bytes.tif")
    x = read_images([tmp_path / "unit.tif", tmp_path / "bytes.tif"], (1, 8, 8))
    np.testing.assert_array_equal(x[0, 0], np.rint(ramp * 255))
    np.testing.assert_array_equal(x[1], x[0])


@pytest.mark.parametrize("change, says", [
    ({"background": 300.0}, "background"),
    ({"ink_box": "20"}, "ink_box"),
    ({"centre": [14]}, "centre"),
    ({"framed": 1}, "framed"),
    ({"light_ink": None}, "light_ink"),
])
def test_a_damaged_profile_is_refused_naming_what_is_wrong(change, says):
    assert check_profile(MNIST_LIKE, (1, 28, 28), 255.0) == MNIST_LIKE
    with pytest.raises(ValueError, match=says):
        check_profile({**MNIST_LIKE, **change}, (1, 28, 28), 255.0)
    with pytest.raises(ValueError, match="not a mapping"):
        check_profile([1], (1, 28, 28), 255.0)


@pytest.mark.parametrize("frame", [0, 255], ids=["black frame", "white frame"])
def test_a_frame_drawn_around_a_digit_is_neither_paper_nor_ink(tmp_path, digits, frame):
    # a dark digit on white in a 4-pixel black frame: the border ring (the frame) was taken for
    # the paper and the paper for ink, and the quickstart read a 7 so as an 8 (0.50), unwarned
    for i, digit in enumerate(digits):
        page = _digit_picture(digit[0], 112, dark_on_light=frame == 0).copy()
        page[:4], page[-4:], page[:, :4], page[:, -4:] = frame, frame, frame, frame
        got = read_pictures([save(tmp_path / f"framed{i}.png", page)], (1, 28, 28), profile=MNIST_LIKE)
        assert got.inverted == [frame == 0] and got.framed == [True] and got.blank == [False]
        assert _likeness(got.x[0, 0], digit[0]) > 0.9, i


@pytest.mark.parametrize("ink", [+22, -22], ids=["light strokes", "dark strokes"])
def test_the_inks_polarity_decides_on_a_mid_gray_paper(tmp_path, digits, ink):
    # strokes of 150 on a paper of 128 are light on dark, as MNIST's are: the paper's level alone
    # (above the middle) called them dark on light and inverted them
    for i, digit in enumerate(digits):
        big = _digit_picture(digit[0], 112, dark_on_light=False).astype(np.float64)
        page = np.rint(128 + big / 255 * ink).astype(np.uint8)
        got = read_pictures([save(tmp_path / f"gray{i}.png", page)], (1, 28, 28), profile=MNIST_LIKE)
        assert got.inverted == [ink < 0] and got.framed == [True] and got.blank == [False]
        assert _likeness(got.x[0, 0], digit[0]) > 0.9, i


def test_a_blank_page_is_said_to_show_nothing(tmp_path):
    for name, level in [("white", 255), ("gray", 128)]:
        page = np.full((64, 64), level, np.uint8)
        got = read_pictures([save(tmp_path / f"{name}.png", page)], (1, 28, 28), profile=MNIST_LIKE)
        assert got.blank == [True] and got.framed == [False], name
    # where the training images have no one background (photos), nothing is looked for
    photo_like = {**MNIST_LIKE, "uniform": False, "framed": False}
    got = read_pictures([tmp_path / "white.png"], (1, 28, 28), profile=photo_like)
    assert got.blank == [False] and got.inverted == [False]


def _bold(picture: np.ndarray, width: int) -> np.ndarray:
    """A light-on-dark picture with its strokes thickened by `width` pixels each way."""
    padded = np.pad(picture, width)
    h, w = picture.shape
    reach = range(2 * width + 1)
    return np.max([padded[dy:dy + h, dx:dx + w] for dy in reach for dx in reach], axis=0)


@pytest.mark.parametrize("dark_on_light", [True, False], ids=["dark on light", "light on dark"])
def test_a_bold_digit_cropped_to_its_ink_keeps_its_polarity(tmp_path, digits, dark_on_light):
    # its border is half ink and its median the ink: neither tells the paper, and the paper's
    # level must decide (an ink rule taken from the median turned 15 of 40 such digits over)
    for i, digit in enumerate(digits):
        big = _bold(_digit_picture(digit[0], 112, dark_on_light=False), 6)
        rows, cols = np.flatnonzero((big > 128).any(axis=1)), np.flatnonzero((big > 128).any(axis=0))
        crop = big[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        page = 255 - crop if dark_on_light else crop
        got = read_pictures([save(tmp_path / f"bold{i}.png", page)], (1, 28, 28), profile=MNIST_LIKE)
        assert got.inverted == [dark_on_light] and got.blank == [False], i


def test_a_page_darker_at_its_border_keeps_its_dark_ink(tmp_path, digits):
    # a vignette takes the border to mid-gray: the ink, not the brighter middle, is what stands out
    for i, digit in enumerate(digits):
        page = _digit_picture(digit[0], 112, dark_on_light=True).astype(np.float64)
        ys, xs = np.mgrid[:112, :112]
        falloff = 1 - 0.45 * (((ys - 55.5) ** 2 + (xs - 55.5) ** 2) / (2 * 55.5 ** 2))
        got = read_pictures([save(tmp_path / f"vignette{i}.png", np.rint(page * falloff).astype(np.uint8))],
                            (1, 28, 28), profile=MNIST_LIKE)
        assert got.inverted == [True] and got.framed == [True], i
        assert _likeness(got.x[0, 0], digit[0]) > 0.8, i
