"""The dataset registry and what every loader returns.

A loader is a function registered under its YAML name:

    @DATASETS.register("spiral")
    def load_spiral(*, data_dir: Path, rng: np.random.Generator, classes: int = 3, ...) -> RawData

Its keyword arguments other than those of `CONTEXT` (below) are the dataset's own YAML
options; each is checked with `nncli.validate`, so a bad value is a `ConfigError` keyed by the
option's name. A loader returns arrays as stored (uint8 images, say): `nncli.data.pipeline.load_data` converts
them to float32 once, after the validation split.

What the run gives a loader besides its options are keyword arguments too, named in
`CONTEXT`; `load_data` passes each one the loader declares, and no YAML may set one:
  data_dir   the data folder (every loader takes it, used or not)
  rng        the run's generator (likewise)
  loss_task  the task of the run's loss, "classification" or "regression" (None outside a
             run), for loaders that settle their task from the labels (csv, npz, arrays)
  progress   whether a download may show a progress bar (mnist, fashion_mnist, cifar10)
  arrays     the arrays a Python program gave `nncli.train(config, data={...})` (arrays)
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nncli import validate
from nncli.errors import ConfigError, DataError
from nncli.registry import Registry

DATASETS: Registry[Callable[..., RawData]] = Registry("dataset")

TASKS = ("classification", "regression")
# data.layout: how a dataset's images are laid out, (N, C, H, W) or (N, H, W, C)
LAYOUTS = ("channels_first", "channels_last")

# The keyword arguments a loader may declare that are not YAML options (module docstring).
CONTEXT = ("data_dir", "rng", "loss_task", "progress", "arrays")


def call_loader(loader: Callable[..., RawData], options: dict, **context) -> RawData:
    """`loader(**options)` with each of `context` (names in `CONTEXT`) that it declares."""
    unknown = set(context) - set(CONTEXT)
    if unknown:
        raise TypeError(f"{sorted(unknown)} are not loader context; it is {CONTEXT}")
    declared = inspect.signature(loader).parameters
    return loader(**{k: v for k, v in context.items() if k in declared}, **options)


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about its data.

    `input_shape` excludes the batch dimension: (1, 28, 28) for MNIST, (3, 32, 32) for
    CIFAR-10, (2,) for the spiral. `num_outputs` is the width of the model's last layer: the
    number of classes, or the number of regression targets. `pixel_max` is set for images
    (255.0) and is what `scale` divides by. `class_names[i]` names class i where the labels
    were not already 0..K-1. `notes` are one-line sentences on what the loader decided for the
    user (whole-number labels read as regression targets, say), for the caller to show.
    `columns` says which columns of a table were the features and the targets (csv only), so
    that new rows can be read the way the training rows were.
    """

    name: str
    input_shape: tuple[int, ...]
    task: str
    num_classes: int | None
    num_outputs: int
    pixel_max: float | None = None
    class_names: tuple[str, ...] | None = None
    notes: tuple[str, ...] = ()
    columns: Columns | None = None

    @classmethod
    def classification(
        cls,
        name: str,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        pixel_max: float | None = None,
        class_names: tuple[str, ...] | None = None,
        notes: tuple[str, ...] = (),
        columns: Columns | None = None,
    ) -> DatasetInfo:
        return cls(name, tuple(input_shape), "classification", num_classes, num_classes,
                   pixel_max, class_names, tuple(notes), columns)

    @classmethod
    def regression(
        cls, name: str, input_shape: tuple[int, ...], num_outputs: int, *,
        pixel_max: float | None = None, notes: tuple[str, ...] = (), columns: Columns | None = None,
    ) -> DatasetInfo:
        return cls(name, tuple(input_shape), "regression", None, num_outputs, pixel_max,
                   notes=tuple(notes), columns=columns)


@dataclass(frozen=True)
class Columns:
    """How the rows of a training table were read: its `width` in values, the positions (from
    0) of the `features` in the order the model takes them and of the `targets`, and the
    `header` names where the file had a header row. Plain data (`to_dict`), so that a
    checkpoint can read new rows the same way long after the training file is gone."""

    width: int
    features: tuple[int, ...]
    targets: tuple[int, ...]
    header: tuple[str, ...] | None = None

    @property
    def feature_names(self) -> tuple[str, ...] | None:
        return None if self.header is None else tuple(self.header[i] for i in self.features)

    @property
    def feature_labels(self) -> list[str]:
        """How messages name the features: their header names, else their column positions."""
        names = self.feature_names
        return list(names) if names else [f"column {i}" for i in self.features]

    @property
    def target_names(self) -> tuple[str, ...] | None:
        return None if self.header is None else tuple(self.header[i] for i in self.targets)

    def to_dict(self) -> dict:
        return {"width": self.width, "features": list(self.features), "targets": list(self.targets),
                "header": None if self.header is None else list(self.header)}

    @classmethod
    def from_dict(cls, saved: dict) -> Columns:
        header = saved.get("header")
        return cls(int(saved["width"]), tuple(int(i) for i in saved["features"]),
                   tuple(int(i) for i in saved["targets"]),
                   None if header is None else tuple(str(h) for h in header))


@dataclass(frozen=True)
class RawData:
    """A dataset as loaded: train arrays, test arrays (or None), `info`, and validation arrays
    where the dataset has its own (csv's `val_path`; None otherwise: the pipeline may then draw
    a validation split from the training set).

    Images are (N, C, H, W); labels are integers of shape (N,) for classification and
    targets of shape (N, k) for regression.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    info: DatasetInfo
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    def __post_init__(self) -> None:
        pairs = ((self.x_train, self.y_train), (self.x_test, self.y_test), (self.x_val, self.y_val))
        for x, y in pairs[1:]:
            if (x is None) != (y is None):
                raise ValueError("test (and validation) inputs and targets must both be given or"
                                 " both be None")
        for x, y in pairs:
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


def index_classes(
    labels: list[np.ndarray | None], sources: list[str]
) -> tuple[list[np.ndarray | None], tuple[str, ...] | None]:
    """Whole-number class labels (int64 arrays; the first is the training set) as 0..K-1, and
    the class names, or None where they need none.

    Training labels that are exactly 0..K-1 are kept. Any other set (1..3, or -1 and 1) is
    sorted and numbered 0..K-1, its values kept as the names ("1", "2", "3"): a class never
    seen would be an output the model can only learn to avoid. A label of another array that
    the training set lacks is a `DataError` naming that array's source. None stays None.
    """
    if labels[0].size == 0:
        raise DataError(f"{sources[0]} has no samples")
    classes = np.unique(labels[0])
    dense = classes[0] == 0 and classes[-1] == len(classes) - 1
    out = _numbered(labels, classes, sources, shown=str, keep=dense)
    return out, None if dense else tuple(str(c) for c in classes.tolist())


def number_names(
    labels: list[Sequence[str] | np.ndarray | None], sources: list[str]
) -> tuple[list[np.ndarray | None], tuple[str, ...]]:
    """Class labels that are names ("cat", "dog"; the first list is the training set) as int64
    0..K-1, and the names: those of the training set, sorted, are numbered in that order. A
    name of another list that the training set lacks is a `DataError` naming that list's
    source. None stays None."""
    arrays = [None if y is None else np.asarray(y) for y in labels]
    names = np.unique(arrays[0])
    out = _numbered(arrays, names, sources, shown=lambda name: repr(str(name)))
    return out, tuple(str(n) for n in names.tolist())


def _numbered(labels: list, classes: np.ndarray, sources: list[str], shown, keep: bool = False) -> list:
    """Each array of `labels` as int64 indices into the sorted `classes` (as it is where
    `keep`), None as None; a label that `classes` lacks is a `DataError` naming the array's
    source and the label (`shown(label)`)."""
    out = []
    for y, source in zip(labels, sources, strict=True):
        if y is None:
            out.append(None)
            continue
        unknown = np.setdiff1d(y, classes)
        if unknown.size:
            raise DataError(f"{source} has class {shown(unknown[0])}, which the training set lacks")
        out.append(y if keep else np.searchsorted(classes, y).astype(np.int64))
    return out


def decide_task(
    y: np.ndarray, source: str, loss_task: str | None, unless_the_loss_says: str
) -> tuple[str, tuple[str, ...]]:
    """The task of labels `y` (finite numbers, (N,) or (N, k)) under `task: decide`, and the
    notes that say what the loss decided.

    Several columns, or any fraction, make regression targets. Whole numbers are what the
    run's loss needs (`loss_task`), or `unless_the_loss_says` without a loss (None); where the
    loss turns them from that, one note says so and how to choose otherwise.
    """
    if (y.ndim == 2 and y.shape[1] > 1) or not np.array_equal(y, np.round(y)):
        return "regression", ()
    task = loss_task or unless_the_loss_says
    if task == unless_the_loss_says:
        return task, ()
    if task == "regression":
        read, otherwise = "regression targets", "classification to read them as classes"
    else:
        read, otherwise = "classes", "regression to read them as targets"
    return task, (f"the labels of {source} are whole numbers, read as {read} because the loss is"
                  f" a {task} loss; set task: {otherwise}",)


def one_hot_classes(y: np.ndarray) -> np.ndarray | None:
    """The class numbers (N,) int64 of one-hot rows `y` (N, K), K >= 2, of 0s and 1s with
    exactly one 1 per row, as Keras' `to_categorical` writes labels; None for anything else."""
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[1] < 2 or not len(y) or y.dtype.kind not in "iuf":
        return None
    if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
        return None
    return y.argmax(axis=1).astype(np.int64)


def one_hot_note(source: str, classes: int) -> str:
    """What reading one-hot rows as classes did, in one line."""
    return (f"{source} holds one-hot rows of {classes} classes (as Keras' to_categorical writes"
            " them), read as the class numbers y.argmax(1)")


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
