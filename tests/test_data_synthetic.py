"""The synthetic datasets: shapes, determinism, the shapes they draw, and option checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nncli.data import DATASETS
from nncli.errors import ConfigError

NO_DATA = Path("/nonexistent/nncli-data")


def make(name, seed=0, **options):
    return DATASETS.get(name)(data_dir=NO_DATA, rng=np.random.default_rng(seed), **options)


@pytest.mark.parametrize(
    ("name", "options", "n_train", "n_test", "shape", "classes"),
    [
        ("spiral", {}, 300, 60, (2,), 3),
        ("spiral", {"classes": 5, "points_per_class": 40, "test_size": 50}, 200, 50, (2,), 5),
        ("xor", {"samples": 100}, 100, 20, (2,), 2),
        ("moons", {"test_size": 0}, 400, 0, (2,), 2),
        ("sine", {"samples": 50, "test_size": 0.5}, 50, 25, (1,), None),
    ],
)
def test_shapes_dtypes_and_sizes(name, options, n_train, n_test, shape, classes):
    data = make(name, **options)
    assert data.x_train.shape == (n_train, *shape) and data.x_train.dtype == np.float32
    assert data.info.input_shape == shape and data.info.num_classes == classes
    if n_test:
        assert data.x_test.shape == (n_test, *shape)
    else:
        assert data.x_test is None and data.y_test is None
    if classes:
        assert data.y_train.dtype == np.int64 and data.info.task == "classification"
        assert np.bincount(data.y_train).tolist() == [n_train // classes] * classes
    else:
        assert data.y_train.shape == (n_train, 1) and data.y_train.dtype == np.float32
        assert data.info.task == "regression" and data.info.num_outputs == 1


@pytest.mark.parametrize("name", ["spiral", "xor", "moons", "sine"])
def test_generated_from_the_seed(name):
    a, b, c = make(name, seed=1), make(name, seed=1), make(name, seed=2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_train, c.x_train)


def test_xor_labels_without_noise():
    data = make("xor", noise=0.0)
    x, y = data.x_train, data.y_train
    np.testing.assert_array_equal(y, (x[:, 0] > 0) != (x[:, 1] > 0))


def test_moons_without_noise_lie_on_their_half_circles():
    data = make("moons", noise=0.0)
    x, y = data.x_train.astype(np.float64), data.y_train
    upper = x[y == 0]
    np.testing.assert_allclose(np.hypot(upper[:, 0], upper[:, 1]), 1, atol=1e-6)
    lower = x[y == 1]
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1, lower[:, 1] - 0.5), 1, atol=1e-6)


def test_sine_without_noise_is_the_sine():
    data = make("sine", noise=0.0)
    np.testing.assert_allclose(data.y_train, np.sin(data.x_train), atol=1e-6)


def test_spiral_arms_stay_within_the_unit_disc_and_wind():
    data = make("spiral", noise=0.0)
    x, y = data.x_train, data.y_train
    assert np.all(np.hypot(x[:, 0], x[:, 1]) <= 1 + 1e-6)
    # Without noise a point's angle is 2*pi*arm/3 + 4r: recover r and check it.
    r = np.hypot(x[:, 0], x[:, 1])
    angle = np.arctan2(x[:, 0], x[:, 1])
    expected = 2 * np.pi * y / 3 + 4 * r
    np.testing.assert_allclose(np.cos(angle - expected), 1, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "options", "key"),
    [
        ("spiral", {"classes": 1}, "classes"),
        ("spiral", {"classes": 2.5}, "classes"),
        ("spiral", {"points_per_class": 0}, "points_per_class"),
        ("spiral", {"noise": -0.1}, "noise"),
        ("xor", {"samples": "many"}, "samples"),
        ("moons", {"test_size": 1.5}, "test_size"),
        ("sine", {"test_size": -3}, "test_size"),
    ],
)
def test_bad_options_are_keyed(name, options, key):
    with pytest.raises(ConfigError) as info:
        make(name, **options)
    assert info.value.key == key
