"""CSV and npz datasets, and the one clear error each broken file ends in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nncli.data import DATASETS
from nncli.errors import ConfigError, DataError

NO_DATA = Path("/nonexistent/nncli-data")


def load(name, **options):
    return DATASETS.get(name)(data_dir=NO_DATA, rng=np.random.default_rng(0), **options)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.fixture
def images(tmp_path):
    """The seeds' layout: 6 flattened 2x2 images, one per row, and their labels."""
    pixels = np.arange(24).reshape(6, 4) * 10
    x = write(tmp_path / "images.csv", "\n".join(",".join(map(str, r)) for r in pixels) + "\n")
    y = write(tmp_path / "labels.csv", "\n".join(str(v) for v in [0, 1, 2, 0, 1, 2]) + "\n")
    return x, y, pixels


def test_images_and_labels_files(images):
    x, y, pixels = images
    data = load("csv", path=x, labels_path=y, shape=[1, 2, 2], pixel_max=255)
    assert data.x_train.shape == (6, 1, 2, 2) and data.x_train.dtype == np.float32
    np.testing.assert_array_equal(data.x_train.reshape(6, 4), pixels)
    assert data.y_train.tolist() == [0, 1, 2, 0, 1, 2] and data.y_train.dtype == np.int64
    info = data.info
    assert (info.input_shape, info.num_classes, info.pixel_max) == ((1, 2, 2), 3, 255.0)
    assert data.x_test is None


def test_header_rows_are_detected_and_skipped(tmp_path):
    x = write(tmp_path / "x.csv", "p0,p1\n1,2\n3,4\n")
    y = write(tmp_path / "y.csv", "label\n1\n0\n")
    data = load("csv", path=x, labels_path=y)
    np.testing.assert_array_equal(data.x_train, [[1, 2], [3, 4]])
    assert data.y_train.tolist() == [1, 0] and data.info.input_shape == (2,)


def test_test_files_in_the_same_layout(images, tmp_path):
    x, y, _ = images
    tx = write(tmp_path / "tx.csv", "1,2,3,4\n")
    ty = write(tmp_path / "ty.csv", "2\n")
    data = load("csv", path=x, labels_path=y, test_path=tx, test_labels_path=ty)
    np.testing.assert_array_equal(data.x_test, [[1, 2, 3, 4]])
    assert data.y_test.tolist() == [2]


def test_single_csv_with_a_named_class_column(tmp_path):
    path = write(tmp_path / "iris.csv", "sepal,petal,species\n1.5,0.2,setosa\n6.1,2.5,virginica\n"
                                        "5.0,1.4,setosa\n")
    test = write(tmp_path / "iris_test.csv", "sepal,petal,species\n6.0,2.4,virginica\n")
    data = load("csv", path=path, target="species", test_path=test)
    np.testing.assert_array_equal(data.x_train, np.array([[1.5, 0.2], [6.1, 2.5], [5.0, 1.4]],
                                                         np.float32))
    assert data.y_train.tolist() == [0, 1, 0] and data.y_test.tolist() == [1]
    assert data.info.class_names == ("setosa", "virginica") and data.info.num_classes == 2


def test_single_csv_with_numeric_labels_in_the_first_column(tmp_path):
    # Kaggle's MNIST CSV: "label,1x1,1x2,..." with whole-number labels (also as "3.0").
    path = write(tmp_path / "train.csv", "label,a,b\n3,0,255\n1.0,128,0\n")
    data = load("csv", path=path, target="label")
    assert data.y_train.tolist() == [3, 1] and data.info.num_classes == 4
    np.testing.assert_array_equal(data.x_train, [[0, 255], [128, 0]])


def test_single_csv_regression_with_several_targets(tmp_path):
    path = write(tmp_path / "houses.csv", "rooms,y1,area,y2\n3,1.5,70,10\n5,2.5,120,20\n")
    data = load("csv", path=path, target=["y1", "y2"], task="regression")
    np.testing.assert_array_equal(data.x_train, [[3, 70], [5, 120]])
    np.testing.assert_array_equal(data.y_train, [[1.5, 10], [2.5, 20]])
    assert data.y_train.dtype == np.float32
    assert data.info.task == "regression" and data.info.num_outputs == 2


def test_ragged_row_names_file_and_line(tmp_path):
    path = write(tmp_path / "x.csv", "1,2,3\n4,5,6\n\n7,8\n")
    y = write(tmp_path / "y.csv", "0\n1\n0\n")
    with pytest.raises(DataError, match=r"x\.csv:4: found 2 values, expected 3 as on line 1"):
        load("csv", path=path, labels_path=y)


def test_non_numeric_cell_names_file_line_and_column(tmp_path):
    path = write(tmp_path / "data.csv", "a,b,label\n1,2,0\n3,oops,1\n")
    with pytest.raises(DataError, match=r"data\.csv:3: column 'b' is not a number: 'oops'"):
        load("csv", path=path, target="label")


def test_non_numeric_cell_without_header(tmp_path):
    path = write(tmp_path / "x.csv", "1,2\n3,4\n5,x\n")
    y = write(tmp_path / "y.csv", "0\n1\n0\n")
    with pytest.raises(DataError, match=r"x\.csv:3: column 2 is not a number: 'x'"):
        load("csv", path=path, labels_path=y)


def test_missing_value_is_a_data_error(tmp_path):
    path = write(tmp_path / "x.csv", "1,2\n3,nan\n")
    y = write(tmp_path / "y.csv", "0\n1\n")
    with pytest.raises(DataError, match=r"x\.csv:2: column 2 is missing or not finite"):
        load("csv", path=path, labels_path=y)


def test_label_count_must_match(images, tmp_path):
    x, _, _ = images
    y = write(tmp_path / "short.csv", "0\n1\n")
    with pytest.raises(DataError, match=r"short\.csv has 2 labels for the 6 rows of .*images\.csv"):
        load("csv", path=x, labels_path=y)


def test_fractional_class_label_is_a_data_error(images, tmp_path):
    x, _, _ = images
    y = write(tmp_path / "y.csv", "0\n1\n0.5\n1\n1\n0\n")
    with pytest.raises(DataError, match="not whole numbers"):
        load("csv", path=x, labels_path=y)


def test_unknown_test_class_is_a_data_error(tmp_path):
    path = write(tmp_path / "a.csv", "f,c\n1,cat\n2,dog\n")
    test = write(tmp_path / "b.csv", "f,c\n3,cow\n")
    with pytest.raises(DataError, match=r"b\.csv has class 'cow', which the training set lacks"):
        load("csv", path=path, target="c", test_path=test)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="CSV file .*nope.csv \\(option path\\) does not exist"):
        load("csv", path=str(tmp_path / "nope.csv"), target="y")


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({"target": "specis"}, "target", 'no column "specis" \\(did you mean "species"\\?\\)'),
        ({"target": "species", "labels_path": "y.csv"}, "target", "not both"),
        ({}, "target", "missing: name the label column .* or give labels_path"),
        ({"target": "species", "task": "clustering"}, "task", "classification, regression"),
        ({"target": ["a", "species"]}, "target", "one column"),
        ({"target": "species", "shape": [3, 3]}, "shape", "holds 9 values, but each row has 2"),
    ],
)
def test_option_mistakes_are_keyed(tmp_path, options, key, message):
    path = write(tmp_path / "iris.csv", "a,b,species\n1,2,x\n")
    with pytest.raises(ConfigError, match=message) as info:
        load("csv", path=path, **options)
    assert info.value.key == key


def test_npz_classification(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (10, 3, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(10) % 3,
             x_test=x[:2], y_test=np.array([0, 4]))
    data = load("npz", path=str(tmp_path / "d.npz"))
    assert data.info.task == "classification" and data.info.num_classes == 5
    assert data.info.input_shape == (3, 4, 4) and data.info.pixel_max == 255.0
    assert data.y_train.dtype == np.int64


def test_npz_regression_is_inferred_from_float_targets(tmp_path):
    np.savez(tmp_path / "r.npz", x_train=np.ones((4, 2)), y_train=np.arange(4.0))
    data = load("npz", path=str(tmp_path / "r.npz"))
    assert data.info.task == "regression" and data.y_train.shape == (4, 1)
    assert data.x_test is None


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x_train": np.ones((3, 2))}, "has no y_train array \\(it holds x_train\\)"),
        ({"x_train": np.ones((3, 2)), "y_train": np.arange(4)}, "x_train has 3 samples, y_train 4"),
        ({"x_train": np.ones((3, 2)), "y_train": np.arange(3), "x_test": np.ones((1, 2))},
         "one of x_test and y_test without the other"),
        ({"x_train": np.array([None, 1], dtype=object).reshape(2, 1), "y_train": np.arange(2)},
         "object arrays"),
    ],
)
def test_broken_npz_is_a_data_error_naming_the_file(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message) as info:
        load("npz", path=str(tmp_path / "bad.npz"))
    assert "bad.npz" in str(info.value)


def test_npz_that_is_not_a_zip(tmp_path):
    np.save(tmp_path / "single.npy", np.ones(3))
    with pytest.raises(DataError, match=r"single\.npy is not an \.npz file"):
        load("npz", path=str(tmp_path / "single.npy"))


def test_numbers_beyond_int32_and_decimals_parse_as_floats(tmp_path):
    path = write(tmp_path / "x.csv", "10000000000,1\n-2,0.25\n")
    y = write(tmp_path / "y.csv", "0\n1\n")
    data = load("csv", path=path, labels_path=y)
    np.testing.assert_array_equal(data.x_train, np.array([[1e10, 1], [-2, 0.25]], np.float32))
