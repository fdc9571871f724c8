"""New rows for a trained model (`nncli predict`): a CSV read the way the model's training
table was (`DatasetInfo.columns`), its columns matched by header name or by position.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nncli.data.csvfile import Table, first_line_is_header, read_lines, read_table, split_header, unquoted
from nncli.data.datasets import Columns
from nncli.errors import DataError
from nncli.messages import did_you_mean


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


def _read_as_trained(path: Path, columns: Columns) -> Table:
    """`path` read as the model's training table was, its first line a header or data.

    A first line holding every feature name of a training file with a header is its header,
    whatever the names (pandas writes 0, 1, 2). Otherwise `first_line_is_header` decides, the
    rule that decided at training; where the training file had no header and `path` has its
    width, it looks only at the columns the model reads (features and targets): a column left
    out at training (`drop`, a notes column) cannot make a line of data a header.
    """
    numbers, lines = read_lines(path)
    first = {unquoted(c) for c in lines[0].split(",")}
    names = columns.feature_names
    if names is not None and set(names) <= first:
        has_header = True
    else:
        read = None
        if columns.header is None and lines[0].count(",") + 1 == columns.width:
            read = (*columns.features, *columns.targets)
        has_header = first_line_is_header(lines, read)
    return split_header(path, numbers, lines, has_header)


def _named_columns(table: Table, names: tuple[str, ...], what: str) -> list[int]:
    found = []
    for name in names:
        if name not in table.header:
            raise DataError(f'{table.path} has no column "{name}", {what} column of the model\'s'
                            f" training file{did_you_mean(name, table.header)}")
        found.append(table.header.index(name))
    return found
