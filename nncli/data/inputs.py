"""A split's inputs kept as stored, and handed out as the model takes them.

MNIST's 60,000 training images are 47 MB as the uint8 they are stored in and 188 MB as
float32. `Inputs` keeps the stored array and converts only the rows a reader asks for: a
training batch, an evaluation chunk, the head the builder looks at. The conversion is the
fitted preprocessing (`nncli.data.preprocess.Preprocessor.convert`), with its first step fused
into the cast (uint8 * (1/255) straight into float32), and gives exactly the float values that
converting the whole split once and then preprocessing it would: every step is elementwise
(or a reshape), in the same order, in the same dtype.

    x = Inputs(stored, preprocessor, rows)   # rows: which samples of `stored` are this split's
    len(x), x.shape, x.dtype                 # as the model sees them: (N, 784) float32
    x.take(indices)                          # a training batch (indices into the split)
    x[start:stop], x[indices], x[5]          # chunks, rows, one sample; x[:, 0]: rows first
    np.asarray(x)                            # the whole split converted (tests, small data)
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import Protocol

import numpy as np


class Converter(Protocol):
    """What `Inputs` reads through: `nncli.data.preprocess.Preprocessor` (which fits its steps
    on `Inputs`, so this module cannot import it)."""

    dtype: np.dtype

    def convert(self, x: np.ndarray) -> np.ndarray: ...

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]: ...


class Inputs:
    """The inputs of one split: `stored` samples (N_stored, ...) in their stored dtype, the
    samples `rows` of them (None: all, in order), converted on reading by `preprocessor`.

    Reading never changes `stored`. What a read returns is the caller's, except where the
    preprocessing changes nothing and the stored dtype is the float dtype: a slice is then a
    view of `stored`, to be read and not written (as the split's own array was before).
    """

    def __init__(self, stored: np.ndarray, preprocessor: Converter, rows: np.ndarray | None = None):
        self.stored = stored
        self.preprocessor = preprocessor
        self.rows = rows

    def __len__(self) -> int:
        return len(self.stored) if self.rows is None else len(self.rows)

    @property
    def dtype(self) -> np.dtype:
        return self.preprocessor.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """(N, *sample shape after preprocessing)."""
        return (len(self), *self.preprocessor.output_shape(tuple(self.stored.shape[1:])))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def take(self, indices, axis: int = 0) -> np.ndarray:
        """The samples at `indices` (positions in this split), converted: numpy's `take` on
        the first axis, the only one there is here."""
        if axis != 0:
            raise ValueError("Inputs are read by sample: take(indices, axis=0)")
        indices = np.asarray(indices)
        picked = indices if self.rows is None else self.rows[indices]
        return self.preprocessor.convert(self.stored.take(picked, axis=0))

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):  # the rows first, then the rest within the converted rows
            head, rest = key[0], key[1:]
            if isinstance(head, slice) or np.ndim(head) > 0:
                return self[head][(slice(None), *rest)]
            return self[head][rest]
        if isinstance(key, slice):
            if self.rows is None:
                return self.preprocessor.convert(self.stored[key])
            return self.preprocessor.convert(self.stored.take(self.rows[key], axis=0))
        if np.ndim(key) == 0:
            index = range(len(self))[operator.index(key)]  # an IndexError past the end, as numpy's
            return self[index : index + 1][0]
        key = np.asarray(key)
        if key.dtype == bool:
            if key.shape != (len(self),):
                raise IndexError(f"a boolean index of shape {key.shape} for {len(self)} samples")
            key = np.flatnonzero(key)
        return self.take(key)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def chunks(self, size: int) -> Iterator[np.ndarray]:
        """The split converted `size` samples at a time, in order."""
        for start in range(0, len(self), size):
            yield self[start : start + size]

    def __repr__(self) -> str:
        return (f"Inputs({len(self):,} samples of {self.shape[1:]} {self.dtype.name},"
                f" stored as {self.stored.dtype.name})")
