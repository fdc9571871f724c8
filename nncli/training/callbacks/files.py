"""The run directory's files written while training: checkpoints, metrics.csv and
nan_report.json, each atomically. summary.json is written by the train command once training
ends (`nncli.training.summary`); curves.png is drawn on the output side
(`nncli.output.plotting.CurvePlotter`)."""

from __future__ import annotations

from nncli.builder import data_record
from nncli.fileio import atomic_write_json, atomic_write_text
from nncli.nn.parallel import setting_record
from nncli.training import checkpoint
from nncli.training.callbacks.base import Callback
from nncli.training.rundir import RunDir, metrics_csv


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


class NanReporter(Callback):
    def __init__(self, run: RunDir):
        self.run = run

    def on_nonfinite(self, trainer, report):
        atomic_write_json(self.run.nan_report, report)
