"""Reading a CSV file: its non-blank lines, checked to have as many fields each, its header
row told from data (`first_line_is_header`), and its cells as numbers or as labels, with one
`DataError` naming the file, the line and the column for anything unreadable. Fields are split
at every comma: quoted commas are not supported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nncli.errors import DataError


@dataclass(frozen=True)
class Table:
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
        return [unquoted(line.split(",", column + 1)[column]) for line in self.lines]

    def labels(self, column: int) -> list[str]:
        """The cells of `column`; a `DataError` at the first that is empty or not finite."""
        cells = self.strings(column)
        for row, cell in enumerate(cells):
            if not cell or (is_number(cell) and not math.isfinite(float(cell))):
                raise self._bad_value(row, column, cell)
        return cells

    def _bad_value(self, row: int, column: int, text: str) -> DataError:
        where = f"{self.path}:{self.line_numbers[row]}: column {self.column_name(column)}"
        if not unquoted(text):
            return DataError(f"{where} is empty")
        return DataError(f"{where} is missing or not finite: {unquoted(text)!r}")

    def _bad_cell(self, columns: list[int] | None) -> DataError | None:
        for row, line in enumerate(self.lines):
            cells = line.split(",")
            for column in range(len(cells)) if columns is None else columns:
                if not unquoted(cells[column]):
                    return self._bad_value(row, column, cells[column])
                if not is_number(cells[column]):
                    return DataError(f"{self.path}:{self.line_numbers[row]}: column"
                                     f" {self.column_name(column)} is not a number: {cells[column]!r}")
        return None


def unquoted(text: str) -> str:
    return text.strip().strip('"')


def is_number(text: str) -> bool:
    try:
        float(unquoted(text))
    except ValueError:
        return False
    return True


def _is_word(text: str) -> bool:
    """A cell that is neither empty nor a number: a name, in a header or in a column of names."""
    return bool(unquoted(text)) and not is_number(text)


def first_line_is_header(lines: list[str], positions: Sequence[int] | None = None) -> bool:
    """Whether the first of `lines` (a CSV's non-blank lines, as many fields each) is a header,
    from the evidence of the whole file, looking only at the columns `positions` (all by default).

    A first line of 0, 1, 2, ... (pandas' default column names) is a header; one with a number
    over a column of numbers is data; else a first line with no word (a cell neither empty nor a
    number) is data; one with a word
    standing over a column that holds no word on any other line (numbers, or nothing) is a
    header; one whose words all stand in columns that hold words on other lines too is data
    (the class names of iris.data). An empty cell says nothing: a header may leave one blank,
    and a data row may miss a value. A file of one line has no other lines to tell: it is a
    header when it holds no number at all.
    """
    first = lines[0].split(",")
    columns = range(len(first)) if positions is None else positions
    if len(first) > 1 and [unquoted(c) for c in first] == [str(i) for i in range(len(first))]:
        return True  # pandas' default header names a frame's columns 0, 1, 2, ...
    words = sorted(c for c in set(columns) if _is_word(first[c]))
    if not words:
        return False
    if len(lines) == 1:
        return not any(is_number(first[c]) for c in columns)

    def column(c: int):
        return (line.split(",", c + 1)[c] for line in lines[1:])

    # A number over a column of numbers is a value, not a name: the line is data, and a word
    # in it is a missing value's mark (UCI's '?'), for the parser to report.
    numbers = [c for c in set(columns) if is_number(first[c])]
    if any(all(is_number(cell) for cell in column(c)) for c in numbers):
        return False
    # Column by column, each scan stopping at its first word: a long numeric table with a
    # header costs one scan of one column.
    return any(not any(_is_word(cell) for cell in column(c)) for c in words)


def read_table(path: Path, *, header: bool | None, names: Sequence[str] = ()) -> Table:
    """`path` split into lines, every row checked to have as many fields as the first.

    `header`: True requires a header row, False reads the first line as data, None decides:
    a first line holding every one of `names` (the column names the config gives, or the
    training file's header) is a header, else `first_line_is_header` decides from the file.
    """
    numbers, lines = read_lines(path)
    first = lines[0].split(",")
    if header is None:
        cells = {unquoted(c) for c in first}
        has_header = (bool(names) and all(n in cells for n in names)) or first_line_is_header(lines)
    else:
        has_header = header
    return split_header(path, numbers, lines, has_header)


def read_lines(path: Path) -> tuple[list[int], list[str]]:
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
    if commas == 0:
        for separator, name in ((";", "semicolons"), ("\t", "tabs")):
            if all(separator in line for line in lines[:100]):
                raise DataError(f"{path} has its fields separated by {name}; nncli reads comma-separated"
                                " files: save it with commas (pandas: df.to_csv(path, index=False))")
    for i, line in enumerate(lines):
        if line.count(",") != commas:
            raise DataError(f"{path}:{numbers[i]}: found {line.count(',') + 1} values, expected"
                            f" {commas + 1} as on line {numbers[0]}")
    return numbers, lines


def split_header(path: Path, numbers: list[int], lines: list[str], has_header: bool) -> Table:
    """The table of `lines`, the first taken off as the header where `has_header`; a header
    that names a column twice, or has no line under it, is a `DataError`."""
    if not has_header:
        return Table(path, None, lines, numbers)
    header = [unquoted(c) for c in lines[0].split(",")]
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
    return Table(path, header, lines[1:], numbers[1:])
