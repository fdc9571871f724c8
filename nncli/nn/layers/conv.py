"""Convolution and pooling over images: conv2d, maxpool2d, avgpool2d, global_avgpool.

Shapes are given as PyTorch gives them, channels first: a layer built for (C, H, W) reports
(F, OH, OW). Inside a model the arrays are channels-last, (N, H, W, C): that is the layout a
convolution's matrix product produces (one row per output pixel, one column per filter), so no
layer transposes its output, batch norm takes per-channel statistics over a (N*H*W, C) view,
and pooling windows are contiguous runs of channels. `Sequential` converts at its boundary
(and `flatten` orders features as PyTorch does), so inputs, outputs and checkpoints are the
same as a channels-first implementation's.

The work is vectorized: no Python loop runs over samples or pixels.

  conv2d forward     im2col through a strided view of the padded input, then one product
                     (N*OH*OW, kh*kw*C) @ (kh*kw*C, F)
  conv2d backward    dW as one product with the kept columns; dX as one product per kernel
                     offset, added into the padded input gradient (kh*kw iterations, never
                     np.add.at)
  maxpool2d          size == stride, no padding, dividing sizes: comparisons on a
                     (N, OH, k, OW, k, C) view; otherwise the argmax of strided windows.
                     A tie sends the gradient to the first maximum in row-major order within
                     the window (the top-left one), as PyTorch's CPU kernel does.
  avgpool2d          sums of k*k strided slices; padding counts as zeros (PyTorch's default)
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from nncli import validate
from nncli.errors import ConfigError
from nncli.nn.initializers import get_initializer, initializer_config
from nncli.nn.layers.base import LAYERS, Layer


def _pair(key: str, value: object) -> tuple[int, int]:
    """An int or a two-item list of positive ints."""
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise ConfigError(f"expected an integer or a pair [height, width], got {value!r}", key=key)
        return validate.positive_int(key, value[0]), validate.positive_int(key, value[1])
    n = validate.positive_int(key, value)
    return n, n


def _padding(value: object) -> tuple[int, int] | str:
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


def _pads(padding, size: int, kernel: int, stride: int, axis: str) -> tuple[int, int]:
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


def _image_input(layer: Layer, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        after = "after flatten or on flat data" if len(input_shape) == 1 else f"on input {input_shape}"
        raise ConfigError(
            f"{layer.name} needs images of shape (channels, height, width); it is {after}:"
            f" got {input_shape}"
        )
    return input_shape  # type: ignore[return-value]


def _out_size(layer: Layer, size: int, pads: tuple[int, int], kernel: int, stride: int, axis: str) -> int:
    padded = size + pads[0] + pads[1]
    if kernel > padded:
        raise ConfigError(
            f"the {kernel}-pixel kernel is larger than the input's {axis} ({size}"
            f"{f' padded to {padded}' if padded != size else ''}): {layer.name} cannot take"
            f" {layer.input_shape}"
        )
    return (padded - kernel) // stride + 1


def _pad(x: np.ndarray, pads: tuple[tuple[int, int], tuple[int, int]], value: float = 0.0) -> np.ndarray:
    """(N, H, W, C) with rows and columns of `value` around each image."""
    (top, bottom), (left, right) = pads
    if not (top or bottom or left or right):
        return x
    n, h, w, c = x.shape
    out = np.full((n, h + top + bottom, w + left + right, c), value, dtype=x.dtype)
    out[:, top : top + h, left : left + w] = x
    return out


def _windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int, oh: int, ow: int) -> np.ndarray:
    """A read-only view (N, OH, OW, kh, kw, C) of every window of a padded (N, H, W, C) batch."""
    n, _, _, c = x.shape
    s0, s1, s2, s3 = x.strides
    return as_strided(x, (n, oh, ow, kh, kw, c), (s0, s1 * sh, s2 * sw, s1, s2, s3), writeable=False)


class _Spatial(Layer):
    """What conv and pooling layers share: kernel, stride, padding and the output size."""

    elementwise_bound = True  # im2col copies, window comparisons and sums

    def _setup(self, input_shape) -> tuple[int, ...]:
        c, h, w = _image_input(self, input_shape)
        (kh, kw), (sh, sw) = self.kernel, self.stride
        self.pads = (_pads(self.padding, h, kh, sh, "height"), _pads(self.padding, w, kw, sw, "width"))
        self.out_hw = (
            _out_size(self, h, self.pads[0], kh, sh, "height"),
            _out_size(self, w, self.pads[1], kw, sw, "width"),
        )
        return c, h, w

    def _padding_config(self):
        return self.padding if isinstance(self.padding, str) else list(self.padding)


@LAYERS.register("conv2d")
class Conv2D(_Spatial):
    """2-D convolution (cross-correlation, as in every framework) with `filters` kernels.

    Parameters: W of shape (filters, channels, kh, kw), PyTorch's layout, and b of shape
    (filters,). fan_in = channels * kh * kw, fan_out = filters * kh * kw for the initializer.
    `padding` is a number of zero rows and columns on each side (an int or [h, w]), `same`
    (output size ceil(input / stride)) or `valid` (none).

    Shape: (C, H, W) -> (filters, OH, OW), OH = (H + pad_top + pad_bottom - kh) // stride + 1.
    """

    decayed = ("W",)
    option_hints = {"kernel_size": "kernel", "strides": "stride", "use_bias": "bias",
                    "kernel_initializer": "init", "out_channels": "filters"}

    def __init__(self, filters: int, kernel=3, stride=1, padding=0, bias: bool = True, init="he"):
        super().__init__()
        self.filters = validate.positive_int("filters", filters)
        self.kernel = _pair("kernel", kernel)
        self.stride = _pair("stride", stride)
        self.padding = _padding(padding)
        self.bias = validate.boolean("bias", bias)
        self.init = get_initializer(init)
        self.blocked = False  # set by the model: see nncli.nn.model's `block_for_pooling`

    def infer_output_shape(self, input_shape):
        self._setup(input_shape)
        return (self.filters, *self.out_hw)

    def param_count(self, input_shape):
        kh, kw = self.kernel
        return self.filters * (input_shape[0] * kh * kw + self.bias)

    def create_params(self, rng, dtype):
        c = self.input_shape[0]
        kh, kw = self.kernel
        shape = (self.filters, c, kh, kw)
        self.params["W"] = self.init(shape, c * kh * kw, self.filters * kh * kw, rng, dtype)
        if self.bias:
            self.params["b"] = np.zeros(self.filters, dtype=dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def _matrix(self) -> np.ndarray:
        """W as (kh*kw*C, F), rows in the order of a window's (i, j, channel) values, and the
        bias as one more row: the columns carry a 1 for it (see `_columns`)."""
        W = self.params["W"].transpose(2, 3, 1, 0).reshape(-1, self.filters)
        return np.concatenate([W, self.params["b"][None]]) if self.bias else W

    def forward(self, x, training):
        n = x.shape[0]
        oh, ow = self.out_hw
        padded = _pad(x, self.pads)
        self.padded_shape = padded.shape
        cols = self._columns(padded, n)
        # backward: dW = cols.T @ dout; the input itself is not kept, nor anything in evaluation
        # (the columns of 1,000 MNIST digits in the second layer are 113 MB)
        self.cols = cols if training else None
        out = cols @ self._matrix()
        if self.blocked:
            return out.reshape(2, 2, n, oh // 2, ow // 2, self.filters)
        return out.reshape(n, oh, ow, self.filters)

    def _columns(self, padded: np.ndarray, n: int) -> np.ndarray:
        """im2col: one row per output pixel (in the blocked order when `blocked`), holding its
        window's kh*kw*C values in (i, j, channel) order, then a 1 for the bias when there is
        one: the product adds the bias, and the gradient's product sums it, with no pass of
        their own (0.5 and 0.3 ms of the MNIST CNN's first layer)."""
        (kh, kw), (sh, sw), (oh, ow) = self.kernel, self.stride, self.out_hw
        s0, s1, s2, s3 = padded.strides
        c = padded.shape[3]
        k, rows_out = kh * kw * c, n * oh * ow
        extra = 1 if self.bias else 0
        if c == 1:
            # One channel (the first layer on gray images): one contiguous row per kernel
            # offset, copied 6x faster than the strided view (0.34 against 2 ms for a batch of
            # 128 MNIST digits); the product reads them transposed at no cost.
            rows = np.empty((k + extra, rows_out), dtype=padded.dtype)
            if extra:
                rows[k] = 1
            if self.blocked:  # (stride 1) rows (dy, dx, n, ph, pw) from the four phase images
                # the four phase images, copied once so the 36 copies below read whole rows
                phases = [[np.ascontiguousarray(padded[:, p::2, q::2, 0]) for q in range(2)]
                          for p in range(2)]
                blocks = rows[:k].reshape(kh, kw, 2, 2, n, oh // 2, ow // 2)
                for i in range(kh):
                    for j in range(kw):
                        for dy in range(2):
                            for dx in range(2):
                                r, q = (i + dy) // 2, (j + dx) // 2
                                phase = phases[(i + dy) % 2][(j + dx) % 2]
                                blocks[i, j, dy, dx] = phase[:, r : r + oh // 2, q : q + ow // 2]
            else:
                blocks = rows[:k].reshape(kh, kw, n, oh, ow)
                for i in range(kh):
                    for j in range(kw):
                        window = padded[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
                        blocks[i, j] = window[..., 0]
            return rows.T
        if self.blocked:  # (stride 1) output pixel (2 ph + dy, 2 pw + dx) at row (dy, dx, n, ph, pw)
            shape = (2, 2, n, oh // 2, ow // 2, kh, kw, c)
            view = as_strided(padded, shape, (s1, s2, s0, 2 * s1, 2 * s2, s1, s2, s3), writeable=False)
        else:
            view = _windows(padded, kh, kw, sh, sw, oh, ow)
            shape = view.shape
        cols = np.empty((rows_out, k + extra), dtype=padded.dtype)
        np.copyto(cols[:, :k].reshape(shape), view)  # a view of cols: one copy in all
        if extra:
            cols[:, k] = 1
        return cols

    def backward(self, dout):
        f = dout.shape[-1]
        d2 = dout.reshape(-1, f)
        c = self.input_shape[0]
        (kh, kw), (sh, sw), (oh, ow) = self.kernel, self.stride, self.out_hw
        both = self.cols.T @ d2  # dW, and db in the last row when there is a bias
        k = kh * kw * c
        self.grads["W"][...] = both[:k].reshape(kh, kw, c, f).transpose(3, 2, 0, 1)
        if self.bias:
            self.grads["b"][...] = both[k]
        if not self.needs_input_grad:
            return None
        if self.blocked:  # back to (n, oh, ow, f): the per-offset adds want whole rows
            n = dout.shape[2]
            d2 = dout.transpose(2, 3, 0, 4, 1, 5).reshape(n * oh * ow, f)
        n = d2.shape[0] // (oh * ow)
        # one product per kernel offset, added into the padded input's gradient
        dpadded = np.zeros(self.padded_shape, dtype=dout.dtype)
        W = self.params["W"]
        for i in range(kh):
            for j in range(kw):
                part = (d2 @ W[:, :, i, j]).reshape(n, oh, ow, c)
                dpadded[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw] += part
        (top, _), (left, _) = self.pads
        h, w = self.input_shape[1:]
        return dpadded[:, top : top + h, left : left + w]

    def get_config(self):
        return {
            "filters": self.filters,
            "kernel": list(self.kernel),
            "stride": list(self.stride),
            "padding": self._padding_config(),
            "bias": self.bias,
            "init": initializer_config(self.init),
        }


class _Pool(_Spatial):
    option_hints = {"pool_size": "size", "kernel_size": "size", "strides": "stride"}

    def __init__(self, size=2, stride=None, padding=0):
        super().__init__()
        self.kernel = _pair("size", size)
        self.stride = self.kernel if stride is None else _pair("stride", stride)
        self.padding = _padding(padding)
        if not isinstance(self.padding, str):
            limit = (self.kernel[0] // 2, self.kernel[1] // 2)
            if self.padding[0] > limit[0] or self.padding[1] > limit[1]:
                raise ConfigError(
                    f"expected at most half the window ({list(limit)}), got {list(self.padding)}",
                    key="padding",
                )

    def infer_output_shape(self, input_shape):
        c, _, _ = self._setup(input_shape)
        return (c, *self.out_hw)

    def get_config(self):
        return {"size": list(self.kernel), "stride": list(self.stride), "padding": self._padding_config()}


@LAYERS.register("maxpool2d", hints=("MaxPooling2D",))
class MaxPool2D(_Pool):
    """The maximum of each `size` window, moved by `stride` (default: `size`); padding is -inf.

    A tie sends the gradient to the first maximum of the window in row-major order.
    Shape: (C, H, W) -> (C, OH, OW).
    """

    def infer_output_shape(self, input_shape):
        shape = super().infer_output_shape(input_shape)
        # windows that tile the input exactly are a reshape, not a strided copy
        (kh, kw), (sh, sw) = self.kernel, self.stride
        _, h, w = input_shape
        no_pad = self.pads == ((0, 0), (0, 0))
        self.tiled = (kh, kw) == (sh, sw) and no_pad and h % kh == 0 and w % kw == 0
        # the usual 2x2 pool, odd sizes included (their last row or column takes no part)
        self.two_by_two = (kh, kw) == (sh, sw) == (2, 2) and no_pad
        self.blocked = False  # set by the model: see nncli.nn.model's `block_for_pooling`
        return shape

    def forward(self, x, training):
        (kh, kw), (sh, sw), (oh, ow) = self.kernel, self.stride, self.out_hw
        if self.two_by_two:
            # The common 2x2 pool as three maxima of the window's four corners: 4x faster than a
            # max reduction over a (N, OH, 2, OW, 2, C) view, and 2x faster again when the
            # convolution before hands its output over blocked by corner, so that each corner
            # is one contiguous array (see nncli.nn.model's `block_for_pooling`). Which input won
            # each comparison is kept for backward (ties to the first of the two, in row-major order).
            if self.blocked:
                (a, b), (c_, d) = x
            else:
                a, b = x[:, 0 : 2 * oh : 2, 0 : 2 * ow : 2], x[:, 0 : 2 * oh : 2, 1 : 2 * ow : 2]
                c_, d = x[:, 1 : 2 * oh : 2, 0 : 2 * ow : 2], x[:, 1 : 2 * oh : 2, 1 : 2 * ow : 2]
            top, bottom = np.maximum(a, b), np.maximum(c_, d)
            if training:  # evaluation keeps nothing, and skips the comparisons
                self.left_top, self.left_bottom = a >= b, c_ >= d
                self.upper = top >= bottom
                self.x_shape = x.shape
            return np.maximum(top, bottom, out=top)
        n, _, _, c = x.shape
        if self.tiled:
            view = x.reshape(n, oh, kh, ow, kw, c)
            out = view.max(axis=(2, 4))
            if training:
                self.saved = view  # backward compares the windows with their maxima
                self.out = out
            return out
        padded = _pad(x, self.pads, -np.inf)
        windows = _windows(padded, kh, kw, sh, sw, oh, ow).reshape(n, oh, ow, kh * kw, c)
        self.argmax = windows.argmax(axis=3)  # the first maximum in row-major order
        self.padded_shape = padded.shape
        return np.take_along_axis(windows, self.argmax[:, :, :, None, :], axis=3)[:, :, :, 0]

    def backward(self, dout):
        n, oh, ow, c = dout.shape
        (kh, kw), (sh, sw) = self.kernel, self.stride
        if self.two_by_two:
            dx = np.empty(self.x_shape, dtype=dout.dtype)
            if not self.blocked and (dx.shape[1] != 2 * oh or dx.shape[2] != 2 * ow):
                dx[...] = 0  # odd sizes: the last row or column takes no part
            upper = dout * self.upper
            lower = np.subtract(dout, upper, out=np.empty_like(dout))
            for half, left, row in ((upper, self.left_top, 0), (lower, self.left_bottom, 1)):
                if self.blocked:
                    first, second = dx[row, 0], dx[row, 1]
                else:
                    first = dx[:, row : 2 * oh : 2, 0 : 2 * ow : 2]
                    second = dx[:, row : 2 * oh : 2, 1 : 2 * ow : 2]
                np.multiply(half, left, out=first)
                np.subtract(half, first, out=second)
            return dx
        if self.tiled:
            view, out = self.saved, self.out
            dx = np.zeros(view.shape, dtype=dout.dtype)
            taken = np.zeros(out.shape, dtype=bool)
            for i in range(kh):  # the first maximum takes the gradient, in row-major order
                for j in range(kw):
                    first = (view[:, :, i, :, j] == out) & ~taken
                    taken |= first
                    dx[:, :, i, :, j] = dout * first
            return dx.reshape(n, oh * kh, ow * kw, c)
        dpadded = np.zeros(self.padded_shape, dtype=dout.dtype)
        for i in range(kh):
            for j in range(kw):
                part = dout * (self.argmax == i * kw + j)
                dpadded[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw] += part
        (top, _), (left, _) = self.pads
        h, w = self.input_shape[1:]
        return dpadded[:, top : top + h, left : left + w]

    def switch_pattern(self):
        """Which input of each window is the maximum: a change means a kink was crossed."""
        if self.two_by_two:
            return np.stack([self.left_top, self.left_bottom, self.upper])
        if self.tiled:
            view, out = self.saved, self.out
            return np.stack([view[:, :, i, :, j] == out for i in range(self.kernel[0])
                             for j in range(self.kernel[1])])
        return self.argmax


@LAYERS.register("avgpool2d", hints=("AveragePooling2D",))
class AvgPool2D(_Pool):
    """The mean of each `size` window, moved by `stride` (default: `size`); padded cells count
    as zeros in the mean (PyTorch's count_include_pad). Shape: (C, H, W) -> (C, OH, OW)."""

    def forward(self, x, training):
        (kh, kw), (sh, sw), (oh, ow) = self.kernel, self.stride, self.out_hw
        padded = _pad(x, self.pads)
        self.padded_shape = padded.shape
        out = np.zeros((x.shape[0], oh, ow, x.shape[3]), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                out += padded[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
        out *= x.dtype.type(1.0 / (kh * kw))
        return out

    def backward(self, dout):
        (kh, kw), (sh, sw) = self.kernel, self.stride
        n, oh, ow, c = dout.shape
        share = dout * dout.dtype.type(1.0 / (kh * kw))
        dpadded = np.zeros(self.padded_shape, dtype=dout.dtype)
        for i in range(kh):
            for j in range(kw):
                dpadded[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw] += share
        (top, _), (left, _) = self.pads
        h, w = self.input_shape[1:]
        return dpadded[:, top : top + h, left : left + w]


@LAYERS.register("global_avgpool", hints=("GlobalAveragePooling2D", "GlobalAvgPool2D"))
class GlobalAvgPool(Layer):
    """The mean of each channel over the image. Shape: (C, H, W) -> (C,)."""

    def infer_output_shape(self, input_shape):
        c, _, _ = _image_input(self, input_shape)
        return (c,)

    def forward(self, x, training):
        n, h, w, c = x.shape
        return x.reshape(n, h * w, c).mean(axis=1)

    def backward(self, dout):
        n = dout.shape[0]
        _, h, w = self.input_shape
        share = dout * dout.dtype.type(1.0 / (h * w))
        return np.broadcast_to(share[:, None, None, :], (n, h, w, share.shape[1])).copy()
