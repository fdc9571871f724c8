"""Datasets of arrays: `npz` reads x_train, y_train and optionally x_test, y_test from a NumPy
.npz file (paths relative to the current directory), `arrays` takes the same arrays from a
Python program: `nncli.train(config, data={"x_train": ..., "y_train": ...})`, which reach the
loader as its `arrays` argument (`nncli.data.datasets.CONTEXT`).

Both settle `task` as csv does (`nncli.data.tables`; outside a run whole numbers are classes in
an integer array, targets in a float one) and number classes the same way; a value that is not
finite is a `DataError` naming the array.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from nncli import validate
from nncli.data.datasets import (
    DATASETS,
    DatasetInfo,
    RawData,
    as_labels,
    as_targets,
    decide_task,
    file_option,
    index_classes,
    number_names,
    one_hot_classes,
    one_hot_note,
)
from nncli.data.tables import TASK_OPTIONS
from nncli.errors import DataError
from nncli.fileio import TooLarge, npz_arrays


@DATASETS.register("npz")
def load_npz(
    *, data_dir: Path, rng: np.random.Generator, path: str, task: str = "decide",
    loss_task: str | None = None,
) -> RawData:
    """Arrays x_train, y_train and optional x_test, y_test from a NumPy .npz file."""
    task = validate.one_of("task", task, TASK_OPTIONS)
    file = file_option("path", path, "npz file")
    return from_arrays(read_npz(file), str(file), "npz", task, loss_task)


def read_npz(file: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz `file`, read without pickle; one `DataError` naming the file
    for anything else (not a zip, object arrays, a damaged or crafted member, a zip bomb)."""
    if not zipfile.is_zipfile(file):
        raise DataError(f"{file} is not an .npz file (an .npz is a zip archive of arrays)")
    try:
        return npz_arrays(file)
    except TooLarge as err:
        raise DataError(f"refusing to read {file}: {err}") from None
    except ValueError as err:
        if "pickle" not in str(err):
            raise DataError(f"{file} is not a readable .npz file ({err})") from None
        raise DataError(f"{file} holds object arrays, which would need pickle to load; store"
                        " plain numeric arrays") from None
    except MemoryError:
        raise DataError(f"{file}: an array in it declares more data than memory can hold") from None
    except (OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile,
            zlib.error) as err:
        # RuntimeError: an encrypted member; NotImplementedError: an unknown compression
        raise DataError(f"{file} is not a readable .npz file ({err})") from None


@DATASETS.register("arrays")
def load_arrays(
    *, data_dir: Path, rng: np.random.Generator, task: str = "decide",
    loss_task: str | None = None, arrays: dict[str, np.ndarray] | None = None,
) -> RawData:
    """The in-memory `arrays` given to `nncli.train(config, data={...})` from Python (None
    where none were), checked as an .npz's arrays are."""
    task = validate.one_of("task", task, TASK_OPTIONS)
    if arrays is None:
        raise DataError("the arrays dataset holds the arrays a Python program gives to"
                        " nncli.train(config, data={'x_train': ..., 'y_train': ...}), and none were"
                        " given: train (or resume) it from Python with the same arrays, or save them"
                        " to an .npz and use dataset: npz")
    return from_arrays(arrays, "the arrays given to nncli.train", "arrays", task, loss_task)


def from_arrays(
    arrays: dict[str, np.ndarray], source: str, name: str, task: str, loss_task: str | None
) -> RawData:
    """`RawData` from arrays x_train, y_train and optionally x_test, y_test, checked the same
    way whether they came from an .npz file or from Python; messages name `source`."""
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise DataError(f"{source} has no {key} array (it holds {', '.join(arrays) or 'none'})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{source} has one of x_test and y_test without the other")
    for key in ("x_train", "x_test"):
        x = arrays.get(key)
        if x is not None and (x.dtype.kind not in "iuf" or x.ndim < 2):
            raise DataError(f"{source}: {key} is a {x.dtype} array of shape {x.shape}; expected"
                            " numbers, one sample per row")
    x_train, x_test = arrays["x_train"], arrays.get("x_test")
    if x_test is not None and x_test.shape[1:] != x_train.shape[1:]:
        raise DataError(f"{source}: x_test has samples of shape {x_test.shape[1:]}, x_train of"
                        f" shape {x_train.shape[1:]}")
    y_train, y_test = arrays["y_train"], arrays.get("y_test")
    for x, y, key in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if x is not None and len(x) != len(y):
            raise DataError(f"{source}: x_{key} has {len(x):,} samples, y_{key} {len(y):,}")
    for key in ("x_train", "y_train", "x_test", "y_test"):
        values = arrays.get(key)
        if values is not None and values.dtype.kind == "f" and not np.isfinite(values).all():
            sample = int(np.argwhere(~np.isfinite(values))[0][0])
            raise DataError(f"{source}: {key}[{sample}] holds a value that is missing or not finite")
    if y_train.dtype.kind in "US":  # class names
        if task == "regression":
            raise DataError(f"{source}: y_train holds names, which are classes, but task is regression")
        return _named_classes(x_train, y_train, x_test, y_test, source, name)
    notes: tuple[str, ...] = ()
    y_train, y_test, task, notes = _one_hot_labels(y_train, y_test, source, task, loss_task)
    if task == "decide":
        integers = y_train.dtype.kind in "iu"
        task, notes = (decide_task(y_train, source, loss_task,
                                   "classification" if integers else "regression")
                       if y_train.dtype.kind in "iuf" else ("classification", ()))
    pixel_max = 255.0 if x_train.dtype == np.uint8 else None
    if task == "classification":
        (y_train, y_test), names = index_classes(
            [as_labels(y_train, source), None if y_test is None else as_labels(y_test, source)],
            [f"{source}: y_train", f"{source}: y_test"])
        info = DatasetInfo.classification(name, x_train.shape[1:], int(y_train.max()) + 1,
                                          pixel_max=pixel_max, class_names=names, notes=notes)
    else:
        y_train = as_targets(y_train, source)
        y_test = None if y_test is None else as_targets(y_test, source)
        if y_test is not None and y_test.shape[1] != y_train.shape[1]:
            raise DataError(f"{source}: y_test has {y_test.shape[1]} targets per sample,"
                            f" y_train {y_train.shape[1]}")
        info = DatasetInfo.regression(name, x_train.shape[1:], y_train.shape[1],
                                      pixel_max=pixel_max, notes=notes)
    return RawData(x_train, y_train, x_test, y_test, info)


def _one_hot_labels(y_train, y_test, source: str, task: str, loss_task: str | None):
    """(y_train, y_test, task, notes): one-hot label rows (Keras' `to_categorical`) as class
    numbers, with a note, where the labels are classes (`task: classification`, or a
    classification loss deciding); as they are otherwise, so that K columns of 0/1 under mse
    stay K regression targets."""
    classes = one_hot_classes(y_train)
    wanted = task == "classification" or (task == "decide" and loss_task == "classification")
    if classes is None or not wanted:
        return y_train, y_test, task, ()
    if y_test is not None and np.ndim(y_test) == 2 and y_test.shape[1] != 1:
        test_classes = one_hot_classes(y_test)
        if test_classes is None or y_test.shape[1] != y_train.shape[1]:
            raise DataError(f"{source}: y_train holds one-hot rows of {y_train.shape[1]} classes but"
                            f" y_test has shape {y_test.shape}; give y_test as one-hot rows of"
                            f" {y_train.shape[1]} or as class numbers")
        y_test = test_classes
    return classes, y_test, "classification", (one_hot_note(f"{source}: y_train", y_train.shape[1]),)


def _named_classes(x_train, y_train, x_test, y_test, source: str, name: str) -> RawData:
    """Labels that are names ("cat", "dog"): sorted and numbered 0..K-1, the names kept."""
    labels = []
    for y, key in ((y_train, "y_train"), (y_test, "y_test")):
        if y is not None and y.ndim != 1:
            raise DataError(f"{source}: {key} has shape {y.shape}; expected one label per sample")
        labels.append(y)
    if y_test is not None and y_test.dtype.kind not in "US":
        raise DataError(f"{source}: y_train holds names and y_test numbers; give both as names")
    (y_train, y_test), names = number_names(labels, [f"{source}: y_train", f"{source}: y_test"])
    pixel_max = 255.0 if x_train.dtype == np.uint8 else None
    info = DatasetInfo.classification(name, x_train.shape[1:], len(names), pixel_max=pixel_max,
                                      class_names=names)
    return RawData(x_train, y_train, x_test, y_test, info)
