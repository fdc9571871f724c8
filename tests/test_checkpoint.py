"""nncli/training/checkpoint.py: what a checkpoint holds, how it is saved and found, what `load`
refuses; and that the files nncli wrote at commit 2233a71 (tests/data/from_2233a71, see its
README) still load, evaluate, predict and resume as they did then. The damaged-file cases
(flipped bytes, truncation, hostile pickles) are in test_faults_files.py."""

from __future__ import annotations

import csv
import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from nncli import __version__
from nncli.errors import CheckpointError
from nncli.training import checkpoint

OLD = Path(__file__).resolve().parent / "data" / "from_2233a71"


@pytest.fixture(scope="module")
def run(tmp_path_factory, spiral, nncli) -> Path:
    """The spiral config trained for 2 epochs: its run directory."""
    folder = tmp_path_factory.mktemp("checkpoint")
    (folder / "spiral.yaml").write_text(spiral({"train.epochs": 2}))
    result = nncli("train", folder / "spiral.yaml", "--run-dir", folder / "run", "--quiet")
    assert result.exit_code == 0, result.output
    return folder / "run"


def documented_keys() -> list[str]:
    """The keys the module's docstring lists, one a line, in its indented table."""
    table = checkpoint.__doc__.split("with these keys")[1].split("`load` adds")[0]
    return re.findall(r"^    (\w+)  ", table, re.MULTILINE)


def test_the_docstring_names_exactly_the_keys_a_run_writes(run):
    saved = checkpoint.load(run / "checkpoints" / "last.pkl")
    assert saved.pop("path") == str(run / "checkpoints" / "last.pkl")  # added by load, not written
    assert documented_keys() == list(saved)  # and in the order they are written
    assert saved["format_version"] == checkpoint.FORMAT_VERSION and saved["nncli_version"] == __version__
    assert saved["epoch"] == 2 and saved["training"]["epoch"] == 2
    assert [row["epoch"] for row in saved["training"]["history"]] == [1, 2]


def test_a_saved_state_loads_back_equal_with_its_dtypes(tmp_path):
    state = {
        "config": {"name": "x", "seed": 3},
        "model": {"params": {"layers.0.W": np.arange(6, dtype=np.float32).reshape(2, 3)}},
        "epoch": 4,
        "rng": np.random.default_rng(7).bit_generator.state,
        "nested": [1, (2.5, None), {"s": "é"}, np.array([1, 2], dtype=np.int64)],
    }
    checkpoint.save(tmp_path / "c.pkl", state)
    loaded = checkpoint.load(tmp_path / "c.pkl")
    weights = loaded["model"]["params"]["layers.0.W"]
    assert weights.dtype == np.float32 and np.array_equal(weights, state["model"]["params"]["layers.0.W"])
    assert loaded["rng"] == state["rng"] and loaded["config"] == state["config"] and loaded["epoch"] == 4
    assert loaded["nested"][:3] == [1, (2.5, None), {"s": "é"}]
    assert loaded["nested"][3].dtype == np.int64 and list(loaded["nested"][3]) == [1, 2]
    assert loaded["format_version"] == checkpoint.FORMAT_VERSION


def test_saving_over_a_checkpoint_replaces_it_whole_and_leaves_no_other_file(tmp_path):
    path = tmp_path / "last.pkl"
    checkpoint.save(path, {"config": {}, "model": {"w": np.zeros(1000)}, "epoch": 1})
    checkpoint.save(path, {"config": {}, "model": {"w": np.ones(3)}, "epoch": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["last.pkl"]
    loaded = checkpoint.load(path)
    assert loaded["epoch"] == 2 and list(loaded["model"]["w"]) == [1.0, 1.0, 1.0]
    assert path.read_bytes().startswith(checkpoint.MAGIC)


def test_a_run_directory_resolves_to_its_best_checkpoint_else_its_last(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    with pytest.raises(CheckpointError, match="is a directory with no checkpoints/best.pkl or"):
        checkpoint.resolve(tmp_path / "run")
    (folder / "last.pkl").write_bytes(b"")
    assert checkpoint.resolve(tmp_path / "run") == folder / "last.pkl"
    (folder / "best.pkl").write_bytes(b"")
    assert checkpoint.resolve(tmp_path / "run") == folder / "best.pkl"
    assert checkpoint.resolve(folder) == folder / "best.pkl"  # the run's checkpoints/ itself
    with pytest.raises(CheckpointError, match=r"checkpoint .*nothing.pkl does not exist"):
        checkpoint.resolve(tmp_path / "nothing.pkl")


def write_pickle(path: Path, state) -> Path:
    """A checkpoint as nncli wrote them before digests: a bare pickle."""
    path.write_bytes(pickle.dumps(state))
    return path


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"config": {}, "model": {}}, "is not an nncli checkpoint (it lacks the expected fields)"),
        ([1, 2, 3], "is not an nncli checkpoint (it lacks the expected fields)"),
        ({"format_version": 0, "config": {}, "model": {}, "epoch": 0}, "bad format version 0"),
        ({"format_version": "1", "config": {}, "model": {}, "epoch": 0}, "bad format version '1'"),
        ({"format_version": checkpoint.FORMAT_VERSION + 1, "config": {}, "model": {}, "epoch": 0},
         f"has checkpoint format {checkpoint.FORMAT_VERSION + 1}, newer than this nncli"),
    ],
)
def test_what_is_not_a_checkpoint_of_this_format_is_refused_in_one_sentence(tmp_path, state, message):
    path = write_pickle(tmp_path / "c.pkl", state)
    with pytest.raises(CheckpointError) as caught:
        checkpoint.load(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_config_given_as_a_checkpoint_says_how_to_train_it(tmp_path):
    (tmp_path / "c.yaml").write_text("name: x\n")
    with pytest.raises(CheckpointError, match=r"is a config, not a checkpoint: train it \(nncli train"):
        checkpoint.load(tmp_path / "c.yaml")
    # a run's own config.yaml: the run is what to give
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config.yaml").write_text("name: x\n")
    with pytest.raises(CheckpointError) as caught:
        checkpoint.load(tmp_path / "config.yaml")
    run = tmp_path
    said = f"{run / 'config.yaml'} is the config of the run {run}: give the run directory {run}"
    assert str(caught.value) == said


def test_an_onnx_export_given_as_a_checkpoint_says_what_reads_it(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07\x12\x05nncli")
    with pytest.raises(CheckpointError) as caught:
        checkpoint.load(tmp_path / "m.onnx")
    assert str(caught.value) == (f"{tmp_path / 'm.onnx'} is an ONNX export, for onnxruntime and other tools;"
                                 " nncli reads a run directory, a checkpoint (.pkl) or an .npz export")


# Files written by 2233a71 ------------------------------------------------------------------

EXPECTED = json.loads((OLD / "expected.json").read_text()) if OLD.is_dir() else {}


def assert_same_metrics(got: dict, want: dict) -> None:
    """An evaluation as 2233a71 printed it: the same fields, the same counts, and numbers equal
    within what another BLAS may change (float32 sums in another order)."""
    assert sorted(got) == sorted(want)
    assert got["samples"] == want["samples"] and got["classes"] == want["classes"]
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)
    assert abs(got["accuracy"] - want["accuracy"]) * got["samples"] <= 1  # a tie may flip one
    assert np.abs(np.array(got["confusion_matrix"]) - want["confusion_matrix"]).sum() <= 2


@pytest.mark.parametrize(("name", "file"), [("mlp", "mlp_run/checkpoints/last.pkl"), ("cnn", "cnn_last.pkl")])
def test_a_checkpoint_written_by_2233a71_evaluates_as_it_did(nncli, name, file):
    saved = checkpoint.load(OLD / file)
    assert not (OLD / file).read_bytes().startswith(checkpoint.MAGIC)  # a bare pickle, from before digests
    assert saved["nncli_version"] == "0.1.0" and saved["format_version"] == 1
    result = nncli("eval", OLD / file, "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert got.pop("checkpoint") == str(OLD / file)
    assert_same_metrics(got, EXPECTED[f"{name}_eval"])


def test_a_checkpoint_written_by_2233a71_predicts_as_it_did(nncli):
    result = nncli("predict", OLD / "cnn_last.pkl", OLD / "digits.npz", "--labels", "--json")
    assert result.exit_code == 0, result.output
    got, want = json.loads(result.stdout), EXPECTED["cnn_predict"]
    assert_same_metrics(got["metrics"], want["metrics"])
    pairs = list(zip(got["predictions"], want["predictions"], strict=True))
    assert [Path(g["input"]).name for g, _ in pairs] == [w["input"] for _, w in pairs]
    assert [g["class"] for g, _ in pairs] == [w["class"] for _, w in pairs]
    probabilities = [w["probability"] for _, w in pairs]
    assert [g["probability"] for g, _ in pairs] == pytest.approx(probabilities, abs=1e-4)
    # the run directory: its best checkpoint, the last one too (its best epoch was its last)
    result = nncli("predict", OLD / "mlp_run", OLD / "points.npz", "--top-k", 2, "--json")
    assert result.exit_code == 0, result.output
    got, want = json.loads(result.stdout)["predictions"], EXPECTED["mlp_predict"]["predictions"]
    assert [[t["class"] for t in g["top"]] for g in got] == [[t["class"] for t in w["top"]] for w in want]
    assert [t["probability"] for g in got for t in g["top"]] == pytest.approx(
        [t["probability"] for w in want for t in w["top"]], abs=1e-4)


def test_a_run_written_by_2233a71_resumes_as_it_did(nncli, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(OLD / "mlp_run", run)
    result = nncli("train", "--resume", run, "--quiet", "--set", "train.epochs=3")
    assert result.exit_code == 0, result.output
    with open(run / "metrics.csv", newline="") as f:
        got = [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in csv.DictReader(f)]
    want = EXPECTED["mlp_resumed_metrics"]
    assert got[:2] == want[:2]  # the rows it had, as they were
    assert [list(row) for row in got] == [list(row) for row in want]
    for key, value in want[2].items():
        assert float(got[2][key]) == pytest.approx(float(value), rel=1e-5, abs=1e-7), key
    assert (run / "checkpoints" / "last.pkl").read_bytes().startswith(checkpoint.MAGIC)  # saved anew
    assert checkpoint.load(run)["epoch"] == 3
