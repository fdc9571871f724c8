"""nncli/data/inputs.py and Preprocessor.convert: splits kept in their stored dtype, converted
batch by batch to exactly the values that converting the whole split once would give."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nncli.data import Preprocessor, load_data
from nncli.data.datasets import DatasetInfo
from nncli.data.inputs import Inputs

NO_DATA = Path("/nonexistent/nncli-data")
IMAGES = DatasetInfo.classification("images", (2, 5, 5), 3, pixel_max=255.0)
TABLE = DatasetInfo.classification("table", (6,), 3)


def old_way(preprocessor: Preprocessor, stored: np.ndarray) -> np.ndarray:
    """What the pipeline did before: the whole split cast once, then each step in place."""
    x = stored.astype(preprocessor.dtype)
    for step in preprocessor.steps:
        x = step.transform(x)
    return x


def fitted(spec, stored: np.ndarray, info: DatasetInfo, dtype=np.float32) -> Preprocessor:
    preprocessor = Preprocessor.from_config(spec, dtype)
    preprocessor.fit(stored, info)
    return preprocessor


@pytest.mark.parametrize(
    ("spec", "stored", "info"),
    [
        (["scale"], np.random.default_rng(0).integers(0, 256, (40, 2, 5, 5), dtype=np.uint8), IMAGES),
        (["scale", "standardize", "flatten"],
         np.random.default_rng(1).integers(0, 256, (40, 2, 5, 5), dtype=np.uint8), IMAGES),
        ([{"standardize": {"per_channel": True}}],
         np.random.default_rng(2).integers(0, 256, (40, 2, 5, 5), dtype=np.uint8), IMAGES),
        (["flatten", "scale"], np.random.default_rng(3).integers(-300, 300, (40, 6), dtype=np.int16), TABLE),
        (["standardize"], np.random.default_rng(4).normal(5, 3, (40, 6)), TABLE),
        ([], np.random.default_rng(5).integers(0, 256, (40, 6), dtype=np.uint8), TABLE),
    ],
)
def test_converting_a_batch_gives_the_values_of_converting_everything_first(spec, stored, info):
    # elementwise float32 arithmetic in the same order: equal bit for bit on every machine
    preprocessor = fitted(spec, stored, info)
    whole = old_way(preprocessor, stored)
    x = Inputs(stored, preprocessor)
    assert x.shape == whole.shape and x.dtype == whole.dtype == np.float32
    rows = np.array([7, 3, 3, 39, 0])
    for got, expected in ((x.take(rows), whole[rows]), (x[5:17], whole[5:17]), (x[-1], whole[-1]),
                          (np.asarray(x), whole), (x[rows[:2], 1:], whole[rows[:2], 1:])):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert got.tobytes() == expected.tobytes()


def test_fitting_in_blocks_learns_the_statistics_of_the_whole_split():
    # more rows than one block holds (about a million values), so the fit reads several
    stored = np.random.default_rng(0).integers(0, 256, (3000, 1, 28, 28), dtype=np.uint8)
    info = DatasetInfo.classification("images", (1, 28, 28), 3, pixel_max=255.0)
    step = fitted(["scale", "standardize"], stored, info).steps[1]
    scaled = stored.astype(np.float64) * np.float32(1 / 255)
    np.testing.assert_allclose(step.mean, scaled.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(step.std, np.maximum(scaled.std(axis=0), np.sqrt(scaled.var(axis=0).mean())),
                               rtol=1e-5)
    low_high = fitted(["scale"], stored.reshape(3000, -1), TABLE).steps[0]
    np.testing.assert_array_equal(low_high.low, stored.reshape(3000, -1).min(axis=0))


def test_a_split_reads_its_rows_of_the_stored_samples_and_never_changes_them():
    stored = np.arange(10, dtype=np.uint8)[:, None] * np.ones((1, 4), np.uint8)
    stored.flags.writeable = False  # reading must not need to write
    preprocessor = fitted(["scale"], stored, DatasetInfo.classification("t", (4,), 2, pixel_max=255.0))
    x = Inputs(stored, preprocessor, rows=np.array([8, 2, 5]))
    assert len(x) == 3 and x.shape == (3, 4)
    np.testing.assert_array_equal(x[:, 0] * 255, [8, 2, 5])
    np.testing.assert_array_equal(x.take([2, 0])[:, 0] * 255, [5, 8])
    np.testing.assert_array_equal(x[np.array([False, True, True])][:, 0] * 255, [2, 5])
    assert [len(chunk) for chunk in x.chunks(2)] == [2, 1]
    with pytest.raises(IndexError):
        x[3]
    with pytest.raises(ValueError, match="axis=0"):
        x.take([0], axis=1)


def test_mnist_images_stay_uint8_and_the_split_shares_them():
    splits = load_data("mnist_small", {}, val_size=600, preprocess=["scale"], data_dir=NO_DATA,
                       rng=np.random.default_rng(0))
    assert splits.x_train.stored.dtype == np.uint8 and splits.x_test.stored.dtype == np.uint8
    assert splits.x_train.stored is splits.x_val.stored  # one array, no copy per split
    assert len(splits.x_train) + len(splits.x_val) == 6000
    assert splits.x_train.dtype == np.float32 and splits.x_train[:2].dtype == np.float32


@pytest.mark.parametrize(("given", "dtype", "kept"), [
    (np.uint8, np.float32, np.uint8), (np.int16, np.float32, np.int16),
    (np.float32, np.float32, np.float32), (np.float64, np.float32, np.float32),
    (np.int64, np.float32, np.float32), (np.float64, np.float64, np.float64),
])
def test_inputs_are_kept_as_given_where_the_float_dtype_holds_them_exactly(given, dtype, kept):
    x = (np.arange(24) % 7).reshape(12, 2).astype(given)
    splits = load_data("arrays", {}, val_size=None, preprocess=[], data_dir=NO_DATA,
                       rng=np.random.default_rng(0), dtype=dtype, loss_task="classification",
                       arrays={"x_train": x, "y_train": np.arange(12) % 2})
    assert splits.x_train.stored.dtype == kept
    assert splits.x_train.dtype == dtype
    np.testing.assert_array_equal(np.asarray(splits.x_train), x.astype(dtype), strict=True)
