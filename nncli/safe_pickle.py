"""Unpickling files from elsewhere (CIFAR-10 batches, checkpoints) without running their code.

A pickle names the functions that rebuild its objects, and `pickle.load` calls whatever it
names: `os.system` included. `load` resolves only an allow-list of names: the builtin
containers and scalars, and what numpy needs to rebuild arrays, dtypes and scalars. Any other
name is refused before anything is called.

A pickle is not compressed: what it legitimately builds is (nearly) all spelled out in its own
bytes. The allow-listed constructors that could build more than that from a few bytes
(`bytearray(2**31)`, `list(range(10**9))`, `numpy.ndarray((10**9,))`) are given a budget, a
small multiple of the file's size, and a call past it is refused before it allocates. Arrays
of Python objects (dtype object) are refused outright: no nncli file holds one.

    with open(path, "rb") as f:
        batch = safe_pickle.load(f, what=f"CIFAR-10 batch {path}", encoding="bytes")
"""

from __future__ import annotations

import builtins
import codecs
import collections
import contextlib
import io
import math
import os
import pickle
from typing import IO, Any

import numpy as np

from nncli.errors import NncliError

try:  # numpy >= 2 (or 1.26 with the alias); the old names below still resolve to these
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy < 1.26
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


class UnsafePickleError(NncliError):
    """A pickle that is unreadable, or that asks for something outside the allow-list."""


class _Refused(Exception):
    """Raised inside the unpickler for a name outside the allow-list; the message is the name."""


class _TooBig(Exception):
    """Raised inside the unpickler for a call past the budget, or for an array of objects."""


# What a pickle of S bytes may build through the constructors below: GROWTH * S + ALLOWANCE
# bytes in all (a legitimate pickle spells its data out, so it needs about 1 * S).
GROWTH = 4
ALLOWANCE = 16 << 20


def _encode_latin1(text: str, encoding: str = "latin1") -> bytes:
    """Protocol 2 stores bytes as `_codecs.encode(text, "latin1")`; no other codec is allowed
    (looking a codec up by name imports modules)."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _Refused(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return codecs.encode(text, "latin1")


_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "bytearray", "bytes", "str", "int",
             "float", "complex", "bool", "slice", "range")

ALLOWED: dict[tuple[str, str], Any] = {
    **{(module, name): getattr(builtins, name)
       for module in ("builtins", "__builtin__") for name in _BUILTINS},
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _encode_latin1,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(f"numpy.{core}.multiarray", name): getattr(_multiarray, name)
       for core in ("core", "_core") for name in ("_reconstruct", "scalar")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _numeric._frombuffer
       for core in ("core", "_core")},
}


def _length(value: Any) -> float:
    try:
        return len(value)
    except OverflowError:  # range(10**30)
        return math.inf


def _items(value: Any = (), *_: Any) -> float:
    """Bytes a container built from `value` takes: a pointer or two per item, and then some."""
    return 64 * _length(value) if hasattr(value, "__len__") else 0


def _bytes(value: Any = b"", *_: Any) -> float:
    if isinstance(value, int):  # bytearray(n): n zero bytes
        return value
    return 4 * _length(value) if hasattr(value, "__len__") else 0


def _str(value: Any = "", *_: Any) -> float:
    if isinstance(value, (str, bytes, bytearray)):
        return 4 * len(value)
    if value is None or isinstance(value, (int, float, complex)):
        return 64
    # the text of a container repeats whatever it refers to, however often: unbounded
    raise _Refused(f"builtins.str({type(value).__name__})")


def _array_bytes(shape: Any, dtype: Any = float) -> float:
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    if not all(isinstance(d, int) for d in dims):
        raise TypeError(f"array shape {shape!r}")
    return math.prod(max(d, 0) for d in dims) * np.dtype(dtype).itemsize


def _ndarray(shape: Any = (), dtype: Any = float, *_: Any) -> float:
    return _array_bytes(shape, dtype)


def _reconstruct(subtype: Any = None, shape: Any = (0,), dtype: Any = b"b", *_: Any) -> float:
    if subtype is not np.ndarray:
        raise _Refused(f"numpy _reconstruct({getattr(subtype, '__name__', type(subtype).__name__)})")
    return _array_bytes(shape, dtype)


def _scalar(dtype: Any = float, *_: Any) -> float:
    # a numpy scalar of `dtype` is made, zeroed, at its full size before its bytes are read
    return np.dtype(dtype).itemsize


def _dtype(*args: Any) -> np.dtype:
    made = np.dtype(*args)
    if made.hasobject:
        raise _TooBig("an array of Python objects (dtype object), which no nncli file holds")
    return made


# The allow-listed callables that can build much from little, and what a call costs (bytes).
COSTS: dict[Any, Any] = {
    **{kind: _items for kind in (list, tuple, set, frozenset, dict, collections.OrderedDict)},
    bytes: _bytes, bytearray: _bytes, str: _str,
    np.ndarray: _ndarray, _multiarray._reconstruct: _reconstruct, _multiarray.scalar: _scalar,
}


class _Bounded:
    """An allow-listed callable as the unpickler sees it: each call is charged to `budget`.
    Not a type, so the unpickler's NEWOBJ (`cls.__new__(cls, *args)`) refuses it."""

    def __init__(self, func: Any, cost: Any, unpickler: _Unpickler):
        self.func, self.cost, self.unpickler = func, cost, unpickler

    def __call__(self, *args: Any) -> Any:
        args = tuple(a.func if isinstance(a, _Bounded) else a for a in args)  # _reconstruct(ndarray, ...)
        self.unpickler.spend(self.cost(*args), f"{getattr(self.func, '__name__', self.func)}(...)")
        return self.func(*args)


class _Unpickler(pickle.Unpickler):
    def __init__(self, fileobj: IO[bytes], *, budget: float, **options: Any):
        super().__init__(fileobj, **options)
        self.budget = budget

    def spend(self, nbytes: float, call: str) -> None:
        if nbytes > self.budget:
            raise _TooBig(f"{call}, about {nbytes:,.0f} bytes" if nbytes < math.inf else call)
        self.budget -= nbytes

    def find_class(self, module: str, name: str) -> Any:
        try:
            found = ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None
        if found is np.dtype:
            return _dtype
        cost = COSTS.get(found)
        return found if cost is None else _Bounded(found, cost, self)


def _size(fileobj: IO[bytes]) -> int:
    """How many bytes are left to read in `fileobj`."""
    if isinstance(fileobj, io.BytesIO):
        return fileobj.getbuffer().nbytes - fileobj.tell()
    try:
        return os.fstat(fileobj.fileno()).st_size - fileobj.tell()
    except (AttributeError, OSError, io.UnsupportedOperation):
        here = fileobj.tell()
        end = fileobj.seek(0, io.SEEK_END)
        fileobj.seek(here)
        return end - here


def load(
    fileobj: IO[bytes],
    *,
    what: str,
    error: type[NncliError] = UnsafePickleError,
    encoding: str = "ASCII",
) -> Any:
    """Unpickle `fileobj`, allowing only builtin containers and scalars and numpy arrays.

    `what` names the file in messages ("CIFAR-10 batch data/cifar10/.../data_batch_1");
    `error` is the class raised for a refused or unreadable pickle; `encoding` is how Python 2
    strings are decoded ("bytes" keeps them as bytes, as CIFAR-10's own loader does).
    Constructors may build GROWTH times the bytes left in `fileobj`, plus ALLOWANCE.
    """
    size = _size(fileobj)
    unpickler = _Unpickler(fileobj, budget=GROWTH * size + ALLOWANCE, encoding=encoding)
    try:
        # Some crafted pickles make CPython itself print a line on stderr as it frees their
        # half-built objects ("SystemError: deallocated bytearray object has exported
        # buffers", from PyErr_Print); the error that follows is ours to report, in one
        # sentence. The unpickler, which holds those objects, is freed inside the redirect.
        with contextlib.redirect_stderr(io.StringIO()):
            try:
                return unpickler.load()
            finally:
                del unpickler
    except _Refused as refused:
        raise error(
            f"refusing to load {what}: it asks for {refused}, which is not an array, a number,"
            " a string or a container (a pickle can run code; only data is allowed here)"
        ) from None
    except _TooBig as call:
        held = "" if "dtype object" in str(call) else (
            f", more than a file of {size:,} bytes can hold (a pickle spells out its data; it is"
            " damaged or crafted)")
        raise error(f"refusing to load {what}: it asks for {call}{held}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OverflowError, MemoryError, UnicodeDecodeError) as err:
        reason = " ".join(str(err).split())  # pickle's own messages may run over two lines
        if isinstance(err, MemoryError):
            reason = "it declares more data than memory can hold"
        reason = reason or type(err).__name__
        raise error(f"cannot read {what}: it is not a valid pickle ({reason})") from None
