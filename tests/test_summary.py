"""nncli/training/summary.py: summary.json is written by the train command once training ends,
and the test set is measured on a copy of the model, with the best checkpoint's weights."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from nncli.builder import build_experiment
from nncli.config.schema import load_config
from nncli.training import checkpoint
from nncli.training.rundir import RunDir
from nncli.training.summary import evaluate_best, peak_rss_mib


def test_the_test_set_is_scored_on_a_copy_with_the_best_weights(workdir, nncli, spiral):
    # a learning rate that keeps changing the model after its best epoch
    (workdir / "spiral.yaml").write_text(spiral({"train.epochs": 6}))
    assert nncli("train", "spiral.yaml", "--run-dir", "run", "--quiet").exit_code == 0
    summary = json.loads((workdir / "run" / "summary.json").read_text())
    exp = build_experiment(load_config(workdir / "run" / "config.yaml"), workdir, progress=False)
    exp.model.load_state_dict(checkpoint.load(workdir / "run" / "checkpoints" / "last.pkl")["model"])
    before = {k: v.copy() for k, v in exp.model.params.items()}
    test = evaluate_best(exp, RunDir(workdir / "run"))
    assert all(np.array_equal(before[k], exp.model.params[k]) for k in before)  # the live model is kept
    assert test["epoch"] == summary["best_epoch"] == summary["test"]["epoch"]
    assert test["loss"] == summary["test"]["loss"] and test["samples"] == summary["test"]["samples"]


def test_no_test_set_means_no_test_figures(workdir, nncli, spiral):
    (workdir / "spiral.yaml").write_text(spiral({"data.test_size": 0, "train.epochs": 2}))
    assert nncli("train", "spiral.yaml", "--run-dir", "run", "--quiet").exit_code == 0
    assert json.loads((workdir / "run" / "summary.json").read_text())["test"] is None


def test_summary_reports_the_peak_memory_of_the_process(workdir, nncli, spiral):
    (workdir / "spiral.yaml").write_text(spiral({"train.epochs": 1}))
    assert nncli("train", "spiral.yaml", "--run-dir", "run", "--quiet").exit_code == 0
    peak = json.loads((workdir / "run" / "summary.json").read_text())["peak_rss_mib"]
    # this process has numpy loaded (tens of MiB) and is far from a terabyte
    assert 10 < peak < 1 << 20


@pytest.mark.parametrize(("platform", "maxrss", "mib"), [("linux", 2048, 2.0), ("darwin", 3 << 20, 3.0)])
def test_peak_memory_units_per_platform(monkeypatch, platform, maxrss, mib):
    # getrusage's ru_maxrss is KiB on Linux and bytes on macOS
    import resource

    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=maxrss))
    assert peak_rss_mib() == mib
