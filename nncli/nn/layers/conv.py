"""2-D convolution, `conv2d` (see nncli.nn.layers.spatial for the layout inside a model).

forward     im2col through a strided view of the padded input, then one product
            (N*OH*OW, kh*kw*C) @ (kh*kw*C, F)
backward    dW as one product with the kept columns; dX as one product per kernel offset,
            added into the padded input gradient (kh*kw iterations, never np.add.at)
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from nncli import validate
from nncli.nn.initializers import get_initializer, initializer_config
from nncli.nn.layers.base import LAYERS
from nncli.nn.layers.spatial import Spatial, pad_images, padding_option, pair_option, window_view


@LAYERS.register("conv2d")
class Conv2D(Spatial):
    """2-D convolution (cross-correlation, as in every framework) with `filters` kernels.

    Parameters: W of shape (filters, channels, kh, kw), PyTorch's layout, and b of shape
    (filters,). fan_in = channels * kh * kw, fan_out = filters * kh * kw for the initializer.
    `padding` is a number of zero rows and columns on each side (an int or [h, w]), `same`
    (output size ceil(input / stride)) or `valid` (none).

    Shape: (C, H, W) -> (filters, OH, OW), OH = (H + pad_top + pad_bottom - kh) // stride + 1.
    """

    decayed = ("W",)
    option_hints = {
        "kernel_size": "kernel",
        "strides": "stride",
        "use_bias": "bias",
        "kernel_initializer": "init",
        "out_channels": "filters",
    }

    def __init__(self, filters: int, kernel=3, stride=1, padding=0, bias: bool = True, init="he"):
        super().__init__()
        self.filters = validate.positive_int("filters", filters)
        self.kernel = pair_option("kernel", kernel)
        self.stride = pair_option("stride", stride)
        self.padding = padding_option(padding)
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
        padded = pad_images(x, self.pads)
        self.padded_shape = padded.shape
        cols = self._columns(padded, n)
        self.cols = cols  # backward: dW = cols.T @ dout; the input itself is not kept
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
                phases = [
                    [np.ascontiguousarray(padded[:, p::2, q::2, 0]) for q in range(2)] for p in range(2)
                ]
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
            view = window_view(padded, kh, kw, sh, sw, oh, ow)
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
