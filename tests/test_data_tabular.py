"""CSV and npz datasets, and the one clear error each broken file ends in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nncli.data import DATASETS, load_data
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
    path = write(tmp_path / "train.csv", "label,a,b\n0,0,255\n1.0,128,0\n2,1,1\n")
    data = load("csv", path=path, target="label")
    assert data.y_train.tolist() == [0, 1, 2] and data.info.num_classes == 3
    assert data.info.class_names is None and data.info.task == "classification"
    np.testing.assert_array_equal(data.x_train, [[0, 255], [128, 0], [1, 1]])


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
    with pytest.raises(DataError, match=r"x\.csv:3: column 1 \(counting from 0\) is not a number: 'x'"):
        load("csv", path=path, labels_path=y)


def test_missing_value_is_a_data_error(tmp_path):
    path = write(tmp_path / "x.csv", "1,2\n3,nan\n")
    y = write(tmp_path / "y.csv", "0\n1\n")
    with pytest.raises(DataError, match=r"x\.csv:2: column 1 \(counting from 0\) is missing or not"
                                        r" finite: 'nan'"):
        load("csv", path=path, labels_path=y)


def test_label_count_must_match(images, tmp_path):
    x, _, _ = images
    y = write(tmp_path / "short.csv", "0\n1\n")
    with pytest.raises(DataError, match=r"short\.csv has 2 labels for the 6 rows of .*images\.csv"):
        load("csv", path=x, labels_path=y)


def test_fractional_class_label_is_a_data_error(images, tmp_path):
    x, _, _ = images
    y = write(tmp_path / "y.csv", "0\n1\n0.5\n1\n1\n0\n")
    with pytest.raises(DataError, match=r"y\.csv:3: column 0 \(counting from 0\) is '0\.5', but class"
                                        " labels are whole numbers or names"):
        load("csv", path=x, labels_path=y, task="classification")


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
        ({"target": ["a", "species"], "task": "classification"}, "target", "one column"),
        ({"target": "species", "header": "no"}, "header", "expected true or false"),
        ({"target": "species", "columns": ["a"], "drop": ["b"]}, "drop", "columns .* or drop .*not both"),
        ({"target": "species", "drop": ["bb"]}, "drop", 'no column "bb" \\(did you mean "b"\\?\\)'),
        ({"target": "species", "columns": ["a", "species"]}, "columns", "'species' is the target"),
        ({"target": "species", "drop": "species"}, "drop", "'species' is the target"),
        ({"target": "species", "drop": ["a", "b"]}, "drop", "leaves none of the columns"),
        ({"target": "species", "columns": [0, -3]}, "columns", "column 'a' is given twice"),
        ({"target": 3}, "target", "has 3 columns, so a position is from -3 to 2; got 3"),
        ({"target": True}, "target", "expected a column name or position"),
        ({"target": "species", "val_labels_path": "v.csv"}, "val_labels_path", "only used with"),
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
             x_test=x[:2], y_test=np.array([0, 2]))
    data = load("npz", path=str(tmp_path / "d.npz"))
    assert data.info.task == "classification" and data.info.num_classes == 3
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


# Empty cells and non-finite values, in labels as in features: one error at the file, line and column.


@pytest.mark.parametrize(("cell", "message"), [
    ("", "column 'label' is empty"),
    ("nan", "column 'label' is missing or not finite: 'nan'"),
    ("inf", "column 'label' is missing or not finite: 'inf'"),
])
def test_a_missing_label_is_an_error_not_a_class(tmp_path, cell, message):
    # One blank cell used to make every label a string: 11 classes, each index shifted.
    rows = ["label,a,b", "3,0,255", f"{cell},1,2", "1,128,0"]
    path = write(tmp_path / "train.csv", "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=rf"train\.csv:3: {message}$"):
        load("csv", path=path, target="label")


def test_a_missing_label_among_class_names_is_an_error(tmp_path):
    path = write(tmp_path / "iris.csv", "f,species\n1,setosa\n2,\n3,virginica\n")
    with pytest.raises(DataError, match=r"iris\.csv:3: column 'species' is empty$"):
        load("csv", path=path, target="species")


def test_a_missing_label_in_a_labels_file_names_its_line(images, tmp_path):
    x, _, _ = images
    y = write(tmp_path / "y.csv", "0\n1\nnan\n1\n1\n0\n")
    with pytest.raises(DataError, match=r"y\.csv:3: column 0 \(counting from 0\) is missing or not"
                                        r" finite: 'nan'"):
        load("csv", path=x, labels_path=y)


def test_an_empty_feature_cell_is_empty_not_missing(tmp_path):
    path = write(tmp_path / "x.csv", "a,b,label\n1,2,0\n3,,1\n")
    with pytest.raises(DataError, match=r"x\.csv:3: column 'b' is empty$"):
        load("csv", path=path, target="label")


def test_a_first_row_with_an_empty_cell_is_not_taken_for_a_header(tmp_path):
    path = write(tmp_path / "x.csv", "1,,0\n3,4,1\n")
    with pytest.raises(DataError, match=r"x\.csv:1: column 1 \(counting from 0\) is empty$"):
        load("csv", path=path, target=-1)


def test_a_missing_regression_target_names_its_line(tmp_path):
    path = write(tmp_path / "r.csv", "a,y\n1,0.5\n2,\n")
    with pytest.raises(DataError, match=r"r\.csv:3: column 'y' is empty$"):
        load("csv", path=path, target="y", task="regression")


def test_npz_non_finite_values_name_the_array(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.array([[1.0], [np.nan]]), y_train=np.array([0, 1]))
    with pytest.raises(DataError, match=r"d\.npz: x_train\[1\] holds a value that is missing or not"):
        load("npz", path=str(tmp_path / "d.npz"))


# Columns by position and files without a header: the CS229 MNIST layout.


def cs229(path: Path, labels, pixels) -> str:
    """Rows "label,p0,p1,...", no header, as CS229's mnist_train.csv."""
    return write(path, "".join(f"{y}," + ",".join(map(str, row)) + "\n"
                               for y, row in zip(labels, pixels, strict=True)))


@pytest.mark.parametrize("header", [False, None])
def test_cs229_layout_label_first_and_no_header(tmp_path, header):
    pixels = np.arange(24).reshape(6, 4) * 10
    path = cs229(tmp_path / "mnist_train.csv", [5, 0, 4, 1, 9, 2], pixels)
    test = cs229(tmp_path / "mnist_test.csv", [9, 2], pixels[:2])
    options = {} if header is None else {"header": header}
    data = load("csv", path=path, test_path=test, target=0, shape=[1, 2, 2], pixel_max=255, **options)
    assert data.x_train.shape == (6, 1, 2, 2) and data.x_train.dtype == np.float32
    np.testing.assert_array_equal(data.x_train.reshape(6, 4), pixels)  # no row taken for a header
    assert data.info.class_names == ("0", "1", "2", "4", "5", "9")
    assert data.y_train.tolist() == [4, 0, 3, 1, 5, 2]


def test_target_by_negative_position_counts_from_the_end(tmp_path):
    path = write(tmp_path / "d.csv", "a,b,label\n1,2,0\n3,4,1\n")
    data = load("csv", path=path, target=-1)
    np.testing.assert_array_equal(data.x_train, [[1, 2], [3, 4]])
    assert data.y_train.tolist() == [0, 1]


def test_header_false_reads_the_first_line_as_data(tmp_path):
    path = write(tmp_path / "d.csv", "label,a,b\n1,2,0\n")
    with pytest.raises(DataError, match=r"d\.csv:1: column 1 \(counting from 0\) is not a number: 'a'"):
        load("csv", path=path, target=0, header=False)


def test_header_true_takes_a_first_line_of_numbers_as_the_header(tmp_path):
    path = write(tmp_path / "d.csv", "7,8,9\n1,2,0\n3,4,1\n")
    data = load("csv", path=path, target=0, header=True)
    np.testing.assert_array_equal(data.x_train, [[2, 0], [4, 1]])


def test_pandas_default_header_is_a_header(tmp_path):
    path = write(tmp_path / "d.csv", "0,1,2\n0.5,1.5,0\n2.5,3.5,1\n4.5,0.5,1\n")
    data = load("csv", path=path, target=-1)
    np.testing.assert_array_equal(data.x_train, [[0.5, 1.5], [2.5, 3.5], [4.5, 0.5]])


def test_a_missing_value_mark_on_the_first_line_is_an_error_not_a_header(tmp_path):
    rows = "6.7,?,5.1,virginica\n" + "".join(f"{i}.1,3.{i},1.{i},{('setosa', 'virginica')[i % 2]}\n"
                                               for i in range(6))
    path = write(tmp_path / "q.data", rows)
    with pytest.raises(DataError, match=r"q\.data:1: column 1 \(counting from 0\) is not a number: '\?'"):
        load("csv", path=path, target=-1)


@pytest.mark.parametrize("header", [False, None])
def test_without_a_header_the_target_must_be_a_position(tmp_path, header):
    path = cs229(tmp_path / "mnist_train.csv", [1, 0], [[0, 255], [255, 0]])
    options = {} if header is None else {"header": header}
    with pytest.raises(ConfigError, match=r"mnist_train\.csv is read without a header row, so columns"
                                          r" are given by position \(0 is the first, -1 the last\),"
                                          " not by name: got 'label'") as info:
        load("csv", path=path, target="label", **options)
    assert info.value.key == "target"


# Whole-number labels other than 0..K-1.


def test_labels_1_to_3_are_three_classes_named_by_their_values(tmp_path):
    path = write(tmp_path / "d.csv", "f,y\n1,3\n2,1\n3,2\n4,1\n")
    test = write(tmp_path / "t.csv", "f,y\n5,2\n")
    data = load("csv", path=path, target="y", test_path=test)
    assert data.info.num_classes == 3 and data.info.class_names == ("1", "2", "3")
    assert data.y_train.tolist() == [2, 0, 1, 0] and data.y_test.tolist() == [1]


def test_negative_labels_are_numbered_in_order(tmp_path):
    path = write(tmp_path / "d.csv", "f,y\n1,1\n2,-1\n")
    data = load("csv", path=path, target="y")
    assert data.y_train.tolist() == [1, 0] and data.info.class_names == ("-1", "1")


def test_a_test_label_the_training_set_lacks_is_an_error(tmp_path):
    path = write(tmp_path / "d.csv", "f,y\n1,1\n2,2\n")
    test = write(tmp_path / "t.csv", "f,y\n5,4\n")
    with pytest.raises(DataError, match=r"t\.csv has class 4, which the training set lacks"):
        load("csv", path=path, target="y", test_path=test)


def test_npz_labels_are_numbered_too(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.ones((3, 2)), y_train=np.array([1, 3, 2]),
             x_test=np.ones((1, 2)), y_test=np.array([7]))
    with pytest.raises(DataError, match=r"d\.npz: y_test has class 7, which the training set lacks"):
        load("npz", path=str(tmp_path / "d.npz"))
    np.savez(tmp_path / "d.npz", x_train=np.ones((3, 2)), y_train=np.array([1, 3, 2]))
    data = load("npz", path=str(tmp_path / "d.npz"))
    assert data.y_train.tolist() == [0, 2, 1] and data.info.class_names == ("1", "2", "3")


# task: decide. Fractions are regression targets; whole numbers follow the loss.


def test_fractional_labels_are_regression_targets_without_a_task(tmp_path):
    path = write(tmp_path / "houses.csv", "rooms,price\n3,1.5\n5,2.25\n")
    data = load("csv", path=path, target="price")
    assert data.info.task == "regression" and data.info.notes == ()
    np.testing.assert_array_equal(data.y_train, np.array([[1.5], [2.25]], np.float32))


def test_several_target_columns_are_regression_without_a_task(tmp_path):
    path = write(tmp_path / "d.csv", "a,y1,y2\n1,2,3\n4,5,6\n")
    data = load("csv", path=path, target=["y1", "y2"])
    assert data.info.task == "regression" and data.y_train.shape == (2, 2)


@pytest.mark.parametrize(("loss", "task", "notes"), [
    (None, "classification", 0),
    ("classification", "classification", 0),
    ("regression", "regression", 1),
])
def test_whole_number_labels_follow_the_loss(tmp_path, loss, task, notes):
    path = write(tmp_path / "ages.csv", "height,age\n1.1,3\n1.5,7\n1.8,30\n")
    data = load("csv", path=path, target="age", loss_task=loss)
    assert data.info.task == task and len(data.info.notes) == notes
    if notes:
        assert data.info.notes[0] == (
            f"the labels of {path} are whole numbers, read as regression targets because the loss"
            " is a regression loss; set task: classification to read them as classes")
        np.testing.assert_array_equal(data.y_train, [[3], [7], [30]])


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_an_explicit_task_wins_over_the_loss(tmp_path, task):
    path = write(tmp_path / "d.csv", "f,y\n1,0\n2,1\n")
    other = "regression" if task == "classification" else "classification"
    data = load("csv", path=path, target="y", task=task, loss_task=other)
    assert data.info.task == task and data.info.notes == ()


def test_load_data_passes_the_loss_task_and_keeps_the_note(tmp_path):
    path = write(tmp_path / "d.csv", "f,y\n1,0\n2,1\n3,5\n")
    splits = load_data("csv", {"path": path, "target": "y"}, val_size=None, preprocess=[],
                       data_dir=NO_DATA, rng=np.random.default_rng(0), loss_task="regression")
    assert splits.info.task == "regression" and splits.y_train.shape == (3, 1)
    assert "read as regression targets" in splits.info.notes[0]


@pytest.mark.parametrize(("y", "loss", "task", "noted"), [
    (np.array([0, 1, 2]), "regression", "regression", True),
    (np.array([0.0, 1.0, 2.0]), "classification", "classification", True),
    (np.array([0.0, 1.0, 2.0]), None, "regression", False),
    (np.array([0.5, 1.0, 2.0]), "classification", "regression", False),
])
def test_npz_decides_the_same_way(tmp_path, y, loss, task, noted):
    np.savez(tmp_path / "d.npz", x_train=np.ones((3, 2)), y_train=y)
    data = load("npz", path=str(tmp_path / "d.npz"), loss_task=loss)
    assert data.info.task == task and bool(data.info.notes) == noted



def _one_hot(y, classes):
    return np.eye(classes, dtype=np.float32)[y]  # what Keras' to_categorical returns


@pytest.mark.parametrize(("loss", "task"), [("classification", "decide"), (None, "classification"),
                                            ("regression", "classification")])
def test_one_hot_labels_are_read_as_classes_with_a_note(tmp_path, loss, task):
    y = np.array([0, 2, 1, 2, 0])
    np.savez(tmp_path / "d.npz", x_train=np.ones((5, 2)), y_train=_one_hot(y, 3),
             x_test=np.ones((2, 2)), y_test=_one_hot([2, 1], 3))
    data = load("npz", path=str(tmp_path / "d.npz"), task=task, loss_task=loss)
    assert data.info.task == "classification" and data.info.num_classes == 3
    np.testing.assert_array_equal(data.y_train, y)
    np.testing.assert_array_equal(data.y_test, [2, 1])
    [note] = data.info.notes
    assert "y_train holds one-hot rows of 3 classes" in note and "y.argmax(1)" in note


@pytest.mark.parametrize(("loss", "task"), [("regression", "decide"), (None, "decide"),
                                            ("classification", "regression")])
def test_columns_of_0_and_1_stay_targets_under_a_regression_loss(tmp_path, loss, task):
    y = _one_hot(np.array([0, 2, 1, 2]), 3)
    np.savez(tmp_path / "d.npz", x_train=np.ones((4, 2)), y_train=y)
    data = load("npz", path=str(tmp_path / "d.npz"), task=task, loss_task=loss)
    assert data.info.task == "regression" and data.info.num_outputs == 3 and data.info.notes == ()
    np.testing.assert_array_equal(data.y_train, y)


def test_rows_that_are_not_one_hot_are_not_read_as_classes(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.ones((3, 2)), y_train=np.array([[1, 1], [0, 1], [1, 0]]))
    data = load("npz", path=str(tmp_path / "d.npz"), loss_task="classification")
    assert data.info.task == "regression"  # which the builder then refuses for a classification loss


def test_a_test_set_of_other_one_hot_width_is_an_error(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.ones((3, 2)), y_train=_one_hot([0, 1, 2], 3),
             x_test=np.ones((2, 2)), y_test=_one_hot([0, 1], 2))
    with pytest.raises(DataError, match=r"y_test has shape \(2, 2\)"):
        load("npz", path=str(tmp_path / "d.npz"), loss_task="classification")


# columns, drop and a validation file.


def test_drop_leaves_an_id_column_out_of_the_features(tmp_path):
    path = write(tmp_path / "d.csv", "id,a,b,label\n101,1,2,0\n102,3,4,1\n")
    data = load("csv", path=path, target="label", drop="id")
    np.testing.assert_array_equal(data.x_train, [[1, 2], [3, 4]])


@pytest.mark.parametrize("columns", [["b", "a"], [2, 1], [-2, "a"]])
def test_columns_picks_the_features_in_order(tmp_path, columns):
    path = write(tmp_path / "d.csv", "id,a,b,label\n101,1,2,0\n102,3,4,1\n")
    data = load("csv", path=path, target="label", columns=columns)
    np.testing.assert_array_equal(data.x_train, [[2, 1], [4, 3]])


def test_columns_apply_to_a_features_file_without_header(images):
    x, y, pixels = images
    data = load("csv", path=x, labels_path=y, drop=[0, -1], header=False)
    np.testing.assert_array_equal(data.x_train, pixels[:, 1:3])


def test_val_path_is_the_validation_set(tmp_path):
    path = write(tmp_path / "train.csv", "f,y\n1,a\n2,b\n3,a\n")
    val = write(tmp_path / "val.csv", "f,y\n4,b\n5,a\n")
    test = write(tmp_path / "test.csv", "f,y\n6,a\n")
    options = {"path": path, "target": "y", "val_path": val, "test_path": test}
    splits = load_data("csv", options, val_size=None, preprocess=[], data_dir=NO_DATA,
                       rng=np.random.default_rng(0))
    assert splits.x_train[:, 0].tolist() == [1, 2, 3] and splits.x_val[:, 0].tolist() == [4, 5]
    assert splits.y_val.tolist() == [1, 0] and splits.x_test[:, 0].tolist() == [6]
    with pytest.raises(ConfigError, match="reads its validation set from val_path; remove val_size") as info:
        load_data("csv", options, val_size=0.2, preprocess=[], data_dir=NO_DATA,
                  rng=np.random.default_rng(0))
    assert info.value.key == "val_size"


def test_val_path_in_the_labels_file_layout(images, tmp_path):
    x, y, _ = images
    vx = write(tmp_path / "vx.csv", "1,2,3,4\n")
    vy = write(tmp_path / "vy.csv", "1\n")
    data = load("csv", path=x, labels_path=y, val_path=vx, val_labels_path=vy)
    assert data.x_val.tolist() == [[1, 2, 3, 4]] and data.y_val.tolist() == [1]
    assert data.x_test is None
    with pytest.raises(ConfigError, match="give val_path and val_labels_path together"):
        load("csv", path=x, labels_path=y, val_path=vx)


@pytest.mark.parametrize(("val_text", "message"), [
    ("f,y\n4,3\n", r"val\.csv has class 3, which the training set lacks"),
    ("f,g,y\n4,4,1\n", r"val\.csv does not have the same columns as .*train\.csv"),
    ("4,1\n", r"train\.csv has a header row and .*val\.csv does not"),
])
def test_a_validation_file_must_match_the_training_file(tmp_path, val_text, message):
    path = write(tmp_path / "train.csv", "f,y\n1,0\n2,1\n")
    val = write(tmp_path / "val.csv", val_text)
    with pytest.raises(DataError, match=message):
        load("csv", path=path, target="y", val_path=val)


def test_files_without_a_header_must_have_as_many_columns(tmp_path):
    path = cs229(tmp_path / "train.csv", [1, 0], [[0, 255], [255, 0]])
    test = cs229(tmp_path / "test.csv", [1], [[0, 255, 3]])
    with pytest.raises(DataError, match=r"test\.csv has 4 values per row, .*train\.csv has 3"):
        load("csv", path=path, target=0, test_path=test)


# Header or not: the whole file's evidence decides, the same rule in training and predict.


def iris_rows(n: int, start: int = 0) -> str:
    """n rows in the UCI iris.data layout: four measurements and a class name, no header."""
    names = ("Iris-setosa", "Iris-versicolor", "Iris-virginica")
    return "".join(f"{5 + k}.{i % 10},3.{i % 7},{1 + 2 * k}.4,0.{k + 2},{names[k]}\n"
                   for i in range(start, start + n) for k in [i % 3])


def test_a_headerless_file_with_class_names_keeps_its_first_row(tmp_path):
    # Its first line has a word (the class name), but in a column of words: a row of data.
    path = write(tmp_path / "iris.data", iris_rows(9))
    test = write(tmp_path / "iris_test.data", iris_rows(3, start=9))
    data = load("csv", path=path, target=-1, test_path=test)
    assert len(data.x_train) == 9 and len(data.x_test) == 3
    np.testing.assert_array_equal(data.x_train[0], np.array([5.0, 3.0, 1.4, 0.2], np.float32))
    assert data.info.columns.header is None
    assert data.info.class_names == ("Iris-setosa", "Iris-versicolor", "Iris-virginica")


def test_a_headerless_labels_file_of_class_names_keeps_its_first_label(images, tmp_path):
    x, _, _ = images
    y = write(tmp_path / "y.csv", "cat\ndog\ncat\nbird\ndog\ncat\n")
    data = load("csv", path=x, labels_path=y)
    assert data.y_train.tolist() == [1, 2, 1, 0, 2, 1]


@pytest.mark.parametrize(("text", "is_header"), [
    ("a,b,species\n5.1,3.5,setosa\n4.9,3.0,virginica\n", True),  # a word over numbers
    ("5.1,3.5,setosa\n4.9,3.0,virginica\n", False),  # words only in a column of words
    ("1,2,3\n4,5,6\n", False),  # no word at all (pandas' 0,1,2 too: see `names`)
    ("id,x\nA1,3\nB2,4\n", True),  # id is a column of words, but x one of numbers
    ("name,town\nann,rome\nbob,oslo\n", False),  # all text: nothing tells a header
    ("1,2,note\n3,4,\n5,6,\n", False),  # numbers over columns of numbers: data, with a note filled in once
    ("1,,setosa\n2,3,virginica\n", False),  # an empty cell says nothing
    ("x,1\ny,2\n3,4\n", False),  # a column of words and numbers holds words
    ("sepal,petal\n", True),  # one line: a header when it holds no number
    ("5.1,setosa\n", False),
])
def test_first_line_is_header_from_the_whole_file(text, is_header):
    from nncli.data.csvfile import first_line_is_header

    assert first_line_is_header(text.splitlines()) is is_header


def test_the_names_a_config_gives_find_a_header_of_numbers(tmp_path):
    # pandas' to_csv writes unnamed columns as 0, 1, ...: over a column of class names,
    # "label" alone would look like data, but the config names it.
    path = write(tmp_path / "d.csv", "0,1,label\n1.5,2,up\n0.5,1,down\n2.5,0,up\n")
    test = write(tmp_path / "t.csv", "0,1,label\n1.0,2,down\n")
    data = load("csv", path=path, target="label", test_path=test)
    assert data.info.columns.header == ("0", "1", "label") and len(data.x_train) == 3
    assert data.y_test.tolist() == [0]


@pytest.mark.parametrize(("header", "rows"), [(True, 2), (False, 3), (None, 3)])
def test_header_true_or_false_still_decides(tmp_path, header, rows):
    path = write(tmp_path / "iris.data", iris_rows(3))
    data = load("csv", path=path, target=-1, header=header)
    assert len(data.x_train) == rows


@pytest.mark.parametrize(("text", "message"), [
    ("x0,x1,y,x1\n1,2,0,3\n4,5,1,6\n", r'd\.csv: column "x1" appears twice in the header, at'
                                       r" positions 1 and 3 \(counting from 0\)$"),
    (",a,,y\n0,1,2,0\n1,3,4,1\n", r"d\.csv: columns 0 and 2 \(counting from 0\) have no name in the"
                                  " header; give every column its own name$"),
])
def test_a_header_naming_a_column_twice_is_refused(tmp_path, text, message):
    path = write(tmp_path / "d.csv", text)
    with pytest.raises(DataError, match=message):
        load("csv", path=path, target="y")


@pytest.mark.parametrize(("separator", "name"), [(";", "semicolons"), ("\t", "tabs")])
def test_a_file_separated_otherwise_than_by_commas_says_so(tmp_path, separator, name):
    path = write(tmp_path / "d.csv", separator.join(["a", "b", "label"]) + "\n"
                 + separator.join(["1", "2", "x"]) + "\n" + separator.join(["3", "4", "y"]) + "\n")
    with pytest.raises(DataError, match=f"d.csv has its fields separated by {name}"):
        load("csv", path=path, target="label")
