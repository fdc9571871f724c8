"""Fixtures shared across the test files: the small configs tests train (`make_config`), a
fresh working directory holding it, the CLI run in-process, and the real data folders."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from nncli.cli import cli

# The configs tests start from, each small enough to train in about a second:
BASES = {
    # 180 points in 3 classes (144 training, 36 validation), a 32-unit MLP, 4 epochs: enough to
    # exercise checkpoints, resume, metrics and evaluation
    "spiral": """\
name: spiral
seed: 3
data: {dataset: spiral, classes: 3, points_per_class: 60, val_size: 0.2}
model:
  - linear: {units: 32, init: he}
  - relu
  - dropout: {p: 0.1}
  - linear: {units: 3}
loss: softmax_cross_entropy
optimizer: {type: sgd, lr: 0.1, momentum: 0.9, weight_decay: 1.0e-4}
schedule: {type: constant}
train: {epochs: 4, batch_size: 16}
""",
    # regression: 300 noisy points of a sine, a 16-unit tanh MLP, mean squared error
    "sine": """\
name: sine
seed: 1
data: {dataset: sine, samples: 300, noise: 0.1, val_size: 0.1}
model:
  - linear: {units: 16}
  - tanh
  - linear: {units: 1}
loss: mse
optimizer: {type: adam, lr: 0.01}
train: {epochs: 5, batch_size: 32}
""",
    # the MNIST subset shipped inside nncli: a 16-unit MLP on flattened images, 1 epoch
    "images": """\
name: images
seed: 1
data: {dataset: mnist_small, val_size: 500, preprocess: [scale]}
model: [flatten, {linear: {units: 16}}, relu, {linear: {units: 10}}]
loss: softmax_cross_entropy
optimizer: {type: sgd, lr: 0.1}
train: {epochs: 1, batch_size: 64}
""",
    # the same images through a small CNN: convolution, pooling, a linear layer
    "cnn": """\
name: cnn
seed: 2
data: {dataset: mnist_small, val_size: 5000, preprocess: [scale]}
model:
  - conv2d: {filters: 4, kernel: 3, padding: 1}
  - relu
  - maxpool2d: {size: 2}
  - flatten
  - linear: {units: 10}
loss: softmax_cross_entropy
optimizer: {type: sgd, lr: 0.05, momentum: 0.9}
train: {epochs: 2, batch_size: 100}
""",
}
SPIRAL = BASES["spiral"]


def config_text(base: str = "spiral", changes: dict | None = None, **sections) -> str:
    """The YAML of `BASES[base]` with its top-level `sections` replaced (`model=[...]`,
    `loss="mse"`; None removes one) and then `changes` ({"dotted.key": value}) applied; the
    base's own text where there is nothing to change."""
    if not changes and not sections:
        return BASES[base]
    config = yaml.safe_load(BASES[base])
    for key, value in sections.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = copy.deepcopy(value)  # the caller's value is changed by no `changes`
    for key, value in (changes or {}).items():
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[last] = value
    return yaml.safe_dump(config, sort_keys=False)


@pytest.fixture(autouse=True)
def held_blas(monkeypatch):
    """NNCLI_THREADS=held for every test that does not set its own (nor the shell): with it
    unset, a fresh run may take the BLAS's own threads where they time faster at its start, so
    two runs of one config could round differently on a machine whose load changes, and the
    tests compare runs bit for bit. test_threads_blas.py unsets it to test that choice."""
    if "NNCLI_THREADS" not in os.environ:
        monkeypatch.setenv("NNCLI_THREADS", "held")


@pytest.fixture(scope="session")
def spiral():
    """The spiral config as YAML text, with `changes` ({"dotted.key": value}) applied:
    `spiral({"data.preprocess": ["standardize"], "train.epochs": 2})`."""
    return lambda changes=None: config_text("spiral", changes)


@pytest.fixture(scope="session")
def make_config():
    """Write a config file and return its path: `make_config(folder / "x.yaml", "images",
    {"train.epochs": 2}, loss="mse")` writes `config_text("images", {...}, loss="mse")`; the
    base is "spiral" where none is named. A test states only what its config changes."""

    def make(path: Path, base: str = "spiral", changes: dict | None = None, **sections) -> Path:
        path.write_text(config_text(base, changes, **sections))
        return path

    return make


@pytest.fixture(scope="session")
def nncli():
    """Run `nncli ARGS...` in-process; the click Result (exit_code, stdout, stderr, output)."""

    def run(*args):
        return CliRunner().invoke(cli, [str(a) for a in args])

    return run


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh, empty current directory (runs/ and relative paths land here)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """$NNCLI_DATA_DIR if set, else ../shared/data next to the repository (which may not exist)."""
    env = os.environ.get("NNCLI_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def real_data_dir(shared_data_dir) -> Path:
    """The folder holding the official MNIST files (mnist/*.gz); skips the test where absent."""
    root = shared_data_dir
    if not (root / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found in {root / 'mnist'} (set NNCLI_DATA_DIR to a folder"
                    " whose mnist/ holds the official IDX files)")
    return root
