"""The run directory's files written while training: checkpoints, metrics.csv, steps.csv and
nan_report.json, each atomically. summary.json is written by the train command once training
ends (`nncli.training.summary`); curves.png is drawn on the output side
(`nncli.output.curves.CurvePlotter`)."""

from __future__ import annotations

from nncli.builder import data_record, steps_per_epoch
from nncli.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from nncli.nn.parallel import setting_record
from nncli.training import checkpoint
from nncli.training.callbacks.base import Callback
from nncli.training.rundir import RunDir, metrics_csv, read_steps, step_line, steps_csv


def training_checkpoint(trainer, config: dict) -> dict:
    """The whole state of a run as plain data (see `nncli.training.checkpoint`)."""
    exp = trainer.exp
    return {
        "config": config,
        "model": exp.model.state_dict(),
        "optimizer": exp.optimizer.state_dict(),
        "schedule": exp.schedule.state_dict(),
        "preprocessor": exp.splits.preprocessor.state_dict(),
        "data": data_record(exp.config, exp.splits),
        "rng": exp.rng.bit_generator.state,
        "threads": setting_record(exp.model),  # resumed so: the same shards, the same numbers
        "epoch": trainer.state.epoch,
        "training": trainer.state.to_dict(),
    }


class Checkpointer(Callback):
    """`last.pkl` at the start, after every epoch and on interruption; `best.pkl` whenever the
    monitored metric improves. A run killed at any moment can be resumed from `last.pkl`."""

    def __init__(self, run: RunDir, config: dict):
        self.run, self.config = run, config

    def _save(self, trainer, path):
        checkpoint.save(path, training_checkpoint(trainer, self.config))

    def on_train_begin(self, trainer):
        if not self.run.last.exists():
            self._save(trainer, self.run.last)

    def on_epoch_end(self, trainer, row):
        # best first: a last.pkl that names a best epoch always has its best.pkl beside it
        if trainer.improved:
            self._save(trainer, self.run.best)
        self._save(trainer, self.run.last)

    def on_interrupt(self, trainer, signum):
        self._save(trainer, self.run.last)


class MetricsWriter(Callback):
    def __init__(self, run: RunDir):
        self.run = run

    def on_epoch_end(self, trainer, row):
        atomic_write_text(self.run.metrics, metrics_csv(trainer.state.history))


class StepsWriter(Callback):
    """steps.csv: every training batch's loss and learning rate, for the curves to show what
    happened within epochs (a one-epoch run has a curve). Written with metrics.csv, at each
    epoch's end and when interrupted; a resumed run keeps the rows up to its checkpoint's
    position and goes on from there, so no step is written twice.

    Each batch's line is formatted once, when it ends, and the file is written whole from
    them (atomically, as every file of a run). Formatting every row again at each epoch's end
    took 36 ms at the last of 100 epochs of 469 batches (the MNIST MLP's), 1.84 s over the run
    against 0.14 s so (the Zen 5 of the README)."""

    def __init__(self, run: RunDir):
        self.run = run
        self.text = bytearray(steps_csv([]).encode())  # the file: its header, then a line a batch
        self.epoch, self.batches = 0, 1

    def on_train_begin(self, trainer):
        state = trainer.state
        batches = steps_per_epoch(trainer.exp.config, trainer.exp.splits)
        done = state.epoch * batches + (state.progress.batch if state.progress is not None else 0)
        rows = [row for row in read_steps(self.run.steps) if row[0] <= done] if done else []
        self.text = bytearray(steps_csv(rows).encode())

    def on_epoch_begin(self, trainer, epoch, batches, first_batch):
        self.epoch, self.batches = epoch, batches

    def on_batch_end(self, trainer, batch, loss):
        step = self.epoch * self.batches + batch + 1
        lr = float(trainer.exp.optimizer.lr)
        self.text += step_line(step, self.epoch + (batch + 1) / self.batches, float(loss), lr).encode()

    def _write(self):
        atomic_write_bytes(self.run.steps, self.text)

    def on_epoch_end(self, trainer, row):
        self._write()

    def on_interrupt(self, trainer, signum):
        self._write()


class NanReporter(Callback):
    def __init__(self, run: RunDir):
        self.run = run

    def on_nonfinite(self, trainer, report):
        atomic_write_json(self.run.nan_report, report)
