"""summary.json: what a finished run reports, written by the train command once training ends.

Measuring the test set is a step of its own (`evaluate_best`), not a side effect of a callback:
it scores the best checkpoint's weights on a copy of the model, so the model training leaves
behind is the one the last epoch made.
"""

from __future__ import annotations

import copy
import sys
import time

import numpy as np

from nncli.builder import full_batch
from nncli.fileio import atomic_write_json
from nncli.nn.metrics import loss_and_accuracy
from nncli.nn.parallel import setting_record
from nncli.training import checkpoint
from nncli.training.rundir import RunDir


def evaluate_best(exp, run: RunDir) -> dict | None:
    """The test-set loss and accuracy of `run`'s best checkpoint (None without a test set or a
    best checkpoint), measured on a copy of `exp`'s model."""
    splits = exp.splits
    if splits.x_test is None or not len(splits.x_test) or not run.best.exists():
        return None
    best = checkpoint.load(run.best)
    model = copy.deepcopy(exp.model)
    model.load_state_dict(best["model"])
    test_loss, test_acc = loss_and_accuracy(
        model, exp.loss, splits.x_test, splits.y_test, exp.config.train.eval_batch_size
    )
    return {"epoch": best["epoch"], "loss": test_loss, "accuracy": test_acc,
            "samples": int(len(splits.x_test))}


def run_summary(trainer, test: dict | None) -> dict:
    """The summary of the run `trainer` finished, with the `test` figures of `evaluate_best`."""
    exp, state = trainer.exp, trainer.state
    return _plain({
        "name": exp.config.name,
        "epochs_completed": state.epoch,
        "stopped_early": state.stopped_early,
        "monitor": trainer.monitor,
        "best_epoch": state.best_epoch,
        "best_value": state.best_value,
        "final": state.history[-1] if state.history else None,
        "parameters": exp.model.num_params(),
        "train_time_s": float(sum(row["epoch_time_s"] for row in state.history)),
        "peak_rss_mib": peak_rss_mib(),
        "threads": threads_record(exp),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "test": test,
    })


def threads_record(exp) -> dict:
    """How the run's batches ran at its end: the checkpoints' record (nncli.nn.parallel's
    `setting_record`, whose `shards` is the most a batch may split into), and `batch_shards`,
    what a whole training batch did split into (1: it ran whole; the quickstart's batches of 64
    never split, whatever `shards` says)."""
    sizes = exp.model.shards_for(full_batch(exp.config, exp.splits))
    return {**setting_record(exp.model), "batch_shards": 1 if sizes is None else len(sizes)}


def peak_rss_mib() -> float | None:
    """The most memory this process has held resident so far, in MiB (None where the platform
    does not say: Windows has no `resource` module). getrusage's ru_maxrss is in KiB on Linux
    and in bytes on macOS."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)


def write_summary(run: RunDir, summary: dict) -> None:
    atomic_write_json(run.summary, summary)


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value
