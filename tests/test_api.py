"""The Python API: the README's example as written, training on in-memory arrays, errors as
exceptions and silence unless asked."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

import nncli

ROOT = Path(__file__).resolve().parents[1]


def readme_python(section: str = "### From Python") -> str:
    """The one ```python block of the README's `section` (up to the next heading)."""
    text = (ROOT / "README.md").read_text()
    body = re.split(r"\n#{2,3} ", text.split(f"\n{section}\n", 1)[1], maxsplit=1)[0]
    [block] = re.findall(r"```python\n(.*?)```", body, re.S)
    return block


def test_the_readme_example_runs_as_written(workdir, capsys):
    shutil.copytree(ROOT / "configs", workdir / "configs")
    scope: dict = {}
    exec(compile(readme_python(), "README.md", "exec"), scope)
    run, model, report = scope["run"], scope["model"], scope["report"]
    assert run.dir.is_dir() and (run.dir / "checkpoints" / "best.pkl").is_file()
    assert report["accuracy"] > 0.9  # XOR of the signs, learned
    assert scope["probs"].shape == (200, 2)
    assert np.allclose(scope["probs"].sum(axis=1), 1, atol=1e-6)
    assert list(scope["labels"]) == list(scope["probs"].argmax(axis=1))
    assert (workdir / "xor.npz").is_file()
    assert model.task == "classification" and model.input_shape == (2,)
    printed = capsys.readouterr()
    assert printed.err == ""  # training printed nothing: only the example's own print calls
    assert len(printed.out.strip().splitlines()) == 3


def test_the_api_loads_only_when_used():
    code = "import sys, nncli; print('nncli.api' in sys.modules, 'click' in sys.modules); nncli.load"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def xor(seed: int = 0, n: int = 400):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    return x, (x[:, 0] * x[:, 1] > 0).astype(np.int64)


XOR = {
    "name": "xor",
    "seed": 5,
    "data": {"dataset": "arrays", "val_size": 0.25, "preprocess": ["standardize"]},
    "model": [{"linear": {"units": 16}}, "relu", {"dropout": {"p": 0.1}}, {"linear": {"units": 2}}],
    "loss": "softmax_cross_entropy",
    "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
    "train": {"epochs": 6, "batch_size": 16},
}


def command(*args):
    """`nncli ARGS...` in-process (the fixture of that name would hide the module here)."""
    from click.testing import CliRunner

    from nncli.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def test_arrays_train_as_the_same_arrays_saved_to_npz(workdir):
    x, y = xor()
    data = {"x_train": x[:300], "y_train": y[:300], "x_test": x[300:], "y_test": y[300:]}
    from_memory = nncli.train(XOR, data=data, run_dir="memory")
    np.savez(workdir / "xor.npz", **data)
    config = {**XOR, "data": {**XOR["data"], "dataset": "npz", "path": "xor.npz"}}
    (workdir / "xor.yaml").write_text(yaml.safe_dump(config))
    assert command("train", "xor.yaml", "-q", "--run-dir", "file").exit_code == 0
    from_file = json.loads((workdir / "file" / "summary.json").read_text())
    assert from_memory.summary["test"] == from_file["test"]
    assert [row["train_loss"] for row in from_memory.history] == [
        float(line.split(",")[1]) for line in (workdir / "file" / "metrics.csv").read_text().splitlines()[1:]
    ]
    # the arrays run's checkpoint predicts and evaluates without its arrays
    model = nncli.load(from_memory.dir)
    assert model.evaluate(x[300:], y[300:])["accuracy"] == from_file["test"]["accuracy"]


def test_resuming_an_arrays_run_needs_the_arrays_again(workdir):
    x, y = xor()
    data = {"x_train": x, "y_train": y}
    run = nncli.train(XOR, data=data, run_dir="run")
    result = command("train", "--resume", run.dir, "--set", "train.epochs=8")
    assert result.exit_code != 0
    assert "none were given: train (or resume) it from Python with the same arrays" in result.stderr
    longer = nncli.train(None, resume=run.dir, overrides={"train.epochs": 8}, data=data)
    assert len(longer.history) == 8 and longer.dir == run.dir


def test_errors_are_exceptions_not_exits(workdir):
    x, y = xor()
    bad = {**XOR, "model": [{"linear": {"units": -3}}]}
    with pytest.raises(nncli.ConfigError, match=r"model\[0\]\.linear\.units"):
        nncli.train(bad, data={"x_train": x, "y_train": y})
    with pytest.raises(nncli.DataError, match="none were given"):
        nncli.train(XOR)
    with pytest.raises(nncli.DataError, match="x_test has samples of shape"):
        nncli.train(XOR, data={"x_train": x, "y_train": y, "x_test": x[:, :1], "y_test": y})
    with pytest.raises(nncli.ConfigError, match="it takes x_train, y_train"):
        nncli.train(XOR, data={"x": x})
    with pytest.raises(nncli.CheckpointError, match="does not exist"):
        nncli.load(workdir / "nothing.pkl")
    run = nncli.train(XOR, data={"x_train": x, "y_train": y}, overrides={"train.epochs": 1})
    model = run.load()
    with pytest.raises(nncli.DataError, match=r"samples of shape \(3,\)"):
        model.predict(np.zeros((4, 3)))
    with pytest.raises(nncli.DataError, match="which the model does not know"):
        model.evaluate(x[:2], ["yes", "no"])


def test_warnings_on_the_config_are_python_warnings(workdir):
    x, y = xor()
    config = {**XOR, "model": [*XOR["model"], "relu"], "train": {"epochs": 1, "batch_size": 16}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = nncli.train(config, data={"x_train": x, "y_train": y})
    assert any("relu" in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert any("relu" in note for note in run.notes)


def test_predict_classes_are_class_names_where_the_data_has_them(workdir):
    x, y = xor()
    names = np.where(y == 1, "same", "different")
    run = nncli.train({**XOR, "data": {"dataset": "arrays"}}, data={"x_train": x, "y_train": names})
    model = run.load()
    assert model.classes == ["different", "same"]
    predicted = model.predict_classes(x)
    assert set(predicted) <= {"different", "same"}
    report = model.evaluate(x, names)
    assert report["classes"] == ["different", "same"]
    assert report["accuracy"] == pytest.approx(np.mean(predicted == names))


def test_override_errors_name_overrides_not_the_command_line_option(workdir):
    x, y = xor()
    data = {"x_train": x, "y_train": y}
    with pytest.raises(nncli.ConfigError) as caught:
        nncli.train(XOR, data=data, overrides={"train.epochz": 3})
    assert str(caught.value).startswith('overrides train.epochz: unknown key (did you mean "epochs"?)')
    with pytest.raises(nncli.ConfigError, match=r"^overrides train\.epochs: expected a positive integer"):
        nncli.train(XOR, data=data, overrides={"train.epochs": -3})
    with pytest.raises(nncli.ConfigError, match=r"^overrides model\[7\]\.linear\.units: model\[7\] does not"):
        nncli.train(XOR, data=data, overrides={"model[7].linear.units": 3})
    run = nncli.train(XOR, data=data, overrides={"train.epochs": 1}, run_dir="run")
    with pytest.raises(nncli.ConfigError, match=r"^overrides seed: a resumed run keeps"):
        nncli.train(None, resume=run.dir, data=data, overrides={"seed": 3})
    with pytest.raises(nncli.NncliError, match=r"extend it with overrides=\{'train.epochs': N\}"):
        nncli.train(None, resume=run.dir, data=data)


def test_the_train_commands_rules_in_pythons_words(workdir):
    """The config-or-resume rule is the train command's, worded for the caller (`resume=`)."""
    data = dict(zip(("x_train", "y_train"), xor(), strict=True))
    with pytest.raises(nncli.ConfigError, match=r"^give config or resume=, not both .* with overrides\)"):
        nncli.train(XOR, resume="somewhere", data=data)
    with pytest.raises(nncli.ConfigError, match=r"^missing config: .*\(or resume= RUN_DIR\)"):
        nncli.train(None, data=data)
    with pytest.raises(nncli.ConfigError, match=r"^run_dir= and resume= cannot be combined"):
        nncli.train(None, resume="somewhere", run_dir="elsewhere", data=data)
    assert not (workdir / "runs").exists()


def test_a_default_learning_rate_is_a_note_of_the_run(workdir):
    x, y = xor()
    config = {**XOR, "optimizer": "adam", "train": {"epochs": 1, "batch_size": 16}}
    run = nncli.train(config, data={"x_train": x, "y_train": y})
    assert any("no lr given; adam uses its usual default, lr 0.001" in note for note in run.notes), run.notes
    assert run.load().config["optimizer"]["lr"] == 0.001


def test_one_hot_labels_train_and_evaluate_as_their_classes(workdir):
    x, y = xor()
    one_hot = np.eye(2, dtype=np.float32)[y]  # keras.utils.to_categorical(y)
    data = {"x_train": x[:300], "y_train": y[:300], "x_test": x[300:], "y_test": y[300:]}
    numbers = nncli.train(XOR, data=data, run_dir="numbers")
    keras = nncli.train(XOR, data={**data, "y_train": one_hot[:300], "y_test": one_hot[300:]}, run_dir="k")
    assert keras.summary["test"] == numbers.summary["test"]
    untimed = [[{k: v for k, v in row.items() if k != "epoch_time_s"} for row in run.history]
               for run in (keras, numbers)]
    assert untimed[0] == untimed[1]
    assert any("y_train holds one-hot rows of 2 classes" in note for note in keras.notes), keras.notes
    model = keras.load()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = model.evaluate(x[300:], one_hot[300:])
    assert report == model.evaluate(x[300:], y[300:])
    messages = [str(w.message) for w in caught]
    assert any("one-hot rows of 2 classes" in message for message in messages), messages
    # under mse, columns of 0 and 1 are two regression targets
    mse = nncli.train({**XOR, "loss": "mse"}, data={"x_train": x, "y_train": one_hot}, run_dir="mse")
    assert mse.load().task == "regression"
    assert not any("one-hot" in note for note in mse.notes)
