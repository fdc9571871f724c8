"""2-D convolution, `conv2d` (see nncli.nn.layers.spatial for the layout inside a model).

  forward     im2col through a strided view of the padded input, then the product
              (M*OH*OW, kh*kw*C) @ (kh*kw*C, F) for each chunk of M samples (about 1 MiB of
              columns: see `chunk_count`; one chunk of all N for a one-channel input)
  backward    with an input gradient to compute, a multi-channel input and stride 1 (see
              `Conv2D.full_grad`), for each chunk: its output gradient, padded to the "full"
              correlation's size, copied as width windows; then, in one batched call for all
              kernel rows, each row's product a sample with the flipped kernel's row (its part
              of dX, the parts then summed into dX), and in another each row's product with
              the sample's input (that row of dW, summed over the samples; see
              `_FullCorrelation`).
              Otherwise, for each chunk: its columns made again (or kept, for one channel), dW
              as their product with the output gradient, and dX as one product per kernel
              offset, added into the padded input gradient (kh*kw iterations, never np.add.at)

Each of these products runs as one batched np.matmul over blocks of samples: in the correlation
one block a sample; elsewhere, on OpenBLAS's AVX-512 kernels, blocks small enough for their
unpacked small-product path (nncli.nn.layers.blas.product_blocks: one sample a block for the
MNIST CNN's second convolution), and one block on other kernels. A product that sums over the
rows (dW) sums the blocks' products.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from nncli import validate
from nncli.nn.initializers import get_initializer, initializer_config
from nncli.nn.layers.base import LAYERS
from nncli.nn.layers.blas import column_sums, product_blocks, row_blocks
from nncli.nn.layers.spatial import (
    Spatial,
    blocked_view,
    pad_images,
    padding_option,
    pair_option,
    window_view,
)

# How many bytes of im2col columns a convolution makes at a time (see `chunk_count`).
CHUNK_BYTES = 1 << 20


@functools.lru_cache(maxsize=64)
def chunk_count(n: int, bytes_per_sample: int, target: int) -> int:
    """How many equal chunks of samples a convolution runs a batch of `n` as: the divisor of
    `n` whose chunks' columns come closest to `target` bytes (the layer passes CHUNK_BYTES)
    without falling below half of it.

    A chunk's columns are then made, multiplied and dropped while they are in the core's own
    cache (2 MiB of L2 on the Zen 5 this was measured on): for the MNIST CNN's second
    convolution, a batch of 128 in 16 chunks of 8 (0.9 MiB of columns each) against one of
    128 (14.5 MiB, which leaves the cache before the product reads it back) took 3.2 against
    4.5 ms forward and 8.0 against 8.8 backward (one thread, the fastest of 20, on a machine
    shared with other jobs).
    """
    want = n * bytes_per_sample / target
    if want <= 1:
        return 1
    # chunks of at least half the target: a batch of a prime size stays whole rather than
    # running as one chunk a sample, whose Python calls would cost more than the cache saves
    divisors = [k for k in range(1, n + 1) if n % k == 0 and k <= 2 * want]
    return min(divisors, key=lambda k: abs(math.log(k / want)))


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

    @property
    def full_grad(self) -> bool:
        """Whether backward can take the gradients from a correlation of the output gradient
        (`_correlation_backward`): stride 1, and no side padded by as much as the kernel (every
        output pixel then sees an input pixel). It does when the input gradient is wanted and
        the input has more than one channel (one channel keeps its columns instead)."""
        (kh, kw), ((top, bottom), (left, right)) = self.kernel, self.pads
        return self.stride == (1, 1) and max(top, bottom) < kh and max(left, right) < kw

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
        if padded.shape[3] == 1:
            self.chunks = 1
            cols = self._one_channel_columns(padded, n)
            # backward: dW = cols.T @ dout; nothing is kept in evaluation
            self.cols, self.padded, self.inputs = (cols if training else None), None, None
            W = self._matrix()
            out = np.empty((n * oh * ow, self.filters), dtype=padded.dtype)
            blocks = product_blocks(n, oh * ow, W.shape[0], self.filters)
            np.matmul(row_blocks(cols, blocks), W, out=out.reshape(blocks, -1, self.filters))
        else:
            # Chunk by chunk, each chunk's columns made in one buffer: its copy, product and
            # output stay in the core's cache (see `chunk_count`). Backward makes columns again
            # rather than keeping these (15 MB for the MNIST CNN's second convolution): of the
            # output gradient when it correlates (`full_grad`, see `_correlation_backward`),
            # which needs the input; otherwise of the padded input. Nothing in evaluation.
            correlates = training and self.full_grad and self.needs_input_grad
            self.cols, self.inputs = None, (x if correlates else None)
            self.padded = padded if training and not correlates else None
            self.chunks = chunk_count(n, oh * ow * self._width() * padded.itemsize, CHUNK_BYTES)
            m, rows = n // self.chunks, (n // self.chunks) * oh * ow
            out = np.empty((n * oh * ow, self.filters), dtype=padded.dtype)
            cols, W = self._column_buffer(rows, padded.dtype), self._matrix()
            blocks = product_blocks(m, oh * ow, W.shape[0], self.filters)
            windows = self._windows(padded)
            for i in range(self.chunks):
                self._fill_columns(windows, i * m, (i + 1) * m, cols)
                np.matmul(row_blocks(cols, blocks), W, out=row_blocks(out[i * rows : (i + 1) * rows], blocks))
        if self.blocked:  # chunk by chunk, each blocked by window corner
            return out.reshape(self.chunks, 2, 2, n // self.chunks, oh // 2, ow // 2, self.filters)
        return out.reshape(n, oh, ow, self.filters)

    def _width(self) -> int:
        """Values in a row of the columns: the window's, and a 1 for the bias if any."""
        kh, kw = self.kernel
        return kh * kw * self.input_shape[0] + (1 if self.bias else 0)

    def _column_buffer(self, rows: int, dtype) -> np.ndarray:
        """Columns for `rows` output pixels, with the bias's 1 already in place (see `_fill_columns`)."""
        cols = np.empty((rows, self._width()), dtype=dtype)
        if self.bias:
            cols[:, -1] = 1
        return cols

    def _windows(self, padded: np.ndarray) -> np.ndarray:
        """Every window of a padded (N, H, W, C) batch, a read-only view in the order of the
        columns' rows (see `_fill_columns`), its samples on axis 2 when `blocked`, else axis 0.
        Made once a pass and sliced chunk by chunk: `as_strided` costs 10-20 us of Python a call,
        held under the GIL that the shards' threads share."""
        (kh, kw), (sh, sw), (oh, ow) = self.kernel, self.stride, self.out_hw
        if not self.blocked:
            return window_view(padded, kh, kw, sh, sw, oh, ow)
        # (stride 1) the window of output pixel (2 ph + dy, 2 pw + dx) at row (dy, dx, n, ph, pw)
        _, s1, s2, s3 = padded.strides
        return blocked_view(padded, oh, ow, (kh, kw, padded.shape[3]), (s1, s2, s3))

    def _fill_columns(self, windows: np.ndarray, lo: int, hi: int, cols: np.ndarray) -> None:
        """im2col of samples lo to hi of a padded batch, from its `_windows`, into `cols` (made
        by `_column_buffer`): one row per output pixel (in the blocked order when `blocked`),
        holding its window's kh*kw*C values in (i, j, channel) order, then the 1 for the bias
        when there is one: the product adds the bias, and the gradient's product sums it, with
        no pass of their own."""
        (kh, kw), c = self.kernel, self.input_shape[0]
        view = windows[:, :, lo:hi] if self.blocked else windows[lo:hi]
        np.copyto(cols[:, : kh * kw * c].reshape(view.shape), view)  # a view of cols: one copy in all

    def _one_channel_columns(self, padded: np.ndarray, n: int) -> np.ndarray:
        """The columns of a one-channel batch (the first layer on gray images), as
        `_fill_columns` lays them out, for the whole batch at once.

        One contiguous row per kernel offset, copied 6x faster than the strided view (0.34
        against 2 ms for a batch of 128 MNIST digits); the product reads them transposed at no
        cost. The bias's row of ones saves the bias its own pass (0.5 and 0.3 ms of the MNIST
        CNN's first layer, forward and backward)."""
        (kh, kw), (sh, sw), (oh, ow) = self.kernel, self.stride, self.out_hw
        k, rows_out = kh * kw, n * oh * ow
        rows = np.empty((self._width(), rows_out), dtype=padded.dtype)
        if self.bias:
            rows[k] = 1
        if self.blocked:  # (stride 1) rows (dy, dx, n, ph, pw) from the four phase images
            # the four phase images, copied once so the 36 copies below read whole rows
            phases = [[np.ascontiguousarray(padded[:, p::2, q::2, 0]) for q in range(2)] for p in range(2)]
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

    def backward(self, dout):
        f, c = self.filters, self.input_shape[0]
        kh, kw = self.kernel
        n = self.padded_shape[0]
        m = n // self.chunks
        d = dout.reshape(self.chunks, -1, f)  # chunk i's rows, in its columns' order
        if self.inputs is not None:
            return self._correlation_backward(d)
        # dW, and db in the last row when there is a bias: the columns' products with the
        # output gradient, block by block (see `product_blocks`), summed
        blocks = product_blocks(m, self.out_hw[0] * self.out_hw[1], self._width(), f)
        if self.cols is not None:
            both = (row_blocks(self.cols, blocks).transpose(0, 2, 1) @ row_blocks(d[0], blocks)).sum(axis=0)
        else:
            both = np.zeros((self._width(), f), dtype=dout.dtype)
            cols = self._column_buffer(d.shape[1], dout.dtype)
        dpadded = np.zeros(self.padded_shape, dtype=dout.dtype) if self.needs_input_grad else None
        windows = None if self.cols is not None else self._windows(self.padded)
        for i in range(self.chunks):
            if self.cols is None:
                self._fill_columns(windows, i * m, (i + 1) * m, cols)
                both += (row_blocks(cols, blocks).transpose(0, 2, 1) @ row_blocks(d[i], blocks)).sum(axis=0)
            if dpadded is not None:
                self._add_input_grad(d[i], dpadded[i * m : (i + 1) * m])
        k = kh * kw * c
        self.grads["W"][...] = both[:k].reshape(kh, kw, c, f).transpose(3, 2, 0, 1)
        if self.bias:
            self.grads["b"][...] = both[k]
        if dpadded is None:
            return None
        (top, _), (left, _) = self.pads
        h, w = self.input_shape[1:]
        return dpadded[:, top : top + h, left : left + w]

    def _correlation_backward(self, d: np.ndarray) -> np.ndarray:
        """Backward of a stride-1 convolution that kept its input (`full_grad`), chunk by chunk
        from the rows of its output gradient (`_FullCorrelation`): for each kernel row i, the
        band of H rows of each sample that starts at row i, (H*W, kw*F), gives that kernel row's
        part of dX in its product with the flipped kernel's row, and that row of dW in its
        product with the sample's input as rows (H*W, C): kh products each, one a sample, all
        of a chunk's in one batched call for dX and one for dW."""
        (kh, kw), f = self.kernel, self.filters
        c, h, w = self.input_shape
        n = self.inputs.shape[0]
        m = n // self.chunks
        full = _FullCorrelation(self, m, d.dtype)
        x = self.inputs.reshape(self.chunks, m, h * w, c)
        dx = np.empty((n, h * w, c), dtype=d.dtype)
        parts = np.empty((kh, m, h * w, c), dtype=d.dtype)  # each kernel row's part of dX
        flipped = np.zeros((kh, kw * f, c), dtype=d.dtype)  # dW as rows (kh-1-i, kw-1-j, f)
        per_sample = np.empty((kh, m, kw * f, c), dtype=d.dtype)
        kernel_rows = full.kernel_rows[:, None]  # (kh, 1, kw*F, C): the same for every sample
        for i in range(self.chunks):
            bands = full.bands(d[i])
            np.matmul(bands, kernel_rows, out=parts)
            np.sum(parts, axis=0, out=dx[i * m : (i + 1) * m])
            np.matmul(bands.transpose(0, 1, 3, 2), x[i], out=per_sample)
            flipped += per_sample.sum(axis=1)
        self.grads["W"][...] = flipped.reshape(kh, kw, f, c)[::-1, ::-1].transpose(2, 3, 0, 1)
        if self.bias:
            column_sums(d.reshape(-1, f), out=self.grads["b"])
        return dx.reshape(n, h, w, c)

    def _add_input_grad(self, d: np.ndarray, dpadded: np.ndarray) -> None:
        """Add a chunk's gradient with respect to its padded input, from `d`, its output
        gradient as rows (in the blocked order when `blocked`): one product per kernel offset.
        The input gradient of the convolutions `full_grad` leaves out (stride > 1, or a side
        padded by the kernel's size or more)."""
        (kh, kw), (sh, sw), (oh, ow) = self.kernel, self.stride, self.out_hw
        m, c = dpadded.shape[0], dpadded.shape[3]
        if self.blocked:  # back to (m, oh, ow, f): the per-offset adds want whole rows
            d = d.reshape(2, 2, m, oh // 2, ow // 2, -1).transpose(2, 3, 0, 4, 1, 5).reshape(m * oh * ow, -1)
        part = np.empty((m * oh * ow, c), dtype=d.dtype)
        W = self.params["W"]
        for i in range(kh):
            for j in range(kw):
                np.matmul(d, W[:, :, i, j], out=part)
                dpadded[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw] += part.reshape(
                    m, oh, ow, c
                )

    def get_config(self):
        return {
            "filters": self.filters,
            "kernel": list(self.kernel),
            "stride": list(self.stride),
            "padding": self._padding_config(),
            "bias": self.bias,
            "init": initializer_config(self.init),
        }


class _FullCorrelation:
    """The rows of a stride-1 convolution's output gradient (`Conv2D.full_grad`), chunk by
    chunk, for its "full" correlation with the flipped kernel:

        dX[n, u, v, c] = sum over (i, j, f) of G[n, u + i, v + j, f] * W[f, c, kh-1-i, kw-1-j]
        dW[f, c, kh-1-i, kw-1-j] = sum over (n, u, v) of G[n, u + i, v + j, f] * X[n, u, v, c]

    where G is the chunk's output gradient (M, OH, OW, F) with kh-1-top zero rows above it,
    kh-1-bottom below, and kw-1-left, kw-1-right columns on either side: for each input pixel,
    the kh*kw*F output gradients of the windows that saw it. `bands` copies G into a buffer as
    each pixel's width window, (M, H + kh - 1, W, kw*F), and returns it as (kh, M, H*W, kw*F):
    for kernel row i, rows i to i + H - 1 of a sample
    are then one contiguous (H*W, kw*F) matrix, whose product with the flipped kernel's row i
    (`kernel_rows[i]`, (kw*F, C)) is that row's part of dX, and whose product with the
    sample's input rows (H*W, C) is that row of dW. That copies G kw times rather than kh*kw
    times as full im2col would, writes dX itself (no padded gradient, no adds of one product
    per kernel offset), and leaves the input's columns unmade.
    """

    def __init__(self, conv: Conv2D, m: int, dtype):
        (kh, kw), (oh, ow), (h, w) = conv.kernel, conv.out_hw, conv.input_shape[1:]
        (top, _), (left, _) = conv.pads
        f = conv.filters
        # the border stays zero: each chunk writes the same interior
        self.padded = np.zeros((m, h + kh - 1, w + kw - 1, f), dtype=dtype)
        self.interior = self.padded[:, kh - 1 - top : kh - 1 - top + oh, kw - 1 - left : kw - 1 - left + ow]
        if conv.blocked:  # the interior as the blocked rows (dy, dx, n, ph, pw) lay it out
            interior = self.interior
            self.interior = blocked_view(interior, oh, ow, (f,), interior.strides[3:], writeable=True)
        self.windows = window_view(self.padded, 1, kw, 1, 1, h + kh - 1, w)
        self.buffer = np.empty((m, h + kh - 1, w, kw * f), dtype=dtype)  # the rows
        # the bands: one view for all kernel rows, so that each chunk's products are one call
        # each. A call a kernel row held the GIL that the shards' threads share kh times as
        # often: the MNIST CNN's step as 2 shards in 2 threads took 6.29 ms so, 5.94 with one
        # call (medians of 5 alternating rounds, Zen 5); in one thread 9.61 and 9.47
        s0, s1, s2, s3 = self.buffer.strides
        self._bands = as_strided(self.buffer, (kh, m, h * w, kw * f), (s1, s0, s2, s3), writeable=False)
        W = conv.params["W"]
        self.kernel_rows = W[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(kh, kw * f, -1)

    def bands(self, d: np.ndarray) -> np.ndarray:
        """The bands of a chunk's output gradient `d`, given as rows (in the blocked order when
        the convolution is blocked): (kh, M, H*W, kw*F), band i of a sample its rows i to
        i + H - 1 of the width windows; a view of a buffer the next call overwrites."""
        np.copyto(self.interior, d.reshape(self.interior.shape))
        np.copyto(self.buffer.reshape(self.windows.shape), self.windows)
        return self._bands
