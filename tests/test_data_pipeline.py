"""load_data: option checks, the validation split, preprocessing and its saved state; batches."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest

from nncli import safe_pickle
from nncli.data import Preprocessor, iterate_batches, load_data
from nncli.data.preprocess import _mean_std, repeated_steps
from nncli.errors import CheckpointError, ConfigError, DataError

NO_DATA = Path("/nonexistent/nncli-data")


@pytest.fixture
def ids_npz(tmp_path) -> str:
    """100 training samples whose single feature is their index, 10 test samples (ids 1000+)."""
    path = tmp_path / "ids.npz"
    np.savez(path, x_train=np.arange(100, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32),
             y_train=np.arange(100) % 4, x_test=1000 + np.arange(10.0)[:, None] * np.ones((1, 3)),
             y_test=np.arange(10) % 4)
    return str(path)


def load(name, options=None, *, val_size=None, preprocess=(), seed=0, **kw):
    return load_data(name, options or {}, val_size=val_size, preprocess=list(preprocess),
                     data_dir=NO_DATA, rng=np.random.default_rng(seed), **kw)


@pytest.mark.parametrize(("val_size", "n_val"), [(None, 0), (0, 0), (25, 25), (0.1, 10), (0.25, 25)])
def test_validation_split_sizes_and_disjointness(ids_npz, val_size, n_val):
    splits = load("npz", {"path": ids_npz}, val_size=val_size)
    train_ids = splits.x_train[:, 0].astype(int)
    assert len(train_ids) == 100 - n_val
    if n_val:
        val_ids = splits.x_val[:, 0].astype(int)
        assert len(val_ids) == n_val
        assert not set(train_ids) & set(val_ids)
        assert sorted([*train_ids, *val_ids]) == list(range(100))
        assert splits.y_val.tolist() == (val_ids % 4).tolist()  # labels follow their samples
    else:
        assert splits.x_val is None and splits.y_val is None
    assert splits.y_train.tolist() == (train_ids % 4).tolist()
    # The test set is never touched by the split.
    assert splits.x_test[:, 0].tolist() == list(range(1000, 1010))


def test_validation_split_is_drawn_with_the_seed(ids_npz):
    def val_ids(seed):
        return load("npz", {"path": ids_npz}, val_size=20, seed=seed).x_val[:, 0].tolist()

    assert val_ids(1) == val_ids(1)
    assert val_ids(1) != val_ids(2)


@pytest.mark.parametrize("val_size", [100, 150, -1, 1.0, 1.5, "10%", True])
def test_bad_val_size_is_a_config_error_keyed_val_size(ids_npz, val_size):
    with pytest.raises(ConfigError) as info:
        load("npz", {"path": ids_npz}, val_size=val_size)
    assert info.value.key == "val_size"



@pytest.mark.parametrize("val_size", [0.001, 0.005])
def test_a_val_size_fraction_that_rounds_to_no_sample_is_an_error(ids_npz, val_size):
    # 0.005 of 100 is 0.5, which rounds to 0 as well
    with pytest.raises(ConfigError, match=r"of the 100 training samples rounds to no sample;"
                                          r" give a count \(1 or more\), a fraction of at least 0.01"
                       ) as info:
        load("npz", {"path": ids_npz}, val_size=val_size)
    assert info.value.key == "val_size"


@pytest.mark.parametrize(("labels", "named"), [(np.zeros(20, np.int64), "0"), (np.full(20, 3), "3"),
                                               (np.array(["cat"] * 20), "cat")])
def test_a_classification_dataset_of_one_class_is_an_error(tmp_path, labels, named):
    path = tmp_path / "one.npz"
    np.savez(path, x_train=np.ones((20, 2), np.float32), y_train=labels)
    with pytest.raises(DataError, match=rf"every training label of the npz dataset is the same class"
                                        rf" \({named}\); a classifier needs at least two classes"):
        load("npz", {"path": str(path)}, loss_task="classification")
    # the same labels as values to fit are legal
    if labels.dtype.kind != "U":
        assert load("npz", {"path": str(path)}, loss_task="regression").info.task == "regression"


def test_repeated_steps_are_found_by_name():
    assert repeated_steps(["scale", "scale"]) == [(1, 0, "scale")]
    assert repeated_steps(["standardize", {"standardize": {"per_channel": True}}, "flatten", "flatten"]) == [
        (1, 0, "standardize"), (3, 2, "flatten")]
    assert repeated_steps(["scale", "standardize", "flatten"]) == []


def test_unknown_option_suggests_the_closest(ids_npz):
    with pytest.raises(ConfigError, match='did you mean "classes"') as info:
        load("spiral", {"clases": 3})
    assert info.value.key == "clases"


def test_missing_required_option_is_keyed():
    with pytest.raises(ConfigError, match="required") as info:
        load("csv", {})
    assert info.value.key == "path"


def test_bad_option_value_is_keyed():
    with pytest.raises(ConfigError) as info:
        load("spiral", {"points_per_class": -5})
    assert info.value.key == "points_per_class"


def test_unknown_dataset_suggests_the_closest():
    with pytest.raises(ConfigError, match='unknown dataset "mnits" \\(did you mean "mnist"\\?\\)'):
        load("mnits")


def test_scale_divides_images_by_pixel_max_in_float32():
    splits = load("mnist_small", preprocess=["scale"])
    assert splits.x_train.dtype == np.float32 and splits.x_test.dtype == np.float32
    assert np.asarray(splits.x_train).min() == 0 and np.asarray(splits.x_train).max() == 1
    assert splits.info.input_shape == (1, 28, 28)
    assert splits.y_train.dtype == np.int64


def test_scale_on_tabular_data_uses_training_min_and_max(ids_npz):
    plain = load("npz", {"path": ids_npz}, val_size=30)  # the same split, unscaled
    splits = load("npz", {"path": ids_npz}, val_size=30, preprocess=["scale"])
    low, high = np.asarray(plain.x_train).min(axis=0), np.asarray(plain.x_train).max(axis=0)
    assert np.asarray(splits.x_train).min() == 0 and np.asarray(splits.x_train).max() == 1
    for scaled, raw in ((splits.x_val, plain.x_val), (splits.x_test, plain.x_test)):
        np.testing.assert_allclose(scaled, (np.asarray(raw) - low) / (high - low), rtol=1e-6)
    assert np.asarray(splits.x_test).min() > 1  # test samples lie beyond the training range


def test_standardize_is_fitted_on_the_training_part_only(ids_npz):
    plain = load("npz", {"path": ids_npz}, val_size=30)  # the same split, unprocessed
    splits = load("npz", {"path": ids_npz}, val_size=30, preprocess=["standardize"])
    step = splits.preprocessor.steps[0]
    np.testing.assert_allclose(step.mean, np.asarray(plain.x_train).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(step.std, np.asarray(plain.x_train).std(axis=0), rtol=1e-6)
    assert not np.isclose(step.mean[0], np.arange(100).mean())  # not all 100 samples
    np.testing.assert_allclose(np.asarray(splits.x_train).mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(splits.x_train).std(axis=0), 1, rtol=1e-5)
    np.testing.assert_allclose(splits.x_val, (np.asarray(plain.x_val) - step.mean) / step.std, rtol=1e-6)


def test_standardize_never_magnifies_a_pixel_more_than_the_images_as_a_whole(tmp_path):
    # a border pixel lit in 2 of 1,000 training images has a std of about 11 (in 0..255): a
    # lit test pixel used to become ~22 standard deviations; now at most (255 - mean) / the
    # RMS of the pixels' stds
    rng = np.random.default_rng(0)
    x = np.zeros((1000, 1, 6, 6), np.uint8)
    x[:, :, 1:5, 1:5] = rng.integers(0, 256, (1000, 1, 4, 4))
    x[:2, 0, 0, 0] = 255
    test = np.zeros((1, 1, 6, 6), np.uint8)
    test[0, 0, 0, 0] = 255
    np.savez(tmp_path / "img.npz", x_train=x, y_train=np.arange(1000) % 2, x_test=test, y_test=[0])
    splits = load("npz", {"path": str(tmp_path / "img.npz")}, preprocess=["standardize"])
    typical = np.sqrt(np.mean(x.astype(np.float64).var(axis=0)))
    assert splits.x_test[0, 0, 0, 0] == pytest.approx((255 - 255 * 2 / 1000) / typical, rel=1e-4)
    assert np.asarray(splits.x_test).max() < 6  # unfloored: 22
    # the pixels that vary as much as the whole are standardized as before
    inner = splits.x_train[:, 0, 1:5, 1:5]
    np.testing.assert_allclose(inner.std(axis=0), 1, rtol=1e-4)


def test_standardize_per_channel(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 3, 4, 4), dtype=np.uint8)
    x[:, 1] //= 4
    np.savez(tmp_path / "img.npz", x_train=x, y_train=np.arange(50) % 2)
    splits = load("npz", {"path": str(tmp_path / "img.npz")},
                  preprocess=[{"standardize": {"per_channel": True}}])
    step = splits.preprocessor.steps[0]
    assert step.mean.shape == (3, 1, 1)
    expected = x.astype(np.float64).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(step.mean.ravel(), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(splits.x_train).mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(splits.x_train).std(axis=(0, 2, 3)), 1, rtol=1e-4)


def test_per_channel_needs_images():
    with pytest.raises(ConfigError, match="per_channel needs images") as info:
        load("spiral", preprocess=[{"standardize": {"per_channel": True}}])
    assert info.value.key == "preprocess[0].per_channel"


def test_flatten_updates_the_input_shape():
    splits = load("mnist_small", preprocess=["scale", "flatten"])
    assert splits.x_train.shape == (6000, 784) and splits.info.input_shape == (784,)
    assert splits.x_test.shape == (1000, 784)


def test_one_hot_labels():
    splits = load("spiral", {"classes": 4}, val_size=40, preprocess=["one_hot"])
    for y in (splits.y_train, splits.y_val, splits.y_test):
        assert y.dtype == np.float32 and y.shape[1] == 4
        np.testing.assert_array_equal(y.sum(axis=1), 1)


def test_one_hot_on_regression_is_a_config_error():
    with pytest.raises(ConfigError, match="one_hot needs class labels") as info:
        load("sine", preprocess=["one_hot"])
    assert info.value.key == "preprocess[0]"


@pytest.mark.parametrize(
    ("spec", "key", "message"),
    [
        (["scale", "standardise"], "preprocess[1]", 'did you mean "standardize"'),
        ([{"standardize": {"per_chanel": True}}], "preprocess[0].per_chanel", "per_channel"),
        ([{"standardize": {"per_channel": "yes"}}], "preprocess[0].per_channel", "true or false"),
        ([{"scale": 1}], "preprocess[0]", "expected a mapping of options"),
        ([{"scale": None, "flatten": None}], "preprocess[0]", "one-key mapping"),
        ("scale", "preprocess", "expected a list of steps"),
    ],
)
def test_bad_preprocessing_is_a_keyed_config_error(spec, key, message):
    with pytest.raises(ConfigError, match=message) as info:
        Preprocessor.from_config(spec)
    assert info.value.key == key


def test_regression_targets_are_float_columns():
    splits = load("sine", val_size=0.1)
    assert splits.y_train.dtype == np.float32 and splits.y_train.ndim == 2
    assert splits.y_val.shape == (20, 1)


def test_dtype_float64_is_honoured():
    splits = load("sine", preprocess=["standardize"], dtype=np.float64)
    assert splits.x_train.dtype == np.float64 and splits.y_train.dtype == np.float64


def _plain(value) -> bool:
    """Builtins and numpy arrays all the way down."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool, np.ndarray))


@pytest.mark.parametrize(
    ("name", "options", "preprocess"),
    [
        ("mnist_small", {}, ["scale", {"standardize": {"per_channel": True}}, "flatten", "one_hot"]),
        ("moons", {}, ["scale", "standardize", "one_hot"]),
        ("sine", {}, [{"standardize": None}]),
    ],
)
def test_state_dict_round_trips_without_refitting(name, options, preprocess):
    splits = load(name, options, preprocess=preprocess)
    state = splits.preprocessor.state_dict()
    assert _plain(state)
    # What a checkpoint does: pickle it, read it back with the restricted unpickler.
    restored = safe_pickle.load(io.BytesIO(pickle.dumps(state)), what="state")
    rebuilt = Preprocessor.from_state(restored)
    raw = load(name, options)  # the same data, unprocessed
    np.testing.assert_array_equal(rebuilt.apply(raw.x_test), splits.x_test)
    np.testing.assert_array_equal(rebuilt.apply_labels(raw.y_test), splits.y_test)
    assert rebuilt.output_shape(raw.info.input_shape) == splits.info.input_shape


def test_apply_leaves_its_input_alone():
    splits = load("moons", preprocess=["scale", "standardize"])
    x = np.array([[0.5, 0.25]], np.float32)
    before = x.copy()
    out = splits.preprocessor.apply(x)
    np.testing.assert_array_equal(x, before)
    assert out.dtype == np.float32 and out is not x


def test_invalid_state_is_a_checkpoint_error():
    with pytest.raises(CheckpointError, match="preprocessing state"):
        Preprocessor.from_state({"dtype": "float32", "steps": [{"name": "rotate"}]})


def test_mean_std_in_blocks_matches_numpy():
    x = np.random.default_rng(0).normal(3, 2, (5000, 300)).astype(np.float32)
    mean, std = _mean_std(x, (0,))
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(std, x.astype(np.float64).std(axis=0), rtol=1e-10)


def test_batches_cover_every_sample_once_per_epoch_with_a_partial_last_batch():
    x = np.arange(103, dtype=np.float32)[:, None]
    y = np.arange(103)
    rng = np.random.default_rng(0)
    orders = []
    for _ in range(2):
        batches = list(iterate_batches(x, y, 10, rng))
        assert [len(xb) for xb, _ in batches] == [10] * 10 + [3]
        seen = np.concatenate([yb for _, yb in batches])
        assert sorted(seen.tolist()) == list(range(103))
        for xb, yb in batches:
            np.testing.assert_array_equal(xb[:, 0], yb)
        orders.append(seen.tolist())
    assert orders[0] != orders[1]  # a fresh permutation each epoch
    assert orders[0] != list(range(103))


def test_batches_follow_the_seed():
    x, y = np.zeros((50, 2)), np.arange(50)

    def order(seed):
        rng = np.random.default_rng(seed)
        return [yb.tolist() for _, yb in iterate_batches(x, y, 8, rng)]

    assert order(3) == order(3) and order(3) != order(4)


def test_unshuffled_batches_are_in_order():
    x, y = np.arange(25.0)[:, None], np.arange(25)
    batches = list(iterate_batches(x, y, 10, shuffle=False))
    assert [yb.tolist() for _, yb in batches] == [list(range(0, 10)), list(range(10, 20)),
                                                 list(range(20, 25))]


# What the run gives a loader (data_dir, rng, loss_task, progress, arrays) are arguments, never
# options: load_data passes each one the loader declares, and a YAML that names one is refused.


@pytest.mark.parametrize(("name", "options", "key"), [
    ("npz", {"loss_task": "regression"}, "loss_task"),
    ("mnist", {"progress": False}, "progress"),
    ("arrays", {"arrays": {}}, "arrays"),
    ("spiral", {"rng": 3}, "rng"),
    ("xor", {"data_dir": "/tmp"}, "data_dir"),
])
def test_yaml_cannot_set_what_the_run_gives_a_loader(ids_npz, name, options, key):
    if name == "npz":
        options = {"path": ids_npz, **options}
    with pytest.raises(ConfigError, match=r"unknown option") as err:
        load(name, options)
    assert err.value.key == key
    valid = str(err.value).partition("valid options: ")[2]
    assert key not in valid.split(", ")


def test_a_loader_gets_only_the_context_it_declares():
    from nncli.data.datasets import call_loader

    seen = {}

    def plain(*, data_dir, rng, size=1):
        seen["plain"] = (data_dir, size)

    def deciding(*, data_dir, rng, loss_task=None):
        seen["deciding"] = loss_task

    context = dict(data_dir=NO_DATA, rng=None, loss_task="regression", progress=False, arrays=None)
    call_loader(plain, {"size": 2}, **context)
    call_loader(deciding, {}, **context)
    assert seen == {"plain": (NO_DATA, 2), "deciding": "regression"}
    with pytest.raises(TypeError, match="not loader context"):
        call_loader(plain, {}, data_dir=NO_DATA, rng=None, verbose=True)


def test_the_arrays_dataset_loads_the_arrays_load_data_is_given():
    x, y = np.arange(12.0).reshape(6, 2), np.array([0, 1, 0, 1, 0, 1])
    splits = load("arrays", arrays={"x_train": x, "y_train": y}, loss_task="classification")
    np.testing.assert_array_equal(splits.x_train, x.astype(np.float32))
    assert splits.info.task == "classification" and splits.info.num_classes == 2
    with pytest.raises(DataError, match="none were given"):
        load("arrays")


def test_load_data_refuses_an_unknown_loss_task(ids_npz):
    with pytest.raises(ValueError, match="loss task 'ranking'"):
        load("npz", {"path": ids_npz}, loss_task="ranking")


def test_no_data_module_passes_values_through_context_variables():
    package = Path(__file__).resolve().parents[1] / "nncli" / "data"
    users = [p.name for p in sorted(package.rglob("*.py")) if "contextvars" in p.read_text()]
    assert users == []
