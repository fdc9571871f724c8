"""Pooling over images: maxpool2d, avgpool2d, global_avgpool (see nncli.nn.layers.spatial for
the layout inside a model).

  maxpool2d          size == stride, no padding, dividing sizes: comparisons on a
                     (N, OH, k, OW, k, C) view; otherwise the argmax of strided windows.
                     A tie sends the gradient to the first maximum in row-major order within
                     the window (the top-left one), as PyTorch's CPU kernel does.
  avgpool2d          sums of k*k strided slices; padding counts as zeros (PyTorch's default)
"""

from __future__ import annotations

import numpy as np

from nncli.errors import ConfigError
from nncli.nn.layers.base import LAYERS, Layer
from nncli.nn.layers.spatial import Spatial, image_input, pad_images, padding_option, pair_option, window_view


class _Pool(Spatial):
    option_hints = {"pool_size": "size", "kernel_size": "size", "strides": "stride"}

    def __init__(self, size=2, stride=None, padding=0):
        super().__init__()
        self.kernel = pair_option("size", size)
        self.stride = self.kernel if stride is None else pair_option("stride", stride)
        self.padding = padding_option(padding)
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
            if self.blocked:  # (chunks, 2, 2, N / chunks, OH, OW, C): see Conv2D.forward
                a, b, c_, d = x[:, 0, 0], x[:, 0, 1], x[:, 1, 0], x[:, 1, 1]
            else:
                a, b = x[:, 0 : 2 * oh : 2, 0 : 2 * ow : 2], x[:, 0 : 2 * oh : 2, 1 : 2 * ow : 2]
                c_, d = x[:, 1 : 2 * oh : 2, 0 : 2 * ow : 2], x[:, 1 : 2 * oh : 2, 1 : 2 * ow : 2]
            top, bottom = np.maximum(a, b), np.maximum(c_, d)
            if training:  # evaluation keeps nothing, and skips the comparisons
                self.left_top, self.left_bottom = a >= b, c_ >= d
                self.upper = top >= bottom
                self.x_shape = x.shape
            out = np.maximum(top, bottom, out=top)
            return out.reshape(-1, *out.shape[-3:]) if self.blocked else out
        n, _, _, c = x.shape
        if self.tiled:
            view = x.reshape(n, oh, kh, ow, kw, c)
            out = view.max(axis=(2, 4))
            if training:
                self.saved = view  # backward compares the windows with their maxima
                self.out = out
            return out
        padded = pad_images(x, self.pads, -np.inf)
        windows = window_view(padded, kh, kw, sh, sw, oh, ow).reshape(n, oh, ow, kh * kw, c)
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
            if self.blocked:
                dout = dout.reshape(self.upper.shape)
            upper = dout * self.upper
            lower = np.subtract(dout, upper, out=np.empty_like(dout))
            for half, left, row in ((upper, self.left_top, 0), (lower, self.left_bottom, 1)):
                if self.blocked:
                    first, second = dx[:, row, 0], dx[:, row, 1]
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
            return np.stack(
                [view[:, :, i, :, j] == out for i in range(self.kernel[0]) for j in range(self.kernel[1])]
            )
        return self.argmax


@LAYERS.register("avgpool2d", hints=("AveragePooling2D",))
class AvgPool2D(_Pool):
    """The mean of each `size` window, moved by `stride` (default: `size`); padded cells count
    as zeros in the mean (PyTorch's count_include_pad). Shape: (C, H, W) -> (C, OH, OW)."""

    def forward(self, x, training):
        (kh, kw), (sh, sw), (oh, ow) = self.kernel, self.stride, self.out_hw
        padded = pad_images(x, self.pads)
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
        c, _, _ = image_input(self, input_shape)
        return (c,)

    def forward(self, x, training):
        n, h, w, c = x.shape
        return x.reshape(n, h * w, c).mean(axis=1)

    def backward(self, dout):
        n = dout.shape[0]
        _, h, w = self.input_shape
        share = dout * dout.dtype.type(1.0 / (h * w))
        return np.broadcast_to(share[:, None, None, :], (n, h, w, share.shape[1])).copy()
