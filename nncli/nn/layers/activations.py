"""Element-wise activations and the softmax layer. Shape: any -> same."""

from __future__ import annotations

import numpy as np

from nncli import validate
from nncli.nn.layers.base import LAYERS, Layer

# Keras' Activation("relu") layer: in nncli the activation is the layer
LAYERS.hint("activation", 'an activation is a layer of its own: write its name, as "- relu"')


@LAYERS.register("relu")
class ReLU(Layer):
    """max(x, 0). The gradient at exactly 0 is taken as 0."""

    commutes_with_max_pool = True
    any_pixel_order = True

    def __init__(self):
        super().__init__()
        self._zeros_for: tuple | None = None
        self._zeros: np.ndarray | int = 0

    def forward(self, x, training):
        # The output alone tells where the gradient passes. numpy 2's maximum against an
        # array of zeros laid out like x is 3x faster than against the scalar 0 (8.5 against
        # 25 us for 128 x 512 float32), so keep such an array while inputs look alike.
        layout = (x.shape, x.dtype, x.strides)
        if layout != self._zeros_for:
            zeros = np.zeros_like(x)
            self._zeros_for, self._zeros = layout, zeros if zeros.strides == x.strides else 0
        out = np.maximum(x, self._zeros)
        self.out = out if training else None  # evaluation keeps nothing for a backward
        return out

    def backward(self, dout):
        return dout * (self.out > 0)

    def switch_pattern(self):
        return self.out > 0


@LAYERS.register("leaky_relu")
class LeakyReLU(Layer):
    """x for x > 0, alpha * x otherwise (the gradient at exactly 0 is alpha)."""

    option_hints = {"negative_slope": "alpha"}
    any_pixel_order = True

    def __init__(self, alpha: float = 0.01):
        super().__init__()
        self.alpha = validate.non_negative_float("alpha", alpha)

    def forward(self, x, training):
        # The slope (1 or alpha) once, as floats: forward and backward are then one product
        # each. np.where and boolean masks take 5 to 10 times longer here: 320 us for each
        # pass at 128 x 512 float32, against 42 us forward and 17 us backward.
        slope = (x > 0).astype(x.dtype)
        slope *= x.dtype.type(1 - self.alpha)
        slope += x.dtype.type(self.alpha)
        self.slope = slope
        return x * slope

    def backward(self, dout):
        return dout * self.slope

    def switch_pattern(self):
        return self.slope

    def get_config(self):
        return {"alpha": self.alpha}


@LAYERS.register("sigmoid")
class Sigmoid(Layer):
    """1 / (1 + exp(-x)), computed without overflow for large |x|."""

    any_pixel_order = True

    def forward(self, x, training):
        self.out = sigmoid(x)
        return self.out

    def backward(self, dout):
        return dout * self.out * (1 - self.out)


@LAYERS.register("tanh")
class Tanh(Layer):
    any_pixel_order = True

    def forward(self, x, training):
        self.out = np.tanh(x)
        return self.out

    def backward(self, dout):
        return dout * (1 - self.out * self.out)


@LAYERS.register("softmax")
class Softmax(Layer):
    """Softmax over the last axis, for inference outputs (train with `softmax_cross_entropy`
    on logits instead: it is stabler and cheaper)."""

    def forward(self, x, training):
        self.out = softmax(x)
        return self.out

    def backward(self, dout):
        # Jacobian-vector product: dx_i = y_i * (dout_i - sum_j dout_j y_j)
        inner = np.sum(dout * self.out, axis=-1, keepdims=True)
        return self.out * (dout - inner)


def sigmoid(x: np.ndarray) -> np.ndarray:
    # exp of a negative number only: no overflow warnings for large |x|
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    e /= e.sum(axis=-1, keepdims=True)
    return e


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
