"""nncli/data/contract.py and its use: a model records what its raw inputs look like, and says
so in one line when it is given inputs that look otherwise (another scale, reversed polarity,
channels-last images, a table's column in other units or held at one value); data.layout
converts channels-last images at training."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from conftest import config_text

import nncli as api
from nncli.data import contract
from nncli.data.mnist import load_mnist_small
from nncli.training import checkpoint

# A small MLP on the embedded MNIST subset: a second to train, enough to have a record.
DIGITS = {
    "name": "digits",
    "data": {"dataset": "mnist_small", "val_size": 500, "preprocess": ["scale", "flatten"]},
    "model": [{"linear": {"units": 32}}, "relu", {"linear": {"units": 10}}],
    "loss": "softmax_cross_entropy",
    "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
    "train": {"epochs": 1, "batch_size": 64},
}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """(the run directory of DIGITS, 300 embedded test images (N, 1, 28, 28) uint8, labels)."""
    folder = tmp_path_factory.mktemp("digits")
    run = api.train(DIGITS, run_dir=folder / "run")
    raw = load_mnist_small(data_dir=folder, rng=np.random.default_rng(0))
    return run.dir, raw.x_test[:300], raw.y_test[:300]


def heard(call) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_a_description_is_per_channel_for_images_and_per_column_for_tables():
    images = np.zeros((4, 3, 5, 5), np.uint8)
    images[:, 1] = 200
    images[:, 2, 2, 2] = 9  # the centre, not the border
    d = contract.describe(images)
    assert d["groups"] == "channel" and d["count"] == 4 and d["dtype"] == "uint8"
    assert d["max"] == [0, 200, 9] and d["min"] == [0, 200, 0]
    assert d["background"] == [0, 200, 0]
    table = np.array([[1.0, 10], [3, 10], [5, 10]])
    t = contract.describe(table)
    assert t["groups"] == "column" and t["mean"] == pytest.approx([3, 10])
    assert t["std"] == pytest.approx([np.sqrt(8 / 3), 0]) and t["background"] is None
    assert contract.describe(np.zeros((2, 5000)))["groups"] == "value"


def test_pixels_divided_by_255_warn_in_python_and_on_the_command_line(digits, nncli, tmp_path):
    run, x, y = digits
    model = api.load(run)
    assert heard(lambda: model.predict(x)) == []
    [message] = heard(lambda: model.predict(x / 255))
    assert "reach 1" in message and "reach 255" in message and "x * 255" in message
    assert len(heard(lambda: model.evaluate(x / 255, y))) == 1
    np.savez(tmp_path / "scaled.npz", x=x / 255, y=y)
    result = nncli("predict", run, tmp_path / "scaled.npz")
    assert result.exit_code == 0
    [line] = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert "scaled.npz" in line and "x * 255" in line
    # and the reverse: a model trained on 0..1 given 0..255
    (tmp_path / "unit.npz").write_bytes(b"")
    np.savez(tmp_path / "unit.npz", x_train=x[:200] / 255, y_train=y[:200])
    config = {**DIGITS, "name": "unit", "data": {"dataset": "npz", "path": str(tmp_path / "unit.npz"),
                                                  "preprocess": ["flatten"]}}
    unit = api.load(api.train(config, run_dir=tmp_path / "unit").dir)
    [message] = heard(lambda: unit.predict(x))
    assert "x / 255" in message


def test_reversed_polarity_warns(digits):
    run, x, _ = digits
    [message] = heard(lambda: api.load(run).predict(255 - x))
    assert "background is light" in message and "255 - x" in message


def test_channels_last_inputs_get_a_transpose_never_a_reshape(digits, nncli, tmp_path):
    run, x, _ = digits
    np.savez(tmp_path / "hwc.npz", x=x.transpose(0, 2, 3, 1))
    result = nncli("predict", run, tmp_path / "hwc.npz")
    assert result.exit_code == 1
    assert "x.transpose(0, 3, 1, 2)" in result.stderr and "reshape" not in result.stderr
    with pytest.raises(api.DataError, match=r"transpose\(0, 3, 1, 2\)") as caught:
        api.load(run).predict(x.transpose(0, 2, 3, 1))
    assert "reshape" not in str(caught.value)
    # a flat row of the right size is a reshape away, and says so
    with pytest.raises(api.DataError, match=r"x.reshape\(-1, 1, 28, 28\)"):
        api.load(run).predict(x.reshape(len(x), -1))


def test_an_unusual_input_is_warned_about_once_per_command_and_not_changed(digits, nncli, tmp_path):
    run, x, y = digits
    scaled = x / 255
    before = scaled.copy()
    assert len(heard(lambda: api.load(run).predict(scaled))) == 1
    np.testing.assert_array_equal(scaled, before)
    np.savez(tmp_path / "scaled.npz", x=scaled, y=y)
    result = nncli("predict", run, tmp_path / "scaled.npz", "--labels")  # predicts, then evaluates
    assert result.exit_code == 0 and result.stderr.count("warning:") == 1


def channels_last_arrays(tmp_path, n=360):
    """Images (N, 8, 8, 3) whose class is the channel that is lit, saved as an .npz."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    x = rng.normal(0, 0.3, (n, 8, 8, 3)).astype(np.float32)
    for c in range(3):
        x[y == c, :, :, c] += 1
    np.savez(tmp_path / "hwc.npz", x_train=x[:300], y_train=y[:300], x_test=x[300:], y_test=y[300:])
    return x[300:], y[300:]


CONV = """\
data: {dataset: npz, path: hwc.npz, val_size: 0.1}
model:
  - conv2d: {filters: 4, kernel: 3, padding: 1}
  - relu
  - global_avgpool
  - linear: {units: 3}
loss: softmax_cross_entropy
optimizer: {type: adam, lr: 0.01}
train: {epochs: 4, batch_size: 32}
"""


def test_channels_last_arrays_are_refused_at_training_without_a_layout(workdir, nncli):
    channels_last_arrays(workdir)
    (workdir / "conv.yaml").write_text(CONV)
    result = nncli("train", "conv.yaml")
    assert result.exit_code == 2
    assert "conv.yaml:1 data.layout:" in result.stderr and "data.layout: channels_last" in result.stderr
    assert "reshape" not in result.stderr and not (workdir / "runs").exists()
    # the layout said explicitly keeps the config's reading (8 channels of 8 x 3 pixels)
    kept = nncli("check", "conv.yaml", "--set", "data.layout=channels_first")
    assert kept.exit_code == 0, kept.output


def test_data_layout_channels_last_converts_at_training_and_at_predict(workdir, nncli):
    x, y = channels_last_arrays(workdir)
    (workdir / "conv.yaml").write_text(CONV + "name: conv\n")
    result = nncli("train", "conv.yaml", "--set", "data.layout=channels_last", "--run-dir", "run", "-q")
    assert result.exit_code == 0, result.output
    saved = checkpoint.load(workdir / "run" / "checkpoints" / "best.pkl")
    assert saved["data"]["layout"] == "channels_last" and saved["data"]["raw_shape"] == [8, 8, 3]
    assert saved["data"]["input_shape"] == [3, 8, 8]
    model = api.load(workdir / "run")
    assert model.input_shape == (8, 8, 3)
    assert model.evaluate(x, y)["accuracy"] > 0.9  # the lit channel is read as a channel
    with pytest.raises(api.DataError, match=r"x.transpose\(0, 2, 3, 1\)"):
        model.predict(x.transpose(0, 3, 1, 2))
    np.savez(workdir / "new.npz", x=x, y=y)
    again = nncli("predict", "run", "new.npz", "--labels")
    assert again.exit_code == 0 and "accuracy" in again.stderr
    # an export keeps the layout
    assert nncli("export", "run", "-o", "conv.npz").exit_code == 0
    np.testing.assert_array_equal(api.load(workdir / "conv.npz").predict(x), model.predict(x))


def test_a_csv_shape_with_channels_last_names_the_layout_option(workdir, nncli):
    rng = np.random.default_rng(1)
    rows = np.hstack([rng.integers(0, 2, (20, 1)), rng.integers(0, 256, (20, 16 * 16))])
    np.savetxt(workdir / "img.csv", rows, fmt="%d", delimiter=",")
    (workdir / "c.yaml").write_text(
        "data: {dataset: csv, path: img.csv, header: false, target: 0, shape: [16, 16, 1],"
        " pixel_max: 255}\nmodel: [flatten, {linear: {units: 2}}]\nloss: softmax_cross_entropy\n"
        "optimizer: {type: sgd, lr: 0.1}\ntrain: {epochs: 1, batch_size: 8}\n")
    result = nncli("check", "c.yaml")
    assert result.exit_code == 2 and "data.layout: channels_last" in result.stderr
    assert nncli("check", "c.yaml", "--set", "data.layout=channels_last").exit_code == 0


# the conftest's sine config on a CSV of angles and speeds (table()), the target its sine
SINE = {
    "seed": 0,
    "data": {"dataset": "csv", "path": "train.csv", "target": "sine", "preprocess": ["standardize"]},
    "train": {"epochs": 2, "batch_size": 32},
}


def table(path, angle, speed):
    rows = ["angle,speed,sine"]
    rows += [f"{a:.5f},{s:.5f},{np.sin(a):.5f}" for a, s in zip(angle, speed, strict=True)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_tables_column_far_off_or_held_at_one_value_is_named(workdir, nncli):
    rng = np.random.default_rng(2)
    table(workdir / "train.csv", rng.uniform(0, 6.28, 200), rng.uniform(10, 20, 200))
    (workdir / "sine.yaml").write_text(config_text("sine", **SINE))
    assert nncli("train", "sine.yaml", "--run-dir", "run", "-q").exit_code == 0
    narrow = table(workdir / "in.csv", rng.uniform(1, 2, 20), rng.uniform(12, 14, 20))
    inside = nncli("predict", "run", narrow)
    assert inside.exit_code == 0 and "warning" not in inside.stderr  # a narrower range is fine
    degrees = table(workdir / "deg.csv", rng.uniform(0, 360, 20), rng.uniform(10, 20, 20))
    degrees = nncli("predict", "run", degrees)
    assert degrees.exit_code == 0
    [line] = [line for line in degrees.stderr.splitlines() if line.startswith("warning:")]
    assert "'angle' averages" in line and "training: " in line and "'speed'" not in line
    held = nncli("predict", "run", table(workdir / "held.csv", rng.uniform(0, 6, 20), np.full(20, 15.0)))
    [line] = [line for line in held.stderr.splitlines() if line.startswith("warning:")]
    assert "'speed' is 15 in every input" in line


def test_a_test_set_in_other_units_is_warned_about_at_training_and_by_eval(workdir, nncli):
    rng = np.random.default_rng(3)
    table(workdir / "train.csv", rng.uniform(0, 6.28, 200), rng.uniform(10, 20, 200))
    table(workdir / "test.csv", rng.uniform(0, 360, 50), rng.uniform(10, 20, 50))
    (workdir / "sine.yaml").write_text(config_text("sine", {"data.test_path": "test.csv"}, **SINE))
    result = nncli("train", "sine.yaml", "--run-dir", "run", "-q")
    assert result.exit_code == 0
    assert "warning: sine.yaml:4 data: the test set: 1 column lies far outside" in result.stderr
    evaluated = nncli("eval", "run")
    assert evaluated.exit_code == 0 and "the test split: 1 column lies far outside" in evaluated.stderr
    assert "warning" not in nncli("eval", "run", "--split", "train").stderr


def test_non_finite_inputs_are_refused(digits):
    run, x, _ = digits
    bad = x.astype(np.float32)
    bad[3, 0, 5, 5] = np.nan
    with pytest.raises(api.DataError, match="sample 3 holds a value that is missing, not finite"):
        api.load(run).predict(bad)


@pytest.mark.parametrize("damage", [
    {"groups": "pixels"},
    {"min": [0.0, 1.0]},
    {"max": ["a"]},
    {"std": [float("nan")]},
    {"background": [0.0, 0.0]},
])
def test_a_crafted_description_is_refused_in_one_line(digits, tmp_path, damage):
    run, _, _ = digits
    saved = checkpoint.load(run / "checkpoints" / "best.pkl")
    del saved["path"]
    saved["data"]["inputs"] = {**saved["data"]["inputs"], **damage}
    crafted = tmp_path / "crafted.pkl"
    crafted.write_bytes(pickle.dumps(saved))
    with pytest.raises(api.CheckpointError, match="crafted.pkl"):
        api.load(crafted)


def test_a_checkpoint_without_a_description_still_predicts_without_a_word(digits, tmp_path):
    run, x, _ = digits
    saved = checkpoint.load(run / "checkpoints" / "best.pkl")
    del saved["path"]
    del saved["data"]["inputs"], saved["data"]["layout"]
    older = tmp_path / "older.pkl"
    older.write_bytes(pickle.dumps(saved))
    assert heard(lambda: api.load(older).predict(x / 255)) == []


def test_a_yes_no_column_of_one_kind_is_ordinary_but_a_measurement_held_fixed_is_not():
    rng = np.random.default_rng(4)
    trained = contract.describe(np.column_stack([rng.integers(0, 2, 500), rng.normal(5, 1, 500)]))
    assert trained["levels"] == [2, 20]
    ones = contract.describe(np.column_stack([np.ones(20), rng.normal(5, 1, 20)]))
    assert contract.differences(trained, ones, source="x.csv", names=["smoker", "weight"]) == []
    held = contract.describe(np.column_stack([rng.integers(0, 2, 20), np.full(20, 5.0)]))
    [line] = contract.differences(trained, held, source="x.csv", names=["smoker", "weight"])
    assert line.startswith("x.csv: 1 column holds one value") and "'weight' is 5 in every input" in line
    # fewer than 10 inputs say too little to tell
    few = contract.describe(np.column_stack([rng.integers(0, 2, 5), np.full(5, 5.0)]))
    assert contract.differences(trained, few, source="x.csv") == []


def test_flat_rows_for_a_colour_model_are_told_both_orders(workdir):
    x, y = channels_last_arrays(workdir)
    images = x.transpose(0, 3, 1, 2)
    config = {"name": "rgb", "data": {"dataset": "arrays"},
              "model": [{"conv2d": {"filters": 2, "kernel": 3}}, "flatten", {"linear": {"units": 3}}],
              "loss": "softmax_cross_entropy", "optimizer": {"type": "sgd", "lr": 0.1},
              "train": {"epochs": 1, "batch_size": 16}}
    model = api.load(api.train(config, data={"x_train": images, "y_train": y}, run_dir="rgb").dir)
    with pytest.raises(api.DataError) as caught:
        model.predict(x.reshape(len(x), -1))
    message = str(caught.value)
    assert "x.reshape(-1, 3, 8, 8)" in message
    assert "x.reshape(-1, 8, 8, 3).transpose(0, 3, 1, 2)" in message


def test_a_count_column_of_one_common_value_is_ordinary():
    rng = np.random.default_rng(5)
    kids = rng.choice(4, 2000, p=[0.7, 0.15, 0.1, 0.05])
    trained = contract.describe(np.column_stack([kids, rng.normal(0, 1, 2000)]))
    none = contract.describe(np.column_stack([np.zeros(12), rng.normal(0, 1, 12)]))
    assert contract.differences(trained, none, source="x") == []


def test_a_column_in_other_units_around_the_same_mean_is_named():
    rng = np.random.default_rng(6)
    x = rng.normal(0, 1, (2000, 2))
    trained = contract.describe(x)
    given = contract.describe(x[:200] * [1, 100])
    [line] = contract.differences(trained, given, source="x", names=["a", "b"])
    assert "'b' ranges from" in line and "'a'" not in line
    assert contract.differences(trained, contract.describe(x[:200]), source="x") == []


def test_images_mapped_to_minus_one_one_are_told_the_inverse_map(digits):
    run, x, _ = digits
    [message] = heard(lambda: api.load(run).predict(x / 127.5 - 1))
    assert "(x + 1) * 127.5" in message
    # and values that reach below the training range are not called a reversed polarity
    [message] = heard(lambda: api.load(run).predict((x / 127.5 - 1) * 255))
    assert "values range from -255" in message and "polarity" not in message


def test_channels_last_named_for_channels_first_arrays_is_refused(workdir, nncli):
    channels_last_arrays(workdir)
    arrays = dict(np.load(workdir / "hwc.npz"))
    np.savez(workdir / "hwc.npz", **{k: v.transpose(0, 3, 1, 2) if k.startswith("x") else v
                                     for k, v in arrays.items()})
    (workdir / "conv.yaml").write_text(CONV)
    result = nncli("check", "conv.yaml", "--set", "data.layout=channels_last")
    assert result.exit_code == 2 and "look channels-first (3 channels of 8x8)" in result.stderr
    assert nncli("check", "conv.yaml").exit_code == 0
