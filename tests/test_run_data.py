"""Runs that know their data: paths read from the config's folder, a fingerprint in every
checkpoint that stops a look at changed data, and inputs far from any sensible scale flagged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from conftest import config_text

from nncli.training import checkpoint

# the spiral config on a CSV of 120 rows (write_table): 3 features, labels "yes" and "no"
TABLE = {
    "name": "table",
    "seed": 1,
    "data": {"dataset": "csv", "path": "table.csv", "target": "label", "val_size": 0.25,
             "preprocess": ["standardize"]},
    "model": [{"linear": {"units": 8}}, "tanh", {"linear": {"units": 2}}],
    "optimizer": {"type": "adam", "lr": 0.01},
    "schedule": None,
    "train": {"epochs": 3, "batch_size": 16},
}


def write_table(path: Path, seed: int = 0, rows: int = 120) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 3))
    labels = ["yes" if v > 0 else "no" for v in x[:, 0] + 0.5 * x[:, 1]]
    lines = ["a,b,c,label"] + [f"{a:.4f},{b:.4f},{c:.4f},{y}" for (a, b, c), y in zip(x, labels, strict=True)]
    path.write_text("\n".join(lines) + "\n")


def test_relative_data_paths_are_read_from_the_configs_folder(workdir, nncli, monkeypatch):
    (workdir / "project").mkdir()
    (workdir / "project" / "table.yaml").write_text(config_text(**TABLE))
    write_table(workdir / "project" / "table.csv")
    result = nncli("train", "project/table.yaml", "--run-dir", "run", "--quiet")
    assert result.exit_code == 0, result.output
    stored = yaml.safe_load((workdir / "run" / "config.yaml").read_text())["data"]["path"]
    assert stored == str((workdir / "project" / "table.csv").resolve())
    # the run no longer depends on where it is started from
    (workdir / "elsewhere").mkdir()
    monkeypatch.chdir(workdir / "elsewhere")
    assert nncli("eval", "../run", "--split", "val").exit_code == 0


def test_the_data_dir_is_looked_in_after_the_configs_folder(workdir, nncli):
    (workdir / "data").mkdir()
    write_table(workdir / "data" / "table.csv")
    (workdir / "table.yaml").write_text(config_text(**TABLE))
    missing = nncli("check", "table.yaml")
    assert missing.exit_code == 1
    [line] = missing.stderr.strip().splitlines()
    assert line.startswith("error: table.yaml:5 data.path: table.csv not found; looked in")
    assert str(workdir / "table.csv") in line and "--data-dir" in line
    found = nncli("check", "table.yaml", "--data-dir", workdir / "data")
    assert found.exit_code == 0, found.output


def train_table(workdir, nncli) -> Path:
    (workdir / "table.yaml").write_text(config_text(**TABLE))
    write_table(workdir / "table.csv")
    result = nncli("train", "table.yaml", "--run-dir", "run", "--quiet", "--set", "train.epochs=2")
    assert result.exit_code == 0, result.output
    return workdir / "run"


def test_a_checkpoint_records_its_data(workdir, nncli):
    run = train_table(workdir, nncli)
    data = checkpoint.load(run / "checkpoints" / "last.pkl")["data"]
    assert data["dataset"] == "csv" and data["class_names"] == ["no", "yes"]
    assert (data["task"], data["input_shape"], data["num_outputs"]) == ("classification", [3], 2)
    assert len(data["fingerprint"]) == 32


def test_changed_data_is_refused_where_the_split_would_mislead(workdir, nncli):
    run = train_table(workdir, nncli)
    write_table(workdir / "table.csv", seed=5)  # the same file name, other rows

    val = nncli("eval", run, "--split", "val")
    assert val.exit_code == 1
    [line] = val.stderr.strip().splitlines()
    assert "the data has changed since" in line and "--allow-data-change" in line
    assert "could hold training rows" in line

    allowed = nncli("eval", run, "--split", "val", "--allow-data-change", "--json")
    assert allowed.exit_code == 0, allowed.output
    assert allowed.stderr.startswith("warning: the data has changed since")

    train = nncli("eval", run, "--split", "train")
    assert train.exit_code == 0 and "warning: the data has changed" in train.stderr

    checked = nncli("gradcheck", "--checkpoint", run)
    assert checked.exit_code == 1 and "--allow-data-change" in checked.stderr
    assert nncli("gradcheck", "--checkpoint", run, "--allow-data-change").exit_code == 0

    resume = nncli("train", "--resume", run, "--quiet", "--set", "train.epochs=3")
    assert resume.exit_code == 1 and "--allow-data-change" in resume.stderr
    resumed = nncli("train", "--resume", run, "--quiet", "--set", "train.epochs=3", "--allow-data-change")
    assert resumed.exit_code == 0, resumed.output
    assert "warning: the data has changed" in resumed.stderr


def test_unchanged_data_passes_without_a_word(workdir, nncli):
    run = train_table(workdir, nncli)
    result = nncli("eval", run, "--split", "val")
    assert result.exit_code == 0 and result.stderr == ""


def test_unscaled_pixels_are_flagged_with_the_fix(workdir, nncli):
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml").read_text())
    config["data"]["preprocess"] = ["flatten"]
    config["train"]["epochs"] = 1
    (workdir / "raw.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    check = nncli("check", "raw.yaml")
    assert check.exit_code == 0, check.output
    [warning] = [line for line in check.stdout.splitlines() if line.startswith("warning:")]
    assert "raw.yaml:" in warning and "the inputs reach 255" in warning
    assert "add scale to data.preprocess (it divides pixels by 255)" in warning
    train = nncli("train", "raw.yaml", "--quiet")
    assert warning in train.stderr
    scaled = nncli("check", "raw.yaml", "--set", "data.preprocess=[scale, flatten]")
    assert "warning" not in scaled.stdout
