"""CIFAR-10, from the python-version archive (https://www.cs.toronto.edu/~kriz/cifar.html).

<data_dir>/cifar10/ holds cifar-10-python.tar.gz, downloaded if missing, and the folder
cifar-10-batches-py/ extracted from it. Extraction refuses any member that could land outside
the folder and happens in a temporary folder renamed into place once complete. The batches are
pickles: they are read with `nncli.safe_pickle`, which runs no code.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np

from nncli import safe_pickle
from nncli.data.datasets import DATASETS, DatasetInfo, RawData
from nncli.data.download import RemoteFile, ensure_files
from nncli.errors import DataError

ARCHIVE = RemoteFile("cifar-10-python.tar.gz",
                     "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce")
MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")


@DATASETS.register("cifar10")
def load_cifar10(*, data_dir: Path, rng: np.random.Generator, progress: bool = True) -> RawData:
    """50,000 + 10,000 colour images, uint8 (N, 3, 32, 32), in 10 classes."""
    folder = data_dir / "cifar10"
    batches = folder / BATCH_DIR
    if not all((batches / name).is_file() for name in (*TRAIN_BATCHES, TEST_BATCH)):
        [archive] = ensure_files("cifar10", [ARCHIVE], folder, MIRRORS,
                                 instead=f"the {BATCH_DIR} folder extracted from it",
                                 progress=progress)
        extract(archive, folder)
    train = [read_batch(batches / name) for name in TRAIN_BATCHES]
    x_test, y_test = read_batch(batches / TEST_BATCH)
    info = DatasetInfo.classification("cifar10", (3, 32, 32), 10, pixel_max=255.0,
                                      class_names=CLASSES)
    return RawData(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
                   x_test, y_test, info)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one CIFAR-10 batch file."""
    try:
        with open(path, "rb") as f:
            batch = safe_pickle.load(f, what=f"CIFAR-10 batch {path}", error=DataError,
                                     encoding="bytes")
    except OSError as err:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {err.strerror}") from None
    data = _entry(batch, "data", path)
    labels = np.asarray(_entry(batch, "labels", path))
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3 * 32 * 32):
        raise DataError(f"CIFAR-10 batch {path} has no uint8 (N, 3072) image array")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu" or (
            labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise DataError(f"CIFAR-10 batch {path} does not have one label from 0 to 9 per image")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _entry(batch: object, key: str, path: Path) -> object:
    # Pickled by Python 2: read with encoding="bytes", the keys are bytes.
    if isinstance(batch, dict):
        for candidate in (key.encode(), key):
            if candidate in batch:
                return batch[candidate]
    raise DataError(f"CIFAR-10 batch {path} has no {key!r} entry")


def extract(archive: Path, folder: Path) -> None:
    """Extract `archive` into `folder`, refusing it whole if a member could land outside.

    Refused: absolute names, names or link targets containing "..", absolute link targets,
    and anything but files, folders and links. (A link target with ".." could stay inside, but
    links can be chained so that a lexical check is not enough; CIFAR-10 has no links at all.)
    Top-level entries already in `folder` are left alone.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                problem = _escape(member)
                if problem:
                    raise DataError(
                        f"{archive} holds {member.name!r}, {problem}; refusing to extract it"
                    )
            staging = Path(tempfile.mkdtemp(dir=folder, prefix=".extracting-"))
            try:
                if hasattr(tarfile, "data_filter"):  # a second line of defence where available
                    tar.extractall(staging, members=members, filter="data")
                else:  # pragma: no cover - Python < 3.10.12
                    tar.extractall(staging, members=members)
                for entry in staging.iterdir():
                    if not (folder / entry.name).exists():
                        os.replace(entry, folder / entry.name)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise DataError(f"{archive} is not a readable tar archive ({err})") from None
    except OSError as err:
        raise DataError(f"cannot extract {archive} into {folder}: {err}") from None


def _escape(member: tarfile.TarInfo) -> str:
    """Why `member` could land outside the target folder, or ''."""
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return "which is neither a file, a folder nor a link"
    if posixpath.isabs(member.name) or ".." in member.name.split("/"):
        return "whose path leaves the target folder"
    if (member.issym() or member.islnk()) and (
            posixpath.isabs(member.linkname) or ".." in member.linkname.split("/")):
        return f"a link to {member.linkname!r}, which points out of the target folder"
    return ""
