"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from nncli.errors import WriteError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, flush, fsync, then rename it over `path`.

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
            f.write(data)
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
