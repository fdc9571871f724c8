"""Build nncli/data/embedded/mnist_small.npz, the MNIST subset behind the `mnist_small` dataset.

A stratified pick with a fixed seed: 600 training images of each digit from the official
training file and 100 test images of each digit from the official test file, in their original
order. The npz holds uint8 x_train (6000, 28, 28), y_train, x_test (1000, 28, 28), y_test, and
the indices taken from the official files (train_index, test_index), so the pick can be checked.
Zip entries carry a fixed timestamp, so that the same inputs give the same bytes.

usage (from the repository root, with nncli importable: installed, or PYTHONPATH=.):
    python3 scripts/build_mnist_small.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np

from nncli.data.download import ensure_files
from nncli.data.idx import read_idx
from nncli.data.mnist import EMBEDDED, MNIST_FILES, MNIST_MIRRORS

SEED = 20240
TRAIN_PER_CLASS = 600
TEST_PER_CLASS = 100
OUT = Path(__file__).resolve().parents[1] / "nncli" / "data" / EMBEDDED


def stratified_pick(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of `per_class` samples of each class, drawn without replacement."""
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
             for c in range(10)]
    return np.sort(np.concatenate(picks))


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            entry = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(entry, buffer.getvalue(), compresslevel=9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="folder whose mnist/ subfolder holds the official IDX files")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    paths = ensure_files("mnist", MNIST_FILES, args.data_dir / "mnist", MNIST_MIRRORS)
    x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
    rng = np.random.default_rng(SEED)
    train_index = stratified_pick(y_train, TRAIN_PER_CLASS, rng)
    test_index = stratified_pick(y_test, TEST_PER_CLASS, rng)
    write_npz(args.out, {
        "x_train": x_train[train_index], "y_train": y_train[train_index],
        "x_test": x_test[test_index], "y_test": y_test[test_index],
        "train_index": train_index.astype(np.int32), "test_index": test_index.astype(np.int32),
    })
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes):"
          f" {len(train_index):,} training and {len(test_index):,} test images")


if __name__ == "__main__":
    main()
