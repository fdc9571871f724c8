"""The IDX parser, on the real MNIST files and on broken ones."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest

from nncli.data.idx import read_idx, write_idx
from nncli.data.mnist import MNIST_FILES
from nncli.errors import DataError

# Label counts of the official files (LeCun et al.).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_mnist_digests_match_the_published_ones(real_data_dir):
    for remote in MNIST_FILES:
        content = gzip.decompress((real_data_dir / "mnist" / remote.name).read_bytes())
        assert hashlib.sha256(content).hexdigest() == remote.sha256, remote.name


def test_real_mnist_parses_to_the_documented_shapes_and_counts(real_data_dir):
    folder = real_data_dir / "mnist"
    x_train = read_idx(folder / "train-images-idx3-ubyte.gz")
    y_train = read_idx(folder / "train-labels-idx1-ubyte.gz")
    x_test = read_idx(folder / "t10k-images-idx3-ubyte.gz")
    y_test = read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert x_test.shape == (10000, 28, 28) and x_test.dtype == np.uint8
    assert np.bincount(y_train).tolist() == TRAIN_COUNTS
    assert np.bincount(y_test).tolist() == TEST_COUNTS
    assert x_train.max() == 255 and x_train.min() == 0


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip_plain_and_gzipped(tmp_path, name, dtype):
    array = np.arange(24, dtype=dtype).reshape(2, 3, 4)
    write_idx(tmp_path / name, array)
    back = read_idx(tmp_path / name)
    assert back.dtype == array.dtype and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.tobytes()


GOOD = _idx_bytes(np.zeros((3, 4, 4), np.uint8))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (GOOD[:-5], "is truncated: a 3x4x4 array of uint8 needs 64 bytes, the file has 59"),
        (GOOD + b"\0", "has unexpected bytes at the end"),
        (GOOD[:10], "is truncated: its header alone needs 16 bytes"),
        (b"\0\0", "is not an IDX file: it has only 2 bytes"),
        (b"PK\x03\x04" + GOOD[4:], "is not an IDX file: bad magic number 0x504b0304"),
        (b"\0\0\x07\x03" + GOOD[4:], "bad magic number 0x00000703"),
    ],
)
def test_broken_files_are_one_data_error_naming_the_file(tmp_path, raw, message):
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_gzip_names_the_file(tmp_path):
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(GOOD)[:-12])
    with pytest.raises(DataError, match=r"images\.gz is not a readable gzip file"):
        read_idx(path)


def test_corrupt_gzip_names_the_file(tmp_path):
    packed = bytearray(gzip.compress(GOOD * 50))
    packed[20:30] = b"\xff" * 10
    path = tmp_path / "labels.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(DataError, match=r"labels\.gz is not a readable gzip file"):
        read_idx(path)


@pytest.mark.parametrize("name", ["huge.idx", "huge.idx.gz"])
def test_a_header_promising_more_than_the_file_can_hold_is_refused_before_any_array(tmp_path, name):
    # 100,000^3 bytes: no array of that size may be made for a file of a few bytes
    header = bytes([0, 0, 0x08, 3]) + np.asarray([100_000] * 3, ">u4").tobytes()
    path = tmp_path / name
    path.write_bytes(gzip.compress(header + b"\0" * 10) if name.endswith(".gz") else header + b"\0" * 10)
    with pytest.raises(DataError, match="is truncated: a 100000x100000x100000 array of uint8 needs"
                       " 1,000,000,000,000,016 bytes, the file has 26"):
        read_idx(path)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read .*nothing-here"):
        read_idx(tmp_path / "nothing-here")
