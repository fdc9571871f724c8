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
import errno
import io
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path, PurePosixPath, PureWindowsPath

from nncli._startup import PARENT
from nncli.commands.sweep_prune import PRUNED_EXIT, pruned_before_start, watch_remote
from nncli.config.sweep import Sweep
from nncli.errors import NncliError
from nncli.fileio import atomic_write_bytes
from nncli.messages import count
from nncli.training.rundir import run_status

HANDSHAKE_TIMEOUT = 10.0  # seconds for a scheduler to answer, and for the client to connect
HANDSHAKE_BYTES = 64 * 1024  # a scheduler's first message (about 60 bytes) is far shorter
NAMED = 5  # runs named in the line of an interrupted sweep; the rest are counted

# on a Dask worker: the `nncli train` processes running now, each with its sweep's token, its
# run's name and folder; the number of `train_remotely` calls of each token not returned yet,
# the tokens stopped, and the (token, run name) pruned
_training: dict[subprocess.Popen, tuple[str, str, Path, int]] = {}  # ..., launched (ns)
_running: collections.Counter[str] = collections.Counter()
_stopped: set[str] = set()
_pruned: set[tuple[str, str]] = set()
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
        if int(workers) > _cores():
            raise NncliError(f"--scheduler {scheduler} starts {workers} worker processes on this"
                             f" machine, which has {count(_cores(), 'core')}: give at most"
                             f" local:{_cores()}")
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
    if scheduler.startswith("tcp://"):
        _check_handshake(scheduler)
    try:
        return Client(scheduler, timeout=HANDSHAKE_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as err:
        raise NncliError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None


def _cores() -> int:
    """The cores this process may run on (its affinity, where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _check_handshake(scheduler: str) -> None:
    """Refuse an address that is not a Dask scheduler, in one line and at most
    `HANDSHAKE_TIMEOUT` seconds. distributed's client would wait for ever on a server that says
    nothing (an HTTP server waits for a request), and takes the first 8 bytes of any answer as
    the size of a buffer to allocate (exabytes, from "HTTP/1.1"). A scheduler sends its handshake
    (a few dozen bytes) as soon as it accepts: read it here with a deadline, and send it back,
    which completes the handshake so that the scheduler logs nothing."""
    from distributed.comm.addressing import parse_host_port

    try:
        host, port = parse_host_port(scheduler.removeprefix("tcp://"), 8786)
    except ValueError:
        raise NncliError(f"--scheduler expects tcp://HOST:PORT, got {scheduler!r}") from None
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT
    try:
        with socket.create_connection((host, port), timeout=HANDSHAKE_TIMEOUT) as connection:
            head = _receive(connection, 8, deadline)
            (size,) = struct.unpack("Q", head)  # as distributed reads it
            body = _receive(connection, size, deadline) if 0 < size <= HANDSHAKE_BYTES else b""
            if b"pickle-protocol" not in body:
                raise NncliError(f"{scheduler} is not a Dask scheduler: it answered"
                                 f" {bytes(head)!r}..., not Dask's handshake")
            connection.sendall(head + body)
    except TimeoutError:
        raise NncliError(f"{scheduler} did not answer Dask's handshake within"
                         f" {HANDSHAKE_TIMEOUT:g} s: is it a Dask scheduler?") from None
    except OSError as err:
        raise NncliError(f"cannot reach the Dask scheduler at {scheduler}:"
                         f" {err.strerror or err}") from None


def _receive(connection: socket.socket, size: int, deadline: float) -> bytes:
    """`size` bytes from `connection`, or TimeoutError once `deadline` has passed."""
    data = bytearray()
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        connection.settimeout(left)
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError(errno.ECONNRESET, "the connection was closed")
        data += chunk
    return bytes(data)


def train_remotely(base_name: str, base_text: str, sets: list[str], resume: dict[str, bytes],
                   data_dir: str | None, token: str = "", name: str = "") -> dict:
    """On a Dask worker: `nncli train` in a temporary folder of its own (no shared file system),
    from the base config's text (and an interrupted run's files, to resume it); returns the exit
    code, the error output and every file of the run directory. `token` names the sweep, for
    `stop_training`, and `name` the run, for `progress_remotely` and `prune_remotely`."""
    with _running_lock:
        _running[token] += 1
    try:
        with tempfile.TemporaryDirectory(prefix="nncli-sweep-") as tmp:
            return _train_in(Path(tmp), base_name, base_text, sets, resume, data_dir, token, name)
    finally:  # once the folder is gone
        with _running_lock:
            _running[token] -= 1


def _train_in(folder: Path, base_name: str, base_text: str, sets: list[str],
              resume: dict[str, bytes], data_dir: str | None, token: str, name: str) -> dict:
    (folder / base_name).write_text(base_text, encoding="utf-8")
    run = folder / "run"
    write_files(run, resume)
    command = [sys.executable, "-m", "nncli", "train"]
    command += ["--resume", str(run)] if resume else [base_name, "--run-dir", str(run)]
    command += [a for value in ([] if resume else sets) for a in ("--set", value)] + ["--quiet"]
    if data_dir is not None:
        command += ["--data-dir", data_dir]
    with _running_lock:  # a task that starts as its sweep is stopped starts nothing
        if token in _stopped:
            return {"code": 130, "stderr": "", "files": {}}
        if (token, name) in _pruned:  # its trial was pruned before it started
            return {"code": PRUNED_EXIT, "stderr": "", "files": {}}
        process = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, env=run_environment(1))
        _training[process] = (token, name, run, time.time_ns())
    with process:
        try:
            _, stderr = process.communicate()
        finally:
            _training.pop(process, None)
    files = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*")
             if p.is_file() and not p.is_symlink()}
    return {"code": process.returncode, "stderr": stderr, "files": files}


async def stop_training(token: str, wait: float = 30.0) -> None:
    """On a Dask worker: stop the `nncli train` processes `train_remotely` started there
    for the sweep of `token` (a shared cluster may be running other sweeps), then up to `wait`
    seconds for those tasks to return with their temporary folders removed. Cancelling a task
    does not stop the thread running it, and closing a worker leaves its folders behind (and,
    elsewhere than on Linux, its child processes running: `nncli._startup.die_with_parent`): a
    sweep stopped by Ctrl-C calls this on every worker first."""
    import asyncio

    with _running_lock:
        _stopped.add(token)
        processes = [process for process, (owner, *_) in _training.items() if owner == token]
    for process in processes:
        if process.poll() is None:
            # SIGTERM, which `nncli train` answers as it answers Ctrl-C: a process that has not
            # yet set its handlers still ignores SIGINT, as the worker that started it does
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + wait
    while _running[token] > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def progress_remotely(token: str) -> dict[str, str]:
    """On a Dask worker: the metrics.csv text of each run of `token` training here."""
    with _running_lock:
        runs = [(name, folder) for _, (owner, name, folder, _) in _training.items() if owner == token]
    found = {}
    for name, folder in runs:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            found[name] = (folder / "metrics.csv").read_text(encoding="utf-8")
    return found


def prune_remotely(token: str, names: list[str]) -> None:
    """On a Dask worker: the runs `names` of `token` are pruned: those not started will not
    start, and those training here that wrote an epoch since they started (their signal
    handlers are in place) get SIGUSR1, which `nncli train` answers by stopping at the end of
    that epoch."""
    with _running_lock:
        _pruned.update((token, name) for name in names)
        processes = [process for process, (owner, name, folder, launched) in _training.items()
                     if owner == token and name in names and _written_since(folder, launched)]
    for process in processes:
        if process.poll() is None:
            process.send_signal(getattr(signal, "SIGUSR1", signal.SIGTERM))


def _written_since(folder: Path, launched: int) -> bool:
    try:
        return (folder / "metrics.csv").stat().st_mtime_ns > launched
    except OSError:
        return False


def _execute_on_dask(todo: list, spec: Sweep, client, data_dir, bar, failures: dict,
                     finish, pruner=None) -> NncliError | None:
    """The runs `todo` (`nncli.commands.sweep.Run`s) as tasks on the cluster, their files
    written back as they return; `finish(run, code, log, failures)` records each one's exit,
    and `bar` (a tqdm bar, or None) counts them. A run whose task fails (its workers died:
    KilledWorker; or it sent back a file name outside its folder) is marked failed with its
    error line, and the others go on. Returns the error to raise once the summary is written
    if the scheduler was lost (the runs not returned stay as they were, to be run again);
    raises `SweepInterrupted` after Ctrl-C."""
    from dask.distributed import as_completed

    base_text = spec.base.read_text(encoding="utf-8")
    futures = {}
    token = uuid.uuid4().hex  # names this invocation's runs on the workers
    address = client.scheduler.address
    stopped = lost = False
    scheduler_log = logging.getLogger("distributed.scheduler")  # a local:N cluster's, here
    scheduler_log.addFilter(_said_here)
    done = threading.Event()
    watcher = None
    try:
        for run in todo:
            if pruner is not None and pruned_before_start(pruner, run, failures):
                if bar is not None:
                    bar.update()
                continue
            resume = {}
            if run_status(run.path) == "interrupted":
                resume = {p.relative_to(run.path).as_posix(): p.read_bytes()
                          for p in run.path.rglob("*") if p.is_file() and not p.is_symlink()}
            sets = [*run.trial.overrides(), f"seed={run.seed}"]
            future = client.submit(train_remotely, spec.base.name, base_text, sets, resume,
                                   None if data_dir is None else str(data_dir), token,
                                   run.path.name, key=f"nncli-{run.path.name}", retries=2, pure=False)
            futures[future] = run
        if pruner is not None:
            remote = (progress_remotely, prune_remotely)
            watcher = threading.Thread(target=watch_remote, args=(client, token, pruner, done, *remote),
                                       daemon=True)
            watcher.start()
        for future in as_completed(futures):
            run = futures[future]
            try:
                answer = future.result()
                if answer["files"]:
                    write_files(run.path, answer["files"], clear=True)
            except NncliError as err:
                _fail(run, failures, f"error: {err}")
            except Exception as err:  # noqa: BLE001  (Dask's errors, each a line of the summary)
                if client.status != "running":
                    lost = True
                    break
                _fail(run, failures, _task_error(err))
            else:
                finish(run, answer["code"], io.StringIO(answer["stderr"]), failures)
                if pruner is not None:
                    if answer["code"] == PRUNED_EXIT and pruner.decision(run.path.name) is None:
                        pruner.before_start(run)  # pruned with its trial before it started
                    pruner.settle(run, failures)
            if bar is not None:
                bar.update()
    except KeyboardInterrupt:
        stopped = True
    finally:
        done.set()
        if watcher is not None:
            watcher.join()
        if bar is not None:
            bar.close()
        _shut_down(client, list(futures), token, quiet=stopped, lost=lost)
        scheduler_log.removeFilter(_said_here)
    if stopped:
        raise SweepInterrupted([run for run in todo if run.status in ("pending", "interrupted")])
    if lost:
        left = [run for run in todo if run.status == "pending"]
        names = ", ".join(f"{run.path.name} seed {run.seed}" for run in left[:NAMED])
        more = f", and {len(left) - NAMED} more" if len(left) > NAMED else ""
        return NncliError(f"lost the Dask scheduler {address}:"
                          f" {count(len(left), 'run')} not finished ({names}{more});"
                          " run the sweep again to finish them")
    return None


def _said_here(record: logging.LogRecord) -> bool:
    """False for the errors a local scheduler logs that `_execute_on_dask` reports itself (a
    KilledWorker), or that Dask recovers from (a result lost with its worker is recomputed)."""
    return not str(record.msg).startswith(("Task %s marked as failed because %d workers died",
                                           "Couldn't gather keys"))


def _task_error(err: Exception) -> str:
    """The error line of a run whose task raised `err` on the cluster."""
    if type(err).__name__ == "KilledWorker":
        return ("error: the Dask workers training it died (KilledWorker, as often as"
                " distributed.scheduler.allowed-failures allows); their logs say why")
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"error: its Dask task failed: {type(err).__name__}" + (f": {first}" if first else "")


def _fail(run, failures: dict, error: str) -> None:
    run.status, run.error = "failed", error
    failures[run.path.name] = error


def write_files(folder: Path, files: dict, clear: bool = False) -> None:
    """Write `files` ({relative name: bytes}, from a worker or for one) into `folder`, emptied
    first if `clear`. Every name is checked before anything is written: an absolute name, one
    with `..`, or one that reaches outside `folder` through a symbolic link is refused (an
    NncliError naming it), and nothing is written."""
    if not isinstance(files, dict):
        raise NncliError(f"the files sent for {folder.name} are not a mapping of names to bytes")
    root = folder.resolve()
    for name, data in files.items():
        _check_name(folder, name)
        if not (folder / name).resolve().is_relative_to(root):
            raise NncliError(f"refused the file {name!r} sent for {folder.name}: it leads"
                             f" outside {folder} through a symbolic link")
        if not isinstance(data, bytes):
            raise NncliError(f"the file {name!r} sent for {folder.name} is not bytes")
    if clear and folder.exists():
        shutil.rmtree(folder)
    for name, data in files.items():
        atomic_write_bytes(folder / name, data)  # creates the folders it needs


def _check_name(folder: Path, name) -> None:
    path = PurePosixPath(name) if isinstance(name, str) else None
    if (path is None or not path.parts or path.is_absolute() or PureWindowsPath(name).anchor
            or ".." in path.parts or "\0" in name):
        raise NncliError(f"refused the file {name!r} sent for {folder.name}: a file's name must"
                         " be relative and stay inside its run folder")


def _shut_down(client, futures: list, token: str, quiet: bool, lost: bool = False) -> None:
    """Cancel what is left and close the client and, for local:N, its cluster. After a Ctrl-C
    (`quiet`): the runs of `token` still training on the workers are stopped, distributed's
    logging in this process is silenced (a local cluster's workers log only errors, see
    `_dask_client`), and a second Ctrl-C cannot break off the closing half-way. After the
    scheduler was `lost`: nothing is asked of the cluster, and the client's failures to
    reconnect are not logged (the caller says what happened in one line)."""
    cluster = client.cluster
    # "distributed.client" has a level and a handler of its own: it logs a lost scheduler
    loggers = [logging.getLogger("distributed")] + [logging.getLogger("distributed.client")] * lost
    with contextlib.ExitStack() as stack:
        if quiet or lost:
            for logger in loggers:
                stack.callback(logger.setLevel, logger.level)
                logger.setLevel(logging.CRITICAL + 1)
            stack.enter_context(_sigint_ignored())
        client.cancel(futures)  # first, so that no worker starts another run
        if quiet and not lost:
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


def run_environment(threads: int) -> dict[str, str]:
    """The environment of a sweep's `nncli train`, from this process's: the BLAS held to
    `threads` threads (a local sweep's cores // jobs, a Dask worker's one, set before numpy
    loads), and this process named as its parent, whose death it does not outlive on Linux
    (`nncli._startup.die_with_parent`): a Dask worker that died, killed for its memory or with
    its machine's job, left its run training on for nobody to the end, in a folder nobody read."""
    env = {**os.environ, PARENT: str(os.getpid())}
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    return env
