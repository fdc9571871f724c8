"""Batch normalization."""

from __future__ import annotations

import numpy as np

from nncli import validate
from nncli.errors import ConfigError
from nncli.nn.layers.base import LAYERS, Layer
from nncli.nn.layers.blas import column_sums


@LAYERS.register("batchnorm", hints=("BatchNormalization", "BatchNorm1d", "BatchNorm2d"))
class BatchNorm(Layer):
    """Batch normalization (Ioffe & Szegedy, 2015): per feature of flat input, per channel of
    images (statistics over the batch and every pixel, as PyTorch's BatchNorm2d).

    Training: y = gamma * (x - mean_B) / sqrt(var_B + eps) + beta with batch statistics, and
    running = momentum * running + (1 - momentum) * batch (the biased batch variance, as in
    the classic tutorials). Evaluation uses the running statistics.

    Shape: (D,) -> (D,), or (C, H, W) -> (C, H, W) with gamma and beta of shape (C,). Images
    arrive channels-last inside a model (see nncli.nn.layers.spatial), so a (N*H*W, C) view of
    them is normalized exactly as flat input is.
    """

    shardable = False  # batch statistics: each output depends on the whole batch
    any_pixel_order = True  # per channel, over every pixel
    option_hints = {"epsilon": "eps"}

    def __init__(self, momentum: float = 0.9, eps: float = 1e-5):
        super().__init__()
        self.momentum = validate.fraction("momentum", momentum)
        self.eps = validate.positive_float("eps", eps)

    def infer_output_shape(self, input_shape):
        if len(input_shape) not in (1, 3):
            raise ConfigError(
                f"batchnorm expects flat input (features,) or images (channels, height, width),"
                f" got {input_shape}"
            )
        return input_shape

    def param_count(self, input_shape):
        return 2 * input_shape[0]  # gamma and beta

    def create_params(self, rng, dtype):
        d = self.input_shape[0]
        self.params = {"gamma": np.ones(d, dtype=dtype), "beta": np.zeros(d, dtype=dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.buffers = {"running_mean": np.zeros(d, dtype=dtype), "running_var": np.ones(d, dtype=dtype)}

    def forward(self, x, training):
        if x.ndim > 2:  # (N, H, W, C), or blocked: the channels are the features of the rows
            return self._flat(x, lambda flat: self._forward(flat, training))
        return self._forward(x, training)

    def backward(self, dout):
        if dout.ndim > 2:
            return self._flat(dout, self._backward)
        return self._backward(dout)

    @staticmethod
    def _flat(x, fn):
        out = fn(x.reshape(-1, x.shape[-1]))
        return out.reshape(x.shape)

    def _forward(self, x, training):
        gamma, beta = self.params["gamma"], self.params["beta"]
        if not training:
            inv_std = 1 / np.sqrt(self.buffers["running_var"] + self.eps)
            return (x - self.buffers["running_mean"]) * (gamma * inv_std) + beta
        mean = x.mean(axis=0)
        centered = x - mean
        var = np.mean(centered * centered, axis=0)
        self.inv_std = 1 / np.sqrt(var + x.dtype.type(self.eps))
        self.x_hat = centered * self.inv_std
        m = x.dtype.type(self.momentum)
        for key, batch_value in (("running_mean", mean), ("running_var", var)):
            running = self.buffers[key]
            running *= m
            running += (1 - m) * batch_value
        return self.x_hat * gamma + beta

    def _backward(self, dout):
        column_sums(dout, out=self.grads["beta"])
        column_sums(dout * self.x_hat, out=self.grads["gamma"])
        # dx = gamma * inv_std * (dout - mean(dout) - x_hat * mean(dout * x_hat))
        n = dout.shape[0]
        dx_hat_mean = self.grads["beta"] / n
        dx_hat_proj = self.grads["gamma"] / n
        return (self.params["gamma"] * self.inv_std) * (dout - dx_hat_mean - self.x_hat * dx_hat_proj)

    def get_config(self):
        return {"momentum": self.momentum, "eps": self.eps}
