"""`nncli train`: from a config file (or a run to resume) to a finished run directory.

Everything that can be wrong with the config or the data is found while building the
experiment, before the run directory exists, so a mistake leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from nncli.builder import (
    Experiment,
    build_experiment,
    checkpoint_config,
    refuse_changed_data,
    steps_per_epoch,
)
from nncli.config.schema import Config, load_config
from nncli.config.yamlsource import CLI_OVERRIDES, how_to_set, parse_path
from nncli.data import resolve_data_dir
from nncli.errors import CheckpointError, ConfigError, NncliError, WriteError
from nncli.fileio import atomic_write_text, exclusive
from nncli.messages import count
from nncli.nn.parallel import apply_setting, resume_setting, thread_setting
from nncli.output.curves import CurvePlotter
from nncli.training import checkpoint
from nncli.training.callbacks import (
    Callback,
    Checkpointer,
    EpochLog,
    MetricsWriter,
    NanReporter,
    ProgressBar,
    StepsWriter,
    ThreadChooser,
)
from nncli.training.callbacks.tensorboard import TensorBoardLogger, require
from nncli.training.rundir import RunDir, discard, given_run_dir, new_run_dir, read_summary
from nncli.training.summary import evaluate_best, run_summary, write_summary
from nncli.training.trainer import Interrupted, Pruned, Trainer, TrainingState

RUNS_ROOT = Path("runs")
PRUNE_SIGNAL = getattr(signal, "SIGUSR1", None)  # a sweep's pruner stopping the run (not on Windows)


@dataclass(frozen=True)
class Spelling:
    """What the caller calls `train`'s arguments, for its messages: the command line's names by
    default, `PYTHON`'s for the Python API."""

    config: str = "CONFIG"
    resume: str = "--resume"
    run_dir: str = "--run-dir"
    overrides: str = CLI_OVERRIDES


PYTHON = Spelling(config="config", resume="resume=", run_dir="run_dir=", overrides="overrides")


def check_sources(config, resume, run_dir, spelling: Spelling = Spelling()) -> None:
    """A run is trained from a config or resumed from its directory, never both or neither; a
    resumed run stays where it is."""
    if resume and config:
        raise ConfigError(
            f"give {spelling.config} or {spelling.resume}, not both (a resumed run uses its own"
            f" config; change train.* with {spelling.overrides})"
        )
    if not resume and not config:
        raise ConfigError(f"missing {spelling.config}: the YAML file to train (or {spelling.resume} RUN_DIR)")
    if resume and run_dir:
        raise ConfigError(
            f"{spelling.run_dir} and {spelling.resume} cannot be combined:"
            " a resumed run stays in its directory"
        )


@dataclass
class TrainResult:
    run: RunDir
    state: TrainingState
    summary: dict | None


def format_result(result: TrainResult) -> str:
    """The line `nncli train` ends with: the run, its epochs, the best monitored value and the
    test figures of the best checkpoint."""
    state, summary = result.state, result.summary or {}
    line = f"run {result.run.path}: {count(state.epoch, 'epoch')}"
    if state.best_epoch is not None:
        line += f", best {summary.get('monitor')} {state.best_value:.4f} at epoch {state.best_epoch}"
    test = summary.get("test")
    if test:
        line += f"; test loss {test['loss']:.4f}"
        if test.get("accuracy") is not None:
            line += f", test accuracy {test['accuracy'] * 100:.2f}%"
    return line


def dump_config(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=100)


class StopSignals:
    """SIGINT and SIGTERM while a run is made and trained, as a signal handler.

    The first signal is noted: the trainer stops at the next batch boundary, or before its
    first batch, and a run stopped before its first checkpoint is removed. A second signal stops
    at once (KeyboardInterrupt), but only once the run is resumable (its last.pkl exists):
    before that it is noted too, so that nothing, the removal included, is cut short halfway.

    SIGUSR1 (where the system has it) is a prune request from a sweep (`nncli.commands.sweep`):
    the trainer stops at the end of its last full epoch, dropping the one begun, with nothing
    saved (`Pruned`, exit code 5); after the last batch it comes too late, and the run finishes.
    """

    def __init__(self):
        self.signum: int | None = None  # the first signal received
        self.again: int | None = None  # a second one, which stopped the run at once
        self.run: RunDir | None = None
        self.trainer: Trainer | None = None
        self.prune = False  # a prune request (PRUNE_SIGNAL) came

    def __call__(self, signum, frame) -> None:
        if signum == PRUNE_SIGNAL:
            self.prune = True
            if self.trainer is not None:
                self.trainer.prune_requested = True
            return
        if self.signum is None:
            self.signum = signum
            if self.trainer is not None:
                self.trainer.stop_requested = signum
        elif self.run is not None and self.run.last.exists():
            self.again = signum
            raise KeyboardInterrupt

    def attach(self, trainer: Trainer) -> None:
        """From now on `trainer` is told; and now, of a signal that came before it existed."""
        self.trainer = trainer
        if self.signum is not None:
            trainer.stop_requested = self.signum
        trainer.prune_requested = self.prune


@contextlib.contextmanager
def stop_on_signals():
    """A `StopSignals` handling SIGINT and SIGTERM inside the block (in the main thread only,
    where Python runs signal handlers); the previous handlers are restored after it."""
    stop = StopSignals()
    if sys.platform == "win32" or not _main_thread():
        yield stop
        return
    handled = (signal.SIGINT, signal.SIGTERM) + ((PRUNE_SIGNAL,) if PRUNE_SIGNAL is not None else ())
    previous = {s: signal.getsignal(s) for s in handled}
    for s in previous:
        signal.signal(s, stop)
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def prepare_new(config_path: str | Config, overrides, data_dir: Path, progress: bool, arrays=None):
    """The experiment of a new run, and its fresh state; its directory is made afterwards, by
    `make_run_dir`."""
    # a Config is parsed already, its overrides applied (the Python API)
    config = config_path if isinstance(config_path, Config) else load_config(config_path, overrides)
    require(config)  # an optional logger not installed: said before the data is loaded
    return build_experiment(config, data_dir, progress, arrays), TrainingState()


def make_run_dir(exp: Experiment, run_dir: str | None) -> RunDir:
    return given_run_dir(Path(run_dir)) if run_dir else new_run_dir(RUNS_ROOT, exp.config.name)


# What a resumed run may change: how long it goes on, and how it evaluates. Anything else (the
# batch size, what "best" means) would make the saved state mean something else.
RESUMABLE = (
    ("train", "epochs"),
    ("train", "eval_batch_size"),
    ("train", "early_stopping", "patience"),
    ("train", "early_stopping", "min_delta"),
    ("train", "loggers"),
    ("train", "tensorboard"),
    ("train", "tensorboard", "histograms"),
)


def prepare_resume(
    resume: str,
    overrides,
    data_dir: Path,
    progress: bool,
    allow_data_change: bool = False,
    arrays=None,
    overrides_label: str = CLI_OVERRIDES,
):
    run = RunDir(Path(resume))
    if not run.path.is_dir():
        raise NncliError(f"cannot resume {run.path}: no such run directory")
    if not run.last.exists():
        raise CheckpointError(f"cannot resume {run.path}: it has no checkpoints/last.pkl")
    saved = checkpoint.load(run.last)
    for assignment in overrides:
        key = assignment.partition("=")[0].strip()
        try:
            path = parse_path(key)
        except ValueError:
            path = ()
        if path not in RESUMABLE:
            allowed = ", ".join(".".join(p) for p in RESUMABLE)
            raise ConfigError(
                f"{overrides_label} {key}: a resumed run keeps its model, data, optimizer and"
                f" monitored metrics; only {allowed} can change"
            )
    config = checkpoint_config(saved, overrides, label=str(run.config), overrides_label=overrides_label)
    require(config)
    exp = build_experiment(config, data_dir, progress, arrays)
    change = refuse_changed_data(saved, exp.splits, allow_data_change)
    if change:
        exp.notes.append(f"warning: {change}; resuming on the data as it is now")
    try:
        state = TrainingState.from_dict(saved["training"])
    except (KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{run.last} has no usable training state ({err!r})") from None
    restore(exp, saved, config)
    apply_setting(exp.model, resume_setting(saved.get("threads"), thread_setting()))
    saved_epochs = saved["config"].get("train", {}).get("epochs")
    _check_resumable(run, state, config, saved_epochs, overrides_label)
    return exp, run, state


def _check_resumable(run: RunDir, state: TrainingState, config: Config, saved_epochs, label: str) -> None:
    epochs = config.train.epochs
    if state.progress is not None:
        if epochs <= state.progress.epoch:
            raise ConfigError(
                f"{run.path} was interrupted in epoch {state.progress.epoch + 1}; train.epochs must be"
                f" at least {state.progress.epoch + 1} to finish it"
            )
        return
    if state.stopped_early:
        overridden = config.source.overridden
        changed = ("train", "early_stopping", "patience") in overridden or (
            "train",
            "early_stopping",
            "min_delta",
        ) in overridden
        if epochs == saved_epochs and not changed:
            raise NncliError(
                f"{run.path} stopped early after {count(state.epoch, 'epoch')}; to go on, raise"
                f" train.early_stopping.patience or train.epochs with {label}"
            )
        state.stopped_early, state.bad_epochs = False, 0
    if state.epoch >= epochs and read_summary(run.path) is not None:
        raise NncliError(
            f"{run.path} already finished {count(state.epoch, 'epoch')};"
            f" extend it with {how_to_set('train.epochs', 'N', label)}"
        )
    # finished but stopped before its summary: resuming writes the summary and the curves


def restore(exp: Experiment, saved: dict, config: Config) -> None:
    """Put a checkpoint's state into a freshly built experiment."""
    try:
        exp.model.load_state_dict(saved["model"])
        exp.optimizer.load_state_dict(saved["optimizer"])
        exp.schedule.load_state_dict(saved["schedule"])
        exp.rng.bit_generator.state = saved["rng"]
    except CheckpointError as err:
        raise CheckpointError(f"{saved['path']}: {err}") from None
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        what = f"no {err.args[0]!r} entry" if isinstance(err, KeyError) else str(err)
        raise CheckpointError(f"{saved['path']} does not match its run's config: {what}") from None
    exp.schedule.setup(exp.optimizer.base_lr, config.train.epochs, steps_per_epoch(config, exp.splits))


def resume_command(run: RunDir, exp: Experiment) -> str:
    """The command that resumes `run` as it stands: with --data-dir where its datasets came from
    a folder that `nncli train --resume` would not look in by itself (`nncli train --data-dir
    D`'s printed `--resume RUN` looked in the cache, and failed to download)."""
    command = f"nncli train --resume {shlex.quote(str(run.path))}"
    if exp.data_dir is not None and exp.data_dir != resolve_data_dir(None):
        command += f" --data-dir {shlex.quote(str(exp.data_dir))}"
    return command


@contextlib.contextmanager
def _naming_the_run(run: RunDir, exp: Experiment):
    """A file the run cannot write (a full disk) stops it; say which run, and how it goes on.
    Every file is written atomically, so the last checkpoint is whole and resuming is exact."""
    try:
        yield
    except WriteError as err:
        if run.last.exists():
            then = f"keeps its last checkpoint; make room, then resume with: {resume_command(run, exp)}"
        else:
            then = "had no checkpoint yet and was removed; make room and start it again"
        raise WriteError(f"{err}; the run {run.path} {then}", err.path) from None


def train(
    config_path: str | Config | None,
    overrides=(),
    *,
    data_dir: Path,
    run_dir: str | None = None,
    resume: str | None = None,
    verbose: bool = True,
    bars: bool = True,
    allow_data_change: bool = False,
    say: Callable[[str], None],
    all_notes: bool = False,
    arrays=None,
    spelling: Spelling = Spelling(),
    report: Callable[[TrainResult], None] | None = None,
) -> TrainResult:
    """Train the config at `config_path` (or a parsed `Config`) in a new run directory, or
    resume the run `resume`. `say(line)` takes the notes and warnings: the warnings always,
    the notes when `verbose` or `all_notes`; `verbose` also asks for a line per epoch on stderr
    and `bars` for progress bars. `arrays` are the arrays dataset's (the Python API);
    `spelling` names the arguments in messages. `report(result)`, where given, runs while
    signals are still only noted, so that one coming just as the run ends is told of after
    the result rather than ending the process before it is shown."""
    check_sources(config_path, resume, run_dir, spelling)
    if resume:
        # one process at a time resumes a run: two would write one folder's files in turn
        with exclusive(Path(resume), _busy(resume)):
            exp, run, state = prepare_resume(
                resume, overrides, data_dir, verbose, allow_data_change, arrays, spelling.overrides
            )
            return _train(exp, run, state, resume, run_dir, verbose, bars, say, all_notes, report)
    (exp, state) = prepare_new(config_path, overrides, data_dir, verbose, arrays)
    return _train(exp, None, state, resume, run_dir, verbose, bars, say, all_notes, report)


def _train(
    exp, run: RunDir | None, state, resume, run_dir, verbose: bool, bars: bool, say, all_notes: bool,
    report=None,
) -> TrainResult:
    """`train` once its experiment is built: the run directory (new where `run` is None) and the
    training, within the signal handlers."""
    # from before the run directory is made until the run is finished, a signal is noted and
    # answered where the run is whole: resumable, finished, or not there at all
    with stop_on_signals() as stop, contextlib.ExitStack() as held:
        if run is None:
            run = make_run_dir(exp, run_dir)
            # held for the whole run, as `train` holds a resumed one: a `--resume` of this run
            # started meanwhile (or a second new run given the same empty folder) is turned away
            held.enter_context(exclusive(run.path, _busy(run.path)))
        stop.run = run
        try:
            result = _run(exp, run, state, stop, verbose=verbose, bars=bars, say=say, all_notes=all_notes)
        except BaseException as err:
            # a new run stopped before its first checkpoint (a signal during start-up, a full
            # disk) leaves nothing behind; from the first checkpoint on, it can be resumed
            if not resume and not run.last.exists():
                discard(run)
                if isinstance(err, Interrupted):
                    gone = "was removed" if run.made else "is empty again"
                    raise _stopped(err.signum, f"before its first checkpoint; {run.path} {gone}") from None
            elif isinstance(err, KeyboardInterrupt) and stop.again is not None:
                raise _stopped(
                    stop.again,
                    f"at once (a second signal); {run.last} holds the last state saved:"
                    f" resume with: {resume_command(run, exp)}",
                ) from None
            raise
        if report is not None:
            report(result)
        if stop.signum is not None:  # it came after the last batch: the run is complete
            say(
                f"note: {signal.Signals(stop.signum).name} came after the last batch; the run"
                f" finished and {run.path} is complete",
            )
        return result


def _busy(folder) -> str:
    return (f"{folder} is being trained by another process; wait for it to end (two processes"
            " training one run would mix their files)")


def _stopped(signum: int, where: str) -> Interrupted:
    stop = Interrupted(signum)
    stop.args = (f"{stop.args[0]} {where}",)
    return stop


def _run(
    exp: Experiment,
    run: RunDir,
    state: TrainingState,
    stop: StopSignals,
    *,
    verbose: bool,
    bars: bool,
    say: Callable[[str], None],
    all_notes: bool,
) -> TrainResult:
    """Train `exp` in `run` from `state`: the config file, the callbacks, the loop."""
    for note in exp.notes:  # warnings even when quiet: they may mean the run is not what was meant
        if all_notes or verbose or note.startswith("warning"):
            say(note)
    resolved = exp.resolved_config()
    with _naming_the_run(run, exp):
        atomic_write_text(run.config, dump_config(resolved))

    callbacks: list[Callback] = [ThreadChooser(say if verbose or all_notes else None)]  # how batches run
    callbacks += [ProgressBar()] if bars else []
    callbacks += [EpochLog()] if verbose else []
    callbacks += [
        MetricsWriter(run),
        StepsWriter(run),
        Checkpointer(run, resolved),
        NanReporter(run),
        CurvePlotter(run, exp.config.name),
    ]
    if "tensorboard" in exp.config.train.loggers:
        text = dump_config(resolved)
        callbacks.append(TensorBoardLogger(run.path, resolved, text, exp.config.train.histograms))
    trainer = Trainer(exp, callbacks, state)
    stop.attach(trainer)
    try:
        return _fit(exp, run, trainer, callbacks)
    finally:
        for callback in callbacks:
            callback.close()


def _fit(exp: Experiment, run: RunDir, trainer: Trainer, callbacks: list[Callback]) -> TrainResult:
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"), _naming_the_run(run, exp):
        try:
            trainer.fit()
        except Interrupted as err:
            progress = trainer.state.progress
            where = (
                f"epoch {progress.epoch + 1}, batch {progress.batch}"
                if progress
                else f"epoch {trainer.state.epoch}"
            )
            err.args = (
                f"{err.args[0]}: saved {run.last} ({where}); resume with: {resume_command(run, exp)}",
            )
            raise
        except Pruned as err:
            err.args = (f"{err.args[0]}: {run.last} holds epoch {err.epoch}; resume with:"
                        f" {resume_command(run, exp)}",)
            raise
        # the test set is measured once training has ended, on the best checkpoint's weights
        summary = run_summary(trainer, evaluate_best(exp, run))
        write_summary(run, summary)
        for callback in callbacks:
            callback.on_summary(trainer, summary)
    return TrainResult(run, trainer.state, summary)
