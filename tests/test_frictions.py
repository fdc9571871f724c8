"""Small frictions a new user met: every missing key at once, typo suggestions for metrics, a
config given where a checkpoint is expected, counts in the right number, a clean install, and a
benchmark that says how to set up what it compares with."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_every_missing_top_level_key_in_one_message(workdir, nncli):
    (workdir / "x.yaml").write_text("name: x\nmodel: [relu]\n")
    result = nncli("train", "x.yaml")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: x.yaml:1 missing required keys 'data', 'loss', 'optimizer'"


def test_every_missing_option_in_one_message():
    from nncli.errors import ConfigError
    from nncli.registry import check_options

    def needs_two(*, a, b, c=1):
        return a, b, c

    with pytest.raises(ConfigError) as two:
        check_options(needs_two, {})
    assert str(two.value) == "missing required options a, b"
    with pytest.raises(ConfigError) as one:
        check_options(needs_two, {"a": 1})
    assert (one.value.key, one.value.message) == ("b", "this option is required")


def test_a_monitor_typo_gets_a_suggestion(workdir, nncli, spiral):
    (workdir / "x.yaml").write_text(spiral({"train.monitor": "val_los"}))
    result = nncli("check", "x.yaml")
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert "cannot monitor 'val_los' (did you mean \"val_loss\"?)" in line
    assert "set data.val_size" not in line  # the run has a validation split


def test_eval_of_a_config_says_it_is_a_config(workdir, nncli, spiral):
    (workdir / "x.yaml").write_text(spiral())
    result = nncli("eval", "x.yaml")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: x.yaml is a config, not a checkpoint: train it (nncli train x.yaml) and give the run"
        " directory, or a .pkl file from its checkpoints/"
    )


def test_counts_agree_with_their_nouns(workdir, nncli, spiral):
    (workdir / "x.yaml").write_text(spiral({"train.epochs": 1}))
    check = nncli("check", "x.yaml")
    assert ", 1 epoch\n" in check.stdout and "1 epochs" not in check.stdout
    trained = nncli("train", "x.yaml", "--run-dir", "r", "--quiet")
    assert trained.stdout.startswith("run r: 1 epoch,")
    from nncli.messages import count

    words = [count(1, "epoch"), count(2, "epoch"), count(1, "class", "classes"), count(3, "class", "classes")]
    assert words == ["1 epoch", "2 epochs", "1 class", "3 classes"]


def test_the_licence_is_declared_as_current_setuptools_wants():
    # a TOML table made every install print a deprecation warning; an SPDX string needs 77+
    text = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^license = "MIT"$', text, re.M)
    assert re.search(r'^requires = \["setuptools>=77"\]$', text, re.M)


def test_the_benchmark_says_how_to_set_up_pytorch(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_mlp.py"), "--rounds", "0",
         "--torch-python", str(tmp_path / "torch" / "bin" / "python")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"python3 -m venv {tmp_path / 'torch'}" in result.stderr
    assert "pip install torch==2.13.0 numpy" in result.stderr
