"""What convolution and pooling layers share: kernel, stride and padding options, output sizes,
padding and strided window views.

Shapes are given as PyTorch gives them, channels first: a layer built for (C, H, W) reports
(F, OH, OW). Inside a model the arrays are channels-last, (N, H, W, C): that is the layout a
convolution's matrix product produces (one row per output pixel, one column per filter), so no
layer transposes its output, batch norm takes per-channel statistics over a (N*H*W, C) view,
and pooling windows are contiguous runs of channels. `Sequential` converts at its boundary
(and `flatten` orders features as PyTorch does), so inputs, outputs and checkpoints are the
same as a channels-first implementation's. The work is vectorized: no Python loop runs over
samples or pixels.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from nncli import validate
from nncli.errors import ConfigError
from nncli.nn.layers.base import Layer


def pair_option(key: str, value: object) -> tuple[int, int]:
    """An int or a two-item list of positive ints."""
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise ConfigError(f"expected an integer or a pair [height, width], got {value!r}", key=key)
        return validate.positive_int(key, value[0]), validate.positive_int(key, value[1])
    n = validate.positive_int(key, value)
    return n, n


def padding_option(value: object) -> tuple[int, int] | str:
    """`same`, `valid`, an int or a pair of non-negative ints."""
    if value in ("same", "valid"):
        return value  # type: ignore[return-value]
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise ConfigError(f"expected same, valid, an integer or a pair, got {value!r}", key="padding")
        return validate.non_negative_int("padding", value[0]), validate.non_negative_int("padding", value[1])
    if isinstance(value, str):
        raise ConfigError(f"expected same, valid, an integer or a pair, got {value!r}", key="padding")
    n = validate.non_negative_int("padding", value)
    return n, n


def pads_for(padding, size: int, kernel: int, stride: int, axis: str) -> tuple[int, int]:
    """(before, after) padding of one spatial axis. `same` gives ceil(size / stride) outputs,
    the extra row or column going after (TensorFlow's rule; PyTorch's for stride 1)."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2
    p = padding[0 if axis == "height" else 1]
    return p, p


def image_input(layer: Layer, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        after = "after flatten or on flat data" if len(input_shape) == 1 else f"on input {input_shape}"
        raise ConfigError(
            f"{layer.name} needs images of shape (channels, height, width); it is {after}: got {input_shape}"
        )
    return input_shape  # type: ignore[return-value]


def out_size(layer: Layer, size: int, pads: tuple[int, int], kernel: int, stride: int, axis: str) -> int:
    padded = size + pads[0] + pads[1]
    if kernel > padded:
        raise ConfigError(
            f"the {kernel}-pixel kernel is larger than the input's {axis} ({size}"
            f"{f' padded to {padded}' if padded != size else ''}): {layer.name} cannot take"
            f" {layer.input_shape}"
        )
    return (padded - kernel) // stride + 1


def pad_images(
    x: np.ndarray, pads: tuple[tuple[int, int], tuple[int, int]], value: float = 0.0
) -> np.ndarray:
    """(N, H, W, C) with rows and columns of `value` around each image."""
    (top, bottom), (left, right) = pads
    if not (top or bottom or left or right):
        return x
    n, h, w, c = x.shape
    out = np.full((n, h + top + bottom, w + left + right, c), value, dtype=x.dtype)
    out[:, top : top + h, left : left + w] = x
    return out


def window_view(x: np.ndarray, kh: int, kw: int, sh: int, sw: int, oh: int, ow: int) -> np.ndarray:
    """A read-only view (N, OH, OW, kh, kw, C) of every window of a padded (N, H, W, C) batch."""
    n, _, _, c = x.shape
    s0, s1, s2, s3 = x.strides
    return as_strided(x, (n, oh, ow, kh, kw, c), (s0, s1 * sh, s2 * sw, s1, s2, s3), writeable=False)


def blocked_view(x: np.ndarray, oh: int, ow: int, tail: tuple[int, ...], tail_strides: tuple[int, ...],
                 writeable: bool = False) -> np.ndarray:
    """An (N, H, W, ...) array, whose pixels (row, column) step as a stride-1 output's of OH x OW
    do, viewed in the blocked order of a convolution's rows (see nncli.nn.model's
    `block_for_pooling`): (dy, dx, n, ph, pw, *tail), where (dy, dx, n, ph, pw) is pixel
    (2 ph + dy, 2 pw + dx) of sample n, and `tail` (with `tail_strides`) what each pixel holds."""
    s0, s1, s2 = x.strides[:3]
    shape = (2, 2, x.shape[0], oh // 2, ow // 2, *tail)
    return as_strided(x, shape, (s1, s2, s0, 2 * s1, 2 * s2, *tail_strides), writeable=writeable)


class Spatial(Layer):
    """What conv and pooling layers share: kernel, stride, padding and the output size."""

    elementwise_bound = True  # im2col copies, window comparisons and sums

    def _setup(self, input_shape) -> tuple[int, ...]:
        c, h, w = image_input(self, input_shape)
        (kh, kw), (sh, sw) = self.kernel, self.stride
        self.pads = (pads_for(self.padding, h, kh, sh, "height"), pads_for(self.padding, w, kw, sw, "width"))
        self.out_hw = (
            out_size(self, h, self.pads[0], kh, sh, "height"),
            out_size(self, w, self.pads[1], kw, sw, "width"),
        )
        return c, h, w

    def _padding_config(self):
        return self.padding if isinstance(self.padding, str) else list(self.padding)
