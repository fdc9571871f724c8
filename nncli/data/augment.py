"""Image augmentation: random changes to each training batch, drawn from the run's generator.

Augmentation is a YAML list of names or one-key mappings, applied in list order:

    augment: [{random_crop: {padding: 4}}, hflip]

  random_crop   pad each image with `padding` zeros on every side, then crop it back to its
                size at a random offset: the content moves by up to `padding` pixels in each
                direction, and the border it uncovers is zero
  random_shift  move each image by up to `pixels` pixels in each direction, with zero fill.
                This is the same operation as random_crop with padding = pixels (a window of
                the zero-padded image at offset (top, left) is the image moved down by
                padding - top and right by padding - left), and it draws the same numbers:
                the two names give identical batches. Both are kept because both are common.
  hflip         mirror each image left to right with probability `p` (default 0.5)

Every augmentation works on images (N, C, H, W); the builder refuses flat vectors with the
YAML line of the entry. The trainer applies the list to each training batch right after
gathering it, never to validation or test data.

The draws, per training batch of N images, in list order (after the epoch's permutation,
before the batch's dropout masks):

  random_crop, random_shift  offsets = rng.integers(0, 2 * k + 1, size=(N, 2)), k the padding
                             (pixels): row i is sample i's (top, left) in the padded image
  hflip                      u = rng.random(N): sample i is flipped where u[i] < p (drawn for
                             every p, so p = 0 flips nothing and p = 1 everything)

How many numbers a batch draws depends only on its size and the list, never on the values, so
a run is reproducible from its seed, and an interruption at a batch boundary resumes exactly
(the generator's state is in the checkpoint).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from nncli import validate
from nncli.errors import ConfigError
from nncli.registry import Registry


class Augmentation:
    """One augmentation: built from its YAML options (`get_config` returns them), it is called
    on a batch of images (N, C, H, W) with the run's generator and returns a new array of the
    same shape and dtype; it never changes the batch it is given."""

    def get_config(self) -> dict[str, Any]:
        return {}

    def check_input(self, shape: tuple[int, int, int]) -> None:
        """Raise `ConfigError` (keyed by the option) where images of `shape` (C, H, W) do not
        suit the options; the caller has made sure the inputs are images."""

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


AUGMENTATIONS: Registry[type[Augmentation]] = Registry("augmentation")


class _Shift(Augmentation):
    """Each image moved by (dy, dx), both in [-k, k], the uncovered border zero.

    Vectorized: one zero-padded copy of the batch, then a gather of each sample's window."""

    option = "pixels"

    def __init__(self, k: int):
        self.k = validate.positive_int(self.option, k)

    def get_config(self) -> dict[str, Any]:
        return {self.option: self.k}

    def check_input(self, shape: tuple[int, int, int]) -> None:
        _, h, w = shape
        if self.k >= min(h, w):
            raise ConfigError(
                f"expected at most {min(h, w) - 1} for {h}x{w} images, got {self.k} (a shift that"
                " large can move an image entirely out of view)",
                key=self.option,
            )

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, c, h, w = x.shape
        k = self.k
        offsets = rng.integers(0, 2 * k + 1, size=(n, 2))
        padded = np.zeros((n, c, h + 2 * k, w + 2 * k), x.dtype)
        padded[:, :, k:k + h, k:k + w] = x
        windows = sliding_window_view(padded, (h, w), axis=(2, 3))  # (n, c, 2k+1, 2k+1, h, w), a view
        # the advanced indices (axes 0, 2, 3) are split by a slice, so their axis comes first
        return np.ascontiguousarray(windows[np.arange(n), :, offsets[:, 0], offsets[:, 1]])


@AUGMENTATIONS.register("random_crop")
class RandomCrop(_Shift):
    """Pad with `padding` zeros on every side, crop back to (H, W) at a random offset.

    Shape: (N, C, H, W) -> (N, C, H, W). Draws `rng.integers(0, 2 * padding + 1, size=(N, 2))`.
    """

    option = "padding"

    def __init__(self, padding: int):
        super().__init__(padding)


@AUGMENTATIONS.register("random_shift")
class RandomShift(_Shift):
    """Move each image by up to `pixels` in each direction, zero fill: random_crop with
    padding = pixels, the same draws and the same result.

    Shape: (N, C, H, W) -> (N, C, H, W). Draws `rng.integers(0, 2 * pixels + 1, size=(N, 2))`.
    """

    option = "pixels"

    def __init__(self, pixels: int):
        super().__init__(pixels)


@AUGMENTATIONS.register("hflip")
class HFlip(Augmentation):
    """Mirror each image left to right (the last axis) with probability `p`.

    Shape: (N, C, H, W) -> (N, C, H, W). Draws `rng.random(N)`; sample i is flipped where its
    draw is below p.
    """

    def __init__(self, p: float = 0.5):
        self.p = validate.fraction("p", p, closed_high=True)

    def get_config(self) -> dict[str, Any]:
        return {"p": self.p}

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        flip = rng.random(len(x)) < self.p
        out = x.copy()
        out[flip] = x[flip, ..., ::-1]
        return out


class Augmenter:
    """The configured augmentations of a run, applied in list order: `augmenter(x, rng)`.

    `get_config()` is the YAML list with every default filled in (`[{hflip: {p: 0.5}}]`).
    """

    def __init__(self, augmentations: list[Augmentation]):
        self.augmentations = list(augmentations)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for augmentation in self.augmentations:
            x = augmentation(x, rng)
        return x

    def get_config(self) -> list[dict[str, Any]]:
        return [{type(a).registered_name: a.get_config()} for a in self.augmentations]

    def __repr__(self) -> str:
        return f"Augmenter({self.get_config()})"
