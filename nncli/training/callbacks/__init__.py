"""What a training run does besides training: progress on the terminal, metrics, checkpoints
and reports (the curves are drawn on the output side: `nncli.output.curves.CurvePlotter`).
The trainer calls each callback's hooks in order:

    on_train_begin  on_epoch_begin(epoch, batches, first_batch)  on_batch_end(batch, loss)
    on_epoch_end(row)  on_interrupt(signum)  on_nonfinite(report)  on_train_end
"""

from nncli.training.callbacks.base import Callback
from nncli.training.callbacks.console import EpochLog, ProgressBar
from nncli.training.callbacks.files import (
    Checkpointer,
    MetricsWriter,
    NanReporter,
    StepsWriter,
)

__all__ = [
    "Callback",
    "Checkpointer",
    "EpochLog",
    "MetricsWriter",
    "NanReporter",
    "ProgressBar",
    "StepsWriter",
]
