"""`nncli sweep --scheduler`: the runs of a sweep on a Dask cluster (see `nncli.commands.sweep`,
which calls `_dask_client` and `_execute_on_dask`).

`_execute_on_dask` submits one `train_remotely` task per run and writes the files each sends
back into the run's folder; `_shut_down` closes the client after the runs, or after Ctrl-C.
`train_remotely` and `stop_training` run on the workers, which import them from this module by
name. Nothing here imports `nncli.commands.sweep`: what the runs share with the local path
(how a run's exit is recorded, the progress bar) is handed in.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from nncli.config.sweep import Sweep
from nncli.errors import NncliError
from nncli.fileio import atomic_write_bytes
from nncli.training.rundir import run_status
from nncli.words import count

NAMED = 5  # runs named in the line of an interrupted sweep; the rest are counted

# on a Dask worker: the `nncli train` processes running now, each with its sweep's token, the
# number of `train_remotely` calls of each token not returned yet, and the tokens stopped
_training: dict[subprocess.Popen, str] = {}
_running: collections.Counter[str] = collections.Counter()
_stopped: set[str] = set()
_running_lock = threading.Lock()


class SweepInterrupted(NncliError):
    """Ctrl-C of a sweep on a Dask cluster: the runs that did not finish (their work on the
    workers is lost; a run interrupted before resumes from its own files), in one line."""

    exit_code = 130

    def __init__(self, lost: list):
        self.lost = lost
        if not lost:
            super().__init__("interrupted: every run had finished; run the sweep again to write"
                             " its summary")
            return
        names = ", ".join(f"{run.path.name} seed {run.seed}" for run in lost[:NAMED])
        more = f", and {len(lost) - NAMED} more" if len(lost) > NAMED else ""
        super().__init__(f"interrupted: {count(len(lost), 'run')} not finished ({names}{more});"
                         " run the sweep again to finish them")


def _dask_client(scheduler: str):
    """A client of the Dask cluster at `tcp://HOST:PORT`, or of a LocalCluster of N worker
    processes on 127.0.0.1 for `local:N`."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise NncliError(
            "--scheduler needs Dask: pip install 'nncli[dask]' (dask[distributed])"
        ) from None
    if scheduler.startswith("local:"):
        workers = scheduler.removeprefix("local:")
        if not workers.isdigit() or int(workers) < 1:
            raise NncliError(f"--scheduler local:N wants a number of workers, got {scheduler!r}")
        # The worker processes ignore Ctrl-C (they inherit SIG_IGN from here): this process
        # stops them, so that a Ctrl-C prints no traceback per worker. The scheduler's HTTP
        # server (which it starts even without a dashboard) takes any free port on 127.0.0.1:
        # on its default, 8787, distributed warns whenever another program holds that port.
        with _sigint_ignored():
            cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                                   host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                   scheduler_kwargs={"dashboard": False},
                                   silence_logs=logging.ERROR)
        return Client(cluster)
    if not scheduler.startswith(("tcp://", "tls://")):
        raise NncliError(f"--scheduler expects tcp://HOST:PORT or local:N, got {scheduler!r}")
    try:
        return Client(scheduler, timeout=30)
    except (OSError, TimeoutError) as err:
        raise NncliError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None


def train_remotely(base_name: str, base_text: str, sets: list[str], resume: dict[str, bytes],
                   data_dir: str | None, token: str = "") -> dict:
    """On a Dask worker: `nncli train` in a temporary folder of its own (no shared file system),
    from the base config's text (and an interrupted run's files, to resume it); returns the exit
    code, the error output and every file of the run directory. `token` names the sweep, for
    `stop_training`."""
    with _running_lock:
        _running[token] += 1
    try:
        with tempfile.TemporaryDirectory(prefix="nncli-sweep-") as tmp:
            return _train_in(Path(tmp), base_name, base_text, sets, resume, data_dir, token)
    finally:  # once the folder is gone
        with _running_lock:
            _running[token] -= 1


def _train_in(folder: Path, base_name: str, base_text: str, sets: list[str],
              resume: dict[str, bytes], data_dir: str | None, token: str) -> dict:
    (folder / base_name).write_text(base_text, encoding="utf-8")
    run = folder / "run"
    for name, data in resume.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(data)
    command = [sys.executable, "-m", "nncli", "train"]
    command += ["--resume", str(run)] if resume else [base_name, "--run-dir", str(run)]
    command += [a for value in ([] if resume else sets) for a in ("--set", value)] + ["--quiet"]
    if data_dir is not None:
        command += ["--data-dir", data_dir]
    with _running_lock:  # a task that starts as its sweep is stopped starts nothing
        if token in _stopped:
            return {"code": 130, "stderr": "", "files": {}}
        process = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, env=_environment())
        _training[process] = token
    with process:
        try:
            _, stderr = process.communicate()
        finally:
            _training.pop(process, None)
    files = {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    return {"code": process.returncode, "stderr": stderr, "files": files}


async def stop_training(token: str, wait: float = 30.0) -> None:
    """On a Dask worker: stop the `nncli train` processes `train_remotely` started there
    for the sweep of `token` (a shared cluster may be running other sweeps), then up to `wait`
    seconds for those tasks to return with their temporary folders removed. Cancelling a task
    does not stop the thread running it, and closing a worker leaves its child processes
    running and its folders behind: a sweep stopped by Ctrl-C calls this on every worker first."""
    import asyncio

    with _running_lock:
        _stopped.add(token)
        processes = [process for process, owner in _training.items() if owner == token]
    for process in processes:
        if process.poll() is None:
            # SIGTERM, which `nncli train` answers as it answers Ctrl-C: a process that has not
            # yet set its handlers still ignores SIGINT, as the worker that started it does
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + wait
    while _running[token] > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def _execute_on_dask(todo: list, spec: Sweep, client, data_dir, bar, failures: dict,
                     finish) -> None:
    """The runs `todo` (`nncli.commands.sweep.Run`s) on the cluster; `finish(run, code, log,
    failures)` records each one's exit, and `bar` (a tqdm bar, or None) counts them."""
    from dask.distributed import as_completed

    base_text = spec.base.read_text(encoding="utf-8")
    futures = {}
    token = uuid.uuid4().hex  # names this invocation's runs on the workers
    stopped = False
    try:
        for run in todo:
            resume = {}
            if run_status(run.path) == "interrupted":
                resume = {str(p.relative_to(run.path)): p.read_bytes()
                          for p in run.path.rglob("*") if p.is_file()}
            sets = [*run.trial.overrides(), f"seed={run.seed}"]
            future = client.submit(train_remotely, spec.base.name, base_text, sets, resume,
                                   None if data_dir is None else str(data_dir), token,
                                   key=f"nncli-{run.path.name}", retries=2, pure=False)
            futures[future] = run
        for future in as_completed(futures):
            run = futures[future]
            answer = future.result()
            if answer["files"]:
                if run.path.exists():
                    shutil.rmtree(run.path)  # what a failed attempt left
                for name, data in answer["files"].items():
                    atomic_write_bytes(run.path / name, data)
            log = io.StringIO(answer["stderr"])
            finish(run, answer["code"], log, failures)
            if bar is not None:
                bar.update()
    except KeyboardInterrupt:
        stopped = True
    finally:
        if bar is not None:
            bar.close()
        _shut_down(client, list(futures), token, quiet=stopped)
    if stopped:
        raise SweepInterrupted([run for run in todo if run.status in ("pending", "interrupted")])


def _shut_down(client, futures: list, token: str, quiet: bool) -> None:
    """Cancel what is left and close the client and, for local:N, its cluster. After a Ctrl-C
    (`quiet`): the runs of `token` still training on the workers are stopped, distributed's
    logging in this process is silenced (a local cluster's workers log only errors, see
    `_dask_client`), and a second Ctrl-C cannot break off the closing half-way."""
    cluster = client.cluster
    logger = logging.getLogger("distributed")
    level = logger.level
    with contextlib.ExitStack() as stack:
        if quiet:
            logger.setLevel(logging.CRITICAL + 1)
            stack.callback(logger.setLevel, level)
            stack.enter_context(_sigint_ignored())
        client.cancel(futures)  # first, so that no worker starts another run
        if quiet:
            with contextlib.suppress(Exception):  # a worker gone already has nothing to stop
                client.run(stop_training, token)
                if cluster is not None:  # ours, writing to our stderr: nothing more from it
                    client.run(_silence_distributed)
                    client.run(_silence_distributed, nanny=True)
        client.close()
        if cluster is not None:
            cluster.close()


def _silence_distributed() -> None:
    """On a local cluster's worker or nanny, as it is closed: no log lines, errors included."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL + 1)


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT ignored in this process (and in the processes it starts meanwhile, which inherit
    SIG_IGN); where this is not the main thread, signals cannot be changed and nothing is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _environment() -> dict[str, str]:
    """On a worker: its environment, with BLAS limited to one thread for the `nncli train` it
    starts (as `nncli sweep` limits its local runs, to cores // jobs threads)."""
    env = dict(os.environ)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = "1"
    return env
