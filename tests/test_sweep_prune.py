"""Pruning in sweeps (`prune:`): the ASHA and median rules as functions, the decisions a
`Pruner` makes from runs' metrics, a run stopped by a prune request at an epoch boundary, and
sweeps (local jobs and a Dask cluster) in which a trial with a tiny learning rate is pruned."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from polling import wait_for

from nncli.commands.sweep_prune import PRUNE_LOG, Pruner, asha_keeps, median_keeps
from nncli.config.sweep import Prune, load_sweep
from nncli.errors import ConfigError
from nncli.training import checkpoint
from nncli.training.rundir import read_metrics

# ---- the rules, worked by hand ------------------------------------------------------------


def test_asha_keeps_the_best_third_of_the_trials_at_the_rung():
    # 3 trials, eta 3: the best one goes on (cut-off 0.9)
    assert asha_keeps([0.9, 0.8, 0.7], 0.9, 3, "max") == (True, 0.9)
    assert asha_keeps([0.9, 0.8, 0.7], 0.8, 3, "max") == (False, 0.9)
    # 7 trials, eta 3: 7 // 3 = 2 go on; the second best, 0.6, is the cut-off
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert asha_keeps(values, 0.6, 3, "max") == (True, 0.6)
    assert asha_keeps(values, 0.5, 3, "max") == (False, 0.6)
    # a loss: lower is better
    assert asha_keeps([0.3, 0.1, 0.2], 0.1, 3, "min") == (True, 0.1)
    assert asha_keeps([0.3, 0.1, 0.2], 0.2, 3, "min") == (False, 0.1)
    # ties at the cut-off all go on
    assert asha_keeps([0.9, 0.9, 0.5], 0.9, 3, "max") == (True, 0.9)
    # eta 2, 4 trials: the best half
    assert asha_keeps([0.4, 0.3, 0.2, 0.1], 0.3, 2, "max") == (True, 0.3)
    assert asha_keeps([0.4, 0.3, 0.2, 0.1], 0.2, 2, "max") == (False, 0.3)


def test_asha_lets_a_trial_go_on_while_fewer_than_eta_trials_reached_the_rung():
    assert asha_keeps([0.1], 0.1, 3, "max") == (True, None)
    assert asha_keeps([0.9, 0.1], 0.1, 3, "max") == (True, None)


def test_the_median_rule_compares_with_the_finished_trials_once_warmup_have_finished():
    assert median_keeps([0.5, 0.7, 0.9], 0.7, 3, "max") == (True, 0.7)
    assert median_keeps([0.5, 0.7, 0.9], 0.69, 3, "max") == (False, 0.7)
    # an even count: the mean of the middle two
    assert median_keeps([0.5, 0.7, 0.9, 1.0], 0.79, 0, "max") == (False, 0.8)
    assert median_keeps([1.0, 2.0], 1.4, 2, "min") == (True, 1.5)
    assert median_keeps([1.0, 2.0], 1.6, 2, "min") == (False, 1.5)
    assert median_keeps([0.5, 0.7, 0.9], 0.1, 4, "max") == (True, None)  # still warming up
    assert median_keeps([], 0.1, 0, "max") == (True, None)  # nothing to compare with


def test_asha_rungs_are_grace_times_powers_of_eta_below_max_epochs():
    assert Prune("asha", grace=1, eta=3, max_epochs=27).rungs() == (1, 3, 9)
    assert Prune("asha", grace=2, eta=2, max_epochs=17).rungs() == (2, 4, 8, 16)
    assert Prune("asha", grace=1, eta=3, max_epochs=5).rungs() == (1, 3)


# ---- sweep files --------------------------------------------------------------------------


@pytest.fixture
def base(workdir, spiral) -> Path:
    path = workdir / "spiral.yaml"
    path.write_text(spiral({"train.epochs": 10}))
    return path


def sweep_file(workdir: Path, prune: str, lrs=(0.3, 0.1, 1.0e-6), seeds=(0,), name="s.yaml") -> Path:
    path = workdir / name
    path.write_text(f"base: spiral.yaml\ngrid:\n  optimizer.lr: {list(lrs)}\nseeds: {list(seeds)}\n"
                    f"metric: val_acc\nprune: {prune}\n")
    return path


def test_prune_settings_are_read_with_their_defaults(base, workdir):
    spec = load_sweep(sweep_file(workdir, "{rule: asha}"))
    assert spec.prune == Prune("asha", grace=1, eta=3, max_epochs=10)  # the trials' epochs
    assert spec.prune.rungs() == (1, 3, 9)
    spec = load_sweep(sweep_file(workdir, "{rule: median, warmup: 2, from_epoch: 3}"))
    assert (spec.prune.rule, spec.prune.warmup, spec.prune.from_epoch) == ("median", 2, 3)


@pytest.mark.parametrize("prune, message", [
    ("{rule: hyperband}", "s.yaml:6 prune.rule: expected a rule: asha, median"),
    ("asha", "s.yaml:6 prune: expected a rule: asha, median"),
    ("{rule: asha, eta: 1}", "s.yaml:6 prune.eta: expected an integer from 2 to 1,000,000, got 1"),
    ("{rule: asha, grace: 0}", "s.yaml:6 prune.grace: expected an integer from 1"),
    ("{rule: asha, grace: 10}", "s.yaml:6 prune.grace: grace 10 is not below max_epochs 10"),
    ("{rule: asha, max_epochs: 3, grace: 3}", "prune.max_epochs: grace 3 is not below max_epochs 3"),
    ("{rule: asha, warmup: 3}", "prune.warmup: warmup is a key of the median rule; the asha rule"
                                " takes grace, eta, max_epochs"),
    ("{rule: median, etta: 3}", "prune.etta: unknown key; the median rule takes warmup, from_epoch"),
    ("{rule: median, from_epochs: 3}", "prune.from_epochs: unknown key (did you mean \"from_epoch\"?)"),
    ("{rule: median, warmup: true}", "prune.warmup: expected an integer from 0"),
])
def test_a_wrong_prune_setting_is_one_line_naming_its_key(base, workdir, nncli, prune, message):
    sweep_file(workdir, prune)
    result = nncli("sweep", "s.yaml", "--dry-run")
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    with pytest.raises(ConfigError):
        load_sweep(workdir / "s.yaml")


def test_dry_run_names_the_rule_and_its_rungs(base, workdir, nncli):
    sweep_file(workdir, "{rule: asha, grace: 1, eta: 3}")
    result = nncli("sweep", "s.yaml", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "pruned by asha (grace 1, eta 3, max_epochs 10: rungs at epochs 1, 3, 9)" in result.stdout


# ---- a Pruner's decisions, from metrics rows given to it ----------------------------------


def make_pruner(workdir: Path, prune: str, lrs, seeds):
    from nncli.commands.sweep import plan

    spec = load_sweep(sweep_file(workdir, prune, lrs, seeds))
    out = workdir / "out"
    out.mkdir(exist_ok=True)
    runs = plan(spec, out)
    return Pruner(spec, out, runs, {run.path.name: 10 for run in runs}), runs


def feed(pruner, run, values):
    pruner.seen(run.path.name, [{"val_acc": v} for v in values])
    return pruner.check(run.path.name)


def log_of(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "out" / PRUNE_LOG).read_text().splitlines()]


def test_asha_decides_on_each_trials_mean_over_the_seeds_that_reached_the_rung(base, workdir):
    pruner, runs = make_pruner(workdir, "{rule: asha, grace: 1, eta: 2}", (0.3, 0.1, 0.01), (0, 1))
    a0, a1, b0, b1, c0, c1 = runs  # trials a, b, c; seeds 0 and 1
    assert feed(pruner, a0, [0.8]) is None  # alone at rung 0 (epoch 1): goes on
    assert feed(pruner, b0, [0.6])["cutoff"] == 0.8  # a 0.8, b 0.6; eta 2: the best one goes on
    assert feed(pruner, a1, [0.2])["value"] == pytest.approx(0.5)  # a's mean 0.5 < b's 0.6
    assert [(e["run"], e["epoch"], e["rung"], e["decision"]) for e in log_of(workdir)] == [
        (a0.path.name, 1, 0, "continue"), (b0.path.name, 1, 0, "prune"), (a1.path.name, 1, 0, "prune")]
    last = log_of(workdir)[-1]
    assert last["run_value"] == pytest.approx(0.2) and last["cutoff"] == pytest.approx(0.6)
    assert last["trials"] == 2 and last["seed"] == 1 and last["trial"] == 0
    # trial a is pruned as a whole: its seed 0, which went on, stops at its next epoch
    assert feed(pruner, a0, [0.8, 0.85])["reason"] == f"its trial was pruned ({a1.path.name}, epoch 1)"
    # b's seed 1 is not started; c is behind a (0.5) and b (0.6) with 0.1
    assert pruner.before_start(b1)["epoch"] == 0
    assert pruner.before_start(c0) is None
    assert feed(pruner, c0, [0.1])["decision"] == "prune"
    decided = log_of(workdir)

    again, runs = make_pruner(workdir, "{rule: asha, grace: 1, eta: 2}", (0.3, 0.1, 0.01), (0, 1))
    for run in runs:  # a rerun: every decision stands, none is made again
        again.seen(run.path.name, [{"val_acc": 0.99}] * 3)
        assert again.check(run.path.name) is None or run.path.name == runs[5].path.name
    assert again.before_start(runs[3]) == decided[4]
    assert log_of(workdir)[:len(decided)] == decided
    assert [e["run"] for e in log_of(workdir)[len(decided):]] == [runs[5].path.name]  # c1: c was pruned


def test_a_rerun_compares_with_the_runs_an_earlier_invocation_trained(base, workdir):
    from nncli.commands.sweep import plan
    from nncli.commands.sweep_prune import make_pruner as pruner_of

    spec = load_sweep(sweep_file(workdir, "{rule: asha, grace: 1, eta: 2}", (0.3, 0.1), (0,)))
    a, b = plan(spec, workdir / "out")
    a.path.mkdir(parents=True)
    (a.path / "metrics.csv").write_text("epoch,val_acc\n1,0.9\n2,0.95\n")  # trained before
    pruner = pruner_of(spec, workdir / "out", [a, b])
    entry = feed(pruner, b, [0.5])
    assert (entry["decision"], entry["cutoff"], entry["trials"]) == ("prune", 0.9, 2)


def test_the_median_rule_waits_for_warmup_finished_trials(base, workdir):
    lrs = (0.3, 0.1, 0.01, 0.001)
    pruner, runs = make_pruner(workdir, "{rule: median, warmup: 2, from_epoch: 2}", lrs, (0,))
    a, b, c, d = runs
    assert feed(pruner, a, [0.5, 0.6, 0.7]) is None  # nobody finished: no comparison
    assert [e["cutoff"] for e in log_of(workdir)] == [None, None]  # epochs 2 and 3, not 1
    for run, values in ((a, [0.5, 0.6, 0.7] + [0.7] * 7), (b, [0.3, 0.4, 0.5] + [0.5] * 7)):
        pruner.seen(run.path.name, [{"val_acc": v} for v in values])
        pruner.finish(run.path.name)
    # at epoch 2, the finished trials' best so far: a 0.6, b 0.4, median 0.5
    assert feed(pruner, c, [0.45, 0.5]) is None
    assert feed(pruner, d, [0.2, 0.45])["cutoff"] == pytest.approx(0.5)
    entry = log_of(workdir)[-1]
    assert (entry["epoch"], entry["rung"], entry["value"], entry["trials"]) == (2, None, 0.45, 2)


# ---- a run stopped by a prune request -------------------------------------------------------


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 here")
def test_sigusr1_stops_a_run_at_the_end_of_its_last_full_epoch(workdir, spiral):
    (workdir / "slow.yaml").write_text(spiral({"data.points_per_class": 2000, "train.epochs": 500}))
    process = subprocess.Popen([sys.executable, "-m", "nncli", "train", "slow.yaml", "--run-dir", "r",
                                "--quiet"], stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (workdir / "r" / "metrics.csv").is_file(), "the run's first epoch")
        process.send_signal(signal.SIGUSR1)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 5, stderr
    epochs = len(read_metrics(workdir / "r" / "metrics.csv"))
    assert f"pruned: stopped at the end of epoch {epochs}" in stderr
    saved = checkpoint.load(workdir / "r" / "checkpoints" / "last.pkl")
    assert saved["epoch"] == epochs and saved["training"]["progress"] is None  # an epoch boundary
    assert not (workdir / "r" / "summary.json").exists()


# ---- sweeps --------------------------------------------------------------------------------

SLOW = {"data.points_per_class": 400, "train.epochs": 60}  # tens of ms an epoch: a prune lands in time
# on a Dask cluster the sweep looks at the runs every PRUNE_POLL (0.5 s), not every 0.05 s as
# locally: on a Zen 5 an epoch took 3.2 ms, and a trial of 60 epochs (0.3 s of training) slipped
# between two looks in one run of four; 400 epochs train for over a second even there
DASK_SLOW = {**SLOW, "train.epochs": 400}


def check_pruned_tiny_lr(workdir: Path, nncli, out: Path, first, epochs: int = SLOW["train.epochs"]):
    assert first.exit_code == 0, first.output
    decisions = [json.loads(line) for line in (out / PRUNE_LOG).read_text().splitlines()]
    spec = load_sweep(workdir / "s.yaml")
    from nncli.commands.sweep import plan

    tiny = next(run for run in plan(spec, out) if run.trial.values["optimizer.lr"] == 1.0e-6)
    mine = [d for d in decisions if d["run"] == tiny.path.name]
    assert mine[-1]["decision"] == "prune" and (mine[-1]["epoch"], mine[-1]["rung"]) == (1, 0)
    assert mine[-1]["trials"] == 3 and mine[-1]["value"] < mine[-1]["cutoff"]
    assert (tiny.path / "pruned.json").is_file() and (tiny.path / "checkpoints" / "last.pkl").is_file()
    assert len(read_metrics(tiny.path / "metrics.csv")) < epochs
    listed = nncli("runs", out)
    line = next(line for line in listed.stdout.splitlines() if tiny.path.name in line)
    assert "pruned (rung 0, epoch 1)" in line
    assert (out / "prune.png").read_bytes()[:4] == b"\x89PNG"
    row = next(line for line in (out / "summary.md").read_text().splitlines() if line.startswith("| 1e-06 |"))
    assert row.endswith("| pruned (rung 0, epoch 1) |")
    return decisions


def test_a_sweep_prunes_a_tiny_learning_rate_and_a_rerun_decides_nothing_again(workdir, spiral, nncli):
    (workdir / "spiral.yaml").write_text(spiral(SLOW))
    sweep_file(workdir, "{rule: asha, grace: 1, eta: 2}")
    out = workdir / "runs" / "sweeps" / "s"
    decisions = check_pruned_tiny_lr(workdir, nncli, out, nncli("sweep", "s.yaml", "--jobs", "2"))
    again = nncli("sweep", "s.yaml", "--jobs", "2")
    assert again.exit_code == 0, again.output
    assert "3 runs in runs/sweeps/s, all done before: nothing to run" in again.stderr
    assert [json.loads(line) for line in (out / PRUNE_LOG).read_text().splitlines()] == decisions


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_sweep_on_a_dask_cluster_prunes_too(workdir, spiral, nncli):
    pytest.importorskip("dask.distributed", reason="the Dask extra (in the test extra) is not installed")
    (workdir / "spiral.yaml").write_text(spiral(DASK_SLOW))
    sweep_file(workdir, "{rule: asha, grace: 1, eta: 2}")
    (workdir / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(workdir / "tmp")}
    done = subprocess.run([sys.executable, "-m", "nncli", "sweep", "s.yaml", "--scheduler", "local:1",
                           "--out", "d"], capture_output=True, text=True, env=env, timeout=300)

    class Result:  # what check_pruned_tiny_lr reads of a CLI result
        exit_code, output = done.returncode, done.stderr

    check_pruned_tiny_lr(workdir, nncli, workdir / "d", Result, DASK_SLOW["train.epochs"])
