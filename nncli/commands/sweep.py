"""`nncli sweep`: every trial of a sweep file, once per seed, each an ordinary run directory.

Each run is `nncli train` in a worker process of its own, named by a short hash of its resolved
config under `--out` (default runs/sweeps/<sweep name>/), so that no run is done twice:

  finished runs (summary.json)           are skipped
  interrupted runs (last.pkl, no summary) are resumed with `nncli train --resume`, exactly
  runs that failed before (a config or data error) are tried again
  pruned runs (pruned.json, or pruned in prune.jsonl) are not resumed or tried again

With `prune:` in the sweep file, the sweep watches each run's metrics.csv as it trains and
stops the trials that are behind (`nncli.commands.sweep_prune`): SIGUSR1, which `nncli train`
answers by stopping at the end of its last full epoch, checkpoints kept. The runs then go seed
by seed: every trial's first seed, then every trial's second, and so on.

Up to `jobs` workers run at once, each with its BLAS limited to cores // jobs threads (set in
the worker's environment before numpy loads), so that workers x threads never exceeds the
cores. Ctrl-C, SIGTERM or SIGHUP passes on to every worker as SIGINT, each saves its state and
stops; running the sweep again finishes it. On Linux each worker gets SIGTERM when the sweep
dies (PR_SET_PDEATHSIG), even of `kill -9`, so no worker goes on training for nobody. A diverged
run (the loss stopped being finite) is marked diverged, a failing one failed with its error
line, a worker killed by a signal killed, and the others go on; the sweep exits non-zero when a
run failed or did not finish.

One sweep at a time per `--out`: the sweep holds a lock on `--out`/.sweep.lock (flock, which
the system releases when the process dies, however it dies; its workers hold it too, until the
last one has saved and stopped). A second sweep on that folder is refused, or waits (`wait`).

A finished run is checked before it is skipped: its metrics.csv must agree with its summary
(`nncli.training.rundir.metrics_complete`); a damaged one is rewritten from the history in
checkpoints/last.pkl, the record, or the run is trained again where last.pkl cannot give it.
Each repair is a note, on stderr and in summary.md.

With a Dask scheduler (`tcp://HOST:PORT`, or `local:N` for a LocalCluster of N processes) each
run goes to a worker instead, keyed by its hash and retried twice if a worker is lost; the
worker trains in a temporary folder of its own from the base config's text (and an
interrupted run's files, to resume it) and sends the run directory's files back, so no shared
file system is needed. Data files must be where the workers can read them. Ctrl-C stops the
workers' runs and raises `SweepInterrupted`, one line naming the runs not finished.

The summary (summary.csv, summary.md, in `--out`; `nncli.commands.sweep_summary`): one row per
trial, best first. sweep.png draws the metric against each varied key (runs as points, means as
a line) and the curves of the best three trials' runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from nncli.commands import sweep_prune
from nncli.commands.sweep_dask import _dask_client, _execute_on_dask, run_environment
from nncli.commands.sweep_summary import (
    COMPLETE,
    Run,
    SweepResult,
    draw,
    pruned_count,
    read_failures,
    summary_csv,
    summary_markdown,
    summary_rows,
    write_failures,
)
from nncli.commands.sweep_summary import format_summary as format_summary  # the CLI's names
from nncli.commands.sweep_summary import raise_if_failed as raise_if_failed
from nncli.config.schema import load_config
from nncli.config.sweep import Sweep, Trial, load_sweep
from nncli.errors import NncliError
from nncli.fileio import atomic_write_text
from nncli.messages import count
from nncli.training.rundir import (
    DamagedRun,
    best_metric,
    pruned_label,
    read_pruned,
    repair_metrics,
    run_status,
)

LOCK = ".sweep.lock"


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP to the sweep: handled as Ctrl-C (the workers save and stop), and the
    sweep exits 128 + the signal's number."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class SweepBusy(NncliError):
    """Another sweep holds the lock on this `--out`."""


def run_name(base: Path, trial: Trial, seed: int) -> str:
    """A short hash of the run's resolved config: the same trial and seed, the same folder."""
    config = load_config(base, [*trial.overrides(), f"seed={seed}"]).to_dict()
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def plan(sweep: Sweep, out: Path) -> list[Run]:
    return [
        Run(trial, seed, out / run_name(sweep.base, trial, seed))
        for trial in sweep.trials
        for seed in sweep.seeds
    ]


def dry_run(path: str | Path, max_trials: int | None = None) -> str:
    """What `nncli sweep --dry-run` prints: the trials, their varied values, the counts."""
    sweep = load_sweep(path, max_trials)
    trials, seeds = len(sweep.trials), len(sweep.seeds)
    lines = [f"{sweep.path}: {count(trials, 'trial')} x {count(seeds, 'seed')}"
             f" = {count(trials * seeds, 'run')} of {sweep.base}"]
    lines += [f"  {trial.index:>3}  {trial.label()}" for trial in sweep.trials]
    lines.append(f"seeds {', '.join(map(str, sweep.seeds))}; metric {sweep.metric} ({sweep.mode})")
    if sweep.prune is not None:
        lines.append(f"pruned by {sweep.prune.describe()}; the runs go seed by seed")
    return "\n".join(lines)


def sweep(
    path: str | Path,
    *,
    jobs: int | None = None,
    out: str | Path | None = None,
    data_dir: Path | None = None,
    scheduler: str | None = None,
    progress: bool = False,
    wait: bool = False,
    say=print,
    max_trials: int | None = None,
) -> SweepResult:
    """Run the sweep file at `path` (see the module docstring); `say` hears one line at the start
    and end, and the notes. Raises KeyboardInterrupt (`Stopped` for SIGTERM and SIGHUP) after
    the workers have saved and stopped, and SweepBusy when another sweep holds `out` (unless
    `wait`: then it waits for that one to end)."""
    spec = load_sweep(path, max_trials, say)  # more than 1,000 trials need max_trials
    out = Path(out) if out else Path("runs") / "sweeps" / spec.name
    runs = plan(spec, out)
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out, wait, say) as lock, _signals_stop():
        return _sweep(spec, out, runs, lock, jobs, data_dir, scheduler, progress, say)


def _sweep(spec: Sweep, out: Path, runs: list[Run], lock: int | None, jobs, data_dir, scheduler,
           progress: bool, say) -> SweepResult:
    failures = read_failures(out)
    pruner = sweep_prune.make_pruner(spec, out, runs)
    notes = list(pruner.notes) if pruner else []  # prune.jsonl damaged
    said = len(notes)
    for note in notes:
        say(f"note: {note}")
    for run in runs:
        state = run_status(run.path)
        run.status = "skipped" if state in (*COMPLETE, "pruned") else "pending"
        if pruner is not None and state not in COMPLETE and pruner.decision(run.path.name):
            pruner.settle(run, failures)  # pruned before: never resumed or tried again
        if state in ("finished", "early-stopped"):
            try:
                _, note = repair_metrics(run.path)
            except DamagedRun as err:
                run.status, note = "pending", f"{err}: training it again"
                _clear(run.path)
            if note:
                notes.append(note)
                say(f"note: {note}")
    todo = [run for run in runs if run.status == "pending"]
    if pruner is not None:  # seed by seed: a trial pruned on its first seed costs no other
        todo.sort(key=lambda run: spec.seeds.index(run.seed))
    done_before = len(runs) - len(todo)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo) or 1))
    client = _dask_client(scheduler) if todo and scheduler else None  # its errors before any run
    if not todo:
        say(f"{len(runs)} runs in {out}, all done before: nothing to run")
    else:
        note = f" ({done_before} done before)" if done_before else ""
        where = f"on the Dask cluster {scheduler}" if client else f"{jobs} at a time"
        say(f"{len(todo)} of {len(runs)} runs to do{note}, {where}, in {out}")
    lost = None  # the error of a lost Dask scheduler, raised once the summary is written
    if client is not None:
        lost = _execute_on_dask(todo, spec, client, data_dir, _bar(len(todo), progress), failures,
                                _finish, pruner)
    elif todo:
        _execute(todo, spec, jobs, data_dir, progress, failures, lock, pruner)
    for run in runs:
        if run.status == "skipped":
            run.status = run_status(run.path)
            if run.status == "pruned":
                run.pruned_at = pruned_label(read_pruned(run.path))
    if pruner is not None:
        notes += pruner.notes[said:]
        say(f"{pruned_count(runs)} (by {spec.prune.rule}); every decision is in"
            f" {out / sweep_prune.PRUNE_LOG}")
    write_failures(out, failures, runs)
    result = SweepResult(spec, out, runs, notes=notes)
    result.rows = summary_rows(spec, runs)
    atomic_write_text(out / "summary.csv", summary_csv(spec, result.rows))
    atomic_write_text(out / "summary.md", summary_markdown(spec, result.rows, notes))
    draw(result)
    if lost is not None:
        raise lost
    return result


def _command(run: Run, spec: Sweep, data_dir: Path | None) -> list[str]:
    command = [sys.executable, "-m", "nncli", "train"]
    if run_status(run.path) == "interrupted":
        command += ["--resume", str(run.path)]
    else:
        command += [str(spec.base), "--run-dir", str(run.path)]
        command += [a for value in (*run.trial.overrides(), f"seed={run.seed}") for a in ("--set", value)]
    command.append("--quiet")
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    return command


def _execute(todo: list[Run], spec: Sweep, jobs: int, data_dir, progress: bool, failures: dict,
             lock: int | None = None, pruner: sweep_prune.Pruner | None = None) -> None:
    """The runs of `todo`, `jobs` at a time, each `nncli train` in a process of its own that
    holds the sweep's `lock` too (inherited) and gets SIGTERM when this process dies (Linux);
    with a `pruner`, their metrics.csv watched and the runs it prunes stopped."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = run_environment(threads)
    queue = list(todo)
    active: dict[subprocess.Popen, tuple[Run, object]] = {}
    watched: dict[subprocess.Popen, list] = {}  # launched (ns), the (mtime, size) of metrics.csv read
    bar = _bar(len(todo), progress)
    best = None
    stopping = False
    try:
        while queue or active:
            while queue and len(active) < jobs:
                run = queue.pop(0)
                if pruner is not None and sweep_prune.pruned_before_start(pruner, run, failures):
                    if bar is not None:
                        bar.update()
                    continue
                if run.path.exists() and run_status(run.path) == "new":
                    _clear(run.path)  # what a failed attempt left: `--run-dir` needs it empty
                log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (closed in _finish)
                process = subprocess.Popen(
                    _command(run, spec, data_dir), stdout=subprocess.DEVNULL, stderr=log, env=env,
                    pass_fds=() if lock is None else (lock,),
                )
                active[process] = (run, log)
                watched[process] = [time.time_ns(), None]
            time.sleep(0.05)
            if pruner is not None:
                sweep_prune.watch_local(pruner, active, watched)
            for process in [p for p in active if p.poll() is not None]:
                run, log = active.pop(process)
                watched.pop(process, None)
                _finish(run, process.returncode, log, failures)
                if pruner is not None:
                    pruner.settle(run, failures)
                best = _best(spec, run, best)
                if bar is not None:
                    bar.set_postfix_str(f"best {spec.metric} {best:.4g}" if best is not None else "")
                    bar.update()
    except KeyboardInterrupt:
        # SIGINT whatever the sweep got: `nncli train` answers it at any moment, even while
        # it starts (SIGHUP would kill it); each saves its state and exits (a second signal
        # to the sweep stops it at once, the workers still saving)
        stopping = True
        for process in active:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process, (run, log) in active.items():
            process.wait()
            _finish(run, process.returncode, log, failures, stopping)
        raise
    finally:
        if bar is not None:
            bar.close()


@contextlib.contextmanager
def _locked(out: Path, wait: bool, say):
    """Hold the lock on `out` (an flock on out/.sweep.lock) while the sweep runs; yields the
    lock file's descriptor, for the workers to inherit, or None where there is no flock
    (Windows: no lock). The system releases it when the last process holding it ends, however
    it ends: a lock never outlives its sweep and its workers."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield None
        return
    path = out / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise NncliError(f"cannot create the sweep's lock {path}: {err.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                raise SweepBusy(f"another sweep{holder} is running in {out}: wait for it to end,"
                                " or give --wait to start when it has") from None
            say(f"waiting for the sweep{holder} running in {out} to end")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield fd
    finally:
        os.close(fd)  # releases the lock (the workers' copies are closed as they exit)


def _holder(fd: int) -> str:
    """` (pid N)` for the sweep that wrote its pid in the lock file, if it is alive; else ''
    (its workers, still saving, hold the lock after it)."""
    try:
        pid = int(os.pread(fd, 32, 0).decode().strip())
    except (ValueError, UnicodeDecodeError, OSError):  # being written: the holder is starting
        return ""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f" (pid {pid}, gone; its workers are saving and stopping)"
    except OSError:  # another user's process: alive
        pass
    return f" (pid {pid})"


@contextlib.contextmanager
def _signals_stop():
    """SIGTERM and SIGHUP raise `Stopped` here, answered as Ctrl-C is; in the main thread
    only (elsewhere signals cannot be changed, and nothing is)."""
    wanted = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in wanted}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _clear(path: Path) -> None:
    for child in sorted(path.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()


def _finish(run: Run, code: int, log, failures: dict, stopping: bool = False) -> None:
    """The run's status from the exit code of its `nncli train` (`stopping`: the sweep passed
    a signal on to it)."""
    log.seek(0)
    lines = [line.strip() for line in log.read().splitlines() if line.strip()]
    log.close()
    errors = [line for line in lines if line.startswith("error")]
    key = run.path.name
    if code == 0:
        run.status = run_status(run.path)
        failures.pop(key, None)
    elif code == 3:
        run.status = "diverged"
        failures.pop(key, None)
    elif code == sweep_prune.PRUNED_EXIT:  # stopped by a prune request (the pruner's settle marks it)
        run.status = "pruned"
        failures.pop(key, None)
    elif code < 0 and not stopping:
        run.status = "killed"
        run.error = f"killed by {_signal_name(-code)}"
    elif code in (130, 143) or code < 0:
        run.status = "interrupted"
        run.error = "interrupted"
    else:
        run.status = "failed"
        run.error = errors[-1] if errors else (lines[-1] if lines else f"exit code {code}")
        failures[key] = run.error


def _best(spec: Sweep, run: Run, best: float | None) -> float | None:
    value = best_metric(run.path, spec.metric, spec.mode)
    if value is None:
        return best
    if best is None:
        return value
    return max(best, value) if spec.mode == "max" else min(best, value)


def _bar(total: int, progress: bool):
    if not progress or not total:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="sweep", unit="run", file=sys.stderr, dynamic_ncols=True)
