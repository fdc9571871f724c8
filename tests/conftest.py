"""Fixtures shared across the test files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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
