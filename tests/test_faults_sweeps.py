"""Faults injected into local sweeps: a worker or the sweep killed, SIGTERM, two sweeps on one
folder, damaged metrics files. Each sweep interrupted completes on a rerun with the results of a
sweep never interrupted (same seeds, same numbers; only the training times differ)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from polling import epochs_done, wait_for

from nncli.training.rundir import best_metric

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="POSIX signals, /proc and PR_SET_PDEATHSIG")

# one trial, two seeds, two workers: runs of a second or two, long enough for a signal to land
# after the first epoch and before the last
CHANGES = {"data.points_per_class": 2000, "train.epochs": 25}
GRID = """\
base: spiral.yaml
grid:
  optimizer.lr: [0.05]
seeds: [0, 1]
metric: val_acc
"""


def setup(folder: Path, spiral) -> None:
    (folder / "spiral.yaml").write_text(spiral(CHANGES))
    (folder / "grid.yaml").write_text(GRID)


def rows(out: Path) -> list[dict]:
    with open(out / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def without_times(table: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "time_s"} for row in table]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, spiral) -> Path:
    """The sweep run once, never interrupted: the results every rerun must give."""
    folder = tmp_path_factory.mktemp("straight")
    setup(folder, spiral)
    done = subprocess.run([sys.executable, "-m", "nncli", "sweep", "grid.yaml", "--jobs", "2",
                           "--out", "out"], cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return folder / "out"


@pytest.fixture
def sweepdir(workdir, spiral) -> Path:
    setup(workdir, spiral)
    return workdir


def start(out: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nncli", "sweep", "grid.yaml", "--jobs", "2", "--out", out, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if int(ppid) == pid and state != "Z":
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def command_line(pid: int) -> list[str]:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def training(sweep: subprocess.Popen, out: Path) -> dict[int, Path]:
    """Once both workers are training and one has an epoch behind it: {worker pid: its run}."""
    def both():
        workers = {}
        for pid in children(sweep.pid):
            line = command_line(pid)
            if "--run-dir" in line:
                workers[pid] = Path(line[line.index("--run-dir") + 1])
        ready = len(workers) == 2 and any(epochs_done(out / run.name) for run in workers.values())
        return workers if ready else None

    return wait_for(both, "two workers training, one with an epoch done")


def tracebacks(*texts: str) -> bool:
    return any("Traceback" in text for text in texts)


def test_a_killed_worker_fails_the_sweep_and_a_rerun_completes_it(sweepdir, straight, nncli):
    sweep = start("cut")
    workers = training(sweep, sweepdir / "cut")
    victim, run = next((pid, run) for pid, run in workers.items() if epochs_done(sweepdir / run))
    seed = next(arg for arg in command_line(victim) if arg.startswith("seed="))
    os.kill(victim, signal.SIGKILL)
    _, err = sweep.communicate(timeout=300)
    assert not tracebacks(err), err
    assert sweep.returncode == 1, err
    assert (f"error: 1 of 2 runs did not finish ({run.name} seed {seed[5:]} killed by SIGKILL);"
            " run the sweep again to finish them") in err
    [row] = rows(sweepdir / "cut")
    # the killed run's partial metrics are not in the mean: one seed, the row marked
    assert row["status"] == "finished/killed" and row["seeds"] == "1"

    again = nncli("sweep", "grid.yaml", "--jobs", "2", "--out", "cut")
    assert again.exit_code == 0, again.output
    assert "1 of 2 runs to do (1 done before)" in again.stderr
    assert without_times(rows(sweepdir / "cut")) == without_times(rows(straight))


def test_workers_stop_when_the_sweep_is_killed_and_a_rerun_completes_it(sweepdir, straight, nncli):
    sweep = start("cut")
    workers = training(sweep, sweepdir / "cut")
    sweep.kill()
    sweep.communicate(timeout=60)
    # each worker heard its parent die: it saved its state and stopped, its run not finished
    wait_for(lambda: not any(alive(pid) for pid in workers), "the orphaned workers to stop")
    # (one still starting had saved nothing and left nothing: resumable or none)
    assert any((sweepdir / run / "checkpoints" / "last.pkl").is_file() for run in workers.values())
    for run in workers.values():
        assert not (sweepdir / run / "summary.json").exists()

    again = nncli("sweep", "grid.yaml", "--jobs", "2", "--out", "cut")
    assert again.exit_code == 0, again.output
    assert "2 of 2 runs to do" in again.stderr
    assert without_times(rows(sweepdir / "cut")) == without_times(rows(straight))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_the_workers(sweepdir, straight, nncli, signum):
    sweep = start("cut")
    workers = training(sweep, sweepdir / "cut")
    sweep.send_signal(signum)
    _, err = sweep.communicate(timeout=120)
    assert not tracebacks(err), err
    assert sweep.returncode == 128 + signum, err  # 143, 129
    assert err.strip().splitlines()[-1] == (f"stopped by {signum.name}: the runs saved their"
                                            " state: run the same sweep again to finish it")
    assert not any(alive(pid) for pid in workers)  # the sweep waited for them
    assert not all((sweepdir / run / "summary.json").exists() for run in workers.values())

    again = nncli("sweep", "grid.yaml", "--jobs", "2", "--out", "cut")
    assert again.exit_code == 0, again.output
    assert without_times(rows(sweepdir / "cut")) == without_times(rows(straight))


def test_a_second_sweep_on_one_folder_is_refused_or_waits(sweepdir, straight, nncli):
    first = start("cut")
    training(first, sweepdir / "cut")
    second = nncli("sweep", "grid.yaml", "--jobs", "2", "--out", "cut")
    assert second.exit_code == 1
    assert second.stderr.splitlines() == [
        f"error: another sweep (pid {first.pid}) is running in cut: wait for it to end, or give"
        " --wait to start when it has"]

    waited = nncli("sweep", "grid.yaml", "--jobs", "2", "--out", "cut", "--wait")
    assert waited.exit_code == 0, waited.output
    assert f"waiting for the sweep (pid {first.pid}) running in cut to end" in waited.stderr
    assert "2 runs in cut, all done before: nothing to run" in waited.stderr
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert not (sweepdir / "cut" / "failures.json").exists()
    assert without_times(rows(sweepdir / "cut")) == without_times(rows(straight))


def test_damaged_metrics_are_rewritten_from_the_checkpoint(sweepdir, straight, nncli):
    out = sweepdir / "cut"
    shutil.copytree(straight, out)
    cut, emptied = sorted(p for p in out.iterdir() if (p / "metrics.csv").is_file())
    whole = {run.name: (run / "metrics.csv").read_bytes() for run in (cut, emptied)}
    best = {run.name: best_metric(run, "val_acc", "max") for run in (cut, emptied)}

    def damage():
        text = whole[cut.name]
        (cut / "metrics.csv").write_bytes(text[: len(text) // 2 + 3])  # mid-row
        (emptied / "metrics.csv").write_bytes(b"")

    damage()
    listed = nncli("runs", "cut", "--json")
    assert listed.exit_code == 0, listed.output
    table = {Path(row["path"]).name: row for row in json.loads(listed.stdout)}
    for run in (cut, emptied):
        assert table[run.name]["epochs"] == 25 and table[run.name]["status"] == "finished"
        assert table[run.name]["best_val"] == best[run.name]
        assert (f"note: {Path('cut') / run.name / 'metrics.csv'} was damaged (cut or emptied):"
                f" rewritten from {Path('cut') / run.name / 'checkpoints' / 'last.pkl'}"
                in listed.stderr)
        assert (run / "metrics.csv").read_bytes() == whole[run.name]

    damage()
    summary = rows(straight)
    again = nncli("sweep", "grid.yaml", "--jobs", "2", "--out", "cut")
    assert again.exit_code == 0, again.output
    assert "2 runs in cut, all done before: nothing to run" in again.stderr
    assert again.stderr.count("was damaged (cut or emptied): rewritten from") == 2
    assert rows(out) == summary  # nothing retrained: the same numbers, times included
    assert "was damaged (cut or emptied)" in (out / "summary.md").read_text()

    # a damaged metrics.csv beside an unreadable last.pkl: the run is trained again
    (cut / "metrics.csv").write_bytes(b"")
    (cut / "checkpoints" / "last.pkl").write_bytes(b"not a pickle")
    listed = nncli("runs", "cut")
    assert listed.exit_code == 0
    assert "damaged" in listed.stdout and "cannot restore it" in listed.stderr
    retrained = nncli("sweep", "grid.yaml", "--jobs", "2", "--out", "cut")
    assert retrained.exit_code == 0, retrained.output
    assert "cannot restore it" in retrained.stderr and "training it again" in retrained.stderr
    assert "1 of 2 runs to do (1 done before)" in retrained.stderr
    assert without_times(rows(out)) == without_times(summary)
    assert not tracebacks(listed.output, again.output, retrained.output)
