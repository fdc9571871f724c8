"""The training loop, and nothing more: progress bars, files, pickles and plots live in the
callbacks it calls (`nncli.training.callbacks`).

One epoch: draw a fresh permutation from the run's generator, then for each batch augment it
(data.augment, drawing from the same generator), set the learning rate from the schedule,
one training step (nncli.nn.step: forward, loss, backward, regularization, optimizer step).
Then validation, the schedule's and early stopping's view of the epoch, and the callbacks.

A stop request (a signal handler sets `stop_requested`) is honoured between two batches, where
the state is consistent: the callbacks save it with the position inside the epoch, and
`Interrupted` propagates. One made before `fit` starts stops it before anything is called or
saved; one made after the last batch is left to the caller (the run finishes as it would
have). A non-finite loss stops the run before the bad step is applied.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field

import numpy as np

from nncli.builder import Experiment, monitor_of, steps_per_epoch
from nncli.errors import NncliError
from nncli.nn.metrics import loss_and_accuracy
from nncli.nn.step import step

COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s")


class Interrupted(NncliError):
    """Training stopped by a signal; the state was saved and the run can be resumed."""

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


class NonFiniteLoss(NncliError):
    exit_code = 3


@dataclass
class Progress:
    """Where an interrupted epoch stopped: enough to finish it exactly as it would have gone."""

    epoch: int
    batch: int
    order: np.ndarray
    loss_sum: float
    weight: float
    correct: int
    seen: int
    elapsed: float

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class TrainingState:
    """Everything about the run's course that is not in the model, optimizer or schedule."""

    epoch: int = 0  # epochs completed
    history: list[dict] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int | None = None
    stop_value: float | None = None  # early stopping's best, on its own monitor
    bad_epochs: int = 0
    stopped_early: bool = False
    progress: Progress | None = None
    step: int | None = 0  # training steps (batches) taken; None from a checkpoint before counts

    def to_dict(self) -> dict:
        out = {k: v for k, v in vars(self).items() if k != "progress"}
        out["history"] = [dict(row) for row in self.history]
        out["progress"] = None if self.progress is None else self.progress.to_dict()
        return out

    @classmethod
    def from_dict(cls, saved: dict) -> TrainingState:
        fields = {"step": None, **{k: v for k, v in saved.items() if k != "progress"}}
        state = cls(**fields)
        if saved.get("progress") is not None:
            state.progress = Progress(**saved["progress"])
        return state


def improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best - min_delta if mode == "min" else value > best + min_delta


class Trainer:
    def __init__(self, experiment: Experiment, callbacks=(), state: TrainingState | None = None):
        self.exp = experiment
        self.callbacks = list(callbacks)
        self.state = state or TrainingState()
        self.stop_requested: int | None = None  # a signal number, set by a signal handler
        self.monitor, self.mode = monitor_of(experiment.config, experiment.splits)
        self.improved = False  # whether the last epoch gave a new best

    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def fit(self) -> TrainingState:
        cfg = self.exp.config.train
        if self.stop_requested is not None:  # before the first batch: nothing new to save
            raise Interrupted(self.stop_requested)
        state = self.state
        if state.step is None:  # a checkpoint of an nncli before step counts: as it would be
            batches, progress = steps_per_epoch(self.exp.config, self.exp.splits), state.progress
            state.step = progress.epoch * batches + progress.batch if progress else state.epoch * batches
        self._call("on_train_begin")
        while self.state.epoch < cfg.epochs and not self.state.stopped_early:
            row = self._run_epoch(self.state.epoch)
            self._end_epoch(row)
        self._call("on_train_end")
        return self.state

    def _run_epoch(self, epoch: int) -> dict:
        exp, cfg = self.exp, self.exp.config.train
        x, y = exp.splits.x_train, exp.splits.y_train
        model, loss, optimizer, schedule = exp.model, exp.loss, exp.optimizer, exp.schedule
        augment = exp.augment  # training batches only: validation and test data are never augmented
        batch_size = cfg.batch_size
        n = len(x)
        batches = steps_per_epoch(exp.config, exp.splits)

        resumed = self.state.progress
        self.state.progress = None
        if resumed is not None:
            order, first = resumed.order, resumed.batch
            loss_sum, weight, correct = resumed.loss_sum, resumed.weight, resumed.correct
            seen, elapsed = resumed.seen, resumed.elapsed
        else:
            first, loss_sum, weight, correct, seen, elapsed = 0, 0.0, 0.0, 0, 0, 0.0
        epoch_lr = schedule.lr_at(epoch)
        self._call("on_epoch_begin", epoch, batches, first)
        start = time.perf_counter()
        if resumed is None:
            order = exp.rng.permutation(n)
        for b in range(first, batches):
            idx = order[b * batch_size : (b + 1) * batch_size]
            xb, yb = x.take(idx, axis=0), y[idx]  # take: 45 us against 53 for x[idx] (MNIST, 128 rows)
            if augment is not None:  # its draws come between the batches: resuming stays exact
                xb = augment(xb, exp.rng)
            optimizer.lr = schedule.lr_at(epoch + b / batches)
            out, value, applied = step(model, loss, optimizer, xb, yb, regularizer=exp.regularizer)
            if not applied:  # a loss that is not finite: the step stopped before backward
                elapsed += time.perf_counter() - start
                self._nonfinite(epoch, b, xb, yb, value)
            loss_sum += value * loss.batch_weight
            weight += loss.batch_weight
            correct += loss.correct(out, yb) or 0
            seen += len(idx)
            self.state.step += 1
            self._call("on_batch_end", b, value)
            if self.stop_requested is not None:
                elapsed += time.perf_counter() - start
                self.state.progress = Progress(epoch, b + 1, order, loss_sum, weight, correct, seen, elapsed)
                self._call("on_interrupt", self.stop_requested)
                raise Interrupted(self.stop_requested)
        elapsed += time.perf_counter() - start

        classification = loss.task == "classification"
        row = dict.fromkeys(COLUMNS)
        row.update(epoch=epoch + 1, train_loss=loss_sum / weight, lr=epoch_lr, epoch_time_s=elapsed)
        if classification:
            row["train_acc"] = correct / seen
        if exp.splits.x_val is not None and len(exp.splits.x_val):
            val_loss, val_acc = loss_and_accuracy(
                model, loss, exp.splits.x_val, exp.splits.y_val, cfg.eval_batch_size
            )
            row["val_loss"], row["val_acc"] = val_loss, val_acc
        return row

    def _end_epoch(self, row: dict) -> None:
        state, cfg = self.state, self.exp.config.train
        state.history.append(row)
        state.epoch += 1
        self.exp.schedule.observe(row)
        value = row[self.monitor]
        self.improved = improved(value, state.best_value, self.mode)
        if self.improved:
            state.best_value, state.best_epoch = value, state.epoch
        early = cfg.early_stopping
        if early is not None:
            mode = early.mode or ("max" if early.monitor.endswith("acc") else "min")
            if improved(row[early.monitor], state.stop_value, mode, early.min_delta):
                state.stop_value, state.bad_epochs = row[early.monitor], 0
            else:
                state.bad_epochs += 1
                state.stopped_early = state.bad_epochs >= early.patience
        self._call("on_epoch_end", row)

    def _nonfinite(self, epoch: int, batch: int, xb, yb, value: float):
        from nncli.training.diagnostics import nonfinite_report

        report = nonfinite_report(self.exp, xb, yb, epoch=epoch + 1, batch=batch, loss=value)
        self._call("on_nonfinite", report)
        raise NonFiniteLoss(
            f"the loss became {value} at epoch {epoch + 1}, batch {batch + 1} (learning rate"
            f" {self.exp.optimizer.lr:.3g}); try a smaller learning rate, gradient clipping"
            " (optimizer.clip_norm), or check the data for extreme values"
        )
