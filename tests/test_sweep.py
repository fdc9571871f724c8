"""`nncli sweep`: trials x seeds as ordinary runs, never twice, resumable, summarized."""

from __future__ import annotations

import csv
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from polling import wait_for

from nncli.config.sweep import load_sweep
from nncli.training.rundir import best_metric


@pytest.fixture
def base(workdir, spiral) -> Path:
    path = workdir / "spiral.yaml"
    path.write_text(spiral({"train.epochs": 3}))
    return path


def write(workdir: Path, name: str, text: str) -> Path:
    path = workdir / name
    path.write_text(text)
    return path


def rows(out: Path) -> list[dict]:
    with open(out / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def without_times(table: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "time_s"} for row in table]


GRID = """\
base: spiral.yaml
grid:
  optimizer.lr: [0.02, 0.2]
seeds: [0, 1]
metric: val_acc
"""


def test_a_grid_with_two_seeds_and_two_jobs(base, workdir, nncli):
    write(workdir, "grid.yaml", GRID)
    first = nncli("sweep", "grid.yaml", "--jobs", "2")
    assert first.exit_code == 0, first.output
    assert "4 of 4 runs to do, 2 at a time" in first.stderr
    out = workdir / "runs" / "sweeps" / "grid"
    table = rows(out)
    assert [row["optimizer.lr"] for row in table] == ["0.2", "0.02"]  # best first
    for row in table:
        runs = [out / name for name in row["runs"].split()]
        assert len(runs) == 2 and all((run / "summary.json").is_file() for run in runs)
        bests = [best_metric(run, "val_acc", "max") for run in runs]
        assert float(row["val_acc_mean"]) == pytest.approx(statistics.fmean(bests))
        assert float(row["val_acc_std"]) == pytest.approx(statistics.stdev(bests))
        assert row["status"] == "finished" and row["seeds"] == "2"
    # every run is an ordinary run directory
    assert nncli("eval", out / table[0]["runs"].split()[0], "--json").exit_code == 0
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "summary.md").read_text().startswith("# grid: 2 trials x 2 seeds, val_acc (max)")

    again = nncli("sweep", "grid.yaml", "--jobs", "2")
    assert again.exit_code == 0
    assert "4 runs in runs/sweeps/grid, all done before: nothing to run" in again.stderr
    assert rows(out) == table


def test_a_diverging_trial_is_marked_and_a_failing_one_named(base, workdir, nncli):
    write(workdir, "table.csv", "a,b,label\n" + "".join(f"{i % 7},{i % 3},{i % 2}\n" for i in range(60)))
    write(workdir, "bad.yaml", """\
base: spiral.yaml
grid:
  optimizer.lr: [0.05, 1.0e+30]
  optimizer.momentum: [0.0]
seeds: [0]
""")
    result = nncli("sweep", "bad.yaml", "--jobs", "2")
    assert result.exit_code == 0, result.output  # a diverged run is a result, not a failure
    status = {row["optimizer.lr"]: row["status"] for row in rows(workdir / "runs" / "sweeps" / "bad")}
    assert status == {"0.05": "finished", "1e+30": "diverged"}

    write(workdir, "fails.yaml", """\
base: spiral.yaml
grid:
  data: [{dataset: spiral, val_size: 0.2}, {dataset: csv, path: nowhere.csv, target: label}]
seeds: [0]
""")
    failing = nncli("sweep", "fails.yaml")
    assert failing.exit_code == 1
    assert "1 of 2 runs failed" in failing.stderr
    assert "failed: trial 1" in failing.stdout and "nowhere.csv not found" in failing.stdout
    statuses = sorted(row["status"] for row in rows(workdir / "runs" / "sweeps" / "fails"))
    assert statuses == ["failed", "finished"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_sweep_stopped_by_ctrl_c_finishes_as_if_never_stopped(workdir, spiral, nncli):
    # four runs of a few seconds each, two at a time: the signal lands in the first two, once
    # one of them has an epoch behind it (an event, not a sleep: a quiet machine runs 25
    # epochs in a second)
    write(workdir, "spiral.yaml", spiral({"data.points_per_class": 2000, "train.epochs": 100}))
    write(workdir, "grid.yaml", GRID)
    process = subprocess.Popen(
        [sys.executable, "-m", "nncli", "sweep", "grid.yaml", "--jobs", "2", "--out", "cut"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    training = wait_for(lambda: [metrics.parent for metrics in (workdir / "cut").glob("*/metrics.csv")
                                 if not (metrics.parent / "summary.json").exists()],
                        "a run with an epoch done", every=0.01)
    signalled = time.time()
    process.send_signal(signal.SIGINT)  # to the parent alone: it passes the signal on
    _, err = process.communicate(timeout=120)
    assert "Traceback" not in err, err
    assert process.returncode == 130, err
    assert "run the same sweep again to finish it" in err
    # every run the signal reached is resumable, or gone if it had not saved a checkpoint yet
    left = [run for run in (workdir / "cut").iterdir() if run.is_dir()]
    assert all((run / "checkpoints" / "last.pkl").is_file() for run in left)
    done = [run for run in left if (run / "summary.json").is_file()]
    assert len(done) < 4, "the sweep stopped, yet every run finished"
    # a run seen training when the signal was sent (at its second epoch of 100, or so) stopped
    # there: the workers were told, not waited for
    assert set(training) - set(done), f"{[run.name for run in training]} ran to their end"
    # a run stopped unfinished saved its state when the signal came (not only at its last
    # epoch's end): the workers got SIGINT, not a kill (mtimes lag the clock by a tick at most)
    for run in set(left) - set(done):
        assert (run / "checkpoints" / "last.pkl").stat().st_mtime >= signalled - 0.05, run.name
    finished = nncli("sweep", "grid.yaml", "--jobs", "2", "--out", "cut")
    assert finished.exit_code == 0, finished.output
    note = f" ({len(done)} done before)" if done else ""
    assert f"{4 - len(done)} of 4 runs to do{note}" in finished.stderr, finished.stderr
    straight = nncli("sweep", "grid.yaml", "--jobs", "2", "--out", "straight")
    assert straight.exit_code == 0, straight.output
    cut, whole = rows(workdir / "cut"), rows(workdir / "straight")
    assert without_times(cut) == without_times(whole)


def test_a_random_search_draws_the_same_trials_from_the_same_seed(base, workdir):
    text = """\
base: spiral.yaml
random:
  trials: 6
  seed: {seed}
  space:
    optimizer.lr: {{loguniform: [1.0e-3, 1.0e-1]}}
    model[0].linear.units: {{choice: [8, 16, 32]}}
    train.epochs: {{int: [2, 5]}}
    optimizer.momentum: {{uniform: [0.0, 0.9]}}
"""
    a = load_sweep(write(workdir, "a.yaml", text.format(seed=7)))
    b = load_sweep(write(workdir, "b.yaml", text.format(seed=7)))
    c = load_sweep(write(workdir, "c.yaml", text.format(seed=8)))
    assert [t.values for t in a.trials] == [t.values for t in b.trials]
    assert [t.values for t in a.trials] != [t.values for t in c.trials]
    for trial in a.trials:
        v = trial.values
        assert 1e-3 <= v["optimizer.lr"] <= 1e-1 and v["model[0].linear.units"] in (8, 16, 32)
        assert 2 <= v["train.epochs"] <= 5 and 0.0 <= v["optimizer.momentum"] <= 0.9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base: spiral.yaml\ngird: {optimizer.lr: [0.1]}\n",
         'x.yaml:2 gird: unknown key (did you mean "grid"?)'),
        ("base: spiral.yaml\ngrid: {}\n", "x.yaml:2 grid: expected a mapping of keys to lists"),
        ("base: spiral.yaml\ngrid: {optimizer.lr: []}\n",
         "x.yaml:2 grid.optimizer.lr: expected a non-empty list"),
        ("base: spiral.yaml\nrandom: {trials: 2, space: {optimizer.lr: {loguniform: [0, 1]}}}\n",
         "x.yaml:2 random.space.optimizer.lr.loguniform: expected positive bounds"),
        ("base: spiral.yaml\nrandom: {trials: 2, space: {optimizer.lr: {uniform: [0.5, 0.1]}}}\n",
         "x.yaml:2 random.space.optimizer.lr.uniform: expected low < high"),
        ("base: spiral.yaml\ngrid:\n  optimizer.momentun: [0.5]\n",
         'x.yaml:3 grid.optimizer.momentun: unknown option (did you mean "momentum"?)'),
        ("base: spiral.yaml\ngrid:\n  optimizer.lr: [-1]\n",
         "x.yaml:3 grid.optimizer.lr: expected a positive number, got -1"),
        ("base: spiral.yaml\ngrid:\n  model[7].units: [2]\n",  # no --set in a sweep file
         "x.yaml:3 grid.model[7].units: the trial's model[7].units: model[7] does not exist"),
        ("base: nothere.yaml\ngrid: {optimizer.lr: [0.1]}\n", "x.yaml:1 base:"),
        ("base: spiral.yaml\ngrid: {optimizer.lr: [0.1]}\nseeds: [1, 1]\n",
         "x.yaml:3 seeds: a seed is given twice"),
    ],
)
def test_sweep_file_mistakes_are_one_line_with_the_line_and_key(base, workdir, nncli, text, message):
    write(workdir, "x.yaml", text)
    result = nncli("sweep", "x.yaml")
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {message}"), line
    assert not (workdir / "runs").exists()


def test_dry_run_lists_the_trials_and_runs_nothing(base, workdir, nncli):
    write(workdir, "grid.yaml", GRID)
    result = nncli("sweep", "grid.yaml", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "2 trials x 2 seeds = 4 runs" in result.stdout
    assert "optimizer.lr=0.02" in result.stdout and "optimizer.lr=0.2" in result.stdout
    assert not (workdir / "runs").exists()


def test_a_dask_cluster_gives_the_summary_of_a_local_sweep(base, workdir, nncli):
    pytest.importorskip("dask.distributed", reason="the Dask extra is not installed")
    write(workdir, "grid.yaml", GRID)
    local = nncli("sweep", "grid.yaml", "--jobs", "2", "--out", "local")
    assert local.exit_code == 0, local.output
    # worker processes on 127.0.0.1, each training in a temporary folder of its own: the files
    # come back through Dask, not through a shared directory
    remote = nncli("sweep", "grid.yaml", "--scheduler", "local:2", "--out", "dask")
    assert remote.exit_code == 0, remote.output
    assert without_times(rows(workdir / "dask")) == without_times(rows(workdir / "local"))
    for run in (workdir / "dask").iterdir():
        if run.is_dir():
            assert (run / "checkpoints" / "best.pkl").is_file() and (run / "summary.json").is_file()
    again = nncli("sweep", "grid.yaml", "--scheduler", "local:2", "--out", "dask")
    assert "all done before: nothing to run" in again.stderr


def test_a_scheduler_address_must_make_sense(base, workdir, nncli):
    write(workdir, "grid.yaml", GRID)
    for address, words in (("local:zero", "local:N wants a number"), ("ftp://x", "expects tcp://HOST:PORT")):
        result = nncli("sweep", "grid.yaml", "--scheduler", address)
        assert result.exit_code == 1 and words in result.stderr, result.output


def test_without_dask_the_scheduler_option_says_what_to_install(base, workdir, nncli, monkeypatch):
    write(workdir, "grid.yaml", GRID)
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # as if the extra were missing
    result = nncli("sweep", "grid.yaml", "--scheduler", "local:2")
    assert result.exit_code == 1
    message = "error: --scheduler needs Dask: pip install 'nncli[dask]' (dask[distributed])"
    assert result.stderr.strip() == message
