"""Unpickling files from elsewhere (CIFAR-10 batches, checkpoints) without running their code.

A pickle names the functions that rebuild its objects, and `pickle.load` calls whatever it
names: `os.system` included. `load` resolves only an allow-list of names: the builtin
containers and scalars, and what numpy needs to rebuild arrays, dtypes and scalars. Any other
name is refused before anything is called.

    with open(path, "rb") as f:
        batch = safe_pickle.load(f, what=f"CIFAR-10 batch {path}", encoding="bytes")
"""

from __future__ import annotations

import builtins
import codecs
import collections
import contextlib
import io
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


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


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
    """
    unpickler = _Unpickler(fileobj, encoding=encoding)
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
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OverflowError, MemoryError, UnicodeDecodeError) as err:
        reason = " ".join(str(err).split())  # pickle's own messages may run over two lines
        if isinstance(err, MemoryError):
            reason = "it declares more data than memory can hold"
        reason = reason or type(err).__name__
        raise error(f"cannot read {what}: it is not a valid pickle ({reason})") from None
