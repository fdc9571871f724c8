"""Datasets from files the user names: CSV tables and .npz arrays. Paths are relative to the
current directory.

`csv` reads one of two layouts:
  - `path` + `labels_path`: one flattened sample per row of `path`, its label on the same row
    of `labels_path` (the seeds' images and labels files). A first line with a cell that is not
    a number is a header, and skipped.
  - `path` + `target`: one CSV with a header row; `target` names the label column (for
    regression, one target column or a list of them); every other column is a feature.
`test_path` (and `test_labels_path`) add a test set in the same layout. `shape` reshapes each
row ([1, 28, 28] for MNIST images); `pixel_max` says the features are pixels with that maximum,
so that `scale` divides by it. Class labels are whole numbers 0..K-1, or names (sorted, then
numbered). A ragged row, a cell that is not a number, or a missing value is one `DataError`
naming the file and line. Fields are split at every comma: quoted commas are not supported.

`npz` reads `x_train`, `y_train` and optionally `x_test`, `y_test`; the task is classification
when `y_train` holds integers, regression otherwise, unless `task` says.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nncli import validate
from nncli.data.datasets import (
    DATASETS,
    TASKS,
    DatasetInfo,
    RawData,
    as_labels,
    as_targets,
    file_option,
    num_classes_of,
)
from nncli.errors import ConfigError, DataError
from nncli.registry import did_you_mean


@dataclass(frozen=True)
class _Table:
    """The non-blank lines of a CSV file, split off its header, with their line numbers."""

    path: Path
    header: list[str] | None
    lines: list[str]
    line_numbers: list[int]

    @property
    def width(self) -> int:
        return len(self.header) if self.header else self.lines[0].count(",") + 1

    def column_name(self, column: int) -> str:
        return repr(self.header[column]) if self.header else str(column + 1)

    def numbers(self, columns: list[int] | None = None) -> np.ndarray:
        """float32 (rows, columns) of `columns` (all by default); one clear error otherwise."""
        options = dict(delimiter=",", usecols=columns, ndmin=2, comments=None, quotechar='"')
        try:
            # Whole numbers (pixels) parse 5x faster as integers than as floats.
            values = np.loadtxt(self.lines, dtype=np.int32, **options).astype(np.float32)
        except (ValueError, OverflowError):
            try:
                values = np.loadtxt(self.lines, dtype=np.float32, **options)
            except ValueError as err:
                raise self._not_a_number(columns) or DataError(f"{self.path}: {err}") from None
        finite = np.isfinite(values)
        if not finite.all():
            row, col = np.argwhere(~finite)[0]
            column = columns[col] if columns is not None else col
            raise DataError(f"{self.path}:{self.line_numbers[row]}: column"
                            f" {self.column_name(column)} is missing or not finite")
        return values

    def strings(self, column: int) -> list[str]:
        return [_cell(line.split(",", column + 1)[column]) for line in self.lines]

    def _not_a_number(self, columns: list[int] | None) -> DataError | None:
        for number, line in zip(self.line_numbers, self.lines, strict=True):
            cells = line.split(",")
            for column in range(len(cells)) if columns is None else columns:
                if not _is_number(cells[column]):
                    return DataError(f"{self.path}:{number}: column {self.column_name(column)}"
                                     f" is not a number: {cells[column]!r}")
        return None


def _cell(text: str) -> str:
    return text.strip().strip('"')


def _is_number(text: str) -> bool:
    try:
        float(_cell(text))
    except ValueError:
        return False
    return True


def read_table(path: Path, *, header: bool | None) -> _Table:
    """`path` split into lines, every row checked to have as many fields as the first.

    `header`: True requires a header row, None detects one (a first line with a cell that is
    not a number).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a UTF-8 text file") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror}") from None
    numbered = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not numbered:
        raise DataError(f"{path} is empty")
    first = numbered[0][1].split(",")
    has_header = not all(_is_number(cell) for cell in first)
    if header and not has_header:
        raise DataError(f"{path} has no header row (its first line is all numbers); the target"
                        " option names a column of the header")
    numbers = [i for i, _ in numbered]
    lines = [line for _, line in numbered]
    commas = len(first) - 1
    for i, line in enumerate(lines):
        if line.count(",") != commas:
            raise DataError(f"{path}:{numbers[i]}: found {line.count(',') + 1} values, expected"
                            f" {commas + 1} as on line {numbers[0]}")
    if has_header:
        numbers, lines = numbers[1:], lines[1:]
        if not lines:
            raise DataError(f"{path} has a header but no data rows")
    return _Table(path, [_cell(c) for c in first] if has_header else None, lines, numbers)


def class_labels(
    cells: list[list[str]], sources: list[str]
) -> tuple[list[np.ndarray], tuple[str, ...] | None]:
    """int64 labels for each list of `cells`, and the class names if the labels are names.

    Numbers must be whole and >= 0 and are the labels; otherwise the names of the first list
    (the training set), sorted, are numbered 0..K-1, and other lists may use only those.
    """
    if all(_is_number(c) for part in cells for c in part):
        labels = [as_labels(np.array([float(c) for c in part]), source)
                  for part, source in zip(cells, sources, strict=True)]
        return labels, None
    names = tuple(sorted(set(cells[0])))
    index = {name: i for i, name in enumerate(names)}
    for part, source in zip(cells[1:], sources[1:], strict=True):
        unknown = sorted(set(part) - index.keys())
        if unknown:
            raise DataError(f"{source} has class {unknown[0]!r}, which the training set lacks")
    return [np.array([index[c] for c in part], dtype=np.int64) for part in cells], names


@DATASETS.register("csv")
def load_csv(
    *,
    data_dir: Path,
    rng: np.random.Generator,
    path: str,
    labels_path: str | None = None,
    target: str | list[str] | None = None,
    task: str = "classification",
    test_path: str | None = None,
    test_labels_path: str | None = None,
    shape: list[int] | None = None,
    pixel_max: float | None = None,
) -> RawData:
    """A CSV dataset; see the module docstring for the two layouts."""
    task = validate.one_of("task", task, TASKS)
    if labels_path is None and target is None:
        raise ConfigError("missing: name the label column of the CSV at path here, or give"
                          " labels_path (a CSV with one label per row of path)", key="target")
    if labels_path is not None and target is not None:
        raise ConfigError("give target (a column of path) or labels_path (a separate CSV), not both",
                          key="target")
    if labels_path is None and test_labels_path is not None:
        raise ConfigError("only used with labels_path", key="test_labels_path")
    if labels_path is not None and (test_path is None) != (test_labels_path is None):
        raise ConfigError("give test_path and test_labels_path together", key="test_labels_path")
    if pixel_max is not None:
        pixel_max = validate.positive_float("pixel_max", pixel_max)
    splits = [("path", "labels_path", path, labels_path)]
    if test_path is not None:
        splits.append(("test_path", "test_labels_path", test_path, test_labels_path))

    xs, ys, sources = [], [], []
    header = columns = None
    for path_key, labels_key, x_path, y_path in splits:
        x_file = file_option(path_key, x_path, "CSV file")
        if y_path is None:
            table = read_table(x_file, header=True)
            if columns is None:
                header, columns = table.header, _target_columns(table, target, task)
            elif table.header != header:
                raise DataError(f"{x_file} does not have the same columns as {path}")
            features = [c for c in range(table.width) if c not in columns]
            xs.append(table.numbers(features))
            ys.append(table.strings(columns[0]) if task == "classification"
                      else table.numbers(columns))
            sources.append(str(x_file))
        else:
            y_file = file_option(labels_key, y_path, "labels CSV file")
            xs.append(read_table(x_file, header=None).numbers())
            labels = read_table(y_file, header=None)
            if task == "classification" and labels.width != 1:
                raise DataError(f"{y_file} has {labels.width} columns; a classification labels"
                                " file has one label per line")
            ys.append(labels.strings(0) if task == "classification" else labels.numbers())
            if len(ys[-1]) != len(xs[-1]):
                raise DataError(f"{y_file} has {len(ys[-1]):,} labels for the {len(xs[-1]):,}"
                                f" rows of {x_file}")
            sources.append(str(y_file))
    if len(xs) == 2 and xs[1].shape[1] != xs[0].shape[1]:
        raise DataError(f"{test_path} has {xs[1].shape[1]} values per row, {path} has"
                        f" {xs[0].shape[1]}")

    input_shape = _row_shape(shape, xs[0].shape[1])
    xs = [x.reshape(len(x), *input_shape) for x in xs]
    if task == "classification":
        ys, names = class_labels(ys, sources)
        info = DatasetInfo.classification("csv", input_shape, num_classes_of(ys, path),
                                          pixel_max=pixel_max, class_names=names)
    else:
        ys = [as_targets(y, source) for y, source in zip(ys, sources, strict=True)]
        info = DatasetInfo.regression("csv", input_shape, ys[0].shape[1], pixel_max=pixel_max)
    x_test, y_test = (xs[1], ys[1]) if len(xs) == 2 else (None, None)
    return RawData(xs[0], ys[0], x_test, y_test, info)


def _target_columns(table: _Table, target: str | list[str], task: str) -> list[int]:
    names = [target] if isinstance(target, str) else target
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"expected a column name or a list of them, got {target!r}", key="target")
    if task == "classification" and len(names) > 1:
        raise ConfigError("a classification target is one column", key="target")
    header = table.header or []
    for name in names:
        if name not in header:
            raise ConfigError(f'{table.path} has no column "{name}"{did_you_mean(name, header)};'
                              f" its columns are {', '.join(header)}", key="target")
    if len(names) == len(header):
        raise DataError(f"{table.path} has no feature columns besides the target")
    return [header.index(name) for name in names]


def _row_shape(shape: object, width: int) -> tuple[int, ...]:
    if shape is None:
        return (width,)
    if not isinstance(shape, (list, tuple)) or not shape:
        raise ConfigError(f"expected a list of dimensions, got {shape!r}", key="shape")
    dims = tuple(validate.positive_int("shape", d) for d in shape)
    if int(np.prod(dims)) != width:
        raise ConfigError(f"{list(dims)} holds {int(np.prod(dims))} values, but each row has"
                          f" {width}", key="shape")
    return dims


@DATASETS.register("npz")
def load_npz(
    *, data_dir: Path, rng: np.random.Generator, path: str, task: str | None = None
) -> RawData:
    """Arrays x_train, y_train and optional x_test, y_test from a NumPy .npz file."""
    if task is not None:
        task = validate.one_of("task", task, TASKS)
    file = file_option("path", path, "npz file")
    if not zipfile.is_zipfile(file):
        raise DataError(f"{file} is not an .npz file (an .npz is a zip archive of arrays)")
    try:
        with np.load(file, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except ValueError:
        raise DataError(f"{file} holds object arrays, which would need pickle to load; store"
                        " plain numeric arrays") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"{file} is not a readable .npz file ({err})") from None
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise DataError(f"{file} has no {key} array (it holds {', '.join(arrays) or 'none'})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{file} has one of x_test and y_test without the other")
    for key in ("x_train", "x_test"):
        x = arrays.get(key)
        if x is not None and (x.dtype.kind not in "iuf" or x.ndim < 2):
            raise DataError(f"{file}: {key} is a {x.dtype} array of shape {x.shape}; expected"
                            " numbers, one sample per row")
    x_train, x_test = arrays["x_train"], arrays.get("x_test")
    if x_test is not None and x_test.shape[1:] != x_train.shape[1:]:
        raise DataError(f"{file}: x_test has samples of shape {x_test.shape[1:]}, x_train of"
                        f" shape {x_train.shape[1:]}")
    y_train, y_test = arrays["y_train"], arrays.get("y_test")
    for x, y, key in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if x is not None and len(x) != len(y):
            raise DataError(f"{file}: x_{key} has {len(x):,} samples, y_{key} {len(y):,}")
    if task is None:
        task = "classification" if y_train.dtype.kind in "iu" else "regression"
    pixel_max = 255.0 if x_train.dtype == np.uint8 else None
    source = str(file)
    if task == "classification":
        y_train = as_labels(y_train, source)
        y_test = None if y_test is None else as_labels(y_test, source)
        info = DatasetInfo.classification("npz", x_train.shape[1:],
                                          num_classes_of([y_train, y_test], source),
                                          pixel_max=pixel_max)
    else:
        y_train = as_targets(y_train, source)
        y_test = None if y_test is None else as_targets(y_test, source)
        if y_test is not None and y_test.shape[1] != y_train.shape[1]:
            raise DataError(f"{file}: y_test has {y_test.shape[1]} targets per sample,"
                            f" y_train {y_train.shape[1]}")
        info = DatasetInfo.regression("npz", x_train.shape[1:], y_train.shape[1],
                                      pixel_max=pixel_max)
    return RawData(x_train, y_train, x_test, y_test, info)
