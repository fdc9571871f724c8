"""The sequential model: a stack of layers whose shapes are inferred from the data.

Parameters are named `layers.<i>.<name>` (`layers.0.W`); `model.params` and `model.grads` map
those names to the layers' own arrays, so an optimizer updating them in place updates the
layers.

An `output` layer (a final sigmoid or softmax whose loss applies it itself, fused and stable) is
applied only by `predict`: `forward` returns the logits that training and the loss see, and
`predict` the probabilities a user wants.

Images enter and leave a model channels first, (N, C, H, W), and travel inside it channels-last,
(N, H, W, C), the layout convolutions compute in (see nncli.nn.layers.spatial): `forward` and
`backward` convert at the boundary, `inside` and `outside` are the conversions.

Once built, all parameters live in one contiguous array and all gradients in another
(`model.flat`); each layer's arrays are views into them. An optimizer or a weight penalty then
updates every parameter with a few passes over one array rather than a few passes per
parameter (`Optimizer.step(..., flat=model.flat)`).

With `threads` > 1, a forward pass (and the backward after a training one) runs the batch as
that many shards (nncli.nn.parallel), in as many threads or, with `workers` = 1, one after the
other in the caller's, where every layer allows it (`Layer.shardable`), one gains from it
(`Layer.elementwise_bound`: convolutions and pooling; or products big enough, MIN_SHARD_WORK)
and the BLAS's threads can be held to one per shard; the loss still sees the whole batch.
With `hold_blas`, a batch that runs whole holds the BLAS to one thread too; with `blas_threads`
(chosen by measurement), no batch is split and the BLAS runs that many threads.
`serial()` turns the shards off for a while (gradient checks, the non-finite report).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np

from nncli._openblas import thread_control
from nncli.errors import ConfigError
from nncli.nn.layers import Layer
from nncli.nn.layers.conv import Conv2D
from nncli.nn.layers.pooling import MaxPool2D
from nncli.nn.parallel import MIN_SHARD_WORK, Shards, shard_bounds

# What a model may ask for, checked from its shapes before any array is made: 2^28 parameters
# (1 GiB of float32 weights, as much again for their gradients, and twice that for Adam's
# state), and 2^24 values per sample out of any one layer (64 MiB of float32 per sample).
MAX_PARAMS = 2**28
MAX_VALUES = 2**24

#: `hook(event, index, value)`, called by `forward`, `backward` and `nncli.nn.step.step` as a
#: training step goes: ("input", None, the batch as the layers take it), ("forward", i, layer
#: i's output), ("loss", None, the loss), ("loss_backward", None, dL/d(output)), ("backward", i,
#: layer i's dL/d(input), or None where it gives none), ("penalty", None, None) and ("update",
#: None, None). Layers come in the execution order (a ReLU before a max pool runs after it).
Hook = Callable[[str, "int | None", object], None]


def check_size(layers: list, input_shape: tuple[int, ...]) -> None:
    """`ConfigError` keyed `[i].<layer>` for the first layer that takes the model past
    `MAX_PARAMS` parameters or gives more than `MAX_VALUES` values per sample."""
    shape, total = tuple(input_shape), 0
    for i, layer in enumerate(layers):
        layer.input_shape = shape  # as `build` sets it, which comes next: messages quote it
        try:
            out = tuple(layer.infer_output_shape(shape))
        except ConfigError as err:
            raise err.at(f"[{i}].{layer.name}") from None
        own = layer.param_count(shape)
        total += own
        if total > MAX_PARAMS:
            whole = f", {total:,} with the layers before it" if total > own else ""
            raise ConfigError(
                f"this layer would hold {own:,} parameters{whole}: more than a model may have,"
                f" {MAX_PARAMS:,} (2^28)", f"[{i}].{layer.name}")
        if math.prod(out) > MAX_VALUES:
            raise ConfigError(
                f"this layer would give {math.prod(out):,} values per sample (shape {out}): more"
                f" than a layer may, {MAX_VALUES:,} (2^24)", f"[{i}].{layer.name}")
        shape = out


@dataclass(frozen=True)
class FlatParams:
    """A model's parameters packed into one array, and their gradients into another.

    `slices[name]` is where parameter `name` lies in both, in the parameter's own shape
    `shapes[name]`. The weights that weight decay covers by default (`Layer.decayed`) come first:
    `decayed` is that prefix.
    """

    params: np.ndarray
    grads: np.ndarray
    slices: dict[str, slice]
    shapes: dict[str, tuple[int, ...]]
    decayed: slice

    def view(self, flat: np.ndarray, name: str) -> np.ndarray:
        """Parameter `name`'s part of `flat` (an array laid out like `params`), in its shape."""
        return flat[self.slices[name]].reshape(self.shapes[name])


def _execution_order(layers: list[Layer]) -> list[int]:
    """The order the layers run in: as configured, but a layer that commutes with max pooling
    (`Layer.commutes_with_max_pool`: ReLU) just before a max pool runs just after it. The result
    is the same while the ReLU works on a quarter of the pixels: 2.3 ms of a 40 ms training step
    of the MNIST CNN."""
    order = list(range(len(layers)))
    i = 0
    while i < len(layers) - 1:
        if layers[i].commutes_with_max_pool and isinstance(layers[i + 1], MaxPool2D):
            order[i], order[i + 1] = i + 1, i
            i += 2
        else:
            i += 1
    return order


def block_for_pooling(layers: list[Layer], order: list[int]) -> None:
    """Where a stride-1 convolution feeds a 2x2 max pool over even sizes (through layers that
    do not care about the pixels' order, `Layer.any_pixel_order`), let the convolution write
    its output blocked by window corner, (chunks, 2, 2, N/chunks, OH/2, OW/2, F) (the batch in
    the chunks the convolution computes it in: see Conv2D.forward): its rows are computed in that
    order at no extra cost, and each corner of every window is then one contiguous array for
    the pool, forward and backward. The layers must run in `order` (the execution order)."""
    for position, index in enumerate(order):
        conv = layers[index]
        if not isinstance(conv, Conv2D) or conv.stride != (1, 1):
            continue
        for later in order[position + 1 :]:
            layer = layers[later]
            if isinstance(layer, MaxPool2D) and layer.two_by_two and layer.tiled:
                conv.blocked = layer.blocked = True
                break
            if not layer.any_pixel_order:
                break


class Sequential:
    def __init__(self, layers: list[Layer], output: Layer | None = None):
        self.layers = list(layers)
        self.order = list(range(len(self.layers)))  # see _execution_order
        self.output = output  # applied by predict() only; it has no parameters
        self.input_shape: tuple[int, ...] | None = None
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.flat: FlatParams | None = None
        self.threads = 1  # how many shards a training batch may run as; 1: serially
        self.workers: int | None = None  # threads that run the shards: 1, or None for one a shard
        self.hold_blas = False  # whether a batch run whole holds the BLAS to one thread
        self.auto_workers = False  # whether training may measure `workers` (nncli.nn.threads)
        self.choose_blas = False  # whether a fresh run may measure the BLAS's own threads too
        self.blas_threads: int | None = None  # BLAS threads where not held (None: as it is)
        self._shards: Shards | None = None  # made at the first sharded batch
        self._bounds: list[int] | None = None  # the last training forward's shards, if any

    def build(
        self, input_shape, rng: np.random.Generator, dtype=np.float32, max_params: int | None = None
    ) -> tuple[int, ...]:
        """Build every layer for samples of `input_shape`; return the output shape.

        A layer that cannot take its input raises `ConfigError` keyed `[i]`, so the config
        loader can point at `model[i]`; so does a model past `MAX_PARAMS` parameters, or a
        layer giving more than `MAX_VALUES` values per sample, found from the shapes before
        anything is allocated (`check_size`). With `max_params`, a model with more parameters raises
        `ValueError` before they are packed (copied) into one array.
        """
        self.input_shape = shape = tuple(input_shape)
        check_size([*self.layers, *([self.output] if self.output is not None else [])], shape)
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.build(shape, rng, dtype)
            except ConfigError as err:
                raise err.at(f"[{i}].{layer.name}") from None
        if max_params is not None:
            count = sum(v.size for layer in self.layers for v in layer.params.values())
            if count > max_params:
                raise ValueError(f"the layers hold {count:,} parameters, more than {max_params:,}")
        self.order = _execution_order(self.layers)
        block_for_pooling(self.layers, self.order)
        self.layers[self.order[0]].needs_input_grad = False
        if self.output is not None:
            i = len(self.layers)
            try:
                shape = self.output.build(shape, rng, dtype)
            except ConfigError as err:
                raise err.at(f"[{i}].{self.output.name}") from None
            if self.output.params:
                raise ValueError(f"an output layer has no parameters; {self.output.name} has")
        self._pack()
        return shape

    def _named(self, store: str) -> dict[str, tuple[Layer, str]]:
        """`layers.<i>.<key>` -> (layer, key) for every entry of each layer's `store` dict."""
        return {
            f"layers.{i}.{key}": (layer, key)
            for i, layer in enumerate(self.layers)
            for key in getattr(layer, store)
        }

    def _pack(self) -> None:
        """Move the layers' parameters and gradients into `self.flat`, leaving views behind."""
        self._drop_shards()
        named = self._named("params")
        dtypes = {layer.params[key].dtype for layer, key in named.values()}
        self.flat = None
        if len(dtypes) == 1:
            # decayed weights first, so that weight decay covers one slice
            decayed = self.param_names(decayed_only=True)
            order = decayed + [name for name in named if name not in decayed]
            shapes = {name: layer.params[key].shape for name, (layer, key) in named.items()}
            slices, start = {}, 0
            for name in order:
                size = math.prod(shapes[name])
                slices[name] = slice(start, start + size)
                start += size
            flat_params = np.empty(start, dtypes.pop())
            flat_grads = np.zeros_like(flat_params)
            num_decayed = slices[decayed[-1]].stop if decayed else 0
            self.flat = FlatParams(flat_params, flat_grads, slices, shapes, slice(0, num_decayed))
            for name, (layer, key) in named.items():
                for store, flat in ((layer.params, flat_params), (layer.grads, flat_grads)):
                    view = self.flat.view(flat, name)
                    view[...] = store[key]
                    store[key] = view
        self.params = {name: layer.params[key] for name, (layer, key) in named.items()}
        self.grads = {name: layer.grads[key] for name, (layer, key) in named.items()}

    def __getstate__(self) -> dict:
        # pickle and copy.deepcopy copy each array on its own, so a copy's layer parameters
        # would no longer be views into its `flat`, and a packed optimizer step would update
        # arrays the layers never read. Leave `flat` out and pack the copy afresh.
        # The shards' threads cannot be copied, and are made again when needed.
        return {**self.__dict__, "flat": None, "_shards": None, "_bounds": None}

    def __setstate__(self, state: dict) -> None:
        defaults = {"threads": 1, "workers": None, "hold_blas": False, "auto_workers": False,
                    "choose_blas": False, "blas_threads": None}
        self.__dict__.update({**defaults, **state, "_shards": None, "_bounds": None})
        if self.input_shape is not None:
            self._pack()

    @property
    def stack(self) -> list[Layer]:
        """Every layer as configured: the trained ones, then the output layer if any."""
        return self.layers + ([self.output] if self.output is not None else [])

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.stack[-1].output_shape

    @staticmethod
    def inside(x: np.ndarray) -> np.ndarray:
        """A batch as the layers take it: images (N, C, H, W) become (N, H, W, C)."""
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x

    @staticmethod
    def outside(x: np.ndarray) -> np.ndarray:
        """A layer's output (or an input gradient) as the model's users see it: channels first."""
        return x.transpose(0, 3, 1, 2) if x.ndim == 4 else x

    def forward(self, x: np.ndarray, training: bool = False, hook: Hook | None = None) -> np.ndarray:
        """The output for `x`. With a `hook` (see `Hook`), the batch runs serially, whole, and
        the hook sees it enter the layers and leave each one."""
        bounds = None if hook is not None else self._shard_bounds(len(x))
        self._bounds = bounds if training else None
        if bounds is not None:
            return self._shards.forward(x, bounds, training)
        with self._blas_held():
            return self.run_forward(self.layers, x, training, hook)

    def backward(self, dout: np.ndarray, hook: Hook | None = None) -> np.ndarray | None:
        """Backpropagate dL/d(output) of the last training forward; fills every layer's grads.
        Returns dL/d(input) when `input_gradient(True)` was asked, else None. A `hook` sees
        each layer's dL/d(input) (the forward pass must have run serially: given a hook)."""
        if self._bounds is not None and self._bounds[-1] == len(dout) and hook is None:
            return self._shards.backward(dout, self._bounds)
        with self._blas_held():
            return self.run_backward(self.layers, dout, hook)

    def _blas_held(self):
        """The BLAS held to one thread where `hold_blas` says so (and it can be), to
        `blas_threads` where set, else left as it is."""
        control = thread_control() if self.hold_blas or self.blas_threads else None
        if control is None:
            return nullcontext()
        return control.one_thread() if self.hold_blas else control.limit(self.blas_threads)

    def update_threads(self) -> int:
        """How many threads an element-wise pass over the parameters (the optimizer's update)
        may run in after a training batch: one a shard where the batch ran as shards in threads
        of their own, else one. Not the BLAS's own threads: after a product they spin on the
        other cores for more work, and the MNIST MLP's update took 0.56 ms in two threads beside
        them against 0.45 in one (with the shards' threads, 0.56 against 0.85)."""
        if self._bounds is not None and self.workers != 1:
            return len(self._bounds) - 1
        return 1

    def run_forward(self, layers: list[Layer], x: np.ndarray, training: bool, hook: Hook | None = None):
        """`x` through `layers` (this model's, or a shard's replicas of them) in the execution
        order, channels-last inside; the one forward walk of the model and of its shards."""
        x = self.inside(x)
        if hook is not None:
            hook("input", None, x)
        for i in self.order:
            x = layers[i].forward(x, training)
            if hook is not None:
                hook("forward", i, x)
        return self.outside(x)

    def run_backward(self, layers: list[Layer], dout: np.ndarray, hook: Hook | None = None):
        """`dout` back through `layers` in reverse execution order, stopping at the first layer
        that returns no gradient (None is then returned)."""
        dout = self.inside(dout)
        for i in reversed(self.order):
            dout = layers[i].backward(dout)
            if hook is not None:
                hook("backward", i, dout)
            if dout is None:
                return None
        return self.outside(dout)

    def input_gradient(self, needed: bool) -> None:
        self.layers[self.order[0]].needs_input_grad = needed
        self._drop_shards()  # their replicas copied the old setting

    def _shard_bounds(self, n: int) -> list[int] | None:
        """Where a batch of `n` splits into shards, or None to run it serially."""
        if self.threads < 2 or self.flat is None or self.blas_threads:
            return None  # (shards hold the BLAS to one thread: not where it runs its own)
        layers = self.layers
        if not all(layer.shardable for layer in layers):
            return None
        bounds = shard_bounds(n, self.threads)
        if bounds is None:
            return None
        if not any(layer.elementwise_bound for layer in layers) and (
            self.flat.params.size * (n // (len(bounds) - 1)) < MIN_SHARD_WORK
        ):
            return None  # products alone, and small ones: one thread does them best
        # replicas for the shards this batch needs (at most n / MIN_SHARD, whatever `threads`)
        if self._shards is None or self._shards.threads < len(bounds) - 1:
            control = thread_control()
            if control is None:
                return None
            self._drop_shards()
            self._shards = Shards(self, len(bounds) - 1, control)
        return bounds

    def _drop_shards(self) -> None:
        if getattr(self, "_shards", None) is not None:
            self._shards.close()
        self._shards, self._bounds = None, None

    def shards_for(self, n: int) -> list[int] | None:
        """The sizes of the shards a batch of `n` runs as, or None when serial."""
        bounds = self._shard_bounds(n)
        return None if bounds is None else np.diff(bounds).tolist()

    @contextmanager
    def serial(self):
        """Every batch runs unsharded inside this block."""
        threads, self.threads = self.threads, 1
        self._bounds = None
        try:
            yield self
        finally:
            self.threads = threads

    def replicate(self, grads: np.ndarray) -> list[Layer]:
        """Copies of the layers that share this model's parameter arrays but keep their own
        forward caches, and gradients in `grads` (an array laid out like `flat.grads`)."""
        twins = {id(layer): copy.copy(layer) for layer in self.layers}
        for twin in twins.values():
            twin.grads = {}
        for name, (layer, key) in self._named("grads").items():
            twins[id(layer)].grads[key] = self.flat.view(grads, name)
        return [twins[id(layer)] for layer in self.layers]

    def predict(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Outputs in evaluation mode, computed in batches, through the output layer if any
        (probabilities where training saw logits)."""

        def run(xb: np.ndarray) -> np.ndarray:
            out = self.forward(xb, training=False)
            return out if self.output is None else self.output.forward(out, training=False)

        outs = [run(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else np.empty((0, *self.output_shape), x.dtype)

    def param_names(self, decayed_only: bool = False) -> list[str]:
        if not decayed_only:
            return list(self.params)
        return [name for name, (layer, key) in self._named("params").items() if key in layer.decayed]

    def num_params(self) -> int:
        return sum(v.size for v in self.params.values())

    def summary(self) -> list[tuple[int, str, tuple[int, ...], int]]:
        """(index, layer, output shape, parameter count) per layer."""
        return [
            (i, repr(layer), layer.output_shape, sum(v.size for v in layer.params.values()))
            for i, layer in enumerate(self.stack)
        ]

    def activation_bytes(self, batch_size: int, dtype=np.float32) -> int:
        """Memory of one batch's layer outputs (what a forward pass keeps for backward)."""
        itemsize = np.dtype(dtype).itemsize
        return sum(batch_size * math.prod(layer.output_shape) * itemsize for layer in self.layers)

    def switch_patterns(self) -> list[np.ndarray]:
        """The non-smooth layers' `switch_pattern()` after the last forward pass."""
        found = (layer.switch_pattern() for layer in self.layers)
        return [pattern for pattern in found if pattern is not None]

    def freeze_randomness(self, frozen: bool) -> None:
        for layer in self.layers:
            layer.freeze_randomness(frozen)

    def astype(self, dtype) -> None:
        for layer in self.layers:
            layer.astype(dtype)
        self._pack()

    def state_dict(self) -> dict:
        """Parameters and buffers as plain data: {'params': {...}, 'buffers': {...}}."""
        return {
            "params": {k: v.copy() for k, v in self.params.items()},
            "buffers": {
                name: layer.buffers[key].copy() for name, (layer, key) in self._named("buffers").items()
            },
        }

    def load_state_dict(self, state: dict) -> None:
        """Copy saved arrays into the built model; names and shapes must match exactly."""
        for store in ("params", "buffers"):
            saved, expected = state[store], self._named(store)
            if set(saved) != set(expected):
                missing = sorted(set(expected) - set(saved))
                extra = sorted(set(saved) - set(expected))
                raise ValueError(f"{store} do not match the model: missing {missing}, unexpected {extra}")
            for name, (layer, key) in expected.items():
                target = getattr(layer, store)[key]
                value = np.asarray(saved[name])
                if value.shape != target.shape:
                    raise ValueError(f"{name} has shape {value.shape}, the model expects {target.shape}")
                target[...] = value

    def get_config(self) -> list:
        return [{layer.name: layer.get_config()} for layer in self.stack]
