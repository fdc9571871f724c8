"""CSV datasets through `nncli train`: the CS229 MNIST layout trains as the IDX files do, a
regression table trains without being told it is one, and layout mistakes are config errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from nncli.data import DATASETS

MLP = {
    "seed": 0,
    "model": [{"linear": {"units": 64, "init": "he"}}, "relu", {"linear": {"units": 10}}],
    "loss": "softmax_cross_entropy",
    "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
    "schedule": {"type": "constant"},
    "train": {"epochs": 2, "batch_size": 64},
}


def write_cs229(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """CS229's mnist_train.csv layout: no header, the digit, then the 784 pixels of its image."""
    table = np.column_stack([labels, images.reshape(len(images), -1)]).tolist()
    path.write_text("".join(",".join(map(str, row)) + "\n" for row in table))


def train(nncli, workdir: Path, name: str, config: dict) -> dict:
    (workdir / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, **config}))
    result = nncli("train", f"{name}.yaml", "--run-dir", name, "--quiet")
    assert result.exit_code == 0, result.output
    return json.loads((workdir / name / "summary.json").read_text())


def test_the_cs229_layout_trains_as_the_idx_files_do(workdir, nncli):
    raw = DATASETS.get("mnist_small")(data_dir=workdir, rng=np.random.default_rng(0))
    write_cs229(workdir / "mnist_train.csv", raw.x_train, raw.y_train)
    write_cs229(workdir / "mnist_test.csv", raw.x_test, raw.y_test)

    idx = train(nncli, workdir, "idx", {
        **MLP, "data": {"dataset": "mnist_small", "preprocess": ["scale", "flatten"]}})
    csv = train(nncli, workdir, "csv", {**MLP, "data": {
        "dataset": "csv", "path": "mnist_train.csv", "test_path": "mnist_test.csv",
        "header": False, "target": 0, "pixel_max": 255, "preprocess": ["scale"]}})

    # The same pixels (uint8 and whole numbers parsed from text are equal in float32), the same
    # labels, the same generator drawn in the same order: the runs are the same run.
    assert idx["test"]["accuracy"] > 0.85
    assert csv["test"]["accuracy"] == idx["test"]["accuracy"]
    assert csv["test"]["loss"] == idx["test"]["loss"]


def test_a_regression_table_trains_with_mse_without_a_task(workdir, nncli):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2))
    y = x @ [1.5, -0.5] + 0.25
    rows = "".join(f"{a:.4f},{b:.4f},{t:.4f}\n" for (a, b), t in zip(x, y, strict=True))
    (workdir / "houses.csv").write_text("rooms,area,price\n" + rows)
    # Fractional targets used to be read as class labels ("not whole numbers") unless the
    # config said task: regression.
    config = {**MLP, "data": {"dataset": "csv", "path": "houses.csv", "target": "price"},
              "model": [{"linear": {"units": 1}}], "loss": "mse", "optimizer": {"type": "sgd", "lr": 0.1},
              "train": {"epochs": 10, "batch_size": 16}}
    final = train(nncli, workdir, "houses", config)["final"]
    assert final["train_acc"] is None and final["train_loss"] < 1e-3  # a line, fitted


def test_a_column_name_without_a_header_is_a_config_error(workdir, nncli):
    write_cs229(workdir / "mnist_train.csv", np.zeros((2, 4), np.uint8), np.array([1, 0]))
    config = {**MLP, "data": {"dataset": "csv", "path": "mnist_train.csv", "target": "label"}}
    (workdir / "bad.yaml").write_text(yaml.safe_dump({"name": "bad", **config}))
    result = nncli("train", "bad.yaml")
    assert result.exit_code == 2
    assert "data.target: " in result.output
    assert "mnist_train.csv is read without a header row, so columns are given by position" in result.output
    assert not (workdir / "runs").exists()


def test_csv_rows_reshaped_into_images_train_a_cnn(workdir, nncli):
    # the classic tutorial layout for a CNN: label, then 784 pixels, reshaped by `shape`
    raw = DATASETS.get("mnist_small")(data_dir=workdir, rng=np.random.default_rng(0))
    write_cs229(workdir / "train.csv", raw.x_train[:600], raw.y_train[:600])
    config = {
        "seed": 0,
        "data": {"dataset": "csv", "path": "train.csv", "header": False, "target": 0,
                 "shape": [1, 28, 28], "pixel_max": 255, "val_size": 100, "preprocess": ["scale"]},
        "model": [{"conv2d": {"filters": 4, "kernel": 3, "padding": 1}}, "relu",
                  {"maxpool2d": {"size": 2}}, "flatten", {"linear": {"units": 10}}],
        "loss": "softmax_cross_entropy",
        "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
        "train": {"epochs": 3, "batch_size": 32},
    }
    (workdir / "cnn.yaml").write_text(yaml.safe_dump({"name": "cnn", **config}))
    check = nncli("check", "cnn.yaml")
    assert check.exit_code == 0, check.output
    assert "input (1, 28, 28), 10 classes" in check.stdout and "(4, 14, 14)" in check.stdout
    result = nncli("train", "cnn.yaml", "--run-dir", "cnn", "--quiet")
    assert result.exit_code == 0, result.output
    rows = (workdir / "cnn" / "metrics.csv").read_text().splitlines()[1:]
    assert float(rows[-1].split(",")[4]) > 0.6  # val_acc after 3 epochs on 500 digits


def test_the_iris_data_layout_keeps_every_row_with_a_test_file(workdir, nncli):
    # UCI's iris.data: no header, four measurements and the class name on every line. Its
    # first line used to be taken for a header: one sample lost, and with a test file the
    # error blamed the columns (the test file's own first line was another "header").
    rng = np.random.default_rng(0)
    names = ("Iris-setosa", "Iris-versicolor", "Iris-virginica")

    def rows(n: int) -> str:
        classes = np.arange(n) % 3
        x = rng.normal(size=(n, 4)) * 0.2 + np.array([[5, 3, 1.5, 0.2]]) + classes[:, None]
        return "".join(",".join(f"{v:.1f}" for v in r) + f",{names[k]}\n"
                       for r, k in zip(x, classes, strict=True))

    (workdir / "iris.csv").write_text(rows(60))
    (workdir / "iris_test.csv").write_text(rows(15))
    summary = train(nncli, workdir, "iris", {**MLP, "model": [{"linear": {"units": 3}}],
                                             "optimizer": {"type": "adam", "lr": 0.05},
                                             "train": {"epochs": 20, "batch_size": 16},
                                             "data": {"dataset": "csv", "path": "iris.csv",
                                                      "target": -1, "test_path": "iris_test.csv",
                                                      "val_size": 0}})
    assert summary["test"]["samples"] == 15
    check = nncli("check", "iris.yaml")
    assert "data: csv, 60 training, 15 test samples; input (4,), 3 classes" in check.stdout
    result = nncli("predict", "iris", "iris.csv")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1 + 60  # the CSV's header, then one line per row
