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
import zlib
from pathlib import Path

import numpy as np

from nncli.errors import DataError

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: Path) -> np.ndarray:
    """The array stored in the IDX file at `path` (gzip-compressed or plain).

    uint8 data (all of MNIST) comes back read-only, without a copy of the file's bytes.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror}") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path} is not a readable gzip file ({err})") from None
    return parse_idx(raw, source=str(path))


def parse_idx(raw: bytes, *, source: str) -> np.ndarray:
    """The array in the IDX bytes `raw`; `source` names them in errors."""
    if len(raw) < 4:
        raise DataError(f"{source} is not an IDX file: it has only {len(raw)} bytes")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES or raw[3] == 0:
        raise DataError(
            f"{source} is not an IDX file: bad magic number 0x{raw[:4].hex()}"
            " (expected 0x0000 followed by a type code and the number of dimensions)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{source} is truncated: its header alone needs {header} bytes")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_TYPES[raw[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        problem = "is truncated" if len(raw) < expected else "has unexpected bytes at the end"
        raise DataError(
            f"{source} {problem}: a {'x'.join(map(str, shape))} array of {dtype.name}"
            f" needs {expected:,} bytes, the file has {len(raw):,}"
        )
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data if dtype.itemsize == 1 else data.astype(dtype.newbyteorder("="))


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write `array` as an IDX file, gzip-compressed when `path` ends in .gz (tests use this)."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _TYPES.items()}
    array = np.ascontiguousarray(array)
    code = codes[array.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    body = header + array.astype(_TYPES[code]).tobytes()
    Path(path).write_bytes(gzip.compress(body) if str(path).endswith(".gz") else body)
