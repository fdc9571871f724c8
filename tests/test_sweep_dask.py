"""`nncli sweep --scheduler local:N` as a user sees it: one line on Ctrl-C naming the runs not
finished and no Dask output (no worker tracebacks, no port warning), run as the real command in
a subprocess (warnings and signals do not reach an in-process run as they reach a user)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import socket
import subprocess
import sys

import pytest
from polling import wait_for

pytest.importorskip("dask.distributed", reason="the Dask extra (in the test extra) is not installed")
psutil = pytest.importorskip("psutil", reason="psutil comes with dask.distributed")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")

GRID = """\
base: spiral.yaml
grid:
  optimizer.lr: [0.02, 0.2]
seeds: [0, 1]
metric: val_acc
"""


def sweep(*args, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nncli", "sweep", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def trainings(process: subprocess.Popen) -> list:
    """The `nncli train` processes under the sweep (its workers' children)."""
    found = []
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for child in children:
        with contextlib.suppress(psutil.Error):
            if "train" in child.cmdline():
                found.append(child)
    return found


@pytest.mark.parametrize("to", ["the terminal's process group", "the sweep alone"])
def test_ctrl_c_prints_one_line_naming_the_runs_not_finished(workdir, spiral, to):
    from nncli.commands.sweep import plan
    from nncli.config.sweep import load_sweep

    # runs far longer than the test: the signal always lands while the first two train
    (workdir / "spiral.yaml").write_text(spiral({"data.points_per_class": 2000, "train.epochs": 500}))
    (workdir / "grid.yaml").write_text(GRID)
    (workdir / "tmp").mkdir()  # where the workers make their temporary run folders
    env = {**os.environ, "TMPDIR": str(workdir / "tmp")}
    process = sweep("grid.yaml", "--scheduler", "local:2", "--out", "cut", start_new_session=True,
                    env=env)
    seen = []
    try:
        # the event: both workers are training (or the sweep ended before they were)
        wait_for(lambda: process.poll() is not None or len(trainings(process)) >= 2,
                 "two workers training", limit=90, every=0.1)
        seen = trainings(process)  # each trains far longer than the test: still the two
        assert len(seen) == 2, f"the workers never started training: {process.communicate()[1]}"
        if to == "the sweep alone":
            process.send_signal(signal.SIGINT)  # as `kill -INT`: the workers' runs get no signal
        else:
            os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C: every process of the terminal's
        _, err = process.communicate(timeout=60)
    finally:
        for child in [*seen, *(trainings(process) if process.poll() is None else [])]:
            with contextlib.suppress(psutil.Error):
                child.kill()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 130, err
    names = [f"{run.path.name} seed {run.seed}" for run in plan(load_sweep(workdir / "grid.yaml"),
                                                                workdir / "cut")]
    lines = err.strip().splitlines()
    assert lines == [
        "4 of 4 runs to do, on the Dask cluster local:2, in cut",
        f"interrupted: 4 runs not finished ({', '.join(names)}); run the sweep again to finish them",
    ], err
    # the runs the workers were training stop with the sweep, not minutes later on their own
    gone, alive = psutil.wait_procs(seen, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    folders = str(workdir / "tmp")
    later = [p for p in psutil.process_iter(["cmdline"]) if folders in " ".join(p.info["cmdline"] or [])]
    for stray in later:
        with contextlib.suppress(psutil.Error):
            stray.kill()
    assert not later, [p.info["cmdline"] for p in later]  # no run started later either
    assert not list((workdir / "tmp").glob("nncli-sweep-*"))  # nor their folders left behind


def test_no_dashboard_port_warning_when_8787_is_taken(workdir, spiral):
    (workdir / "spiral.yaml").write_text(spiral({"train.epochs": 1}))
    (workdir / "one.yaml").write_text("base: spiral.yaml\ngrid: {optimizer.lr: [0.1]}\nseeds: [0]\n")
    with socket.socket() as holder:
        try:  # distributed's default dashboard port, taken as another program would take it
            holder.bind(("127.0.0.1", 8787))
            holder.listen()
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise  # in use already is as good
        process = sweep("one.yaml", "--scheduler", "local:1", "--out", "dask")
        _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "8787" not in err and not re.search(r"already in use|dashboard|Traceback", err, re.I), err
    assert err.strip().splitlines() == ["1 of 1 runs to do, on the Dask cluster local:1, in dask"]
