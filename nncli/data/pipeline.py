"""From a dataset's name to float arrays ready to train on, and the batches of an epoch.

`load_data` loads a registered dataset, draws the validation split from the training set with
the run's generator, converts to float32 (one conversion, no float64 copy), fits the
preprocessing on the training part only and applies it to every split. The fitted
`Preprocessor` goes into the checkpoint (`state_dict`), so evaluation rebuilds it with
`Preprocessor.from_state` instead of refitting.

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
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from nncli import validate
from nncli.data.contract import describe
from nncli.data.datasets import DATASETS, DatasetInfo, RawData, count_of, for_loss_task
from nncli.data.download import progress_enabled
from nncli.data.images import image_profile, image_shape
from nncli.errors import CheckpointError, ConfigError, DataError
from nncli.registry import Registry, check_options


class Step:
    """A preprocessing step: `fit` on training inputs, then `transform` inputs of any split.

    The constructor takes the step's YAML options (`get_config` returns them); what `fit`
    learns is `state()`, plain arrays and numbers that `load_state` restores. `transform` may
    work in place on `x` (the pipeline owns it) and returns the result.
    """

    def get_config(self) -> dict[str, Any]:
        return {}

    def fit(self, x: np.ndarray, info: DatasetInfo) -> None:
        """Learn statistics from the training inputs `x` (already through earlier steps)."""

    def transform(self, x: np.ndarray) -> np.ndarray:
        return x

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

    def fit(self, x: np.ndarray, info: DatasetInfo) -> None:
        if info.pixel_max is not None:
            self.low, self.factor = None, np.asarray(1.0 / info.pixel_max, x.dtype)
            return
        low, high = x.min(axis=0), x.max(axis=0)
        span = high - low
        span[span == 0] = 1
        self.low, self.factor = low, np.reciprocal(span)

    def transform(self, x: np.ndarray) -> np.ndarray:
        if self.low is not None:
            np.subtract(x, self.low, out=x)
        return np.multiply(x, self.factor, out=x)

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

    def fit(self, x: np.ndarray, info: DatasetInfo) -> None:
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

    def fit(self, x: np.ndarray, info: DatasetInfo) -> None:
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


def _mean_std(x: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over `axes` (which include 0), shaped to broadcast against
    one sample. Accumulated in float64 over blocks of rows: never a float64 copy of `x`."""
    rows = max(1, (1 << 20) // max(1, x[0].size))
    count = int(np.prod([x.shape[a] for a in axes]))
    total = sum(x[i:i + rows].sum(axis=axes, dtype=np.float64, keepdims=True)
                for i in range(0, len(x), rows))
    mean = total / count
    squares = 0.0
    for i in range(0, len(x), rows):
        block = x[i:i + rows] - mean  # float64, one block of rows at a time
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

    def fit(self, x: np.ndarray, info: DatasetInfo) -> tuple[np.ndarray, DatasetInfo]:
        """Fit each step on the training inputs `x` (owned by the caller, changed in place)
        as transformed by the steps before it; returns the transformed `x` and its info."""
        shape = info.input_shape
        for i, step in enumerate(self.steps):
            try:
                step.fit(x, replace(info, input_shape=shape))
            except ConfigError as err:
                raise err.at(f"preprocess[{i}]") from None
            x = step.transform(x)
            shape = step.output_shape(shape)
        return x, replace(info, input_shape=shape)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Transformed inputs in the preprocessor's dtype, as a new array."""
        return self._transform_owned(np.array(x, dtype=self.dtype))

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

    def _transform_owned(self, x: np.ndarray) -> np.ndarray:
        for step in self.steps:
            x = step.transform(x)
        return x

    def __repr__(self) -> str:
        return f"Preprocessor({[type(s).registered_name for s in self.steps]}, {self.dtype.name})"


@dataclass(frozen=True)
class Splits:
    """Preprocessed arrays: inputs in the run's float dtype, labels int64 (N,) or one-hot, or
    regression targets (N, k). `x_val`/`y_val` and `x_test`/`y_test` may be None. `info` has
    the input shape after preprocessing, `raw_shape` the shape of a sample as loaded (what
    the preprocessing takes)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    info: DatasetInfo
    preprocessor: Preprocessor
    fingerprint: str = ""  # of the data as loaded (`data_fingerprint`), before any split
    raw_shape: tuple[int, ...] = ()
    layout: str | None = None  # "channels_last": raw images are (H, W, C), turned to (C, H, W)
    # `contract.describe` of each split's raw inputs ("train", "val" where given, "test")
    profiles: dict[str, dict] = field(default_factory=dict)
    image_profile: dict | None = None  # images: what the raw training images look like


def data_fingerprint(raw: RawData) -> str:
    """A digest of every array a loader returned, their shapes and types included: it changes
    whenever the data does (an edited CSV, other files in the data folder, other generator
    options), so a checkpoint can tell whether it is looked at with the data it was trained on.
    BLAKE2b reads about 1 GB/s: 60 ms for MNIST."""
    digest = hashlib.blake2b(digest_size=16)
    for f in fields(raw):
        value = getattr(raw, f.name)
        if isinstance(value, np.ndarray):
            array = np.ascontiguousarray(value)
            digest.update(f"{f.name}:{array.dtype.str}:{array.shape};".encode())
            digest.update(array.data if array.size else b"")
    return digest.hexdigest()


def load_data(
    name: str,
    options: dict[str, Any],
    *,
    val_size: int | float | None,
    preprocess: list | None,
    data_dir: Path,
    rng: np.random.Generator,
    dtype=np.float32,
    progress: bool = True,
    preprocessor: Preprocessor | None = None,
    loss_task: str | None = None,
    layout: str | None = None,
) -> Splits:
    """Load dataset `name` with its YAML `options` and prepare its splits.

    `val_size` is a count or a fraction of the training set, drawn with `rng`; None or 0 means
    no validation split; a dataset with its own validation set (csv's `val_path`) takes None.
    `progress` allows download progress bars (shown on a terminal only). `loss_task`, the task
    of the run's loss, settles whole-number labels for loaders that decide their task
    (`nncli.data.datasets.loss_task`); what they decided is in `info.notes`.
    Option errors are `ConfigError`s keyed by the option (`classes`, `val_size`,
    `preprocess[1].per_channel`).

    `layout` says how the loader's images are laid out: None or "channels_first" (N, C, H, W),
    as nncli takes them, or "channels_last" (N, H, W, C), as Keras, PIL and TensorFlow give
    them, which is transposed here. Samples of three dimensions whose last one looks like
    channels while `layout` is None are a `ConfigError` keyed `layout`.

    A fitted `preprocessor` (from a checkpoint) is applied as it is, with its own statistics
    and dtype, instead of fitting `preprocess` on the training part: evaluation then sees the
    inputs training saw. The generator is drawn from the same way, so the validation split is
    the same.
    """
    loader = DATASETS.get(name)
    check_options(loader, options, skip=("data_dir", "rng"))
    fitted = preprocessor is not None
    if not fitted:
        preprocessor = Preprocessor.from_config(preprocess, dtype)
    with progress_enabled(progress), for_loss_task(loss_task):
        raw = loader(data_dir=Path(data_dir), rng=rng, **options)
    raw_shape = tuple(raw.info.input_shape)
    fingerprint = data_fingerprint(raw)
    raw = _in_layout(raw, layout)

    _check_classes(raw.info)
    n = len(raw.x_train)
    if raw.x_val is not None and val_size is not None:
        raise ConfigError(f"{name} reads its validation set from val_path; remove val_size (or"
                          " val_path, to draw the split from the training set)", key="val_size")
    n_val = 0 if val_size is None else count_of("val_size", val_size, n)
    if n_val == 0 and isinstance(val_size, float) and val_size > 0:
        raise ConfigError(f"{val_size!r} of the {n:,} training samples rounds to no sample; give a"
                          f" count (1 or more), a fraction of at least {1 / n:.2g}, or 0 for no"
                          " validation split", key="val_size")
    if n_val >= n:
        raise ConfigError(f"{val_size!r} would leave none of the {n:,} training samples for"
                          " training", key="val_size")
    train = val = None
    if n_val:
        order = rng.permutation(n)
        val, train = np.sort(order[:n_val]), np.sort(order[n_val:])

    x_train = _inputs(raw.x_train, train, preprocessor.dtype)
    if fitted:
        x_train = preprocessor._transform_owned(x_train)
        info = replace(raw.info, input_shape=preprocessor.output_shape(raw.info.input_shape))
    else:
        x_train, info = preprocessor.fit(x_train, raw.info)
    x_val = y_val = x_test = y_test = None
    if n_val:
        x_val = preprocessor._transform_owned(_inputs(raw.x_train, val, preprocessor.dtype))
        y_val = preprocessor.apply_labels(raw.y_train[val])
    elif raw.x_val is not None:
        x_val = preprocessor._transform_owned(_inputs(raw.x_val, None, preprocessor.dtype))
        y_val = preprocessor.apply_labels(raw.y_val)
    if raw.x_test is not None:
        x_test = preprocessor._transform_owned(_inputs(raw.x_test, None, preprocessor.dtype))
        y_test = preprocessor.apply_labels(raw.y_test)
    y_train = preprocessor.apply_labels(raw.y_train if train is None else raw.y_train[train])
    profiles = {"train": describe(raw.x_train)}
    if raw.x_val is not None and len(raw.x_val):
        profiles["val"] = describe(raw.x_val)
    if raw.x_test is not None and len(raw.x_test):
        profiles["test"] = describe(raw.x_test)
    pictures = None  # what the training images look like, for pictures given to predict
    if raw.info.pixel_max is not None and image_shape(raw.x_train.shape[1:]) is not None:
        pictures = image_profile(raw.x_train, raw.info.pixel_max)
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, info, preprocessor,
                  fingerprint, raw_shape, layout, profiles, pictures)


LAYOUTS = ("channels_first", "channels_last")
# The channel counts of pictures (gray, RGB, RGBA): an image's last axis of this size, after
# axes larger than it, is almost surely its channels.
CHANNEL_COUNTS = (1, 3, 4)


def looks_channels_last(shape: tuple[int, ...]) -> bool:
    """Whether a sample of `shape` reads as an (H, W, C) picture: three axes, the last a
    channel count (1, 3 or 4) and the first larger than any channel count."""
    return len(shape) == 3 and shape[2] in CHANNEL_COUNTS and shape[0] > max(CHANNEL_COUNTS)


def _in_layout(raw: RawData, layout: str | None) -> RawData:
    """`raw` with its images as (N, C, H, W): transposed from channels-last where `layout`
    says so (a `ConfigError` keyed `layout` where samples are not images), refused where
    they look channels-last and `layout` does not say."""
    shape = tuple(raw.info.input_shape)
    if layout not in (None, *LAYOUTS):
        raise ConfigError(f"expected one of {', '.join(LAYOUTS)}, got {layout!r}", key="layout")
    if layout is None and looks_channels_last(shape):
        raise ConfigError(
            f"{raw.info.name} has samples of shape {shape}, which look like channels-last images"
            f" (height, width, {shape[2]} channels), but nncli reads images as (channels, height,"
            f" width); set data.layout: channels_last to convert them, or data.layout:"
            f" channels_first if {shape[0]} is the number of channels", key="layout")
    if layout != "channels_last":
        return raw
    if len(shape) != 3:
        raise ConfigError(f"channels_last needs images, samples of shape (height, width, channels);"
                          f" {raw.info.name} has samples of shape {shape}", key="layout")

    def first(x: np.ndarray | None) -> np.ndarray | None:
        return None if x is None else np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    height, width, channels = shape
    info = replace(raw.info, input_shape=(channels, height, width))
    return replace(raw, x_train=first(raw.x_train), x_test=first(raw.x_test), x_val=first(raw.x_val),
                   info=info)


def _check_classes(info: DatasetInfo) -> None:
    """A classifier needs two classes at least: with one, every answer is right."""
    if info.task == "classification" and info.num_classes is not None and info.num_classes < 2:
        label = info.class_names[0] if info.class_names else "0"
        raise DataError(f"every training label of the {info.name} dataset is the same class ({label}); a"
                        " classifier needs at least two classes")


def repeated_steps(spec: list | tuple) -> list[tuple[int, int, str]]:
    """(position, first position, name) of each step of the YAML list `spec` that repeats an
    earlier one (`[scale, scale]`: [(1, 0, "scale")]), for a warning: legal, never meant."""
    names = [entry if isinstance(entry, str) else next(iter(entry), None) if isinstance(entry, dict)
             else None for entry in spec]
    return [(i, names.index(name), name) for i, name in enumerate(names)
            if name is not None and names.index(name) < i]


def _inputs(x: np.ndarray, rows: np.ndarray | None, dtype: np.dtype) -> np.ndarray:
    """`x[rows]` (all of `x` when None) converted to `dtype`: always a new array, made without
    an intermediate float64 copy (uint8 converts straight to float32)."""
    if rows is None:
        return x.astype(dtype)
    return x.take(rows, axis=0).astype(dtype, copy=False)


def iterate_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    rng: np.random.Generator | None = None,
    shuffle: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(x, y) batches covering every sample once, the last one partial if need be.

    With `shuffle`, the order is a fresh `rng.permutation` (no sampling with replacement) and
    batches are copies; without it, batches are views in order (for evaluation).
    """
    n = len(x)
    if shuffle:
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            rows = order[start:start + batch_size]
            yield x.take(rows, axis=0), y.take(rows, axis=0)
    else:
        for start in range(0, n, batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]
