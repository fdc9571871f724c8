"""The run directory's files: checkpoints, metrics.csv, summary.json and nan_report.json.
Every file is written atomically. (curves.png is drawn by `nncli.output.plotting.CurvePlotter`,
on the output side.)"""

from __future__ import annotations

import time

import numpy as np

from nncli.builder import data_record
from nncli.fileio import atomic_write_json, atomic_write_text
from nncli.nn.metrics import loss_and_accuracy
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


class SummaryWriter(Callback):
    """summary.json: the best epoch, the final metrics and, measured once here, the test-set
    metrics of the best checkpoint."""

    def __init__(self, run: RunDir):
        self.run = run
        self.summary: dict | None = None

    def on_train_end(self, trainer):
        exp, state = trainer.exp, trainer.state
        summary = {
            "name": exp.config.name,
            "epochs_completed": state.epoch,
            "stopped_early": state.stopped_early,
            "monitor": trainer.monitor,
            "best_epoch": state.best_epoch,
            "best_value": state.best_value,
            "final": state.history[-1] if state.history else None,
            "parameters": exp.model.num_params(),
            "train_time_s": float(sum(row["epoch_time_s"] for row in state.history)),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "test": None,
        }
        splits = exp.splits
        if splits.x_test is not None and len(splits.x_test) and self.run.best.exists():
            best = checkpoint.load(self.run.best)
            exp.model.load_state_dict(best["model"])
            test_loss, test_acc = loss_and_accuracy(
                exp.model, exp.loss, splits.x_test, splits.y_test, exp.config.train.eval_batch_size
            )
            summary["test"] = {
                "epoch": best["epoch"],
                "loss": test_loss,
                "accuracy": test_acc,
                "samples": int(len(splits.x_test)),
            }
        self.summary = summary
        atomic_write_json(self.run.summary, _plain(summary))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value
