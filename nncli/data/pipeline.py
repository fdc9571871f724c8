"""From a dataset's name to inputs ready to train on, and the batches of an epoch.

`load_data` loads a registered dataset, draws the validation split from the training set with
the run's generator, fits the preprocessing (`nncli.data.preprocess`) on the training part
only, and gives each split as `Inputs`: the samples kept in their stored dtype (uint8 images
stay uint8), converted to float32 and preprocessed batch by batch as they are read. A fitted
`Preprocessor` (a checkpoint's) is applied as it is instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from nncli.data.contract import describe
from nncli.data.datasets import (
    CONTEXT,
    DATASETS,
    LAYOUTS,
    TASKS,
    DatasetInfo,
    RawData,
    call_loader,
    count_of,
)
from nncli.data.images import image_profile, image_shape
from nncli.data.inputs import Inputs
from nncli.data.preprocess import Preprocessor
from nncli.errors import ConfigError, DataError
from nncli.registry import check_options


@dataclass(frozen=True)
class Splits:
    """Inputs as the model takes them (`Inputs`: stored as loaded, read in the run's float
    dtype, preprocessed), labels int64 (N,) or one-hot, or regression targets (N, k).
    `x_val`/`y_val` and `x_test`/`y_test` may be None. `info` has the input shape after
    preprocessing, `raw_shape` the shape of a sample as loaded (what the preprocessing
    takes)."""

    x_train: Inputs
    y_train: np.ndarray
    x_val: Inputs | None
    y_val: np.ndarray | None
    x_test: Inputs | None
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
    arrays: dict[str, np.ndarray] | None = None,
) -> Splits:
    """Load dataset `name` with its YAML `options` and prepare its splits.

    `val_size` is a count or a fraction of the training set, drawn with `rng`; None or 0 means
    no validation split; a dataset with its own validation set (csv's `val_path`) takes None.
    `progress` allows download progress bars (shown on a terminal only). `loss_task`, the task
    of the run's loss, settles whole-number labels for loaders that decide their task; what
    they decided is in `info.notes`. `arrays` are what a Python program gave for the `arrays`
    dataset. These reach the loaders that declare them (`nncli.data.datasets.CONTEXT`).
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
    check_options(loader, options, skip=CONTEXT)
    if loss_task is not None and loss_task not in TASKS:
        raise ValueError(f"loss task {loss_task!r} is not one of {TASKS}")
    fitted = preprocessor is not None
    if not fitted:
        preprocessor = Preprocessor.from_config(preprocess, dtype)
    raw = call_loader(loader, options, data_dir=Path(data_dir), rng=rng, loss_task=loss_task,
                      progress=progress, arrays=arrays)
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

    stored_train = _stored(raw.x_train, preprocessor.dtype)
    if fitted:
        info = replace(raw.info, input_shape=preprocessor.output_shape(raw.info.input_shape))
    else:
        info = preprocessor.fit(stored_train, raw.info, train)
    x_train = Inputs(stored_train, preprocessor, train)
    x_val = y_val = x_test = y_test = None
    if n_val:
        x_val = Inputs(stored_train, preprocessor, val)
        y_val = preprocessor.apply_labels(raw.y_train[val])
    elif raw.x_val is not None:
        x_val = Inputs(_stored(raw.x_val, preprocessor.dtype), preprocessor)
        y_val = preprocessor.apply_labels(raw.y_val)
    if raw.x_test is not None:
        x_test = Inputs(_stored(raw.x_test, preprocessor.dtype), preprocessor)
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
    if shape[2] not in CHANNEL_COUNTS and shape[0] in CHANNEL_COUNTS:
        raise ConfigError(
            f"channels_last would read {raw.info.name}'s samples of shape {shape} as {shape[2]} channels of"
            f" {shape[0]}x{shape[1]} pixels, but they look channels-first ({shape[0]} channels of"
            f" {shape[1]}x{shape[2]}); remove data.layout, or give layout: channels_first", key="layout")

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


def _stored(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """How a split's inputs `x` are kept: as loaded where `dtype` holds each of their values
    exactly (uint8 and int16 pixels, float16, float32 in float32), else converted to `dtype`
    now, once (float64 or int64 columns in a float32 run), which is what converting each
    batch would do first anyway: the same values in less memory than the loaded ones."""
    if np.can_cast(x.dtype, dtype, "safe"):
        return x
    return x.astype(dtype)


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
