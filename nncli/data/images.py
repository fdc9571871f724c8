"""Image files as model inputs: the pictures `nncli predict` classifies.

`image_files` turns the paths a user gives (files and folders) into a list of files, and
`read_pictures` reads them as float32 (N, C, H, W) for a model that takes (C, H, W) images,
looking as the images it was trained on look: `image_profile`, recorded in every checkpoint,
says what that is (the background, the ink's polarity, MNIST-style framing). Pillow, which
matplotlib already needs, is imported only when a file is read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nncli.data.contract import border_ring
from nncli.errors import DataError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# Pillow's modes for one channel of 16 (or 32) bits: its own conversion to 8 bits clips at 255
# instead of scaling, which would turn a 16-bit grayscale PNG all but white.
_WIDE_GRAY_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def image_shape(shape: Sequence[int]) -> tuple[int, int, int] | None:
    """(C, H, W) where a model's input shape (without the batch dimension) can take pictures:
    three dimensions, C = 1 (gray) or 3 (RGB), H and W positive; None otherwise ((2,) for the
    spiral, (4, 8, 8) for four channels no picture has)."""
    shape = tuple(shape)
    if len(shape) != 3 or shape[0] not in (1, 3) or min(shape[1:]) < 1:
        return None
    return int(shape[0]), int(shape[1]), int(shape[2])


def image_files(paths: Sequence[Path]) -> list[Path]:
    """The files to read for `paths`: each file as given, and for each folder the image files
    (by suffix, in any case; hidden files skipped) directly inside it, sorted by name.

    Order follows `paths`. A file given explicitly is kept whatever its suffix: reading it says
    whether it is an image. A path that does not exist, a folder that cannot be listed and a
    folder with no image files are each a `DataError` naming the path.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise DataError(f"{path} does not exist")
        if not path.is_dir():
            files.append(path)
            continue
        try:
            # Hidden files include macOS's "._name.png" companions, which are not images.
            found = sorted(
                p for p in path.iterdir()
                if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
            )
        except OSError as e:
            raise DataError(f"cannot list {path}: {e.strerror or e}") from None
        if not found:
            raise DataError(f"{path} has no image files (looked for {' '.join(IMAGE_SUFFIXES)})")
        files += found
    return files


def image_profile(x: np.ndarray, pixel_max: float) -> dict:
    """What training images (N, C, H, W), raw from 0 to `pixel_max`, look like: what `nncli
    predict` makes pictures look like. Plain builtins (it goes into checkpoints and exports):

        background  the median over images of the median of each image's border ring, in
                    0..pixel_max (channels averaged): 0 for MNIST
        uniform     whether nine images in ten have that background (within a tenth of the
                    range): true for digits and clothes on black, false for photos (CIFAR)
        light_ink   whether the ink (what differs from the background) is lighter than it
        ink_box     the 90th percentile of each image's ink box (the larger of its height and
                    width; ink is a tenth of the range away from the background): 20 for MNIST
        centre      [row, column] of the median centre of mass of the ink: [14, 14] for MNIST
        framed      uniform, centred by mass (nine centres in ten within a pixel or 5% of the
                    size of the median one, itself near the middle) and the ink inside a margin
                    (ink_box at most 85% of the smaller side): MNIST-style framing

    At most 2,000 images are looked at, evenly spaced (no generator is drawn from).
    """
    if x.ndim != 4 or not len(x):
        raise ValueError(f"expected images (N, C, H, W), got an array of shape {x.shape}")
    rows = np.unique(np.linspace(0, len(x) - 1, min(len(x), 2000)).astype(np.int64))
    gray = x[rows].astype(np.float32).mean(axis=1)  # (n, H, W)
    _, height, width = gray.shape
    borders = np.median(border_ring(gray), axis=-1)
    background = float(np.median(borders))
    uniform = bool(np.mean(np.abs(borders - background) <= 0.1 * pixel_max) >= 0.9)
    ink = np.abs(gray - borders[:, None, None])
    light_ink = bool(np.sum(gray - borders[:, None, None]) > 0)
    mask = ink > 0.1 * pixel_max
    boxes = [max(_extent(m.any(axis=1)), _extent(m.any(axis=0))) for m in mask]
    ink_box = int(np.ceil(np.percentile(boxes, 90)))
    mass = ink.sum(axis=(1, 2))
    lit = mass > 0
    if lit.any():
        ys, xs = np.mgrid[:height, :width]
        cy = (ink[lit] * ys).sum(axis=(1, 2)) / mass[lit]
        cx = (ink[lit] * xs).sum(axis=(1, 2)) / mass[lit]
        centre = [float(np.median(cy)), float(np.median(cx))]
        spread = float(np.percentile(np.hypot(cy - centre[0], cx - centre[1]), 90))
        near_middle = (abs(centre[0] - height / 2) <= 0.15 * height
                       and abs(centre[1] - width / 2) <= 0.15 * width)
        centred = near_middle and spread <= max(1.0, 0.05 * min(height, width))
    else:
        centre, centred = [height / 2, width / 2], False
    framed = uniform and centred and 0 < ink_box <= 0.85 * min(height, width)
    return {"background": background, "uniform": uniform, "light_ink": light_ink,
            "ink_box": ink_box, "centre": centre, "framed": bool(framed)}


def check_profile(profile, shape: tuple[int, int, int], pixel_max: float) -> dict:
    """`profile` as `image_profile` makes it for images of `shape` = (C, H, W) from 0 to
    `pixel_max`, as plain builtins; a `ValueError` saying what is wrong otherwise (a damaged or
    crafted checkpoint)."""
    if not isinstance(profile, dict):
        raise ValueError(f"the image profile is {type(profile).__name__}, not a mapping")
    _, height, width = shape
    missing = sorted({"background", "uniform", "light_ink", "ink_box", "centre", "framed"} - set(profile))
    if missing:
        raise ValueError(f"the image profile has no {missing[0]!r}")
    for key in ("uniform", "light_ink", "framed"):
        if not isinstance(profile[key], bool):
            raise ValueError(f"the image profile's {key} is {profile[key]!r}, not true or false")
    background = profile["background"]
    number = isinstance(background, (int, float)) and not isinstance(background, bool)
    if not number or not 0 <= background <= pixel_max:
        raise ValueError(f"the image profile's background is {background!r}, not within 0..{pixel_max:g}")
    box = profile["ink_box"]
    if isinstance(box, bool) or not isinstance(box, int) or not 0 <= box <= max(height, width):
        raise ValueError(f"the image profile's ink_box is {box!r}, not a size within {height}x{width}")
    centre = profile["centre"]
    if (
        not isinstance(centre, (list, tuple)) or len(centre) != 2
        or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in centre)
        or not (0 <= centre[0] <= height and 0 <= centre[1] <= width)
    ):
        raise ValueError(f"the image profile's centre is {centre!r}, not a point within {height}x{width}")
    if profile["framed"] and box < 1:
        raise ValueError("the image profile frames images in an empty box")
    return {"background": float(background), "uniform": profile["uniform"],
            "light_ink": profile["light_ink"], "ink_box": box,
            "centre": [float(centre[0]), float(centre[1])], "framed": profile["framed"]}


@dataclass(frozen=True)
class Pictures:
    """Image files read for a model: `x` float32 (N, C, H, W) in the model's pixel range, and
    per picture whether it was `inverted` and whether it was `framed` (cropped to its ink and
    placed as the training images' ink is)."""

    x: np.ndarray
    inverted: list[bool]
    framed: list[bool]
    files: list[Path] = field(default_factory=list)  # the files read, in order (one per row of x)
    skipped: list[str] = field(default_factory=list)  # with `skip_unreadable`: why each other one was not
    #: per picture, whether nothing stood out from its paper (a blank page, ink too faint): looked
    #: for where the training images have one background, as digits do; False elsewhere
    blank: list[bool] = field(default_factory=list)


def read_images(
    files: Sequence[Path],
    shape: tuple[int, int, int],
    *,
    invert: bool | None = False,
    pixel_max: float = 255.0,
    profile: dict | None = None,
) -> np.ndarray:
    """`read_pictures(...).x`: the images in `files` as float32 (N, C, H, W)."""
    return read_pictures(files, shape, invert=invert, pixel_max=pixel_max, profile=profile).x


def read_pictures(
    files: Sequence[Path],
    shape: tuple[int, int, int],
    *,
    invert: bool | None = None,
    pixel_max: float = 255.0,
    profile: dict | None = None,
    skip_unreadable: bool = False,
) -> Pictures:
    """The images in `files` made to look as a model's training images look (`profile`, from
    `image_profile`), for a model that takes `shape` = (C, H, W) from 0 to `pixel_max`.

    Each file is read with Pillow (the first frame of an animation) and turned upright where its
    EXIF data says the camera held it otherwise. Float images (Pillow's "F", such as a float
    TIFF) whose values reach no more than 1 are read as 0..1, others as 0..255; 16- and 32-bit
    gray as 0..65535. Transparency is flattened onto the background that contrasts with the
    strokes: black under light strokes (white strokes on transparency), white under dark ones,
    decided by the mean luminance of the opaque pixels. The picture is then made gray (C = 1,
    Pillow's "L": 0.299 R + 0.587 G + 0.114 B) or RGB (C = 3).

    For training images of one background (`profile["uniform"]`), lines along its edges that
    are nearly all unlike the rest go first (a frame: `_without_edge_lines`). Its background is
    the median of its border ring. It is inverted (255 - v) where `invert` says so, or, with
    `invert` None, where its polarity is the opposite of the training images': its background
    light and theirs dark or the reverse, or, on a mid-gray paper, its ink lighter than the
    paper where theirs is darker or the reverse (`_paper_and_polarity`). Photos (no one
    background) are never inverted. `blank` says which pictures showed nothing. Without a
    profile (a checkpoint of an older nncli), a gray model is taken to be trained on
    light-on-dark images (MNIST, Fashion-MNIST) and an RGB one is left alone.

    For a model trained on MNIST-style framed images (`profile["framed"]`), the ink (what
    differs from the background by more than a tenth of the darkest ink and six times the paper's
    noise) is cropped, resized to fit an `ink_box` square keeping its aspect, and placed with its
    centre of mass where the training images have theirs, on the training background, its ink
    as strong as the training images' (the darkest ink becomes full ink). Other pictures are
    padded with their background to the model's aspect ratio (never stretched) and resized to
    H x W with Lanczos filtering. Values are rounded to whole numbers in 0..255, then scaled to
    0..`pixel_max` (v * pixel_max / 255), the range of the model's training data.

    A file that cannot be read as an image is a `DataError` naming it, or with
    `skip_unreadable` a line in `skipped` (the others are read); a C other than 1 or 3 is a
    `ValueError` (the caller checks with `image_shape` first).
    """
    if image_shape(shape) is None:
        raise ValueError(f"cannot read images of shape {tuple(shape)}; expected (C, H, W) with C"
                         " 1 or 3 and H, W positive")
    if not pixel_max > 0:
        raise ValueError(f"pixel_max must be positive, got {pixel_max}")
    channels, height, width = image_shape(shape)
    scale = 255.0 / pixel_max
    if profile is not None:
        target = profile["background"] * scale if profile["uniform"] else None
        trained_light_ink = profile["light_ink"]
    else:
        target = 0.0 if channels == 1 else None
        trained_light_ink = True if channels == 1 else None
    out = np.empty((len(files), channels, height, width), dtype=np.float32)
    inverted, framed, read, skipped, blank = [], [], [], [], []
    for file in files:
        try:
            pixels = _read_one(Path(file), channels)  # float32 (h, w, C), 0..255
        except DataError as err:
            if not skip_unreadable:
                raise
            skipped.append(str(err))
            continue
        i = len(read)
        read.append(Path(file))
        if target is not None:  # digits and the like, on one background: a frame is no ink
            pixels = _without_edge_lines(pixels)
        background, light_ink, empty = _paper_and_polarity(pixels)
        blank.append(target is not None and empty)
        flip = invert
        if flip is None:
            if target is None:  # photos, whose backgrounds vary: never
                flip = False
            elif light_ink is not None and trained_light_ink is not None:
                flip = light_ink != trained_light_ink  # a mid-gray paper: the ink's polarity
            else:  # the paper's level against the training background's
                flip = (float(_luma(background)) - 127.5) * (target - 127.5) < 0
        if flip:
            pixels = np.subtract(255.0, pixels, dtype=np.float32)
            background = 255 - background
        image = None
        if profile is not None and profile["framed"]:
            image = _frame(pixels, background, profile, scale, height, width)
        framed.append(image is not None)
        if image is None:
            image = _fit(pixels, background, height, width)
        out[i] = np.clip(np.rint(image), 0, 255).transpose(2, 0, 1)
        inverted.append(bool(flip))
    out = out[: len(read)]
    if pixel_max != 255.0:
        out *= np.float32(pixel_max / 255.0)
    return Pictures(out, inverted, framed, read, skipped, blank)


#: an edge line that differs from the picture's median in this share of its pixels or more is
#: a frame, not the picture, where at most EDGE_MAX of each side is such lines
EDGE_SHARE, EDGE_MAX = 0.9, 0.1
#: a quarter of the range: what "unlike" means for edge lines, and how far from the middle a
#: paper must be for its level alone to say its polarity
QUARTER = 0.25 * 255
#: the levels by which something must stand out from the paper to be ink at all
INK_LEVELS = 16.0
#: the pixels a picture's middle value is taken from at most (every k-th row and column)
MIDDLE_SAMPLE = 250_000


def _without_edge_lines(pixels: np.ndarray) -> np.ndarray:
    """`pixels` (h, w, C) less the rows and columns along its edges that are nearly all unlike
    the picture's middle value (`EDGE_SHARE` of their pixels a quarter of the range off its
    median): a frame drawn around a digit. Its border was taken for the paper otherwise, and the
    frame for ink (a black 7 in a 4-pixel black frame on white read as an 8). Only where the
    border ring as a whole is unlike the middle and most of the picture is like it, at most
    `EDGE_MAX` of each side, and only where what is left has a border like the middle (the
    paper inside the frame): a bold digit whose ink is the median keeps its paper margins, and a
    picture whose edges are like its middle, as a digit on plain paper, is whole."""
    gray = _luma(pixels)
    h, w = gray.shape
    # the middle from about MIDDLE_SAMPLE pixels at most, evenly spread: the median of a phone's
    # 12-megapixel photo, and the share unlike it, took 132 ms a picture on the Zen 5
    step = max(1, math.isqrt(gray.size // MIDDLE_SAMPLE))
    sample = gray[::step, ::step]
    middle = float(np.median(sample))
    near_border = abs(float(np.median(border_ring(gray))) - middle) <= QUARTER
    if near_border or np.mean(np.abs(sample - middle) > QUARTER) > 0.5:
        return pixels
    unlike = np.abs(gray - middle) > QUARTER
    top, bottom, left, right = 0, h, 0, w
    most_rows, most_cols = int(EDGE_MAX * h), int(EDGE_MAX * w)
    while top < most_rows and unlike[top, left:right].mean() >= EDGE_SHARE:
        top += 1
    while h - bottom < most_rows and unlike[bottom - 1, left:right].mean() >= EDGE_SHARE:
        bottom -= 1
    while left < most_cols and unlike[top:bottom, left].mean() >= EDGE_SHARE:
        left += 1
    while w - right < most_cols and unlike[top:bottom, right - 1].mean() >= EDGE_SHARE:
        right -= 1
    inner = gray[top:bottom, left:right]
    if inner.size == gray.size or abs(float(np.median(border_ring(inner))) - middle) > QUARTER:
        return pixels
    return pixels[top:bottom, left:right]


def _paper_and_polarity(pixels: np.ndarray) -> tuple[np.ndarray, bool | None, bool]:
    """The paper's colour of a picture (h, w, C), per channel: the median of its border ring.

    Whether its ink is lighter than the paper, where the paper's level leaves that open: a paper
    within a quarter of the range of the middle gray, with a border ring that is paper
    throughout. Light strokes of 150 on a paper of 128 are light on dark, which the paper's
    level, above the middle, called dark on light. Elsewhere None: the level decides (a tight
    crop with ink on its border, a white or black page). The ink's side is the one of the
    picture's 0.1th and 99.9th percentiles that is farther from its median, the paper where ink
    is the lesser part: a page darker at its border than in its middle still shows dark ink.

    And whether the picture is blank: all of it within `INK_LEVELS` levels, nothing standing
    out (a percentile would call a small digit on a big page blank)."""
    background = np.median(border_ring(np.moveaxis(pixels, -1, 0)), axis=-1).astype(np.float32)
    gray = _luma(pixels)
    paper = float(_luma(background))
    if not gray.size:
        return background, None, True
    blank = float(gray.max() - gray.min()) < INK_LEVELS
    if blank or abs(paper - 127.5) >= QUARTER:
        return background, None, blank
    if np.mean(np.abs(border_ring(gray) - paper) > QUARTER) > 0.1:  # ink on the border: a tight crop
        return background, None, blank
    low, middle, high = (float(v) for v in np.percentile(gray, [0.1, 50, 99.9]))
    if max(high - middle, middle - low) < INK_LEVELS:  # too little ink to tell (a dot on a big page)
        return background, None, blank
    return background, high - middle > middle - low, blank


def _extent(lit: np.ndarray) -> int:
    """The span from the first to the last true entry of a 1-d mask (0 where none is)."""
    where = np.flatnonzero(lit)
    return int(where[-1] - where[0] + 1) if where.size else 0


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Gray levels of (..., C) values: ITU-R 601 luma for three channels, as Pillow's "L"."""
    if rgb.shape[-1] == 1:
        return rgb[..., 0]
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """A float (h, w, C) image resized to (height, width, C), channel by channel, with Lanczos."""
    from PIL import Image

    # LANCZOS rather than BOX (area): a 200x200 picture of an MNIST digit (bicubic upscale of
    # the 28x28 original) comes back with a mean absolute error of 2.7 / 255 against 3.6 for
    # BOX (HAMMING 3.9, BICUBIC 3.4, BILINEAR 5.5; 200 test digits). BOX wins only where the
    # large picture is a nearest-neighbour blow-up, which no drawing or photo is. Pillow < 9.1
    # has no Image.Resampling, only the same constant on Image.
    lanczos = getattr(Image, "Resampling", Image).LANCZOS
    if image.shape[:2] == (height, width):
        return image
    planes = [
        np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], np.float32), "F")
                   .resize((width, height), lanczos))
        for c in range(image.shape[2])
    ]
    return np.stack(planes, axis=2)


def _fit(pixels: np.ndarray, background: np.ndarray, height: int, width: int) -> np.ndarray:
    """`pixels` (h, w, C) padded evenly with `background` to the aspect ratio of height x width,
    then resized to it."""
    h, w = pixels.shape[:2]
    if w * height > h * width:  # wider than the model's images: pad above and below
        new_h, new_w = max(h, round(w * height / width)), w
    else:
        new_h, new_w = h, max(w, round(h * width / height))
    if (new_h, new_w) != (h, w):
        canvas = np.empty((new_h, new_w, pixels.shape[2]), np.float32)
        canvas[:] = background
        top, left = (new_h - h) // 2, (new_w - w) // 2
        canvas[top:top + h, left:left + w] = pixels
        pixels = canvas
    return _resize(pixels, height, width)


def _frame(
    pixels: np.ndarray, background: np.ndarray, profile: dict, scale: float, height: int, width: int
) -> np.ndarray | None:
    """`pixels` (h, w, C) framed as MNIST frames its digits (see `read_pictures`), or None where
    nothing stands out from the background."""
    gray = _luma(pixels)
    paper = float(_luma(background))
    ink = gray - paper if profile["light_ink"] else paper - gray
    ring = border_ring(gray)
    noise = 1.4826 * float(np.median(np.abs(ring - np.median(ring))))  # the paper's grain
    peak = float(ink.max())
    threshold = max(6 * noise, 0.1 * peak)
    if peak < 16 or peak <= threshold:
        return None
    lit = ink > threshold
    rows, cols = np.flatnonzero(lit.any(axis=1)), np.flatnonzero(lit.any(axis=0))
    floor = min(3 * noise, threshold / 2)
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    crop = np.clip((crop - floor) / (peak - floor), 0, 1)
    box = profile["ink_box"]
    fit = box / max(crop.shape)
    new_h, new_w = max(1, round(crop.shape[0] * fit)), max(1, round(crop.shape[1] * fit))
    digit = np.clip(_resize(crop[..., None], new_h, new_w)[..., 0], 0, 1)
    mass = digit.sum()
    if mass <= 0:
        return None
    ys, xs = np.mgrid[:new_h, :new_w]
    cy, cx = (digit * ys).sum() / mass, (digit * xs).sum() / mass
    top = min(max(round(profile["centre"][0] - cy), 0), max(height - new_h, 0))
    left = min(max(round(profile["centre"][1] - cx), 0), max(width - new_w, 0))
    level = np.zeros((height, width), np.float32)
    part = digit[:height - top, :width - left]
    level[top:top + part.shape[0], left:left + part.shape[1]] = part
    base = profile["background"] * scale
    full = 255.0 if profile["light_ink"] else 0.0
    image = base + level * np.float32(full - base)
    return np.repeat(image[..., None], pixels.shape[2], axis=2)


def _read_one(file: Path, channels: int) -> np.ndarray:
    """One file as float32 (h, w, channels), 0..255."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(file) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in _WIDE_GRAY_MODES or im.mode.startswith("F"):
                values = np.asarray(im, dtype=np.float64)
                values = np.where(np.isfinite(values), values, 0.0)
                if im.mode in _WIDE_GRAY_MODES:
                    values = values / 257.0
                elif values.size and values.max() <= 1.0:  # floats from 0 to 1
                    values = values * 255.0
                gray = np.clip(values, 0, 255).astype(np.float32)[..., None]
                return gray if channels == 1 else np.repeat(gray, 3, axis=2)
            if "A" in im.getbands() or "a" in im.getbands() or "transparency" in im.info:
                return _flatten(np.asarray(im.convert("RGBA"), dtype=np.float32), channels)
            return np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.float32).reshape(
                im.size[1], im.size[0], channels
            )
    except UnidentifiedImageError:
        raise DataError(f"cannot read {file} as an image: not an image format Pillow knows") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        # An OSError from the file system carries the short reason in strerror.
        reason = (e.strerror if isinstance(e, OSError) else None) or str(e) or type(e).__name__
        raise DataError(f"cannot read {file} as an image: {reason}") from None


def _flatten(rgba: np.ndarray, channels: int) -> np.ndarray:
    """RGBA (h, w, 4) composited onto black where its opaque pixels are light on average (white
    strokes on transparency), onto white otherwise; as (h, w, channels)."""
    rgb, alpha = rgba[..., :3], rgba[..., 3:] / 255.0
    opaque = alpha[..., 0] >= 0.5
    if not opaque.any():
        opaque = alpha[..., 0] > 0
    light = opaque.any() and float(np.average(_luma(rgb)[opaque], weights=alpha[opaque, 0])) > 127.5
    under = 0.0 if light else 255.0
    flat = (rgb * alpha + under * (1 - alpha)).astype(np.float32)
    return flat if channels == 3 else _luma(flat)[..., None]
