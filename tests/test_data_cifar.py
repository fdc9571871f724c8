"""CIFAR-10 from a tiny archive built in the official format, and archives that try to escape."""

from __future__ import annotations

import io
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from nncli.data import DATASETS
from nncli.data.cifar import ARCHIVE, BATCH_DIR, CLASSES, TEST_BATCH, TRAIN_BATCHES, extract
from nncli.errors import DataError


def _str(raw: bytes) -> bytes:
    """BINSTRING: a Python 2 str."""
    return b"T" + struct.pack("<i", len(raw)) + raw


def _int(n: int) -> bytes:
    """BININT."""
    return b"J" + struct.pack("<i", n)


def py2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch dict pickled as Python 2's cPickle wrote CIFAR-10: protocol 2, str keys, and the
    array rebuilt by numpy.core.multiarray._reconstruct with a Python 2 str of raw bytes."""
    array = b"".join([
        b"cnumpy.core.multiarray\n_reconstruct\n", b"cnumpy\nndarray\n",
        _int(0), b"\x85", _str(b"b"), b"\x87R",                      # (ndarray, (0,), 'b')
        b"(", _int(1), _int(data.shape[0]), _int(data.shape[1]), b"\x86",  # version, shape
        b"cnumpy\ndtype\n", _str(b"u1"), _int(0), _int(1), b"\x87R",  # dtype('u1', 0, 1)
        b"(", _int(3), _str(b"|"), b"NNN", _int(-1), _int(-1), _int(0), b"tb",  # its state
        b"\x89", _str(data.tobytes()), b"tb",                        # not fortran, raw bytes
    ])
    return b"".join([
        b"\x80\x02}q\x00(",
        _str(b"batch_label"), _str(b"training batch 1 of 5"),
        _str(b"labels"), b"](", *[_int(v) for v in labels], b"e",
        _str(b"data"), array,
        _str(b"filenames"), b"](", *[_str(f"img_{i}.png".encode()) for i in labels], b"e",
        b"u.",
    ])


def add(tar: tarfile.TarFile, name: str, payload: bytes = b"", **fields) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(payload) if payload else None)


def tiny_archive(path: Path, per_batch: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    written = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        add(tar, BATCH_DIR, type=tarfile.DIRTYPE, mode=0o755)
        for name in (*TRAIN_BATCHES, TEST_BATCH):
            data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            labels = rng.integers(0, 10, per_batch).tolist()
            add(tar, f"{BATCH_DIR}/{name}", py2_batch(data, labels))
            written[name] = (data, labels)
        add(tar, f"{BATCH_DIR}/readme.html", b"<html></html>")
    return written


def test_tiny_official_archive_loads(tmp_path):
    written = tiny_archive(tmp_path / "cifar10" / ARCHIVE.name)
    data = DATASETS.get("cifar10")(data_dir=tmp_path, rng=np.random.default_rng(0))
    assert data.x_train.shape == (15, 3, 32, 32) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (3, 3, 32, 32)
    first, labels = written["data_batch_1"]
    # Row-major: the first 1024 bytes of a row are the red plane, then green, then blue.
    np.testing.assert_array_equal(data.x_train[0, 1].ravel(), first[0, 1024:2048])
    assert data.y_train[:3].tolist() == labels and data.y_train.dtype == np.int64
    assert data.y_test.tolist() == written[TEST_BATCH][1]
    assert data.info.input_shape == (3, 32, 32) and data.info.class_names == CLASSES
    assert sorted(p.name for p in (tmp_path / "cifar10").iterdir()) == [BATCH_DIR, ARCHIVE.name]
    # Once extracted, the batches are read without the archive.
    (tmp_path / "cifar10" / ARCHIVE.name).unlink()
    again = DATASETS.get("cifar10")(data_dir=tmp_path, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(again.x_train, data.x_train)


@pytest.mark.parametrize(
    ("name", "fields", "message"),
    [
        ("../evil.txt", {}, "whose path leaves the target folder"),
        ("/tmp/evil.txt", {}, "whose path leaves the target folder"),
        ("cifar-10-batches-py/../../evil.txt", {}, "whose path leaves the target folder"),
        ("link", {"type": tarfile.SYMTYPE, "linkname": "../../etc"}, "points out of"),
        ("link", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, "points out of"),
        ("hard", {"type": tarfile.LNKTYPE, "linkname": "/etc/passwd"}, "points out of"),
        ("dev", {"type": tarfile.CHRTYPE}, "neither a file, a folder nor a link"),
    ],
)
def test_members_escaping_the_folder_refuse_the_whole_archive(tmp_path, name, fields, message):
    archive = tmp_path / "cifar10" / ARCHIVE.name
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        add(tar, f"{BATCH_DIR}/data_batch_1", b"harmless")
        add(tar, name, b"x" if not fields else b"", **fields)
    with pytest.raises(DataError, match=message) as info:
        DATASETS.get("cifar10")(data_dir=tmp_path, rng=np.random.default_rng(0))
    assert str(archive) in str(info.value) and repr(name) in str(info.value)
    assert [p.name for p in archive.parent.iterdir()] == [ARCHIVE.name]
    assert not (tmp_path / "evil.txt").exists()


def test_a_batch_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    hostile = b"cos\nsystem\n" + _str(f"touch {marker}".encode()) + b"\x85R."
    archive = tmp_path / "cifar10" / ARCHIVE.name
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for name in (*TRAIN_BATCHES, TEST_BATCH):
            add(tar, f"{BATCH_DIR}/{name}", hostile)
    with pytest.raises(DataError, match=r"refusing to load CIFAR-10 batch .*data_batch_1: it asks"
                                        r" for os\.system"):
        DATASETS.get("cifar10")(data_dir=tmp_path, rng=np.random.default_rng(0))
    assert not marker.exists()


def test_truncated_archive_names_the_file(tmp_path):
    archive = tmp_path / "cifar10" / ARCHIVE.name
    tiny_archive(archive)
    archive.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(DataError, match=rf"{archive} is not a readable tar archive"):
        extract(archive, archive.parent)
    assert [p.name for p in archive.parent.iterdir()] == [ARCHIVE.name]


def test_a_batch_without_images_is_a_data_error(tmp_path):
    archive = tmp_path / "cifar10" / ARCHIVE.name
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for name in (*TRAIN_BATCHES, TEST_BATCH):
            add(tar, f"{BATCH_DIR}/{name}", b"\x80\x02}q\x00.")
    with pytest.raises(DataError, match="data_batch_1 has no 'data' entry"):
        DATASETS.get("cifar10")(data_dir=tmp_path, rng=np.random.default_rng(0))


def test_the_cifar10_config_trains_on_an_archive_in_the_official_format(tmp_path, nncli, monkeypatch):
    tiny_archive(tmp_path / "data" / "cifar10" / ARCHIVE.name, per_batch=20)
    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parents[1] / "configs" / "cifar10_cnn.yaml"
    sets = ["--set", "data.val_size=20", "--set", "train.epochs=2", "--data-dir", "data"]
    check = nncli("check", config, *sets)
    assert check.exit_code == 0, check.output
    assert "input (3, 32, 32), 10 classes" in check.stdout and "(128, 4, 4)" in check.stdout
    result = nncli("train", config, "--run-dir", "run", "--quiet", *sets)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "checkpoints" / "best.pkl").is_file()
