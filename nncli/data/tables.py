"""The `csv` dataset: CSV tables the user names, paths relative to the current directory, and
the rules that pick their feature and label columns.

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
needs (the `loss_task` the loader is given; classes outside a run), with a note in
`DatasetInfo.notes` where a regression loss made them targets. `task: classification` or
`regression` always wins. Class labels exactly 0..K-1 are the classes; other whole numbers
(1..3) and names are sorted and numbered 0..K-1, their values kept as `class_names`; a
validation or test label the training set lacks is an error. A ragged row, a cell that is not
a number, an empty cell or a non-finite value (a feature or a label) is one `DataError` naming
the file, the line and the column (`nncli.data.csvfile`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nncli import validate
from nncli.data.csvfile import Table, is_number, read_table
from nncli.data.datasets import (
    DATASETS,
    TASKS,
    Columns,
    DatasetInfo,
    RawData,
    as_targets,
    decide_task,
    file_option,
    index_classes,
    number_names,
)
from nncli.errors import ConfigError, DataError
from nncli.messages import did_you_mean

# `task` of csv and npz: "decide" settles it from the labels and the run's loss.
TASK_OPTIONS = (*TASKS, "decide")

# A column given in the config: a header name, or a position (negative from the end).
ColumnRef = str | int


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
    loss_task: str | None = None,
    test_path: str | None = None,
    test_labels_path: str | None = None,
    val_path: str | None = None,
    val_labels_path: str | None = None,
    shape: list[int] | None = None,
    pixel_max: float | None = None,
) -> RawData:
    """A CSV dataset; see the module docstring for the layouts and options. `loss_task` is
    context, not an option (`nncli.data.datasets.CONTEXT`)."""
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
    first: Table | None = None
    label_columns: list[int] = []
    features: list[int] = []
    xs: list[np.ndarray] = []
    ys: list[tuple[Table, list[int]]] = []
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
            if all(is_number(c) for c in cells):
                task, notes = decide_task(np.array([float(c) for c in cells]),
                                          str(train_labels.path), loss_task, "classification")
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


def _resolve(table: Table, key: str, refs: list[ColumnRef]) -> list[int]:
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
    table: Table, targets: list[int], chosen: list[ColumnRef] | None, dropped: list[ColumnRef] | None
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


def _check_same_columns(table: Table, first: Table) -> None:
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


def class_labels(
    columns: list[tuple[Table, int]],
) -> tuple[list[np.ndarray], tuple[str, ...] | None]:
    """int64 labels 0..K-1 from column `column` of each table (the first is the training
    set), and the class names where the labels were not already 0..K-1.

    Whole numbers are numbered by `index_classes`, names by `number_names`. An empty or non-finite
    cell, or a number that is not whole, is a `DataError` at its line.
    """
    cells = [table.labels(column) for table, column in columns]
    sources = [str(table.path) for table, _ in columns]
    if all(is_number(c) for part in cells for c in part):
        values = [_whole_numbers(table, column, part)
                  for (table, column), part in zip(columns, cells, strict=True)]
        return index_classes(values, sources)
    return number_names(cells, sources)


def _whole_numbers(table: Table, column: int, cells: list[str]) -> np.ndarray:
    values = np.array([float(c) for c in cells])
    fractions = np.flatnonzero(values != np.round(values))
    if fractions.size:
        row = fractions[0]
        raise DataError(f"{table.path}:{table.line_numbers[row]}: column {table.column_name(column)}"
                        f" is {cells[row]!r}, but class labels are whole numbers or names")
    return values.astype(np.int64)
