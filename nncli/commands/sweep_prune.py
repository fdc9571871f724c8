"""Pruning a sweep's trials as they train (`prune:` in the sweep file, `nncli.config.sweep.Prune`).

Each run's metrics.csv gains a row per epoch; the sweep reads them as they come (its own
workers' folders, or a Dask worker's through `nncli.commands.sweep_dask`), and at the epochs
where the rule decides, `Pruner.check` says whether the run goes on. A run it prunes is sent
SIGUSR1 and stops at the end of its last full epoch, its checkpoints kept (`nncli train`'s
`Pruned`, exit code 5); the sweep writes pruned.json into its folder, and it is never resumed
or retried. Every decision, continue or prune, is a line of prune.jsonl in the sweep's folder
(run, trial, seed, epoch, rung, value, cut-off, the trials compared), and a decision made is
never made again: a rerun of the sweep reads prune.jsonl back.

The value compared is the sweep's metric and mode (the one it ranks trials by), each run's best
over its epochs so far (as the summary takes each run's best); a trial's value at an epoch is
the mean over its seeds that have reached that epoch. A trial is pruned as a whole: once one of
its runs is pruned, its other runs stop at their next epoch and those not started are not.
Where pruning is on, the runs go seed by seed (every trial's first seed, then every trial's
second...) so that a trial pruned on its first seed costs no other.

asha (asynchronous successive halving, Li et al. 2020): at rung k, epoch grace * eta^k, a trial
goes on when its value is among the best 1/eta of the trials that have reached that rung so far,
itself included (`asha_keeps`). With fewer than eta trials at the rung, there is no best third
to be in yet: the trial goes on (as Ray Tune's ASHAScheduler does with no trial recorded).

median (Optuna's MedianPruner): at every epoch from from_epoch on, once `warmup` other trials
have finished, a trial goes on when its value is no worse than the median of the finished
trials' values at that epoch (`median_keeps`).

No decision is made at a run's last epoch: there is nothing left to save.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import signal
import statistics
import subprocess
import threading
from pathlib import Path

from nncli.config.schema import load_config
from nncli.config.sweep import Prune, Sweep
from nncli.errors import NncliError
from nncli.fileio import atomic_write_text
from nncli.training.rundir import PRUNED, pruned_label, read_metrics, run_status

PRUNE_LOG = "prune.jsonl"
PRUNED_EXIT = 5  # `nncli train`'s exit code when a prune request stopped it
PRUNE_POLL = 0.5  # seconds between two looks at a Dask cluster's runs
PRUNE_SIGNAL = getattr(signal, "SIGUSR1", None)  # what `nncli train` answers so (not on Windows)
FINISHED = ("finished", "early-stopped")  # runs whose values the median rule compares with


def _at_least_as_good(value: float, cutoff: float, mode: str) -> bool:
    return value >= cutoff if mode == "max" else value <= cutoff


def asha_keeps(values: list[float], value: float, eta: int, mode: str) -> tuple[bool, float | None]:
    """ASHA at one rung: `values` are the trials' values there (this trial's `value` among
    them). Goes on when `value` is among the best len(values) // eta, ties included; with fewer
    than `eta` values, goes on with no cut-off. Returns (goes on, the cut-off)."""
    if len(values) < eta:
        return True, None
    ranked = sorted(values, reverse=mode == "max")
    cutoff = ranked[len(values) // eta - 1]
    return _at_least_as_good(value, cutoff, mode), cutoff


def median_keeps(finished: list[float], value: float, warmup: int, mode: str) -> tuple[bool, float | None]:
    """The median rule at one epoch: `finished` are the finished trials' values there (this
    trial not among them). Goes on when fewer than max(warmup, 1) trials are there to compare,
    or when `value` is no worse than their median. Returns (goes on, the median or None)."""
    if not finished or len(finished) < warmup:
        return True, None
    cutoff = statistics.median(finished)
    return _at_least_as_good(value, cutoff, mode), cutoff


def _why(trial_pruned: dict) -> str:
    return f"its trial was pruned ({trial_pruned['run']}, epoch {trial_pruned['epoch']})"


class Pruner:
    """The decisions of one sweep (see the module docstring); `runs` are the sweep's `Run`s and
    `epochs` each run's train.epochs, by run name. Safe to call from two threads (Dask)."""

    def __init__(self, spec: Sweep, out: Path, runs: list, epochs: dict[str, int]):
        self.rule: Prune = spec.prune
        self.metric, self.mode = spec.metric, spec.mode
        self.log_path = Path(out) / PRUNE_LOG
        self.runs = {run.path.name: run for run in runs}
        self.epochs = epochs
        self.curves: dict[str, list[float | None]] = {}  # the metric at each epoch seen
        self.finished: set[str] = set()
        self.entries: list[dict] = []
        self.decided: set[tuple[str, int]] = set()
        self.pruned: dict[str, dict] = {}  # run name -> its prune decision
        self.pruned_trials: dict[int, dict] = {}  # trial index -> the first prune of it
        self.notes: list[str] = []
        self.lock = threading.Lock()
        self._read_log()

    # ---- what the sweep tells it -----------------------------------------------------------

    def seen(self, name: str, rows: list[dict]) -> None:
        """A run's metrics rows as read now (its metrics.csv)."""
        curve = []
        for row in rows:
            value = row.get(self.metric)
            curve.append(float(value) if isinstance(value, int | float) and math.isfinite(value) else None)
        with self.lock:
            if len(curve) >= len(self.curves.get(name, [])):
                self.curves[name] = curve

    def finish(self, name: str) -> None:
        """The run ended complete (finished or stopped early): the median rule compares with it."""
        with self.lock:
            self.finished.add(name)

    # ---- decisions ---------------------------------------------------------------------------

    def check(self, name: str) -> dict | None:
        """The decisions due for `name` at the epochs it has reached; its prune decision when
        one is made now (the caller stops the run), else None."""
        with self.lock:
            if name in self.pruned or name not in self.runs:
                return None
            run, curve = self.runs[name], self.curves.get(name, [])
            planned = self.epochs.get(name, 0)
            if not curve or len(curve) >= planned:
                return None  # not started, or ended: nothing to save
            trial_pruned = self.pruned_trials.get(run.trial.index)
            if trial_pruned is not None:
                return self._add(run, len(curve), None, None, None, "prune", 0, _why(trial_pruned))
            for epoch in self._epochs(planned):
                if epoch > len(curve):
                    break
                if (name, epoch) in self.decided:
                    continue
                entry = self._decide(run, epoch)
                if entry is not None and entry["decision"] == "prune":
                    return entry
            return None

    def before_start(self, run) -> dict | None:
        """Before a run starts: its prune decision when it has one, or when its trial was pruned
        (then logged now: the run is not started), else None."""
        name = run.path.name
        with self.lock:
            if name in self.pruned:
                return self.pruned[name]
            trial_pruned = self.pruned_trials.get(run.trial.index)
            if trial_pruned is None:
                return None
            return self._add(run, len(self.curves.get(name, [])), None, None, None, "prune", 0,
                             _why(trial_pruned))

    def decision(self, name: str) -> dict | None:
        with self.lock:
            return self.pruned.get(name)

    def siblings(self, name: str) -> list[str]:
        """The other runs of `name`'s trial that are not pruned yet."""
        with self.lock:
            trial = self.runs[name].trial.index
            return [other for other, run in self.runs.items()
                    if run.trial.index == trial and other != name and other not in self.pruned]

    def settle(self, run, failures: dict | None = None) -> None:
        """After a run has ended (or been found ended): a run the sweep pruned that did not
        finish anyway is marked pruned (pruned.json in its folder, where it has one)."""
        name = run.path.name
        with self.lock:
            entry = self.pruned.get(name)
            if entry is None or run.status in FINISHED:
                if run.status in FINISHED:
                    self.finished.add(name)
                if run.status == "pruned":  # stopped by SIGUSR1 the sweep did not send
                    run.status, run.error = "interrupted", "stopped by SIGUSR1"
                return
        if (run.path / "checkpoints" / "last.pkl").is_file() and not (run.path / PRUNED).is_file():
            try:
                atomic_write_text(run.path / PRUNED, json.dumps(entry, indent=2) + "\n")
            except NncliError as err:
                self.notes.append(f"{run.path / PRUNED} could not be written ({err}); prune.jsonl"
                                  " has the decision")
        run.status, run.error = "pruned", ""
        run.pruned_at = pruned_label(entry)
        if failures is not None:
            failures.pop(name, None)

    # ---- inside, under the lock ------------------------------------------------------------------

    def _epochs(self, planned: int) -> list[int]:
        """The epochs at which the rule decides for a run of `planned` epochs (not its last)."""
        if self.rule.rule == "asha":
            return [epoch for epoch in self.rule.rungs() if epoch < planned]
        return list(range(self.rule.from_epoch, planned))

    def _best(self, name: str, epoch: int) -> float | None:
        values = [v for v in self.curves.get(name, [])[:epoch] if v is not None]
        if not values:
            return None
        return max(values) if self.mode == "max" else min(values)

    def _trial_value(self, trial: int, epoch: int, only: set[str] | None = None) -> float | None:
        """The mean over the trial's runs (of `only`, if given) that reached `epoch` of their best
        so far; None where none did."""
        values = [self._best(name, epoch) for name, run in self.runs.items()
                  if run.trial.index == trial and len(self.curves.get(name, [])) >= epoch
                  and (only is None or name in only)]
        values = [v for v in values if v is not None]
        return statistics.fmean(values) if values else None

    def _decide(self, run, epoch: int) -> dict | None:
        trial = run.trial.index
        value = self._trial_value(trial, epoch)
        if value is None:  # no finite metric yet: nothing to compare
            return None
        trials = {r.trial.index for name, r in self.runs.items() if len(self.curves.get(name, [])) >= epoch}
        if self.rule.rule == "asha":
            values = [v for v in (self._trial_value(t, epoch) for t in sorted(trials)) if v is not None]
            keeps, cutoff = asha_keeps(values, value, self.rule.eta, self.mode)
            rung = self.rule.rungs().index(epoch)
            compared = len(values)
        else:
            finished_trials = {self.runs[name].trial.index for name in self.finished} - {trial}
            if len(finished_trials) < self.rule.warmup:
                values = []
            else:
                values = [self._trial_value(t, epoch, self.finished) for t in sorted(finished_trials)]
                values = [v for v in values if v is not None]
            keeps, cutoff = median_keeps(values, value, self.rule.warmup, self.mode)
            rung, compared = None, len(values)
        return self._add(run, epoch, rung, value, cutoff, "continue" if keeps else "prune", compared)

    def _add(self, run, epoch: int, rung, value, cutoff, decision: str, compared: int,
             reason: str = "") -> dict:
        name = run.path.name
        entry = {
            "run": name, "trial": run.trial.index, "seed": run.seed, "epoch": epoch, "rung": rung,
            "rule": self.rule.rule, "metric": self.metric, "value": value,
            "run_value": self._best(name, epoch) if epoch else None, "cutoff": cutoff,
            "trials": compared, "decision": decision,
        }
        if reason:
            entry["reason"] = reason
        self._record(entry)
        self.entries.append(entry)
        lines = "".join(json.dumps(e, sort_keys=False) + "\n" for e in self.entries)
        atomic_write_text(self.log_path, lines)
        return entry

    def _record(self, entry: dict) -> None:
        self.decided.add((entry["run"], entry["epoch"]))
        if entry["decision"] == "prune":
            self.pruned.setdefault(entry["run"], entry)
            run = self.runs.get(entry["run"])
            if run is not None:
                self.pruned_trials.setdefault(run.trial.index, entry)

    def _read_log(self) -> None:
        """prune.jsonl from an earlier invocation: its decisions stand. A line that is not a
        decision (a damaged file) is dropped, with a note."""
        try:
            text = self.log_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as err:
            self.notes.append(f"{self.log_path} cannot be read ({err}): its decisions are made again")
            return
        dropped = 0
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if (not isinstance(entry, dict) or not isinstance(entry.get("run"), str)
                    or not isinstance(entry.get("epoch"), int) or isinstance(entry.get("epoch"), bool)
                    or entry.get("decision") not in ("continue", "prune")):
                dropped += line.strip() != ""
                continue
            self.entries.append(entry)
            self._record(entry)
        if dropped:
            self.notes.append(f"{self.log_path}: {dropped} damaged line(s) dropped")


def make_pruner(spec: Sweep, out: Path, runs: list) -> Pruner | None:
    """The sweep's pruner (None without `prune:`), each run's epochs read from its trial's
    config, and the metrics of the runs already in `out` read."""
    if spec.prune is None:
        return None
    epochs = {trial.index: load_config(spec.base, trial.overrides()).train.epochs for trial in spec.trials}
    pruner = Pruner(spec, out, runs, {run.path.name: epochs[run.trial.index] for run in runs})
    for run in runs:  # what earlier invocations trained counts at the rungs it reached
        with contextlib.suppress(OSError, UnicodeDecodeError, ValueError, csv.Error):
            pruner.seen(run.path.name, read_metrics(run.path / "metrics.csv"))
        if run_status(run.path) in FINISHED:
            pruner.finish(run.path.name)
    return pruner


def pruned_before_start(pruner: Pruner, run, failures: dict) -> bool:
    """Whether `run` is not to start: its trial was pruned, or its metrics.csv (a run resumed)
    reaches a decision that prunes it."""
    if run.path.is_dir() and run_status(run.path) == "interrupted":
        with contextlib.suppress(OSError, UnicodeDecodeError, ValueError, csv.Error):
            pruner.seen(run.path.name, read_metrics(run.path / "metrics.csv"))
        pruner.check(run.path.name)
    if pruner.before_start(run) is None:
        return False
    pruner.settle(run, failures)
    return True


def watch_local(pruner: Pruner, active: dict, watched: dict) -> None:
    """Read the metrics.csv of each active run (`active`: process -> (run, log)) that changed
    since `watched[process]` = [launch time (ns), what was read], and stop the runs pruned:
    SIGUSR1 (`nncli train` stops at the end of its last full epoch), SIGINT where there is none.
    A run is signalled only once it has written an epoch since it was launched (its handlers
    are in place by then: a resumed run's old rows do not count), and again at each epoch it
    writes after its prune, should a signal have been lost."""
    fresh = {}
    for process, (run, _) in list(active.items()):
        launched, read = watched[process]
        try:
            stat = (run.path / "metrics.csv").stat()
        except OSError:
            continue
        fresh[run.path.name] = (process, stat.st_mtime_ns > launched)
        if read == (stat.st_mtime_ns, stat.st_size):
            continue
        try:
            rows = read_metrics(run.path / "metrics.csv")
        except (OSError, UnicodeDecodeError, ValueError, csv.Error):
            continue  # being replaced (atomically), or damaged: read again next time
        watched[process][1] = (stat.st_mtime_ns, stat.st_size)
        pruner.seen(run.path.name, rows)
        if not fresh[run.path.name][1]:
            continue
        if pruner.check(run.path.name) is None and pruner.decision(run.path.name) is None:
            continue
        _stop_pruned(process)
    for name, (process, written) in fresh.items():  # the other runs of the trials pruned
        if written and pruner.decision(name) is None and pruner.check(name) is not None:
            _stop_pruned(process)


def _stop_pruned(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(PRUNE_SIGNAL if PRUNE_SIGNAL is not None else signal.SIGINT)


def watch_remote(client, token: str, pruner: Pruner, done: threading.Event, progress, prune) -> None:
    """In a thread of the sweep, while its tasks run: every `PRUNE_POLL` seconds, read the
    metrics of the runs on the workers and prune those the `pruner` decides, and their trials'
    other runs (`progress` and `prune`: sweep_dask's `progress_remotely` and `prune_remotely`,
    run on every worker). A look that fails (a worker lost) is tried again next time."""
    while not done.wait(PRUNE_POLL):
        try:
            answers = client.run(progress, token)
        except Exception:  # noqa: BLE001  (the main loop says what happened to the cluster)
            if client.status != "running":
                return
            continue
        stop = []
        for texts in answers.values():
            for name, text in texts.items():
                with contextlib.suppress(ValueError, csv.Error):
                    pruner.seen(name, read_metrics(io.StringIO(text)))
                # a run pruned before and still training is asked again (it may not have had its
                # handlers when first asked)
                if pruner.check(name) is not None or pruner.decision(name) is not None:
                    stop += [name, *pruner.siblings(name)]
        if stop:
            with contextlib.suppress(Exception):
                client.run(prune, token, stop)
