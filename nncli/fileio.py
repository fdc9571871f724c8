"""Files: written so that a reader never sees half of one, and read from elsewhere within bounds.

`atomic_write_bytes` and friends write beside the target and rename over it. `npz_arrays`
reads an .npz (a zip of .npy members) refusing, before it inflates anything, what declares
more than its own size can justify (a zip bomb). `printable` makes a string that came from a
file fit for a terminal or a CSV cell: control characters escaped, length capped.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from nncli.errors import NncliError, WriteError

# An .npz whose members unpack to more than MAX_EXPANSION times its size is refused: np.savez
# stores arrays uncompressed and np.savez_compressed gains 3-5x on image data (MNIST's pixels:
# 4.7x), so only a crafted file (a zip bomb) expands that far. Below SMALL (8 MiB), any
# expansion is harmless. A file under 1 MB then makes `predict` (its outputs, rows and CSV)
# peak near 400 MiB (measured: 17.7x gave 721 MiB, 10x about 380).
MAX_EXPANSION = 10
SMALL = 8 << 20
# Strings from files (class names, column names) are cut to MAX_NAME characters, and a file
# naming more than MAX_NAMES of them is refused.
MAX_NAME = 200
MAX_NAMES = 100_000
# Lists and mappings read from files (a checkpoint's state, an export's JSON) nested deeper than
# this are refused: code walking them recursively would fail, and nothing nncli writes comes close.
MAX_DEPTH = 100


def atomic_write_bytes(path: Path, data: bytes | Sequence[bytes]) -> None:
    """Write `data` (bytes, or pieces written one after another) to a temporary file beside
    `path`, flush, fsync, then rename it over `path`.

    On failure the temporary file is removed and `path` is as it was; an OS error (a full
    disk, a read-only folder) becomes a `WriteError` naming `path`. The file gets the
    permissions any new file would (0666 less the umask), not mkstemp's private 0600: an
    export or a predictions file is often meant for others.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            for piece in (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data:
                f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise WriteError(f"cannot write {path}: {err.strerror or err}", str(path)) from None
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # reading it means setting it; set it straight back
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=True) + "\n")


@contextlib.contextmanager
def exclusive(folder: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on the folder `folder` itself (an flock on its descriptor: no file
    is made in it, and the system releases it however the process ends); `NncliError(busy)`
    at once where another process holds it. Where there is no flock (Windows) or no folder,
    nothing is locked: the caller's own checks speak."""
    try:
        import fcntl
        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NncliError(busy) from None
        yield
    finally:
        os.close(fd)


class TooLarge(ValueError):
    """An .npz that declares more than its size can justify; the message says how much."""


def npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz `path`, read without pickle, as `np.load` gives them.

    Before anything is inflated, what each member declares (an .npy header's shape and dtype,
    another member's size) is added up, and `TooLarge` is raised where the total passes
    MAX_EXPANSION times the file's size (and SMALL): the zip's own sizes can lie, the .npy
    header cannot, since numpy reads no more than it declares. Otherwise raises what
    `zipfile` and `np.load` raise (`zipfile.BadZipFile`, `ValueError` for object arrays or a
    damaged header, `zlib.error`, `EOFError`, `OSError`, ...).
    """
    size = Path(path).stat().st_size
    limit = max(SMALL, MAX_EXPANSION * size)
    declared = 0
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        for info in members:
            if info.filename.endswith(".npy"):
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(member)
                declared += int(np.prod(shape, dtype=object)) * dtype.itemsize
            else:
                declared += info.file_size
            if declared > limit:
                raise TooLarge(f"its arrays would unpack to at least {declared:,} bytes from {size:,}"
                               f" (at most {MAX_EXPANSION} times its size is read; if the file is yours,"
                               " save it with np.savez, uncompressed)")
        arrays = {}
        for info in members:
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            with archive.open(info) as member:
                if info.filename.endswith(".npy"):
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
                else:  # np.load gives other members as their bytes; read no more than declared
                    arrays[name] = member.read(info.file_size + 1)[: info.file_size]
    return arrays


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: object, limit: int | None = MAX_NAME) -> str:
    """`text` as a string fit for a terminal or a CSV cell: control characters (ANSI escapes,
    newlines, bidirectional overrides) written as escapes, cut to `limit` characters with "…"
    (None: not cut)."""
    text = str(text)
    limit = len(text) if limit is None else limit
    cut = len(text) > limit
    text = text[:limit]
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else _ESCAPES.get(ch) or ascii(ch)[1:-1] for ch in text)
    return text + "…" if cut else text


def too_deep(value: object, limit: int = MAX_DEPTH) -> bool:
    """Whether `value` nests lists, tuples, sets or dicts more than `limit` deep (walked
    without recursion, each container once)."""
    stack, seen = [(value, 0)], set()
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list, tuple, set, frozenset)) and id(item) not in seen:
            if depth >= limit:
                return True
            seen.add(id(item))
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False
