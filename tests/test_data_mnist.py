"""The MNIST loaders: real files, and the subset shipped inside the package."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np

from nncli.data import DATASETS
from nncli.data.idx import read_idx
from nncli.data.mnist import EMBEDDED

NO_DATA = Path("/nonexistent/nncli-data")


def test_mnist_loads_channels_first_with_int64_labels(real_data_dir):
    data = DATASETS.get("mnist")(data_dir=real_data_dir, rng=np.random.default_rng(0))
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (10000, 1, 28, 28)
    assert data.y_train.dtype == np.int64 and data.y_test.shape == (10000,)
    info = data.info
    assert (info.input_shape, info.task, info.num_classes, info.num_outputs, info.pixel_max) == (
        (1, 28, 28), "classification", 10, 10, 255.0)


def test_mnist_small_needs_no_data_dir_and_is_stratified():
    data = DATASETS.get("mnist_small")(data_dir=NO_DATA, rng=np.random.default_rng(0))
    assert data.x_train.shape == (6000, 1, 28, 28) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (1000, 1, 28, 28)
    assert np.bincount(data.y_train).tolist() == [600] * 10
    assert np.bincount(data.y_test).tolist() == [100] * 10
    assert data.info.name == "mnist_small" and data.info.input_shape == (1, 28, 28)


def test_mnist_small_is_small():
    with resources.as_file(resources.files("nncli.data").joinpath(EMBEDDED)) as path:
        assert path.stat().st_size <= 2 * 1024 * 1024


def test_mnist_small_is_the_recorded_pick_from_the_official_files(real_data_dir):
    with resources.files("nncli.data").joinpath(EMBEDDED).open("rb") as f, np.load(f) as npz:
        small = {key: npz[key] for key in npz.files}
    folder = real_data_dir / "mnist"
    for split, prefix in (("train", "train"), ("test", "t10k")):
        index = small[f"{split}_index"]
        assert np.all(np.diff(index) > 0)
        images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
        np.testing.assert_array_equal(small[f"x_{split}"], images[index])
        np.testing.assert_array_equal(small[f"y_{split}"], labels[index])


def test_build_script_reproduces_the_shipped_file(real_data_dir, tmp_path):
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "mnist_small.npz"
    subprocess.run(
        [sys.executable, str(repo / "scripts" / "build_mnist_small.py"),
         "--data-dir", str(real_data_dir), "--out", str(out)],
        check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(repo)},
    )
    shipped = resources.files("nncli.data").joinpath(EMBEDDED).read_bytes()
    assert out.read_bytes() == shipped
