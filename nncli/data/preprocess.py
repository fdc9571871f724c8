"""Preprocessing: the steps a run fits on its training inputs and applies to every split.

Preprocessing is a YAML list of step names or one-key mappings:

    preprocess: [scale, {standardize: {per_channel: true}}, flatten]

  scale        images: divide by the dataset's pixel maximum (255); other data: min-max to
               [0, 1] per feature with the training set's minimum and maximum
  standardize  subtract the training mean and divide by the training standard deviation, per
               feature, or per channel of (N, C, H, W) images with `per_channel: true`; image
               pixels are divided by at least the RMS of the pixels' standard deviations
  flatten      (N, ...) -> (N, features)
  one_hot      integer labels (N,) -> float one-hot (N, classes); the builder adds it for losses
               that need it

The fitted `Preprocessor` goes into the checkpoint (`state_dict`), so evaluation rebuilds it
with `Preprocessor.from_state` instead of refitting.

The data stays in its stored dtype (`nncli.data.inputs.Inputs`): `Preprocessor.convert` turns
each batch into the float dtype, the first step fused into that cast, the others in place on
the result. Fitting reads the training inputs in blocks, each converted through the steps
already fitted, so no float copy of the whole training set is ever made.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from nncli import validate
from nncli.data.datasets import DatasetInfo
from nncli.data.inputs import Inputs
from nncli.errors import CheckpointError, ConfigError
from nncli.registry import Registry, check_options


class Step:
    """A preprocessing step: `fit` on training inputs, then `transform` inputs of any split.

    The constructor takes the step's YAML options (`get_config` returns them); what `fit`
    learns is `state()`, plain arrays and numbers that `load_state` restores. `transform` may
    work in place on `x` (the pipeline owns it) and returns the result. `convert` is the step
    applied to inputs in their stored dtype (uint8 pixels, say), giving a new array of the
    float dtype with exactly the values of `transform(x.astype(dtype))`, in one pass where
    the step can fuse the cast into its own arithmetic.
    """

    def get_config(self) -> dict[str, Any]:
        return {}

    def fit(self, x: Inputs, info: DatasetInfo) -> None:
        """Learn statistics from the training inputs `x`, as converted by the earlier steps
        (read them in blocks: `x[i:j]` is converted on reading)."""

    def transform(self, x: np.ndarray) -> np.ndarray:
        return x

    def convert(self, x: np.ndarray, dtype: np.dtype) -> np.ndarray:
        return self.transform(x.astype(dtype))

    def transform_labels(self, y: np.ndarray) -> np.ndarray:
        return y

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any], dtype: np.dtype) -> None:
        """Restore what `fit` learned, arrays in `dtype` so that transforms never upcast."""


STEPS: Registry[type[Step]] = Registry("preprocessing step")


@STEPS.register("scale")
class Scale(Step):
    """x * factor for images (factor = 1 / pixel_max); (x - low) * factor per feature otherwise,
    with low the training minimum and factor 1 / (max - min) (1 where max == min)."""

    def __init__(self) -> None:
        self.low: np.ndarray | None = None
        self.factor: np.ndarray | None = None

    def fit(self, x: Inputs, info: DatasetInfo) -> None:
        if info.pixel_max is not None:
            self.low, self.factor = None, np.asarray(1.0 / info.pixel_max, x.dtype)
            return
        low = high = None
        for block in _blocks(x):
            block_low, block_high = block.min(axis=0), block.max(axis=0)
            low = block_low if low is None else np.minimum(low, block_low)
            high = block_high if high is None else np.maximum(high, block_high)
        span = high - low
        span[span == 0] = 1
        self.low, self.factor = low, np.reciprocal(span)

    def transform(self, x: np.ndarray) -> np.ndarray:
        if self.low is not None:
            np.subtract(x, self.low, out=x)
        return np.multiply(x, self.factor, out=x)

    def convert(self, x: np.ndarray, dtype: np.dtype) -> np.ndarray:
        # The ufunc casts `x` to `dtype` element by element, then computes in `dtype`: the
        # values of astype-then-transform, without the intermediate array.
        if self.low is None:
            return np.multiply(x, self.factor, dtype=dtype)
        out = np.subtract(x, self.low, dtype=dtype)
        return np.multiply(out, self.factor, out=out)

    def state(self) -> dict[str, Any]:
        return {"low": self.low, "factor": self.factor}

    def load_state(self, state: dict[str, Any], dtype: np.dtype) -> None:
        self.factor = np.asarray(state["factor"], dtype)
        self.low = None if state["low"] is None else np.asarray(state["low"], dtype)


@STEPS.register("standardize")
class Standardize(Step):
    """(x - mean) / std with the training statistics, per feature, or per channel of images
    (N, C, H, W) with `per_channel`. Features (or channels) that never vary are divided by 1;
    per-pixel standardization of images divides no pixel by less than the RMS of all pixels'
    standard deviations, so a pixel that is nearly constant in training cannot blow up."""

    def __init__(self, per_channel: bool = False):
        self.per_channel = validate.boolean("per_channel", per_channel)
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def get_config(self) -> dict[str, Any]:
        return {"per_channel": self.per_channel}

    def fit(self, x: Inputs, info: DatasetInfo) -> None:
        if self.per_channel and x.ndim != 4:
            raise ConfigError(f"per_channel needs images (N, C, H, W); the data has samples of"
                              f" shape {x.shape[1:]}", key="per_channel")
        mean, std = _mean_std(x, (0, 2, 3) if self.per_channel else (0,))
        typical = float(np.sqrt(np.mean(np.square(std))))  # the RMS of the features' stds
        std[std == 0] = 1
        if info.pixel_max is not None and not self.per_channel:
            # Pixels share one unit, so none is magnified more than a typical pixel: a border
            # pixel lit in a handful of training digits has a std near 0.004, and one lit test
            # pixel became 250 standard deviations. Quickstart for 6 epochs, test loss: 0.48
            # unfloored, 0.20 floored (scale alone: 0.20).
            std = np.maximum(std, typical)
        self.mean, self.std = mean.astype(x.dtype), std.astype(x.dtype)

    def transform(self, x: np.ndarray) -> np.ndarray:
        np.subtract(x, self.mean, out=x)
        return np.divide(x, self.std, out=x)

    def convert(self, x: np.ndarray, dtype: np.dtype) -> np.ndarray:
        out = np.subtract(x, self.mean, dtype=dtype)
        return np.divide(out, self.std, out=out)

    def state(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}

    def load_state(self, state: dict[str, Any], dtype: np.dtype) -> None:
        self.mean, self.std = np.asarray(state["mean"], dtype), np.asarray(state["std"], dtype)


@STEPS.register("flatten")
class Flatten(Step):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...); a view where the input is contiguous."""

    def transform(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (int(np.prod(shape)),)


@STEPS.register("one_hot")
class OneHot(Step):
    """Integer labels (N,) -> one-hot rows (N, num_classes) in the pipeline's float dtype."""

    def __init__(self) -> None:
        self.num_classes: int | None = None
        self.dtype = np.dtype(np.float32)

    def fit(self, x: Inputs, info: DatasetInfo) -> None:
        if info.task != "classification":
            raise ConfigError(f"one_hot needs class labels; {info.name} is a regression dataset")
        self.num_classes, self.dtype = info.num_classes, x.dtype

    def transform_labels(self, y: np.ndarray) -> np.ndarray:
        out = np.zeros((len(y), self.num_classes), self.dtype)
        out[np.arange(len(y)), y] = 1
        return out

    def state(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes}

    def load_state(self, state: dict[str, Any], dtype: np.dtype) -> None:
        self.num_classes, self.dtype = int(state["num_classes"]), dtype


def _blocks(x: Inputs | np.ndarray) -> Iterator[np.ndarray]:
    """`x` a block of about a million values at a time (4 MB in float32), each converted as it
    is read. The blocks are the same for the same data, so statistics summed over them are too."""
    rows = max(1, (1 << 20) // max(1, int(np.prod(x.shape[1:]))))
    for start in range(0, len(x), rows):
        yield x[start : start + rows]


def _mean_std(x: Inputs | np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over `axes` (which include 0), shaped to broadcast against
    one sample. Accumulated in float64 over blocks of rows: never a float64 copy of `x`."""
    count = int(np.prod([x.shape[a] for a in axes]))
    total = sum(block.sum(axis=axes, dtype=np.float64, keepdims=True) for block in _blocks(x))
    mean = total / count
    squares = 0.0
    for block in _blocks(x):
        block = block - mean  # float64, one block of rows at a time
        squares = squares + np.square(block, out=block).sum(axis=axes, keepdims=True)
    return mean[0], np.sqrt(squares / count)[0]


class Preprocessor:
    """The fitted preprocessing steps of a run.

    `apply(x)` returns new arrays and never changes `x`; `state_dict()` is plain data (builtins
    and numpy arrays) and `Preprocessor.from_state` rebuilds an equal preprocessor from it.
    """

    def __init__(self, steps: list[Step], dtype=np.float32):
        self.steps = steps
        self.dtype = np.dtype(dtype)

    @classmethod
    def from_config(cls, spec: list | tuple | None, dtype=np.float32) -> Preprocessor:
        """Unfitted steps from the YAML list; errors are keyed `preprocess[i]...`."""
        if spec is None:
            spec = []
        if not isinstance(spec, (list, tuple)):
            raise ConfigError(f"expected a list of steps, got {spec!r}", key="preprocess")
        steps = []
        for i, entry in enumerate(spec):
            key = f"preprocess[{i}]"
            if isinstance(entry, dict) and len(entry) == 1:
                [(name, options)] = entry.items()
            elif isinstance(entry, str):
                name, options = entry, None
            else:
                raise ConfigError(f"expected a step name or a one-key mapping such as"
                                  f" {{standardize: {{per_channel: true}}}}, got {entry!r}",
                                  key=key)
            options = {} if options is None else options
            try:
                if not isinstance(options, dict):
                    raise ConfigError(f"expected a mapping of options, got {options!r}")
                step_cls = STEPS.get(name)
                check_options(step_cls, options)
                steps.append(step_cls(**options))
            except ConfigError as err:
                raise err.at(key) from None
        return cls(steps, dtype)

    def fit(self, stored: np.ndarray, info: DatasetInfo, rows: np.ndarray | None = None) -> DatasetInfo:
        """Fit each step on the training inputs, samples `rows` of `stored` (None: all), as
        converted by the steps before it; returns the info of the inputs it makes."""
        shape = info.input_shape
        for i, step in enumerate(self.steps):
            seen = Inputs(stored, Preprocessor(self.steps[:i], self.dtype), rows)
            try:
                step.fit(seen, replace(info, input_shape=shape))
            except ConfigError as err:
                raise err.at(f"preprocess[{i}]") from None
            shape = step.output_shape(shape)
        return replace(info, input_shape=shape)

    def convert(self, x: np.ndarray) -> np.ndarray:
        """Inputs `x` in any dtype (uint8 pixels as stored, say), preprocessed, in the
        preprocessor's dtype: a new array, except that `x` itself comes back where it is in
        that dtype already and no step changes it. The first step casts as it computes; the
        values are those of casting `x` first and applying each step after."""
        if not self.steps:
            return x.astype(self.dtype, copy=False)
        x = self.steps[0].convert(x, self.dtype)
        for step in self.steps[1:]:
            x = step.transform(x)
        return x

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Transformed inputs in the preprocessor's dtype, as a new array."""
        x = np.asarray(x)
        out = self.convert(x)
        return out.copy() if np.may_share_memory(out, x) else out

    def apply_labels(self, y: np.ndarray) -> np.ndarray:
        """Integer labels as they are (or one-hot rows); regression targets in the dtype."""
        y = np.asarray(y)
        if y.dtype.kind == "f":
            y = y.astype(self.dtype, copy=False)
        for step in self.steps:
            y = step.transform_labels(y)
        return y

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        for step in self.steps:
            shape = step.output_shape(shape)
        return shape

    def state_dict(self) -> dict[str, Any]:
        """{"dtype": "float32", "steps": [{"name", "config", "state"}, ...]}: builtins and arrays."""
        steps = [{"name": type(step).registered_name, "config": step.get_config(),
                  "state": step.state()} for step in self.steps]
        return {"dtype": self.dtype.name, "steps": steps}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Preprocessor:
        """The fitted preprocessor saved by `state_dict`; `CheckpointError` if it is not one."""
        try:
            dtype = np.dtype(state["dtype"])
            steps = []
            for entry in state["steps"]:
                step = STEPS.get(entry["name"])(**entry["config"])
                step.load_state(entry["state"], dtype)
                steps.append(step)
        except (KeyError, TypeError, ValueError, ConfigError) as err:
            raise CheckpointError(f"the saved preprocessing state is not valid ({err})") from None
        return cls(steps, dtype)

    def __repr__(self) -> str:
        return f"Preprocessor({[type(s).registered_name for s in self.steps]}, {self.dtype.name})"


def repeated_steps(spec: list | tuple) -> list[tuple[int, int, str]]:
    """(position, first position, name) of each step of the YAML list `spec` that repeats an
    earlier one (`[scale, scale]`: [(1, 0, "scale")]), for a warning: legal, never meant."""
    names = [entry if isinstance(entry, str) else next(iter(entry), None) if isinstance(entry, dict)
             else None for entry in spec]
    return [(i, names.index(name), name) for i, name in enumerate(names)
            if name is not None and names.index(name) < i]
