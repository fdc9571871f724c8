"""The IDX format of the MNIST files (http://yann.lecun.com/exdb/mnist/), gzipped or not.

    bytes 0-1   zero
    byte  2     element type (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
                0x0E float64), stored big-endian
    byte  3     number of dimensions d
    then        d sizes as big-endian uint32, then the elements in row-major order

Every check names the file: a wrong magic number, a header cut short, and a body shorter or
longer than the sizes promise are each one `DataError`.
"""

from __future__ import annotations

import gzip
import io
import math
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from nncli.errors import DataError

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"
# DEFLATE gives at most 1032 bytes per compressed byte: a header promising more than that is
# refused before an array of its size is made (a crafted 1 kB file cannot ask for 1 TB).
_MAX_GZIP_RATIO = 1032


def read_idx(path: Path) -> np.ndarray:
    """The array stored in the IDX file at `path` (gzip-compressed or plain).

    The file is decompressed straight into the array, a block at a time: reading MNIST's
    training images takes their 47 MB and little more (114 MB when the whole decompressed file
    was held as bytes first).
    """
    try:
        with Path(path).open("rb") as f:
            size = Path(path).stat().st_size
            gzipped = f.read(2) == _GZIP_MAGIC
            f.seek(0)
            if not gzipped:
                return _read_idx(f, str(path), size)
            try:
                with gzip.GzipFile(fileobj=f) as stream:
                    return _read_idx(stream, str(path), size * _MAX_GZIP_RATIO)
            except (OSError, EOFError, zlib.error) as err:
                raise DataError(f"{path} is not a readable gzip file ({err})") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror}") from None


def parse_idx(raw: bytes, *, source: str) -> np.ndarray:
    """The array in the IDX bytes `raw`; `source` names them in errors."""
    return _read_idx(io.BytesIO(raw), source, len(raw))


def _read_idx(stream: BinaryIO, source: str, most: int) -> np.ndarray:
    """The array of the IDX file open as `stream`, which holds at most `most` bytes."""
    head = stream.read(4)
    if len(head) < 4:
        raise DataError(f"{source} is not an IDX file: it has only {len(head)} bytes")
    if head[0] != 0 or head[1] != 0 or head[2] not in _TYPES or head[3] == 0:
        raise DataError(
            f"{source} is not an IDX file: bad magic number 0x{head.hex()}"
            " (expected 0x0000 followed by a type code and the number of dimensions)"
        )
    ndim = head[3]
    header = 4 + 4 * ndim
    sizes = stream.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DataError(f"{source} is truncated: its header alone needs {header} bytes")
    shape = tuple(int(d) for d in np.frombuffer(sizes, ">u4"))
    dtype = np.dtype(_TYPES[head[2]])
    body = math.prod(shape) * dtype.itemsize  # Python integers: sizes of 2**32 do not overflow
    if header + body > most:  # cannot be there: count what is, for the message
        _wrong_size(source, shape, dtype, header + body, header + _count(stream))
    data = np.empty(shape, dtype)
    view = memoryview(data.reshape(-1).view(np.uint8)) if data.size else memoryview(b"")
    got = 0
    while got < body:  # a megabyte at a time: gzip decompresses what one call asks into a new bytes
        n = stream.readinto(view[got : got + (1 << 20)])
        if not n:
            _wrong_size(source, shape, dtype, header + body, header + got)
        got += n
    extra = _count(stream)
    if extra:
        _wrong_size(source, shape, dtype, header + body, header + body + extra)
    return data if dtype.itemsize == 1 else data.astype(dtype.newbyteorder("="))


def _count(stream: BinaryIO) -> int:
    """How many bytes are left in `stream`, read a megabyte at a time."""
    total = 0
    while chunk := stream.read(1 << 20):
        total += len(chunk)
    return total


def _wrong_size(source: str, shape: tuple[int, ...], dtype: np.dtype, expected: int, actual: int):
    problem = "is truncated" if actual < expected else "has unexpected bytes at the end"
    raise DataError(
        f"{source} {problem}: a {'x'.join(map(str, shape))} array of {dtype.name}"
        f" needs {expected:,} bytes, the file has {actual:,}"
    )


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write `array` as an IDX file, gzip-compressed when `path` ends in .gz (tests use this)."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _TYPES.items()}
    array = np.ascontiguousarray(array)
    code = codes[array.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    body = header + array.astype(_TYPES[code]).tobytes()
    Path(path).write_bytes(gzip.compress(body) if str(path).endswith(".gz") else body)
