"""Batch normalization."""

from __future__ import annotations

import numpy as np

from nncli import validate
from nncli.errors import ConfigError
from nncli.nn.layers.base import LAYERS, Layer
from nncli.nn.layers.blas import column_sums


@LAYERS.register("batchnorm")
class BatchNorm(Layer):
    """Batch normalization over the features of 2-D input (Ioffe & Szegedy, 2015).

    Training: y = gamma * (x - mean_B) / sqrt(var_B + eps) + beta with batch statistics, and
    running = momentum * running + (1 - momentum) * batch (the biased batch variance, as in
    the classic tutorials). Evaluation uses the running statistics.

    Shape: (N, D) -> (N, D).
    """

    def __init__(self, momentum: float = 0.9, eps: float = 1e-5):
        super().__init__()
        self.momentum = validate.fraction("momentum", momentum)
        self.eps = validate.positive_float("eps", eps)

    def infer_output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ConfigError(
                f"batchnorm expects flat input of shape (features,), got {input_shape}:"
                " put a flatten layer before it"
            )
        return input_shape

    def create_params(self, rng, dtype):
        d = self.input_shape[0]
        self.params = {"gamma": np.ones(d, dtype=dtype), "beta": np.zeros(d, dtype=dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.buffers = {"running_mean": np.zeros(d, dtype=dtype), "running_var": np.ones(d, dtype=dtype)}

    def forward(self, x, training):
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

    def backward(self, dout):
        column_sums(dout, out=self.grads["beta"])
        column_sums(dout * self.x_hat, out=self.grads["gamma"])
        # dx = gamma * inv_std * (dout - mean(dout) - x_hat * mean(dout * x_hat))
        n = dout.shape[0]
        dx_hat_mean = self.grads["beta"] / n
        dx_hat_proj = self.grads["gamma"] / n
        return (self.params["gamma"] * self.inv_std) * (dout - dx_hat_mean - self.x_hat * dx_hat_proj)

    def get_config(self):
        return {"momentum": self.momentum, "eps": self.eps}
