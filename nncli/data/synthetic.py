"""Small problems generated from the run's seed: spiral, xor and moons (classification), and sine
(regression). Each draws its training set, then a test set of `test_size` samples (a count, or
a fraction of the training set) from the same distribution.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from nncli import validate
from nncli.data.datasets import DATASETS, DatasetInfo, RawData, count_of
from nncli.errors import ConfigError

Sampler = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]

# Generated data is made in memory at once: at most this many samples (train and test), and
# this many classes (a spiral arm each), checked before anything is drawn.
MAX_SAMPLES = 10_000_000
MAX_CLASSES = 1_000


def _bounded(key: str, n: int, limit: int = MAX_SAMPLES, what: str = "samples") -> int:
    if n > limit:
        raise ConfigError(f"{n:,} {what}, more than the {limit:,} a generated dataset may have", key=key)
    return n


def _generate(sample: Sampler, rng: np.random.Generator, n_train: int, test_size: int | float,
              info: DatasetInfo) -> RawData:
    n_test = _bounded("test_size", count_of("test_size", test_size, n_train))
    x_train, y_train = sample(rng, n_train)
    x_test, y_test = sample(rng, n_test) if n_test else (None, None)
    return RawData(x_train, y_train, x_test, y_test, info)


@DATASETS.register("spiral")
def load_spiral(*, data_dir: Path, rng: np.random.Generator, classes: int = 3,
                points_per_class: int = 100, noise: float = 0.2,
                test_size: int | float = 0.2) -> RawData:
    """`classes` interleaved spiral arms in the plane (CS231n's toy set): x (N, 2), labels (N,).

    Sample i belongs to arm i % classes, at radius r ~ U(0, 1) and angle
    2*pi*arm/classes + 4r + noise * N(0, 1).
    """
    classes = validate.positive_int("classes", classes)
    if classes < 2:
        raise ConfigError(f"expected at least 2 classes, got {classes}", key="classes")
    _bounded("classes", classes, MAX_CLASSES, "classes")
    n = _bounded("points_per_class", classes * validate.positive_int("points_per_class", points_per_class))
    noise = validate.non_negative_float("noise", noise)

    def sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % classes
        r = rng.uniform(0.0, 1.0, n)
        t = 2 * np.pi * labels / classes + 4 * r + noise * rng.standard_normal(n)
        x = np.stack([r * np.sin(t), r * np.cos(t)], axis=1)
        return x.astype(np.float32), labels.astype(np.int64)

    info = DatasetInfo.classification("spiral", (2,), classes)
    return _generate(sample, rng, n, test_size, info)


@DATASETS.register("xor")
def load_xor(*, data_dir: Path, rng: np.random.Generator, samples: int = 400,
             noise: float = 0.1, test_size: int | float = 0.2) -> RawData:
    """Points uniform in [-1, 1]^2, class 1 where exactly one coordinate is positive, classes
    alternating; then Gaussian jitter of standard deviation `noise` (labels keep the unjittered
    quadrant)."""
    n = _bounded("samples", validate.positive_int("samples", samples))
    noise = validate.non_negative_float("noise", noise)

    def sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % 2
        first = rng.choice([-1.0, 1.0], n)
        signs = np.stack([first, np.where(labels == 1, -first, first)], axis=1)
        x = signs * (1.0 - rng.uniform(0.0, 1.0, (n, 2)))  # magnitudes in (0, 1]
        x += noise * rng.standard_normal((n, 2))
        return x.astype(np.float32), labels.astype(np.int64)

    return _generate(sample, rng, n, test_size, DatasetInfo.classification("xor", (2,), 2))


@DATASETS.register("moons")
def load_moons(*, data_dir: Path, rng: np.random.Generator, samples: int = 400,
               noise: float = 0.1, test_size: int | float = 0.2) -> RawData:
    """Two interleaved half circles (as scikit-learn's make_moons), classes alternating:
    class 0 at (cos t, sin t), class 1 at (1 - cos t, 0.5 - sin t), t ~ U(0, pi), plus noise."""
    n = _bounded("samples", validate.positive_int("samples", samples))
    noise = validate.non_negative_float("noise", noise)

    def sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % 2
        t = rng.uniform(0.0, np.pi, n)
        x = np.where(labels[:, None] == 0,
                     np.stack([np.cos(t), np.sin(t)], axis=1),
                     np.stack([1 - np.cos(t), 0.5 - np.sin(t)], axis=1))
        x += noise * rng.standard_normal((n, 2))
        return x.astype(np.float32), labels.astype(np.int64)

    return _generate(sample, rng, n, test_size, DatasetInfo.classification("moons", (2,), 2))


@DATASETS.register("sine")
def load_sine(*, data_dir: Path, rng: np.random.Generator, samples: int = 200,
              noise: float = 0.1, test_size: int | float = 0.2) -> RawData:
    """1-D regression: x ~ U(-pi, pi) as (N, 1), target sin(x) + noise * N(0, 1) as (N, 1)."""
    n = _bounded("samples", validate.positive_int("samples", samples))
    noise = validate.non_negative_float("noise", noise)

    def sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.uniform(-np.pi, np.pi, (n, 1))
        y = np.sin(x) + noise * rng.standard_normal((n, 1))
        return x.astype(np.float32), y.astype(np.float32)

    return _generate(sample, rng, n, test_size, DatasetInfo.regression("sine", (1,), 1))
