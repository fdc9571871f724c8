"""Fixtures shared across the test files: the small spiral config most CLI tests train, a
fresh working directory holding it, the CLI run in-process, and the real data folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from nncli.cli import cli

# 180 points in 3 classes (144 training, 36 validation), a 32-unit MLP, 4 epochs: about a
# second to train, and enough to exercise checkpoints, resume, metrics and evaluation.
SPIRAL = """\
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
"""


@pytest.fixture(scope="session")
def spiral():
    """The spiral config as YAML text, with `changes` ({"dotted.key": value}) applied:
    `spiral({"data.preprocess": ["standardize"], "train.epochs": 2})`."""

    def make(changes: dict | None = None) -> str:
        if not changes:
            return SPIRAL
        config = yaml.safe_load(SPIRAL)
        for key, value in changes.items():
            *parents, last = key.split(".")
            node = config
            for part in parents:
                node = node[part]
            node[last] = value
        return yaml.safe_dump(config, sort_keys=False)

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
