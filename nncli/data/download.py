"""Fetching dataset files from public mirrors into the data directory.

`ensure_files` returns the local path of each file a dataset needs, downloading only the
missing ones. A download goes to a temporary file in the destination folder and becomes the
real file (fsync, then `os.replace`) only once it is complete and its SHA-256 matches the
published one; on any failure, Ctrl-C included, the temporary file is removed and the next
mirror is tried. Nothing half-written is ever left under the real name.

The mirrors come from, in order: the `mirrors` argument, the environment variable
NNCLI_MIRRORS (base URLs separated by commas or spaces; `{dataset}` in one is replaced by the
dataset's folder name, e.g. `http://127.0.0.1:8000/{dataset}/`), the dataset's own list.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from nncli import __version__
from nncli.errors import DataError

CHUNK = 1 << 16
TIMEOUT_S = 30.0

@dataclass(frozen=True)
class RemoteFile:
    """A file as published: its name on the mirrors (and on disk) and its SHA-256.

    With `digest_of_gunzipped` the digest is of the decompressed content: MNIST's mirrors do
    not all serve the same gzip bytes, but they all decompress to the original files.
    """

    name: str
    sha256: str
    digest_of_gunzipped: bool = False

    @property
    def plain_name(self) -> str:
        """The name without .gz: a decompressed copy already there is used in its place."""
        return self.name.removesuffix(".gz")


class _MirrorFailed(Exception):
    """One mirror could not deliver one file; the message says why."""


def mirrors_for(
    folder: str, defaults: Sequence[str], mirrors: Sequence[str] | None = None
) -> list[str]:
    """The base URLs to try, in order (see the module docstring)."""
    if mirrors is None and os.environ.get("NNCLI_MIRRORS", "").strip():
        mirrors = re.split(r"[,\s]+", os.environ["NNCLI_MIRRORS"].strip())
    if mirrors is None:
        mirrors = defaults
    return [base.replace("{dataset}", folder) for base in mirrors]


def find_local(folder: Path, remote: RemoteFile) -> Path | None:
    """The file already in `folder`, as published or decompressed, or None."""
    for name in dict.fromkeys((remote.name, remote.plain_name)):
        if (folder / name).is_file():
            return folder / name
    return None


def ensure_files(
    dataset: str,
    files: Sequence[RemoteFile],
    folder: Path,
    defaults: Sequence[str],
    *,
    mirrors: Sequence[str] | None = None,
    instead: str = "",
    progress: bool = True,
) -> list[Path]:
    """The local path of each of `files` in `folder`, downloading those not there yet.

    `dataset` is the folder's name (mnist, cifar10), used in messages and for `{dataset}`.
    Raises `DataError` saying what was expected where, and how to provide it, when a file is
    missing and no mirror delivers it; `instead` names what else the caller accepts in its
    place ("the folder extracted from it"). `progress` allows a progress bar per download
    (shown only where stderr is a terminal).
    """
    paths = [find_local(folder, remote) for remote in files]
    if all(paths):
        return paths  # type: ignore[return-value]
    bases = mirrors_for(dataset, defaults, mirrors)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create the data folder {folder}: {err.strerror}") from None
    for i, remote in enumerate(files):
        if paths[i] is None:
            try:
                paths[i] = _fetch(remote, folder, bases, progress)
            except _MirrorFailed as err:
                expected = ", ".join(f.name for f in files)
                if any(f.plain_name != f.name for f in files):
                    instead = instead or "decompressed copies"
                them = "them" if len(files) > 1 else "it"
                raise DataError(
                    f"could not download {remote.name} for {dataset} ({err}); {dataset} expects"
                    f" {expected}{f' (or {instead})' if instead else ''} in {folder}: copy"
                    f" {them} there, or set --data-dir or NNCLI_DATA_DIR to a folder whose"
                    f" {dataset}/ subfolder holds {them}"
                ) from None
    return paths  # type: ignore[return-value]


def _fetch(remote: RemoteFile, folder: Path, bases: Sequence[str], progress: bool) -> Path:
    """Download `remote` into `folder` from the first of `bases` that delivers it intact."""
    if not bases:
        raise _MirrorFailed("no mirrors are configured")
    target = folder / remote.name
    failures = []
    for base in bases:
        url = base.rstrip("/") + "/" + remote.name
        try:
            _download(url, remote, target, progress)
            return target
        except _MirrorFailed as err:
            failures.append(f"{url}: {err}")
    raise _MirrorFailed("; ".join(failures))


def _open(url: str):
    request = urllib.request.Request(url, headers={"User-Agent": f"nncli/{__version__}"})
    return urllib.request.urlopen(request, timeout=TIMEOUT_S)


def _download(url: str, remote: RemoteFile, target: Path, progress: bool) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            _transfer(url, remote, out, progress)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # makes the rename durable; not possible everywhere
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _transfer(url: str, remote: RemoteFile, out, progress: bool) -> None:
    """Copy `url` into `out`, checking the length the server announced and the digest."""
    digest = _Digest(remote.digest_of_gunzipped)
    received = 0
    try:
        with _open(url) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with _progress_bar(total, remote.name, progress) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as err:
        raise _MirrorFailed(f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise _MirrorFailed(str(err.reason)) from None
    except (OSError, http.client.HTTPException) as err:
        raise _MirrorFailed(f"transfer failed after {received:,} bytes ({err!r})") from None
    if total is not None and received != total:
        raise _MirrorFailed(f"transfer ended after {received:,} of {total:,} bytes")
    actual = digest.hexdigest()
    if actual != remote.sha256:
        of = "decompressed content" if remote.digest_of_gunzipped else "file"
        raise _MirrorFailed(f"SHA-256 of the {of} is {actual}, expected {remote.sha256}")


class _Digest:
    """SHA-256 of a stream, or of the gunzipped content of a gzip stream (members in a row)."""

    def __init__(self, gunzip: bool):
        self._sha = hashlib.sha256()
        self._inflate = zlib.decompressobj(wbits=31) if gunzip else None

    def update(self, chunk: bytes) -> None:
        if self._inflate is None:
            self._sha.update(chunk)
            return
        try:
            while chunk:
                self._sha.update(self._inflate.decompress(chunk))
                chunk = self._inflate.unused_data if self._inflate.eof else b""
                if chunk:
                    self._inflate = zlib.decompressobj(wbits=31)
        except zlib.error as err:
            raise _MirrorFailed(f"corrupt gzip data ({err})") from None

    def hexdigest(self) -> str:
        if self._inflate is not None:
            self._sha.update(self._inflate.flush())
            if not self._inflate.eof:
                raise _MirrorFailed("the gzip data ends before its end marker")
        return self._sha.hexdigest()


def _progress_bar(total: int | None, name: str, progress: bool) -> tqdm:
    enabled = progress and sys.stderr.isatty()
    return tqdm(total=total, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, disable=not enabled)
