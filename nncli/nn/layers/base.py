"""The layer contract shared by every layer.

A layer is built once for a known input shape, then run forward and backward on batches:

    out_shape = layer.build(in_shape, rng, dtype)   # shapes exclude the batch dimension
    y = layer.forward(x, training)                  # keeps only what backward needs
    dx = layer.backward(dy)                         # writes layer.grads, returns dL/dx

`params` and `grads` are two dicts with the same keys and shapes. `buffers` holds state that is
saved with the model but not learned (batch-norm running statistics). `backward` never changes
`dy` or any array it does not own.
"""

from __future__ import annotations

import numpy as np

from nncli.registry import Registry

LAYERS: Registry[type[Layer]] = Registry("layer")


class Layer:
    #: names in `params` that weight decay applies to by default (weights, not biases or gains)
    decayed: tuple[str, ...] = ()
    #: whether a training batch may run as shards in threads (nncli.nn.parallel): each sample's
    #: output depends on that sample alone and nothing is drawn at random. Forward keeps its
    #: caches in attributes it sets (never in arrays it changes in place) and backward writes
    #: every array of `grads`: a shard's replica is a shallow copy with `grads` of its own.
    shardable: bool = True
    #: whether the layer's passes are mostly numpy element-wise work (copies, comparisons),
    #: which numpy runs on one core: a model shards its batches wherever such a layer is. A
    #: model of matrix products alone shards only where its products are big enough to pay for
    #: the shards' overhead (nncli.nn.parallel.MIN_SHARD_WORK: the MNIST MLP, not the quickstart).
    elementwise_bound: bool = False
    #: whether the layer applies one non-decreasing function to each value on its own, with a
    #: gradient of 0 wherever two inputs give the same output (ReLU), so that it commutes with a
    #: max pool after it, values and gradients alike, ties included: max(f(a), f(b)) =
    #: f(max(a, b)). The model then runs it after the pool, on a quarter of the values.
    commutes_with_max_pool: bool = False
    #: whether the layer treats every pixel alike whatever their order (each value on its own,
    #: or each channel over all pixels): it may stand between a convolution and the max pool
    #: that convolution hands its output to blocked by window corner (see nncli.nn.model).
    any_pixel_order: bool = False

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.input_shape: tuple[int, ...] | None = None
        self.output_shape: tuple[int, ...] | None = None
        # The model clears this on its first layer in training: nobody needs dL/d(data).
        self.needs_input_grad = True

    @property
    def name(self) -> str:
        return type(self).registered_name

    def build(self, input_shape: tuple[int, ...], rng: np.random.Generator, dtype) -> tuple[int, ...]:
        """Create parameters for inputs of `input_shape`; return the output shape."""
        self.input_shape = tuple(input_shape)
        self.output_shape = self.infer_output_shape(self.input_shape)
        self.create_params(rng, np.dtype(dtype))
        return self.output_shape

    def infer_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return input_shape

    def create_params(self, rng: np.random.Generator, dtype: np.dtype) -> None:
        """Layers with parameters or buffers create them here (and zeroed `grads`)."""

    def param_count(self, input_shape: tuple[int, ...]) -> int:
        """How many parameters `create_params` would make for inputs of `input_shape` (after
        `infer_output_shape`), so that a model can be sized before anything is allocated."""
        return 0

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def switch_pattern(self) -> np.ndarray | None:
        """Which side of its kinks each unit of the last forward pass fell on (ReLU: input > 0),
        or None for a layer smooth everywhere. Gradient checks compare it across a finite
        difference stencil: a change means the stencil straddled a kink (`nncli.nn.gradcheck`)."""
        return None

    def get_config(self) -> dict:
        """Exactly the layer's YAML arguments; `type(layer)(**layer.get_config())` rebuilds it."""
        return {}

    def freeze_randomness(self, frozen: bool) -> None:
        """While frozen, a random layer reuses its last draw (used by gradient checks)."""

    def astype(self, dtype) -> None:
        """Convert parameters, gradients and buffers to `dtype` in place of the old arrays."""
        for store in (self.params, self.grads, self.buffers):
            for key, value in store.items():
                store[key] = value.astype(dtype)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{self.name}({args})"
