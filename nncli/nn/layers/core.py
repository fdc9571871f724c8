"""Dense, shape and regularizing layers: linear, flatten, identity, dropout."""

from __future__ import annotations

import math

import numpy as np

from nncli import validate
from nncli.errors import ConfigError
from nncli.nn.initializers import get_initializer, initializer_config
from nncli.nn.layers.base import LAYERS, Layer
from nncli.nn.layers.blas import column_sums, matmul

# the first layer skips all-zero input columns when at most this fraction of columns is active
SPARSE_INPUT_FRACTION = 0.85


@LAYERS.register("linear", hints=("dense",))
class Linear(Layer):
    """Fully connected layer, `y = x @ W + b` with W of shape (in_features, units).

    Shape: (N, in_features) -> (N, units). The input must already be flat: put a `flatten`
    layer before it for images.
    """

    decayed = ("W",)
    option_hints = {"use_bias": "bias", "kernel_initializer": "init", "out_features": "units"}

    def __init__(self, units: int, bias: bool = True, init="xavier"):
        super().__init__()
        self.units = validate.positive_int("units", units)
        self.bias = validate.boolean("bias", bias)
        self.init = get_initializer(init)

    def infer_output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ConfigError(
                f"linear expects flat input of shape (features,), got {input_shape}:"
                " put a flatten layer before it"
            )
        return (self.units,)

    def param_count(self, input_shape):
        return (input_shape[0] + self.bias) * self.units

    def create_params(self, rng, dtype):
        fan_in = self.input_shape[0]
        self.params["W"] = self.init((fan_in, self.units), fan_in, self.units, rng, dtype)
        if self.bias:
            self.params["b"] = np.zeros(self.units, dtype=dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(self, x, training):
        W = self.params["W"]
        self.cols = None
        if training and not self.needs_input_grad and x.shape[1] >= 64:
            # The first layer often sees input features that are zero across the whole batch
            # (the blank border of MNIST digits: about a third of the pixels of a batch of
            # 128). Their rows of W contribute nothing to the output and get zero gradient,
            # so both products can skip them: exact, and cheaper when enough are zero.
            nonzero = x.any(axis=0)
            active = np.flatnonzero(nonzero)
            if len(active) <= SPARSE_INPUT_FRACTION * x.shape[1]:
                self.cols = nonzero
                x = x[:, active]
                W = W.take(active, axis=0)  # a quarter faster than W[active]
        self.x = x if training else None  # backward's dW needs the (possibly column-reduced) input
        out = matmul(x, W)
        if self.bias:
            out += self.params["b"]
        return out

    def backward(self, dout):
        dW = self.grads["W"]
        if self.cols is None:
            np.matmul(self.x.T, dout, out=dW)
        else:
            dW[~self.cols] = 0  # boolean masks: a fifth faster than fill(0) and dW[active] = ...
            dW[self.cols] = self.x.T @ dout
        if self.bias:
            column_sums(dout, out=self.grads["b"])
        if not self.needs_input_grad:
            return None
        return matmul(dout, self.params["W"].T)

    def get_config(self):
        return {"units": self.units, "bias": self.bias, "init": initializer_config(self.init)}


@LAYERS.register("flatten")
class Flatten(Layer):
    """Shape: (N, *dims) -> (N, prod(dims)).

    Images, channels-last inside a model, are flattened in PyTorch's (channel, row, column)
    order, so that the weights of the linear layer after it can be exchanged with PyTorch's.
    """

    def infer_output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def forward(self, x, training):
        if x.ndim == 4:  # (N, H, W, C) -> (N, C*H*W)
            x = x.transpose(0, 3, 1, 2)
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        if len(self.input_shape) == 3:
            # a contiguous copy: on the transposed view every layer below would run its
            # element-wise work with a stride of H*W between neighbours (relu and the pool's
            # backward: 1.3 -> 0.6 ms in the MNIST CNN)
            c, h, w = self.input_shape
            return np.ascontiguousarray(dout.reshape(dout.shape[0], c, h, w).transpose(0, 2, 3, 1))
        return dout.reshape((dout.shape[0], *self.input_shape))


@LAYERS.register("identity")
class Identity(Layer):
    """Passes its input through unchanged. Shape: any -> same."""

    any_pixel_order = True

    def forward(self, x, training):
        return x

    def backward(self, dout):
        return dout


@LAYERS.register("dropout")
class Dropout(Layer):
    """Inverted dropout: in training, zero each unit with probability `p` and scale the rest by
    1 / (1 - p), so that evaluation is the identity. Masks come from the run's generator.

    Shape: any -> same.
    """

    shardable = False  # the masks' draws from the run's generator must come in a fixed order
    any_pixel_order = True
    option_hints = {"rate": "p"}

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = validate.fraction("p", p)
        self.frozen = False
        self.mask: np.ndarray | None = None

    def create_params(self, rng, dtype):
        self.rng = rng

    def forward(self, x, training):
        if not training or self.p == 0.0:
            self.mask = None
            return x
        if not (self.frozen and self.mask is not None and self.mask.shape == x.shape):
            keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
            self.mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        return x * self.mask

    def backward(self, dout):
        return dout if self.mask is None else dout * self.mask

    def freeze_randomness(self, frozen):
        self.frozen = frozen

    def astype(self, dtype):
        super().astype(dtype)
        if self.mask is not None:
            self.mask = self.mask.astype(dtype)

    def get_config(self):
        return {"p": self.p}
