"""Time and peak memory of loading full MNIST, and of converting it batch by batch.

Three measurements, each the median of --repeat runs (timed without tracemalloc, then run once
more under tracemalloc for the peak):
  train-images   read_idx of the 60,000 training images (uint8, as stored)
  load_data      everything a run does before training: the four files, a 5,000-image
                 validation split, `scale` fitted; the images stay uint8 (nncli.data.inputs)
  epoch batches  the 55,000 training images of an epoch converted to float32 and scaled, in
                 shuffled batches of 128, as the trainer reads them
A float32 copy of the training images would be 188 MB: a load_data peak far below that shows
none is made.

usage (from the repository root, with nncli importable: installed, or PYTHONPATH=.):
    python3 bench/bench_data.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np

from nncli.data import load_data
from nncli.data.idx import read_idx

MB = 1e6


def measure(fn, repeat: int) -> tuple[float, float]:
    """(median seconds, peak bytes) of calling `fn`."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return statistics.median(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    images = args.data_dir / "mnist" / "train-images-idx3-ubyte.gz"

    def train_images() -> np.ndarray:
        return read_idx(images)

    def full() -> object:
        return load_data("mnist", {}, val_size=5000, preprocess=["scale"],
                         data_dir=args.data_dir, rng=np.random.default_rng(0))

    x = full().x_train

    def epoch_batches() -> None:
        order = np.random.default_rng(0).permutation(len(x))
        for start in range(0, len(x), 128):
            x.take(order[start : start + 128])

    float32_copy = 60000 * 28 * 28 * 4
    print(f"(a float32 copy of the training images would be {float32_copy / MB:.0f} MB)")
    for name, fn in (("train-images", train_images), ("load_data", full), ("epoch batches", epoch_batches)):
        seconds, peak = measure(fn, args.repeat)
        print(f"{name:13s} {seconds:6.3f} s   peak {peak / MB:6.1f} MB")

if __name__ == "__main__":
    main()
