"""Image files as model inputs: the pictures `nncli predict` classifies.

`image_files` turns the paths a user gives (files and folders) into a list of files, and
`read_images` reads them as float32 (N, C, H, W) for a model that takes (C, H, W) images, with
the same values as the dataset it was trained on (0..pixel_max; light-on-dark with `invert` for
MNIST-like models). Pillow, which matplotlib already needs, is imported only when a file is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

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


def read_images(
    files: Sequence[Path],
    shape: tuple[int, int, int],
    *,
    invert: bool = False,
    pixel_max: float = 255.0,
) -> np.ndarray:
    """The images in `files` as float32 (N, C, H, W), for a model that takes `shape` = (C, H, W).

    Each file is read with Pillow (the first frame of an animation), turned upright where its
    EXIF data says the camera held it otherwise, and its transparency flattened onto white, so
    that a digit drawn in black on a transparent background reads as black on white. It is then
    made gray (C = 1, Pillow's "L": 0.299 R + 0.587 G + 0.114 B) or RGB (C = 3, channels in
    that order) and resized to H x W; a picture that is not of the model's aspect ratio is
    stretched to it, not cropped or padded. Values are 0..255 (255 - v with `invert`, for
    dark-on-light pictures given to a model trained on light-on-dark images such as MNIST), then
    scaled to 0..`pixel_max` (v * pixel_max / 255), the range of the model's training data.

    A file that cannot be read as an image is a `DataError` naming it; a C other than 1 or 3
    is a `ValueError` (the caller checks with `image_shape` first).
    """
    if image_shape(shape) is None:
        raise ValueError(f"cannot read images of shape {tuple(shape)}; expected (C, H, W) with C"
                         " 1 or 3 and H, W positive")
    if not pixel_max > 0:
        raise ValueError(f"pixel_max must be positive, got {pixel_max}")
    channels, height, width = image_shape(shape)
    out = np.empty((len(files), channels, height, width), dtype=np.float32)
    for i, file in enumerate(files):
        pixels = _read_one(Path(file), channels, height, width)  # (H, W) or (H, W, 3), uint8
        out[i] = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    if invert:
        np.subtract(255.0, out, out=out)
    if pixel_max != 255.0:
        out *= np.float32(pixel_max / 255.0)
    return out


def _read_one(file: Path, channels: int, height: int, width: int) -> np.ndarray:
    """One file as uint8 (H, W) for one channel, (H, W, 3) for three."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    # LANCZOS rather than BOX (area): a 200x200 picture of an MNIST digit (bicubic upscale of
    # the 28x28 original) comes back with a mean absolute error of 2.7 / 255 against 3.6 for
    # BOX (HAMMING 3.9, BICUBIC 3.4, BILINEAR 5.5; 200 test digits). BOX wins only where the
    # large picture is a nearest-neighbour blow-up, which no drawing or photo is. Pillow < 9.1
    # has no Image.Resampling, only the same constant on Image.
    lanczos = getattr(Image, "Resampling", Image).LANCZOS
    try:
        with Image.open(file) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in _WIDE_GRAY_MODES:
                wide = np.asarray(im, dtype=np.float64)
                im = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), "L")
            if "A" in im.getbands() or "a" in im.getbands() or "transparency" in im.info:
                rgba = im.convert("RGBA")
                im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            im = im.convert("L" if channels == 1 else "RGB")
            if im.size != (width, height):
                im = im.resize((width, height), lanczos)
            return np.asarray(im, dtype=np.uint8)
    except UnidentifiedImageError:
        raise DataError(f"cannot read {file} as an image: not an image format Pillow knows") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        # An OSError from the file system carries the short reason in strerror.
        reason = (e.strerror if isinstance(e, OSError) else None) or str(e) or type(e).__name__
        raise DataError(f"cannot read {file} as an image: {reason}") from None
