"""Datasets from files the user names: CSV tables and .npz arrays. Paths are relative to the
current directory.

`csv` reads one of two layouts:
  - `path` + `target`: one table; `target` is the label column, by header name or by position
    (0 is the first column, -1 the last), or a list of them for several regression targets.
    The other columns are the features, or those `columns` lists, or all but those `drop`
    lists (names or positions; one of the two at most).
  - `path` + `labels_path`: one flattened sample per row of `path`, its label on the same row
    of `labels_path` (the seeds' images and labels files); `columns`/`drop` apply to `path`.
`header`: by default the whole file decides (`first_line_is_header`): a first line is a header
when it holds every column name the config gives (target, columns, drop), or when one of its
words (a cell that is neither empty nor a number) stands over a column with no word on any other
line; a first line whose words all stand in columns of words (the UCI iris.data layout, its
class names on every line) is data. `true` requires a header, `false` reads the first line as
data, and `target` must then be a position. The other files have a header where their first
line holds the training file's header names, else by the same rule. A header that names a
column twice is an error. The CS229 MNIST files, the digit then 784 pixels and no
header, are `{path: mnist_train.csv, header: false, target: 0, shape: [1, 28, 28],
pixel_max: 255}`.

`test_path` (and `test_labels_path`) add a test set, `val_path` (and `val_labels_path`) the
validation set, in place of a split drawn with `val_size`; each has the columns of `path` (the
same header, or as many columns). `shape` reshapes each row ([1, 28, 28] for MNIST images);
`pixel_max` says the features are pixels with that maximum, so that `scale` divides by it.

`task: decide` (the default) settles what the labels are: several target columns, or any
fraction, are regression targets; names are classes; whole numbers are what the run's loss
needs (`loss_task()`; classes outside a run), with a note in `DatasetInfo.notes` where a
regression loss made them targets. `task: classification` or `regression` always wins. Class
labels exactly 0..K-1 are the classes; other whole numbers (1..3) and names are sorted and
numbered 0..K-1, their values kept as `class_names`; a validation or test label the training
set lacks is an error. A ragged row, a cell that is not a number, an empty cell or a non-finite
value (a feature or a label) is one `DataError` naming the file, the line and the column:
its header name, or its position counted from 0. Fields are split at every comma: quoted
commas are not supported.

`arrays` is `npz` for arrays a Python program holds: `nncli.train(config, data={"x_train": ...,
"y_train": ...})` (`given_arrays`).

`npz` reads `x_train`, `y_train` and optionally `x_test`, `y_test`, with the same `task` rule
(outside a run whole numbers are classes in an integer array, targets in a float one) and the
same numbering of classes; a value that is not finite is a `DataError` naming the array.
"""

from __future__ import annotations

import contextlib
import math
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nncli import validate
from nncli.data.datasets import (
    DATASETS,
    TASKS,
    Columns,
    DatasetInfo,
    RawData,
    as_labels,
    as_targets,
    decide_task,
    file_option,
    index_classes,
    loss_task,
    one_hot_classes,
    one_hot_note,
)
from nncli.errors import ConfigError, DataError
from nncli.fileio import TooLarge, npz_arrays
from nncli.registry import did_you_mean

# `task` of csv and npz: "decide" settles it from the labels and the run's loss.
TASK_OPTIONS = (*TASKS, "decide")

# A column given in the config: a header name, or a position (negative from the end).
ColumnRef = str | int


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
        """How messages name column `column` (>= 0): its header name, else its position."""
        return repr(self.header[column]) if self.header else f"{column} (counting from 0)"

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
                raise self._bad_cell(columns) or DataError(f"{self.path}: {err}") from None
        finite = np.isfinite(values)
        if not finite.all():
            row, col = np.argwhere(~finite)[0]
            column = columns[col] if columns is not None else col
            raise self._bad_value(row, column, self.lines[row].split(",")[column])
        return values

    def strings(self, column: int) -> list[str]:
        return [_cell(line.split(",", column + 1)[column]) for line in self.lines]

    def labels(self, column: int) -> list[str]:
        """The cells of `column`; a `DataError` at the first that is empty or not finite."""
        cells = self.strings(column)
        for row, cell in enumerate(cells):
            if not cell or (_is_number(cell) and not math.isfinite(float(cell))):
                raise self._bad_value(row, column, cell)
        return cells

    def _bad_value(self, row: int, column: int, text: str) -> DataError:
        where = f"{self.path}:{self.line_numbers[row]}: column {self.column_name(column)}"
        if not _cell(text):
            return DataError(f"{where} is empty")
        return DataError(f"{where} is missing or not finite: {_cell(text)!r}")

    def _bad_cell(self, columns: list[int] | None) -> DataError | None:
        for row, line in enumerate(self.lines):
            cells = line.split(",")
            for column in range(len(cells)) if columns is None else columns:
                if not _cell(cells[column]):
                    return self._bad_value(row, column, cells[column])
                if not _is_number(cells[column]):
                    return DataError(f"{self.path}:{self.line_numbers[row]}: column"
                                     f" {self.column_name(column)} is not a number: {cells[column]!r}")
        return None


def _cell(text: str) -> str:
    return text.strip().strip('"')


def _is_number(text: str) -> bool:
    try:
        float(_cell(text))
    except ValueError:
        return False
    return True


def _is_word(text: str) -> bool:
    """A cell that is neither empty nor a number: a name, in a header or in a column of names."""
    return bool(_cell(text)) and not _is_number(text)


def first_line_is_header(lines: list[str], positions: Sequence[int] | None = None) -> bool:
    """Whether the first of `lines` (a CSV's non-blank lines, as many fields each) is a header,
    from the evidence of the whole file, looking only at the columns `positions` (all by default).

    A first line with no word (a cell neither empty nor a number) is data; one with a word
    standing over a column that holds no word on any other line (numbers, or nothing) is a
    header; one whose words all stand in columns that hold words on other lines too is data
    (the class names of iris.data). An empty cell says nothing: a header may leave one blank,
    and a data row may miss a value. A file of one line has no other lines to tell: it is a
    header when it holds no number at all.
    """
    first = lines[0].split(",")
    columns = range(len(first)) if positions is None else positions
    words = sorted(c for c in set(columns) if _is_word(first[c]))
    if not words:
        return False
    if len(lines) == 1:
        return not any(_is_number(first[c]) for c in columns)
    # Column by column, each scan stopping at its first word: a long numeric table with a
    # header costs one scan of one column.
    return any(not any(_is_word(line.split(",", c + 1)[c]) for line in lines[1:]) for c in words)


def read_table(path: Path, *, header: bool | None, names: Sequence[str] = ()) -> _Table:
    """`path` split into lines, every row checked to have as many fields as the first.

    `header`: True requires a header row, False reads the first line as data, None decides:
    a first line holding every one of `names` (the column names the config gives, or the
    training file's header) is a header, else `first_line_is_header` decides from the file.
    """
    numbers, lines = _read_lines(path)
    first = lines[0].split(",")
    if header is None:
        cells = {_cell(c) for c in first}
        has_header = (bool(names) and all(n in cells for n in names)) or first_line_is_header(lines)
    elif header and not any(_is_word(cell) for cell in first):
        raise DataError(f"{path} has no header row (its first line is all numbers), but header"
                        " is true")
    else:
        has_header = header
    return _split_header(path, numbers, lines, has_header)


def _read_lines(path: Path) -> tuple[list[int], list[str]]:
    """The line numbers and the text of the non-blank lines of `path`; a `DataError` for an
    unreadable or empty file, or a line with another number of fields than the first."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a UTF-8 text file") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror}") from None
    numbered = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not numbered:
        raise DataError(f"{path} is empty")
    numbers = [i for i, _ in numbered]
    lines = [line for _, line in numbered]
    commas = lines[0].count(",")
    for i, line in enumerate(lines):
        if line.count(",") != commas:
            raise DataError(f"{path}:{numbers[i]}: found {line.count(',') + 1} values, expected"
                            f" {commas + 1} as on line {numbers[0]}")
    return numbers, lines


def _split_header(path: Path, numbers: list[int], lines: list[str], has_header: bool) -> _Table:
    """The table of `lines`, the first taken off as the header where `has_header`; a header
    that names a column twice, or has no line under it, is a `DataError`."""
    if not has_header:
        return _Table(path, None, lines, numbers)
    header = [_cell(c) for c in lines[0].split(",")]
    seen: dict[str, int] = {}
    for position, name in enumerate(header):
        if name in seen:
            if not name:
                raise DataError(f"{path}: columns {seen[name]} and {position} (counting from 0) have"
                                " no name in the header; give every column its own name")
            raise DataError(f'{path}: column "{name}" appears twice in the header, at positions'
                            f" {seen[name]} and {position} (counting from 0)")
        seen[name] = position
    if len(lines) == 1:
        raise DataError(f"{path} has a header but no data rows")
    return _Table(path, header, lines[1:], numbers[1:])


def class_labels(
    columns: list[tuple[_Table, int]],
) -> tuple[list[np.ndarray], tuple[str, ...] | None]:
    """int64 labels 0..K-1 from column `column` of each table (the first is the training
    set), and the class names where the labels were not already 0..K-1.

    Whole numbers are numbered by `index_classes`; otherwise the names of the training set,
    sorted, are numbered 0..K-1, and other tables may use only those. An empty or non-finite
    cell, or a number that is not whole, is a `DataError` at its line.
    """
    cells = [table.labels(column) for table, column in columns]
    sources = [str(table.path) for table, _ in columns]
    if all(_is_number(c) for part in cells for c in part):
        values = [_whole_numbers(table, column, part)
                  for (table, column), part in zip(columns, cells, strict=True)]
        return index_classes(values, sources)
    names = tuple(sorted(set(cells[0])))
    index = {name: i for i, name in enumerate(names)}
    for part, source in zip(cells[1:], sources[1:], strict=True):
        unknown = sorted(set(part) - index.keys())
        if unknown:
            raise DataError(f"{source} has class {unknown[0]!r}, which the training set lacks")
    return [np.array([index[c] for c in part], dtype=np.int64) for part in cells], names


def _whole_numbers(table: _Table, column: int, cells: list[str]) -> np.ndarray:
    values = np.array([float(c) for c in cells])
    fractions = np.flatnonzero(values != np.round(values))
    if fractions.size:
        row = fractions[0]
        raise DataError(f"{table.path}:{table.line_numbers[row]}: column {table.column_name(column)}"
                        f" is {cells[row]!r}, but class labels are whole numbers or names")
    return values.astype(np.int64)


@DATASETS.register("csv")
def load_csv(
    *,
    data_dir: Path,
    rng: np.random.Generator,
    path: str,
    labels_path: str | None = None,
    target: ColumnRef | list[ColumnRef] | None = None,
    header: bool | None = None,
    columns: ColumnRef | list[ColumnRef] | None = None,
    drop: ColumnRef | list[ColumnRef] | None = None,
    task: str = "decide",
    test_path: str | None = None,
    test_labels_path: str | None = None,
    val_path: str | None = None,
    val_labels_path: str | None = None,
    shape: list[int] | None = None,
    pixel_max: float | None = None,
) -> RawData:
    """A CSV dataset; see the module docstring for the layouts and options."""
    task = validate.one_of("task", task, TASK_OPTIONS)
    if header is not None:
        header = validate.boolean("header", header)
    if labels_path is None and target is None:
        raise ConfigError("missing: name the label column of the CSV at path here, or give"
                          " labels_path (a CSV with one label per row of path)", key="target")
    if labels_path is not None and target is not None:
        raise ConfigError("give target (a column of path) or labels_path (a separate CSV), not both",
                          key="target")
    for data_key, labels_key, data_file, labels_file in (
        ("test_path", "test_labels_path", test_path, test_labels_path),
        ("val_path", "val_labels_path", val_path, val_labels_path),
    ):
        if labels_path is None and labels_file is not None:
            raise ConfigError("only used with labels_path", key=labels_key)
        if labels_path is not None and (data_file is None) != (labels_file is None):
            raise ConfigError(f"give {data_key} and {labels_key} together", key=labels_key)
    targets = None if target is None else _column_refs("target", target)
    if task == "classification" and targets is not None and len(targets) > 1:
        raise ConfigError("a classification target is one column", key="target")
    if columns is not None and drop is not None:
        raise ConfigError("give columns (the features to use) or drop (the columns to leave out),"
                          " not both", key="drop")
    chosen = None if columns is None else _column_refs("columns", columns)
    dropped = None if drop is None else _column_refs("drop", drop)
    if pixel_max is not None:
        pixel_max = validate.positive_float("pixel_max", pixel_max)
    splits = [("path", "labels_path", path, labels_path)]
    if val_path is not None:
        splits.append(("val_path", "val_labels_path", val_path, val_labels_path))
    if test_path is not None:
        splits.append(("test_path", "test_labels_path", test_path, test_labels_path))

    # Columns are resolved on the training file; the others must have the same ones.
    first: _Table | None = None
    label_columns: list[int] = []
    features: list[int] = []
    xs: list[np.ndarray] = []
    ys: list[tuple[_Table, list[int]]] = []
    # A first line holding every column name the config gives is the header; after the
    # training file, one holding the training file's header names.
    named = [r for r in (*(targets or ()), *(chosen or ()), *(dropped or ())) if isinstance(r, str)]
    for path_key, labels_key, x_path, y_path in splits:
        names = named if first is None else first.header or ()
        table = read_table(file_option(path_key, x_path, "CSV file"), header=header, names=names)
        if first is None:
            first = table
            label_columns = [] if targets is None else _resolve(table, "target", targets)
            features = _features(table, label_columns, chosen, dropped)
        else:
            _check_same_columns(table, first)
        xs.append(table.numbers(features))
        if y_path is None:
            ys.append((table, label_columns))
            continue
        label_names = ys[0][0].header or () if ys else ()
        label_table = read_table(file_option(labels_key, y_path, "labels CSV file"), header=header,
                                 names=label_names)
        if ys and label_table.width != ys[0][0].width:
            raise DataError(f"{label_table.path} has {label_table.width} columns, {ys[0][0].path}"
                            f" has {ys[0][0].width}")
        if len(label_table.lines) != len(table.lines):
            raise DataError(f"{label_table.path} has {len(label_table.lines):,} labels for the"
                            f" {len(table.lines):,} rows of {table.path}")
        ys.append((label_table, list(range(label_table.width))))

    notes: tuple[str, ...] = ()
    train_labels, train_columns = ys[0]
    if task == "decide":
        if len(train_columns) > 1:
            task = "regression"
        else:
            cells = train_labels.labels(train_columns[0])
            if all(_is_number(c) for c in cells):
                task, notes = decide_task(np.array([float(c) for c in cells]),
                                          str(train_labels.path), "classification")
            else:
                task = "classification"
    input_shape = _row_shape(shape, len(features))
    layout = Columns(first.width, tuple(features), tuple(label_columns),
                     None if first.header is None else tuple(first.header))
    xs = [x.reshape(len(x), *input_shape) for x in xs]
    if task == "classification":
        if len(train_columns) != 1:
            raise DataError(f"{train_labels.path} has {len(train_columns)} columns; a classification"
                            " labels file has one label per line")
        labels, names = class_labels([(table, cols[0]) for table, cols in ys])
        info = DatasetInfo.classification("csv", input_shape, int(labels[0].max()) + 1,
                                          pixel_max=pixel_max, class_names=names, notes=notes,
                                          columns=layout)
    else:
        labels = [as_targets(table.numbers(cols), str(table.path)) for table, cols in ys]
        info = DatasetInfo.regression("csv", input_shape, labels[0].shape[1], pixel_max=pixel_max,
                                      notes=notes, columns=layout)
    x_val = y_val = x_test = y_test = None
    if val_path is not None:
        x_val, y_val = xs[1], labels[1]
    if test_path is not None:
        x_test, y_test = xs[-1], labels[-1]
    return RawData(xs[0], labels[0], x_test, y_test, info, x_val, y_val)


def _column_refs(key: str, value: object) -> list[ColumnRef]:
    """An option naming columns, one name or position or a list of them, as a list."""
    refs = value if isinstance(value, list) else [value]
    if not refs or not all(isinstance(r, str) or (isinstance(r, int) and not isinstance(r, bool))
                           for r in refs):
        raise ConfigError(f"expected a column name or position (0 is the first column, -1 the"
                          f" last), or a list of them, got {value!r}", key=key)
    return refs


def _resolve(table: _Table, key: str, refs: list[ColumnRef]) -> list[int]:
    """The indices (>= 0) of the columns `refs` of `table`; errors keyed by `key`."""
    out: list[int] = []
    for ref in refs:
        if isinstance(ref, int):
            if not -table.width <= ref < table.width:
                raise ConfigError(f"{table.path} has {table.width} columns, so a position is from"
                                  f" {-table.width} to {table.width - 1}; got {ref}", key=key)
            column = ref % table.width
        elif table.header is None:
            raise ConfigError(f"{table.path} is read without a header row, so columns are given by"
                              f" position (0 is the first, -1 the last), not by name: got {ref!r}",
                              key=key)
        elif ref not in table.header:
            raise ConfigError(f'{table.path} has no column "{ref}"{did_you_mean(ref, table.header)};'
                              f" its columns are {listing(table.header)}", key=key)
        else:
            column = table.header.index(ref)
        if column in out:
            raise ConfigError(f"column {table.column_name(column)} is given twice", key=key)
        out.append(column)
    return out


def listing(names: list[str], most: int = 12) -> str:
    if len(names) <= most:
        return ", ".join(names)
    return f"{', '.join(names[:most])}, ... ({len(names):,} in all)"


def _features(
    table: _Table, targets: list[int], chosen: list[ColumnRef] | None, dropped: list[ColumnRef] | None
) -> list[int]:
    """The feature columns of `table`: `chosen` in its order, else every column but the
    targets and `dropped`."""
    label = set(targets)
    if chosen is not None:
        features = _resolve(table, "columns", chosen)
        for column in features:
            if column in label:
                raise ConfigError(f"column {table.column_name(column)} is the target, not a feature",
                                  key="columns")
        return features
    left_out = set() if dropped is None else set(_resolve(table, "drop", dropped))
    if left_out & label:
        column = min(left_out & label)
        raise ConfigError(f"column {table.column_name(column)} is the target, which is never a"
                          " feature: drop lists only feature columns", key="drop")
    features = [c for c in range(table.width) if c not in label and c not in left_out]
    if not features:
        if dropped is not None:
            raise ConfigError(f"leaves none of the columns of {table.path} as features", key="drop")
        raise DataError(f"{table.path} has no feature columns besides the target")
    return features


def _check_same_columns(table: _Table, first: _Table) -> None:
    """The columns resolved on `first` mean the same in `table`: same header, or same width."""
    if (table.header is None) != (first.header is None):
        with_header, without = (table, first) if table.header else (first, table)
        raise DataError(f"{with_header.path} has a header row and {without.path} does not")
    if table.header != first.header:
        raise DataError(f"{table.path} does not have the same columns as {first.path}")
    if table.width != first.width:
        raise DataError(f"{table.path} has {table.width} values per row, {first.path} has"
                        f" {first.width}")


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
    *, data_dir: Path, rng: np.random.Generator, path: str, task: str = "decide"
) -> RawData:
    """Arrays x_train, y_train and optional x_test, y_test from a NumPy .npz file."""
    task = validate.one_of("task", task, TASK_OPTIONS)
    file = file_option("path", path, "npz file")
    return from_arrays(read_npz(file), str(file), "npz", task)


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


# The arrays of `nncli.train(config, data={...})`, while that call loads its data.
_given_arrays: ContextVar[dict[str, np.ndarray] | None] = ContextVar("given_arrays", default=None)


@contextlib.contextmanager
def given_arrays(arrays: dict[str, np.ndarray] | None) -> Iterator[None]:
    """Within this block, the `arrays` dataset loads `arrays` (x_train, y_train, and
    optionally x_test, y_test); outside any such block it has nothing to load."""
    token = _given_arrays.set(arrays)
    try:
        yield
    finally:
        _given_arrays.reset(token)


@DATASETS.register("arrays")
def load_arrays(*, data_dir: Path, rng: np.random.Generator, task: str = "decide") -> RawData:
    """The in-memory arrays given to `nncli.train(config, data={...})` from Python, checked as
    an .npz's arrays are."""
    task = validate.one_of("task", task, TASK_OPTIONS)
    arrays = _given_arrays.get()
    if arrays is None:
        raise DataError("the arrays dataset holds the arrays a Python program gives to"
                        " nncli.train(config, data={'x_train': ..., 'y_train': ...}), and none were"
                        " given: train (or resume) it from Python with the same arrays, or save them"
                        " to an .npz and use dataset: npz")
    return from_arrays(arrays, "the arrays given to nncli.train", "arrays", task)


def from_arrays(arrays: dict[str, np.ndarray], source: str, name: str, task: str) -> RawData:
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
    y_train, y_test, task, notes = _one_hot_labels(y_train, y_test, source, task)
    if task == "decide":
        integers = y_train.dtype.kind in "iu"
        task, notes = (decide_task(y_train, source, "classification" if integers else "regression")
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


def _one_hot_labels(y_train, y_test, source: str, task: str):
    """(y_train, y_test, task, notes): one-hot label rows (Keras' `to_categorical`) as class
    numbers, with a note, where the labels are classes (`task: classification`, or a
    classification loss deciding); as they are otherwise, so that K columns of 0/1 under mse
    stay K regression targets."""
    classes = one_hot_classes(y_train)
    wanted = task == "classification" or (task == "decide" and loss_task() == "classification")
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
    names = tuple(str(n) for n in np.unique(y_train).tolist())
    if y_test is not None:
        if y_test.dtype.kind not in "US":
            raise DataError(f"{source}: y_train holds names and y_test numbers; give both as names")
        unknown = np.setdiff1d(y_test, y_train)
        if unknown.size:
            raise DataError(f"{source}: y_test has class {str(unknown[0])!r}, which y_train lacks")
    index = np.array(names)
    y_train, y_test = (None if y is None else np.searchsorted(index, y).astype(np.int64) for y in labels)
    pixel_max = 255.0 if x_train.dtype == np.uint8 else None
    info = DatasetInfo.classification(name, x_train.shape[1:], len(names), pixel_max=pixel_max,
                                      class_names=names)
    return RawData(x_train, y_train, x_test, y_test, info)


def read_rows(path: Path, columns: Columns | None, num_features: int, *, targets: bool = False,
              task: str = "classification") -> tuple[np.ndarray, object, list[int]]:
    """The rows of CSV `path` as a trained model reads them: features (N, F) float32, the
    target column(s) when `targets` is asked (class labels as strings for classification,
    float targets (N, k) for regression; else None), and each row's line number.

    `columns` is the training table's layout (None for a model trained on other data: then
    every column is a feature). A file with a header row is matched by column name, so its
    columns may come in any order and extra ones are ignored; a file without one by position,
    with either all the training file's columns or the features alone. A missing column, or a
    width that fits neither, is a `DataError` naming the file and the column.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    if columns is None:
        table = read_table(path, header=None)
        if targets:
            raise DataError(f"the model was not trained on a table, so it does not know which column"
                            f" of {path} holds the labels; give an .npz with arrays x and y instead")
        if table.width != num_features:
            raise DataError(f"{path} has {table.width} values per row; the model takes {num_features}")
        return table.numbers(), None, table.line_numbers
    table = _read_as_trained(path, columns)
    if targets and not columns.targets:
        raise DataError(f"the model's training rows had their labels in another file, so {path}"
                        " has no label column for --labels")
    if table.header is not None and columns.header is not None:
        feature_columns = _named_columns(table, columns.feature_names, "a feature")
        target_columns = (_named_columns(table, columns.target_names, "the target")
                          if targets else [])
    else:
        if table.header is not None:  # trained without a header: only positions mean anything
            raise DataError(f"{path} has a header row, but the model was trained on a file without"
                            f" one; give the {len(columns.features)} feature values by position")
        if table.width == columns.width:
            feature_columns, target_columns = list(columns.features), list(columns.targets)
        elif table.width == len(columns.features) and not targets:
            feature_columns, target_columns = list(range(table.width)), []
        else:
            features_only = (f" or the {len(columns.features)} features alone" if not targets
                             else "")
            raise DataError(f"{path} has {table.width} values per row; the model reads rows of"
                            f" {columns.width} values (as its training file){features_only}")
    x = table.numbers(feature_columns)
    if not targets:
        return x, None, table.line_numbers
    y = table.labels(target_columns[0]) if task == "classification" else table.numbers(target_columns)
    return x, y, table.line_numbers


def _read_as_trained(path: Path, columns: Columns) -> _Table:
    """`path` read as the model's training table was, its first line a header or data.

    A first line holding every feature name of a training file with a header is its header,
    whatever the names (pandas writes 0, 1, 2). Otherwise `first_line_is_header` decides, the
    rule that decided at training; where the training file had no header and `path` has its
    width, it looks only at the columns the model reads (features and targets): a column left
    out at training (`drop`, a notes column) cannot make a line of data a header.
    """
    numbers, lines = _read_lines(path)
    first = {_cell(c) for c in lines[0].split(",")}
    names = columns.feature_names
    if names is not None and set(names) <= first:
        has_header = True
    else:
        read = None
        if columns.header is None and lines[0].count(",") + 1 == columns.width:
            read = (*columns.features, *columns.targets)
        has_header = first_line_is_header(lines, read)
    return _split_header(path, numbers, lines, has_header)


def _named_columns(table: _Table, names: tuple[str, ...], what: str) -> list[int]:
    found = []
    for name in names:
        if name not in table.header:
            raise DataError(f'{table.path} has no column "{name}", {what} column of the model\'s'
                            f" training file{did_you_mean(name, table.header)}")
        found.append(table.header.index(name))
    return found
