"""Signals at the edges of a run: in the first milliseconds after `nncli train` makes its run
directory, after its last batch, twice, and while `python -m nncli` imports the package. A run
directory is resumable (and resuming it gives the uninterrupted run's results) or not there."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from polling import ended, epochs_done, wait_for

from nncli.training import checkpoint

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

RUN_FILES = {
    "config.yaml",
    "metrics.csv",
    "steps.csv",
    "curves.png",
    "summary.json",
    "checkpoints",
    "last.pkl",
    "best.pkl",
}


@pytest.fixture
def spiral_yaml(workdir, spiral) -> Path:
    path = workdir / "spiral.yaml"
    path.write_text(spiral())
    return path


@pytest.fixture
def baseline(workdir, spiral_yaml, nncli) -> Path:
    """The same config trained without interruption."""
    done = nncli("train", spiral_yaml, "--run-dir", "baseline", "--quiet")
    assert done.exit_code == 0, done.output
    return workdir / "baseline"


@pytest.fixture
def own_sigterm():
    """A SIGTERM that reaches the test process's own handler is a failure, not pytest's death
    (it does, where training does not handle SIGTERM itself)."""

    def reached(signum, frame):
        raise RuntimeError("SIGTERM reached the test's own handler: training did not handle it")

    previous = signal.signal(signal.SIGTERM, reached)
    yield
    signal.signal(signal.SIGTERM, previous)


def send(signum: int = signal.SIGTERM) -> None:
    os.kill(os.getpid(), signum)  # Python runs the handler before the next line


def metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return [
            {k: float(v) for k, v in row.items() if k != "epoch_time_s" and v} for row in csv.DictReader(f)
        ]


def assert_same_run(run: Path, baseline: Path) -> None:
    """The final weights and every epoch's metrics of the uninterrupted run."""
    got, want = (
        checkpoint.load(run / "checkpoints" / "last.pkl"),
        checkpoint.load(baseline / "checkpoints" / "last.pkl"),
    )
    assert got["epoch"] == want["epoch"]
    assert got["model"]["params"].keys() == want["model"]["params"].keys()
    for name, value in want["model"]["params"].items():
        np.testing.assert_allclose(got["model"]["params"][name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    rows, expected = metrics(run), metrics(baseline)
    assert [row.keys() for row in rows] == [row.keys() for row in expected]
    for row, want_row in zip(rows, expected, strict=True):
        for key, value in want_row.items():
            assert row[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def assert_whole(run: Path) -> None:
    """Only a run's own files: no temporary file, nothing half-made."""
    names = {p.name for p in run.rglob("*")}
    assert names <= RUN_FILES, sorted(names - RUN_FILES)
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.pkl").is_file()


def test_sigterm_in_the_first_20_ms_after_the_run_directory_appears_strands_nothing(
    workdir, spiral_yaml, baseline, nncli
):
    outcomes = []
    for k in range(20):
        delay = 0.020 * k / 19  # 0 to 20 ms, evenly
        run = workdir / f"r{k}"
        process = subprocess.Popen(
            [sys.executable, "-m", "nncli", "train", spiral_yaml, "--run-dir", run, "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # the event: the directory appears; then the signal comes `delay` after it, the moment
        # under test (a chosen offset from the event, not a wait standing in for one)
        wait_for(lambda run=run, process=process: run.exists() or process.poll() is not None,
                 f"{run} made", every=0.0002)
        assert process.poll() is None, f"exited before making {run}: {process.communicate()}"
        time.sleep(delay)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        assert "Traceback" not in err, err
        where = f"{delay * 1000:.1f} ms: exit {process.returncode}, {err!r}"
        if not run.exists():
            assert process.returncode == 143, where
            assert err.strip() == f"interrupted by SIGTERM before its first checkpoint; {run} was removed", (
                where
            )
            outcomes.append("gone")
            continue
        assert_whole(run)
        if (run / "summary.json").is_file():  # finished: the signal came after the last batch
            # (or once the run was complete and its handlers gone, as the process ended)
            assert process.returncode in (0, -signal.SIGTERM), where
            if process.returncode == 0:
                assert (
                    err.strip()
                    == f"note: SIGTERM came after the last batch; the run finished and {run} is complete"
                )
            outcomes.append("finished")
        else:
            assert process.returncode == 143, where
            assert err.strip().startswith("interrupted by SIGTERM: saved"), where
            assert err.strip().endswith(f"resume with: nncli train --resume {run}"), where
            resumed = nncli("train", "--resume", run, "--quiet")
            assert resumed.exit_code == 0, f"{where}; resumed: {resumed.output}"
            outcomes.append("resumed")
        assert_same_run(run, baseline)
    # which outcomes occur depends on the machine's speed; each was checked above
    assert len(outcomes) == 20, outcomes


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_after_the_last_batch_finishes_the_run_and_says_so(
    workdir, spiral_yaml, baseline, nncli, monkeypatch, own_sigterm, signum
):
    from nncli.training.callbacks.files import Checkpointer

    save = Checkpointer.on_epoch_end

    def then_a_signal(self, trainer, row):
        save(self, trainer, row)
        if trainer.state.epoch == trainer.exp.config.train.epochs:
            send(signum)

    monkeypatch.setattr(Checkpointer, "on_epoch_end", then_a_signal)
    done = nncli("train", spiral_yaml, "--run-dir", "late", "--quiet")
    name = signal.Signals(signum).name
    assert done.exit_code == 0, done.output
    assert (
        done.stderr.strip()
        == f"note: {name} came after the last batch; the run finished and late is complete"
    )
    run = workdir / "late"
    assert_whole(run)
    assert {p.name for p in run.rglob("*")} == RUN_FILES  # summary, curves, best and last
    assert_same_run(run, baseline)


def test_a_signal_just_after_the_run_directory_is_made_leaves_nothing(
    workdir, spiral_yaml, nncli, monkeypatch, own_sigterm
):
    from nncli.commands import train

    made = train.given_run_dir

    def then_a_signal(path):
        run = made(path)
        send()
        return run

    monkeypatch.setattr(train, "given_run_dir", then_a_signal)
    done = nncli("train", spiral_yaml, "--run-dir", "early", "--quiet")
    assert done.exit_code == 143, done.output
    assert done.stderr.strip() == "interrupted by SIGTERM before its first checkpoint; early was removed"
    assert not (workdir / "early").exists()


def test_a_signal_while_the_config_is_written_leaves_nothing(
    workdir, spiral_yaml, nncli, monkeypatch, own_sigterm
):
    from nncli.commands import train

    write = train.atomic_write_text

    def signal_midway(path, text):
        send()
        write(path, text)

    monkeypatch.setattr(train, "atomic_write_text", signal_midway)
    (workdir / "empty").mkdir()
    done = nncli("train", spiral_yaml, "--run-dir", "empty", "--quiet")
    assert done.exit_code == 143, done.output
    assert done.stderr.strip() == "interrupted by SIGTERM before its first checkpoint; empty is empty again"
    assert list((workdir / "empty").iterdir()) == []


def test_a_signal_during_the_first_checkpoint_stops_after_one_batch(
    workdir, spiral_yaml, baseline, nncli, monkeypatch, own_sigterm
):
    from nncli.training.callbacks.files import Checkpointer

    first = Checkpointer.on_train_begin

    def signal_midway(self, trainer):
        send()
        first(self, trainer)

    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "on_train_begin", signal_midway)
        done = nncli("train", spiral_yaml, "--run-dir", "cut", "--quiet")
    assert done.exit_code == 143, done.output
    assert done.stderr.strip() == (
        f"interrupted by SIGTERM: saved {Path('cut/checkpoints/last.pkl')} (epoch 1, batch 1);"
        " resume with: nncli train --resume cut"
    )
    assert_whole(workdir / "cut")
    resumed = nncli("train", "--resume", "cut", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert_same_run(workdir / "cut", baseline)


def test_a_second_signal_stops_at_once_and_says_how_to_go_on(
    workdir, spiral_yaml, baseline, nncli, monkeypatch, own_sigterm
):
    from nncli.training.callbacks.files import MetricsWriter

    def twice_in_epoch_two(self, trainer, batch, loss):
        if trainer.state.epoch == 1 and batch == 2:
            send()
            send()

    with monkeypatch.context() as patch:
        patch.setattr(MetricsWriter, "on_batch_end", twice_in_epoch_two, raising=False)
        done = nncli("train", spiral_yaml, "--run-dir", "cut", "--quiet")
    assert done.exit_code == 143, done.output
    assert done.stderr.strip() == (
        f"interrupted by SIGTERM at once (a second signal); {Path('cut/checkpoints/last.pkl')} holds"
        " the last state saved: resume with: nncli train --resume cut"
    )
    assert checkpoint.load(workdir / "cut" / "checkpoints" / "last.pkl")["epoch"] == 1
    resumed = nncli("train", "--resume", "cut", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert_same_run(workdir / "cut", baseline)


# ---- python -m nncli: the package's own import -------------------------------------------

# A SIGINT that arrives while the package imports nncli.errors (a finder that sends it when
# that module is looked for), in a process that runs as `python -m nncli --version`.
DURING_IMPORT = """
import os, runpy, signal, sys

class SignalOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == "nncli.errors":
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, SignalOnImport())
sys.argv = ["-m", "--version"]  # as python -m sets them while it imports the package
sys.orig_argv = [sys.executable, "-m", "nncli", "--version"]
runpy.run_module("nncli", run_name="__main__", alter_sys=True)
"""


def test_a_ctrl_c_while_python_m_imports_the_package_is_one_line():
    done = subprocess.run([sys.executable, "-c", DURING_IMPORT], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (130, "interrupted\n")


def test_only_the_command_takes_ctrl_c_over_while_importing():
    from nncli._startup import is_the_command

    python = sys.executable
    assert is_the_command(["-m"], [python, "-m", "nncli", "train"])
    assert is_the_command(["-m"], [python, "-X", "importtime", "-mnncli"])
    assert is_the_command(["/venv/bin/nncli", "train"], [python, "/venv/bin/nncli", "train"])
    assert not is_the_command(["-m"], [python, "-m", "pytest", "nncli"])
    assert not is_the_command(["-m"], [python, "-m", "nncli.something"])
    assert not is_the_command(["script.py"], [python, "script.py"])
    assert not is_the_command([], [])
    # a program that imports nncli keeps its own handler, whatever it is (a shell's background
    # job starts with SIGINT ignored, an interactive one with Python's default handler)
    code = ("import signal; before = signal.getsignal(signal.SIGINT); import nncli;"
            " print(signal.getsignal(signal.SIGINT) is before)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == "True\n"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_result_is_printed_is_told_of_after_it(
    workdir, spiral_yaml, nncli, monkeypatch, own_sigterm, signum
):
    """The last moment of a run: its result line. A signal then is noted and told of after the
    line, not left to end the process (SIGTERM's default) before the line is shown."""
    from nncli.commands import train as training

    shown = training.format_result

    def signalled_first(result):
        send(signum)
        return shown(result)

    monkeypatch.setattr(training, "format_result", signalled_first)
    done = nncli("train", spiral_yaml, "--run-dir", "late", "--quiet")
    name = signal.Signals(signum).name
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("run late: ")
    assert (
        done.stderr.strip()
        == f"note: {name} came after the last batch; the run finished and late is complete"
    )
    assert_whole(workdir / "late")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG")
def test_a_run_whose_sweep_died_before_it_started_trains_nothing(workdir, spiral_yaml):
    """NNCLI_PARENT (a sweep's pid, set for the runs it starts) that is not the parent any more:
    the sweep died between starting the run and the run asking to die with it."""
    command = [sys.executable, "-m", "nncli", "train", str(spiral_yaml), "--run-dir", "r"]
    env = {**os.environ, "NNCLI_PARENT": str(os.getpid() + 1)}  # its parent is this process
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    parent = env["NNCLI_PARENT"]
    assert done.stderr == f"stopped: the process that started this one (NNCLI_PARENT={parent}) has ended\n"
    assert not (workdir / "r").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG")
def test_a_run_dies_with_the_process_named_its_parent_leaving_its_checkpoint(workdir, spiral):
    """A parent killed with `kill -9` (as a sweep, or a sweep's Dask worker, is killed for its
    memory): the run it started gets SIGTERM from the kernel, saves and stops."""
    (workdir / "long.yaml").write_text(spiral({"data.points_per_class": 2000, "train.epochs": 400}))
    start = ("import os, subprocess, sys; env = {**os.environ, 'NNCLI_PARENT': str(os.getpid())};"
             " run = subprocess.Popen(sys.argv[1:], env=env); print(run.pid, flush=True); run.wait()")
    command = [sys.executable, "-m", "nncli", "train", "long.yaml", "--run-dir", "r", "--quiet"]
    parent = subprocess.Popen([sys.executable, "-c", start, *command], cwd=workdir,
                              stdout=subprocess.PIPE, text=True)
    run = int(parent.stdout.readline())
    stopped = False
    try:
        wait_for(lambda: epochs_done(workdir / "r"), "the first epoch")
        parent.kill()
        parent.wait()
        stopped = wait_for(lambda: ended(run), "the run to stop")
    finally:
        if not stopped:  # (once it has ended, its pid may be another process's)
            with contextlib.suppress(ProcessLookupError):
                os.kill(run, signal.SIGKILL)
    assert not (workdir / "r" / "summary.json").exists()  # it stopped, far from its 400 epochs
    state = checkpoint.load(workdir / "r" / "checkpoints" / "last.pkl")
    assert 1 <= state["epoch"] < 400
