"""The dataset registry and what every loader returns.

A loader is a function registered under its YAML name:

    @DATASETS.register("spiral")
    def load_spiral(*, data_dir: Path, rng: np.random.Generator, classes: int = 3, ...) -> RawData

Its keyword arguments after `data_dir` and `rng` are the dataset's own YAML options; each is
checked with `nncli.validate`, so a bad value is a `ConfigError` keyed by the option's name. A
loader returns arrays as stored (uint8 images, say): `nncli.data.pipeline.load_data` converts
them to float32 once, after the validation split.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nncli import validate
from nncli.errors import ConfigError, DataError
from nncli.registry import Registry

DATASETS: Registry[Callable[..., RawData]] = Registry("dataset")

TASKS = ("classification", "regression")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about its data.

    `input_shape` excludes the batch dimension: (1, 28, 28) for MNIST, (3, 32, 32) for
    CIFAR-10, (2,) for the spiral. `num_outputs` is the width of the model's last layer: the
    number of classes, or the number of regression targets. `pixel_max` is set for images
    (255.0) and is what `scale` divides by.
    """

    name: str
    input_shape: tuple[int, ...]
    task: str
    num_classes: int | None
    num_outputs: int
    pixel_max: float | None = None
    class_names: tuple[str, ...] | None = None

    @classmethod
    def classification(
        cls,
        name: str,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        pixel_max: float | None = None,
        class_names: tuple[str, ...] | None = None,
    ) -> DatasetInfo:
        return cls(name, tuple(input_shape), "classification", num_classes, num_classes,
                   pixel_max, class_names)

    @classmethod
    def regression(
        cls, name: str, input_shape: tuple[int, ...], num_outputs: int, *,
        pixel_max: float | None = None,
    ) -> DatasetInfo:
        return cls(name, tuple(input_shape), "regression", None, num_outputs, pixel_max)


@dataclass(frozen=True)
class RawData:
    """A dataset as loaded: train arrays, test arrays (or None) and `info`.

    Images are (N, C, H, W); labels are integers of shape (N,) for classification and
    targets of shape (N, k) for regression.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    info: DatasetInfo

    def __post_init__(self) -> None:
        if (self.x_test is None) != (self.y_test is None):
            raise ValueError("x_test and y_test must both be given or both be None")
        for x, y in ((self.x_train, self.y_train), (self.x_test, self.y_test)):
            if x is not None and len(x) != len(y):
                raise ValueError(f"{len(x)} samples but {len(y)} targets")


def resolve_data_dir(cli_value: str | os.PathLike | None) -> Path:
    """The data folder: --data-dir, else $NNCLI_DATA_DIR, else a per-user cache.

    The cache is $XDG_CACHE_HOME/nncli, or ~/.cache/nncli without XDG_CACHE_HOME. The folder
    is not created here: only a download writes to it.
    """
    if cli_value:
        return Path(cli_value).expanduser()
    if os.environ.get("NNCLI_DATA_DIR"):
        return Path(os.environ["NNCLI_DATA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "nncli"


def count_of(key: str, value: object, n: int) -> int:
    """A number of samples given as a count (an integer >= 0) or a fraction of `n` in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"expected a count (integer) or a fraction in [0, 1), got {value!r}",
                          key=key)
    if isinstance(value, float):
        return round(validate.fraction(key, value) * n)
    return validate.non_negative_int(key, value)


def file_option(key: str, value: object, what: str) -> Path:
    """An option naming an existing file, relative to the current directory."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ConfigError(f"expected the path of {what}, got {value!r}", key=key)
    path = Path(value).expanduser()
    if not path.is_file():
        raise DataError(f"{what} {path} (option {key}) does not exist")
    return path


def num_classes_of(labels: list[np.ndarray], source: str) -> int:
    """Number of classes of integer labels 0..K-1 spread over `labels` (train and test)."""
    present = [y for y in labels if y is not None and y.size]
    if not present:
        raise DataError(f"{source} has no samples")
    low = min(int(y.min()) for y in present)
    if low < 0:
        raise DataError(f"{source} has a negative class label ({low}); labels must be 0, 1, ...")
    return max(int(y.max()) for y in present) + 1


def as_labels(y: np.ndarray, source: str) -> np.ndarray:
    """Integer class labels (N,) as int64; whole-number floats are accepted, fractions are not."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{source} has labels of shape {y.shape}; expected one label per sample")
    if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
        raise DataError(f"{source} has class labels that are not whole numbers")
    if y.dtype.kind not in "iuf":
        raise DataError(f"{source} has labels of type {y.dtype}; expected integers")
    return y.astype(np.int64)


def as_targets(y: np.ndarray, source: str) -> np.ndarray:
    """Regression targets as float32 (N, k); a vector becomes one column."""
    y = np.asarray(y)
    if y.dtype.kind not in "iuf":
        raise DataError(f"{source} has targets of type {y.dtype}; expected numbers")
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise DataError(f"{source} has targets of shape {y.shape}; expected (N,) or (N, k)")
    return y.astype(np.float32)
