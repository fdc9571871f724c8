"""`nncli eval` end to end on runs trained in the test, checked against numbers computed here."""

from __future__ import annotations

import csv
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import config_text

from nncli.data import load_data
from nncli.data.preprocess import Preprocessor
from nncli.training import checkpoint

# the spiral config, standardized, evaluated in batches that do not divide the splits
EVAL_CHANGES = {"data.preprocess": ["standardize"], "train.eval_batch_size": 10}


@pytest.fixture(scope="module")
def trained(nncli):
    """Train `text` (YAML) with `overrides` in `folder`; the run directory."""

    def train(folder: Path, text: str, *overrides: str) -> Path:
        (folder / "config.yaml").write_text(text)
        run = folder / "run"
        sets = [arg for o in overrides for arg in ("--set", o)]
        result = nncli("train", folder / "config.yaml", "--run-dir", run, "--quiet", *sets)
        assert result.exit_code == 0, result.output
        return run

    return train


@pytest.fixture(scope="module")
def spiral_run(tmp_path_factory, trained, spiral) -> Path:
    return trained(tmp_path_factory.mktemp("spiral"), spiral(EVAL_CHANGES))


@pytest.fixture(scope="module")
def eval_json(nncli):
    def run(*args) -> dict:
        result = nncli("eval", *args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)  # the whole of stdout is one JSON object

    return run


def spiral_test_set(tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """The raw (unpreprocessed) test split of the spiral config, drawn as training drew it."""
    splits = load_data(
        "spiral",
        {"classes": 3, "points_per_class": 60},
        val_size=0.2,
        preprocess=[],
        data_dir=tmp_path,
        rng=np.random.default_rng(3),
    )
    return splits.x_test, splits.y_test


def spiral_logits(saved: dict, x: np.ndarray) -> np.ndarray:
    """The spiral model by hand: standardize, linear, relu, (dropout: identity), linear."""
    [step] = saved["preprocessor"]["steps"]
    assert step["name"] == "standardize"
    x = (x - step["state"]["mean"]) / step["state"]["std"]
    p = saved["model"]["params"]
    hidden = np.maximum(x @ p["layers.0.W"] + p["layers.0.b"], 0)
    return hidden @ p["layers.3.W"] + p["layers.3.b"]


def test_eval_accuracy_equals_an_independent_count(spiral_run, tmp_path, eval_json):
    report = eval_json(str(spiral_run / "checkpoints" / "best.pkl"))
    saved = checkpoint.load(spiral_run / "checkpoints" / "best.pkl")
    x, y = spiral_test_set(tmp_path)
    predicted = spiral_logits(saved, x).argmax(axis=1)
    hits = int(np.count_nonzero(predicted == y))

    assert report["split"] == "test" and report["samples"] == len(y) == 36
    assert report["accuracy"] == hits / len(y)
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (3, 3)
    assert matrix.sum() == len(y)
    assert np.trace(matrix) == hits
    assert matrix.sum(axis=1).tolist() == np.bincount(y, minlength=3).tolist() == report["support"]
    assert matrix.sum(axis=0).tolist() == np.bincount(predicted, minlength=3).tolist()
    for k in range(3):
        assert report["recall"][k] == pytest.approx(np.mean(predicted[y == k] == k))
        assert report["precision"][k] == pytest.approx(np.mean(y[predicted == k] == k))
    # the same figures as training's summary of the best checkpoint on the test set
    summary = json.loads((spiral_run / "summary.json").read_text())
    assert report["loss"] == pytest.approx(summary["test"]["loss"], rel=1e-12)
    assert report["accuracy"] == summary["test"]["accuracy"]


def test_a_run_directory_means_its_best_checkpoint(spiral_run, eval_json):
    report = eval_json(str(spiral_run))
    assert report["checkpoint"].endswith("best.pkl")
    assert report == eval_json(str(spiral_run / "checkpoints" / "best.pkl"))


def test_the_validation_split_is_the_one_training_used(spiral_run, eval_json):
    report = eval_json(str(spiral_run), "--split", "val")
    with open(spiral_run / "metrics.csv", newline="") as f:
        rows = {int(r["epoch"]): r for r in csv.DictReader(f)}
    best = rows[report["epoch"]]
    assert report["samples"] == 36
    assert report["accuracy"] == float(best["val_acc"])
    assert report["loss"] == pytest.approx(float(best["val_loss"]), rel=1e-12)
    train = eval_json(str(spiral_run), "--split", "train")
    assert train["samples"] == 180 - 36
    assert sum(map(sum, train["confusion_matrix"])) == 144


def test_eval_applies_the_saved_statistics_instead_of_refitting(spiral_run, tmp_path, eval_json):
    saved = checkpoint.load(spiral_run / "checkpoints" / "best.pkl")
    state = {k: v for k, v in saved.items() if k not in ("format_version", "nncli_version", "path")}
    step = state["preprocessor"]["steps"][0]["state"]
    step["mean"] = step["mean"] + np.float32(0.7)
    shifted = tmp_path / "shifted.pkl"
    checkpoint.save(shifted, state)

    report = eval_json(str(shifted))
    x, y = spiral_test_set(tmp_path)
    hits = int(np.count_nonzero(spiral_logits(state, x).argmax(axis=1) == y))
    assert report["accuracy"] == hits / len(y)
    assert report["loss"] != pytest.approx(eval_json(str(spiral_run))["loss"])


def test_load_data_with_a_fitted_preprocessor_gives_the_same_arrays(tmp_path):
    def load(preprocessor=None):
        return load_data(
            "moons",
            {"samples": 200},
            val_size=40,
            preprocess=["scale", "standardize"],
            data_dir=tmp_path,
            rng=np.random.default_rng(5),
            preprocessor=preprocessor,
        )

    fitted = load()
    again = load(Preprocessor.from_state(fitted.preprocessor.state_dict()))
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(fitted, name), getattr(again, name))
    assert again.info == fitted.info


def test_human_output_and_the_confusion_matrix_plot(spiral_run, tmp_path, nncli):
    result = nncli("eval", str(spiral_run), "--plot", str(tmp_path / "cm.png"))
    assert result.exit_code == 0, result.output
    assert "on the test split, 36 samples" in result.stdout
    assert "accuracy" in result.stdout and "precision" in result.stdout
    assert "confusion matrix (rows: true class, columns: predicted class)" in result.stdout
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # with --json, stdout is the JSON object alone; the note about the file goes to stderr
    result = nncli("eval", str(spiral_run), "--json", "--plot", str(tmp_path / "cm.pdf"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["samples"] == 36
    assert "wrote" in result.stderr
    assert (tmp_path / "cm.pdf").read_bytes()[:5] == b"%PDF-"


def test_matplotlib_is_imported_only_when_a_picture_is_asked_for(spiral_run, tmp_path):
    """`nncli eval` in a fresh interpreter: without --plot, matplotlib is never loaded; with it,
    it is (which shows the probe can see it)."""

    def loaded(*extra: str) -> bool:
        code = (
            "import sys\n"
            "from nncli.cli import cli\n"
            f"cli(['eval', {str(spiral_run)!r}, '--json', *{list(extra)!r}], standalone_mode=False)\n"
            "print('matplotlib' in sys.modules, file=sys.stderr)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert json.loads(out.stdout)["samples"] == 36, out.stdout  # the evaluation did run
        return out.stderr.strip().splitlines()[-1] == "True"

    assert not loaded()
    assert loaded("--plot", str(tmp_path / "cm.svg"))
    assert (tmp_path / "cm.svg").exists()


def test_regression_metrics_of_a_sine_run(tmp_path, nncli, trained, eval_json):
    run = trained(tmp_path, config_text("sine"))
    report = eval_json(str(run))
    assert report["task"] == "regression" and "accuracy" not in report
    saved = checkpoint.load(run / "checkpoints" / "best.pkl")
    splits = load_data(
        "sine",
        {"samples": 300, "noise": 0.1},
        val_size=0.1,
        preprocess=[],
        data_dir=tmp_path,
        rng=np.random.default_rng(1),
    )
    p = saved["model"]["params"]
    x, y = np.asarray(splits.x_test, np.float64), splits.y_test.astype(np.float64)
    pred = np.tanh(x @ p["layers.0.W"] + p["layers.0.b"]) @ p["layers.2.W"] + p["layers.2.b"]
    mse = np.mean((pred - y) ** 2)
    assert report["samples"] == len(y)
    assert report["mse"] == pytest.approx(mse, rel=1e-4)
    assert report["loss"] == pytest.approx(mse, rel=1e-4)
    assert report["mae"] == pytest.approx(np.mean(np.abs(pred - y)), rel=1e-4)
    assert report["r2"] == pytest.approx(1 - np.sum((pred - y) ** 2) / np.sum((y - y.mean()) ** 2), rel=1e-4)

    result = nncli("eval", str(run), "--plot", str(tmp_path / "pred.svg"))
    assert result.exit_code == 0, result.output
    assert "MSE" in result.stdout and "R^2" in result.stdout
    assert (tmp_path / "pred.svg").read_text().lstrip().startswith("<?xml")


def test_val_split_of_a_run_without_one_is_a_clear_error(tmp_path, nncli, trained, spiral):
    run = trained(tmp_path, spiral(EVAL_CHANGES), "data.val_size=0", "train.epochs=1")
    result = nncli("eval", str(run), "--split", "val")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "has no validation split" in result.stderr
    assert "Traceback" not in result.output


@pytest.fixture
def one_line_error(nncli):
    """The single error line of `nncli eval ARGS`, which must fail and print nothing else."""

    def run(args) -> str:
        result = nncli("eval", *args)
        assert result.exit_code != 0
        assert result.stdout == ""
        assert "Traceback" not in result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        return lines[0]

    return run


def test_missing_and_broken_checkpoints_give_one_line(spiral_run, tmp_path, one_line_error):
    assert "does not exist" in one_line_error([str(tmp_path / "nothing.pkl")])
    assert "no checkpoints/best.pkl" in one_line_error([str(tmp_path)])

    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"this is not a pickle at all")
    assert "not a valid pickle" in one_line_error([str(garbage)])

    other = tmp_path / "list.pkl"
    other.write_bytes(pickle.dumps([1, 2, 3]))
    assert "not an nncli checkpoint" in one_line_error([str(other)])

    saved = checkpoint.load(spiral_run / "checkpoints" / "best.pkl")
    saved["format_version"] = checkpoint.FORMAT_VERSION + 1
    del saved["path"]
    newer = tmp_path / "newer.pkl"
    newer.write_bytes(pickle.dumps(saved))
    message = one_line_error([str(newer)])
    assert f"checkpoint format {checkpoint.FORMAT_VERSION + 1}" in message and "upgrade nncli" in message


def test_an_unsupported_plot_format_fails_before_evaluating(spiral_run, tmp_path, one_line_error):
    message = one_line_error([str(spiral_run), "--plot", str(tmp_path / "cm.jpg")])
    assert "use .png, .svg or .pdf" in message
    assert not (tmp_path / "cm.jpg").exists()
