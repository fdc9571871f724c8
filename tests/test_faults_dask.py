"""Faults of `nncli sweep --scheduler`, each one line on stderr and never a traceback: an address
that is not a Dask scheduler (a server answering HTTP garbage, `python -m http.server`), more
local workers than cores, a run whose worker dies (KilledWorker), a scheduler lost mid-sweep, and
file names sent back by a worker that would leave the run's folder. The sweeps run as the real
command in a subprocess; every server binds 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from polling import ended, epochs_done, wait_for

from nncli.errors import NncliError
from nncli.training import checkpoint

pytest.importorskip("dask.distributed", reason="the Dask extra (in the test extra) is not installed")
psutil = pytest.importorskip("psutil", reason="psutil comes with dask.distributed")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")

TWO = """\
base: spiral.yaml
grid:
  train.epochs: [2, {long}]
seeds: [0]
metric: val_acc
"""
LIMIT = 60  # seconds: a bound on a broken run (old code hung for minutes), not a measurement
MIB = 1024  # ru_maxrss is in KiB on Linux
LONG = "train.epochs=150"  # the `--set` of the longer run of `grid`, about 7 s


def sweep(*args, env=None, peak: Path | None = None) -> subprocess.Popen:
    """`nncli sweep ARGS` in a new session; with `peak`, through a probe interpreter whose only
    child it is, which writes the sweep's peak resident memory (KiB) to that file: this test
    process's own RUSAGE_CHILDREN would be the largest of every child the suite has waited for."""
    command = [sys.executable, "-m", "nncli", "sweep", *args]
    if peak is not None:
        command = [sys.executable, "-c", PROBE, str(peak), *command]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, **(env or {})})


PROBE = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[2:]);"
         " open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss));"
         " sys.exit(code)")


def finish(process: subprocess.Popen, timeout: float = LIMIT) -> tuple[str, str]:
    """stdout and stderr of `process`; killed with its process group (Dask workers and their
    runs included) if it outlives `timeout`."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process.pid)
        process.communicate()
        raise


def kill_tree(pid: int) -> None:
    with contextlib.suppress(psutil.Error):
        parent = psutil.Process(pid)
        for child in [*parent.children(recursive=True), parent]:
            with contextlib.suppress(psutil.Error):
                child.kill()


def trainings(root: subprocess.Popen, marker: str) -> list:
    """The `nncli train` processes under `root` whose command line holds `marker` (a `--set`)."""
    found = []
    with contextlib.suppress(psutil.Error):
        for process in psutil.Process(root.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                line = process.cmdline()
                if "train" in line and marker in line:
                    found.append(process)
    return found


def rows(out: Path) -> list[dict]:
    with open(out / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def grid(workdir, spiral) -> Path:
    """Two runs: 2 epochs, and a longer one (its `--set train.epochs=150` tells it apart)."""
    (workdir / "spiral.yaml").write_text(spiral({"data.points_per_class": 300}))
    path = workdir / "grid.yaml"
    path.write_text(TWO.format(long=150))
    return path


@contextlib.contextmanager
def garbage_server():
    """A TCP server on 127.0.0.1 that answers every connection with an HTTP error at once."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.2)
        done = threading.Event()

        def serve():
            while not done.is_set():
                try:
                    connection, _ = server.accept()
                except OSError:
                    continue
                with connection:
                    connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
        finally:
            done.set()
            thread.join()


def test_a_server_answering_http_is_refused_in_one_line_without_a_huge_allocation(grid):
    with garbage_server() as address:
        process = sweep(str(grid), "--out", "o", "--scheduler", address, peak=Path("peak"))
        _, err = finish(process)
    assert process.returncode == 1
    line = one_line(err)
    assert line.startswith(f"error: {address} is not a Dask scheduler: it answered b'HTTP/1.1'"), err
    assert int(Path("peak").read_text()) < 600 * MIB
    assert not [p for p in Path("o").glob("*") if p.is_dir()]  # no run started


def test_an_http_server_that_waits_for_a_request_is_refused_after_the_handshake_timeout(grid):
    server = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = re.search(r"port (\d+)", server.stdout.readline()).group(1)
        address = f"tcp://127.0.0.1:{port}"
        process = sweep(str(grid), "--out", "o", "--scheduler", address, peak=Path("peak"))
        _, err = finish(process)
    finally:
        server.kill()
        server.communicate()
    from nncli.commands.sweep_dask import HANDSHAKE_TIMEOUT

    assert process.returncode == 1
    assert one_line(err) == (f"error: {address} did not answer Dask's handshake within"
                             f" {HANDSHAKE_TIMEOUT:g} s: is it a Dask scheduler?")
    assert int(Path("peak").read_text()) < 600 * MIB


def test_more_local_workers_than_cores_are_refused(grid):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    process = sweep(str(grid), "--out", "o", "--scheduler", "local:999999")
    _, err = finish(process)
    assert process.returncode == 1
    assert one_line(err) == (f"error: --scheduler local:999999 starts 999999 worker processes on"
                             f" this machine, which has {cores} core{'s' if cores > 1 else ''}:"
                             f" give at most local:{cores}")


def test_a_run_whose_worker_dies_is_one_failed_row_and_the_rerun_finishes_it(grid, workdir):
    # KilledWorker at the first death of the worker training it (Dask retries it 3 times by
    # default), as when a worker is killed for its memory
    (workdir / "tmp").mkdir()  # the workers' temporary folders, the dead one's left there
    env = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0", "TMPDIR": str(workdir / "tmp")}
    process = sweep(str(grid), "--out", "o", "--scheduler", "local:1", env=env)
    try:
        run = wait_for(lambda: trainings(process, LONG), "the long run to start")[0]
        folder = Path(run.cwd())  # the worker's temporary folder, which its death leaves behind
        wait_for(lambda: epochs_done(folder / "run"), "the long run's first epoch")
        worker = run.parent()
        worker.kill()  # as the system kills a worker for its memory
        if sys.platform.startswith("linux"):
            # the run is told (PR_SET_PDEATHSIG), saves and stops, rather than training on to
            # the end for nobody (it did: its summary.json was written in the folder left)
            wait_for(lambda: ended(run.pid), "the dead worker's run to stop")
            assert not (folder / "run" / "summary.json").exists()
            assert checkpoint.load(folder / "run" / "checkpoints" / "last.pkl")["epoch"] < 150
        else:
            run.kill()
        out, err = finish(process)
    finally:
        kill_tree(process.pid)
    assert process.returncode == 1, err
    assert err.strip().splitlines() == [
        "2 of 2 runs to do, on the Dask cluster local:1, in o",
        f"error: 1 of 2 runs failed; their errors are in {Path('o', 'failures.json')}",
    ], err
    assert re.search(r"failed: trial 1 \(train.epochs=150\), seed 0: error: the Dask workers"
                     r" training it died \(KilledWorker", out), out
    table = {row["train.epochs"]: row for row in rows(workdir / "o")}
    assert table["2"]["status"] == "finished" and table["150"]["status"] == "failed"
    again = sweep(str(grid), "--out", "o", "--scheduler", "local:1")
    out, err = finish(again)
    assert again.returncode == 0, err
    assert {row["status"] for row in rows(workdir / "o")} == {"finished"}
    assert "1 of 2 runs to do (1 done before)" in err


def test_a_lost_scheduler_writes_the_summary_of_what_finished_and_the_rerun_finishes(grid, workdir):
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                                  "127.0.0.1", "--port", "0", "--no-dashboard"],
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)
    worker = process = None
    try:
        address = wait_for(lambda: re.search(r"Scheduler at:\s+(\S+)", scheduler.stderr.readline()),
                           "the scheduler").group(1)
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                   "--nthreads", "2", "--host", "127.0.0.1", "--no-dashboard"],
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        process = sweep(str(grid), "--out", "o", "--scheduler", address)
        # the short run back in its folder while the long one trains: then the scheduler dies
        wait_for(lambda: list((workdir / "o").glob("*/summary.json")), "the short run")
        wait_for(lambda: trainings(worker, LONG), "the long run")
        scheduler.kill()
        _, err = finish(process)
    finally:
        for started in (process, worker, scheduler):
            if started is not None:
                kill_tree(started.pid)
                started.communicate()
    assert process.returncode == 1, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 2, err  # the line of the start, and this
    assert re.fullmatch(rf"error: lost the Dask scheduler {address}: 1 run not finished \(\w{{12}}"
                        r" seed 0\); run the sweep again to finish them", lines[1]), err
    table = {row["train.epochs"]: row for row in rows(workdir / "o")}
    assert table["2"]["status"] == "finished" and table["150"]["status"] == "pending"
    again = sweep(str(grid), "--out", "o", "--jobs", "1")  # the rest, here
    _, err = finish(again)
    assert again.returncode == 0, err
    assert {row["status"] for row in rows(workdir / "o")} == {"finished"}


@pytest.mark.parametrize("name", ["../escaped", "/tmp/escaped", "a/../../escaped", "", ".", "C:/x"])
def test_a_file_name_sent_back_outside_the_run_folder_is_refused(tmp_path, name):
    from nncli.commands.sweep_dask import write_files

    run = tmp_path / "out" / "abc"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("kept\n")
    with pytest.raises(NncliError) as caught:
        write_files(run, {"summary.json": b"{}", name: b"x"}, clear=True)
    message = str(caught.value)
    assert message == (f"refused the file {name!r} sent for abc: a file's name must be relative"
                       " and stay inside its run folder")
    assert "\n" not in message
    # checked before anything is changed: the folder as it was, nothing written anywhere
    assert sorted(p.name for p in run.iterdir()) == ["metrics.csv"]
    assert not list(tmp_path.rglob("escaped")) and not Path("/tmp/escaped").exists()


def test_a_file_name_through_a_symbolic_link_is_refused(tmp_path):
    from nncli.commands.sweep_dask import write_files

    run, outside = tmp_path / "run", tmp_path / "outside"
    run.mkdir()
    outside.mkdir()
    (run / "checkpoints").symlink_to(outside)
    with pytest.raises(NncliError, match=r"refused the file 'checkpoints/last.pkl' sent for run:"
                                         r" it leads outside .* through a symbolic link"):
        write_files(run, {"checkpoints/last.pkl": b"x"})
    assert not list(outside.iterdir())


def test_names_inside_the_folder_are_written(tmp_path):
    from nncli.commands.sweep_dask import write_files

    run = tmp_path / "run"
    run.mkdir()
    (run / "stale.txt").write_text("from a failed attempt")
    write_files(run, {"summary.json": b"{}", "checkpoints/last.pkl": b"pk", "a/./b": b"b"},
                clear=True)
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()) == [
        "a/b", "checkpoints/last.pkl", "summary.json"]


def crafted(*args, **kwargs) -> dict:
    """A `train_remotely` whose worker sends back a file named to escape the run folder."""
    return {"code": 0, "stderr": "", "files": {"summary.json": b"{}", "../../escaped": b"x"}}


def test_a_run_sending_back_a_name_outside_its_folder_fails_with_that_line(workdir, spiral, monkeypatch):
    from dask.distributed import Client

    from nncli.commands import sweep_dask
    from nncli.commands.sweep import _finish, plan
    from nncli.config.sweep import load_sweep

    (workdir / "spiral.yaml").write_text(spiral())
    (workdir / "one.yaml").write_text("base: spiral.yaml\ngrid: {optimizer.lr: [0.1, 0.2]}\nseeds: [0]\n")
    spec = load_sweep(workdir / "one.yaml")
    runs = plan(spec, workdir / "o")
    monkeypatch.setattr(sweep_dask, "train_remotely", crafted)  # the workers are threads here
    failures = {}
    client = Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None)
    lost = sweep_dask._execute_on_dask(runs, spec, client, None, None, failures, _finish)
    assert lost is None
    for run in runs:
        assert run.status == "failed"
        assert run.error == (f"error: refused the file '../../escaped' sent for {run.path.name}: a"
                             " file's name must be relative and stay inside its run folder")
        assert failures[run.path.name] == run.error
        assert not run.path.exists()  # nothing of it written
    assert not list(workdir.rglob("escaped"))
