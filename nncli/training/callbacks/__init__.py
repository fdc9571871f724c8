"""What a training run does besides training: progress on the terminal, metrics, checkpoints
and reports (the curves are drawn on the output side: `nncli.output.curves.CurvePlotter`).
The trainer calls each callback's hooks in order:

    on_train_begin  on_epoch_begin(epoch, batches, first_batch)  on_batch_end(batch, loss)
    on_epoch_end(row)  on_interrupt(signum)  on_nonfinite(report)  on_train_end

and the train command, once the run's summary is written, `on_summary(summary)`; then, however
training ended, `close()`. `TensorBoardLogger` (tensorboard.py) is imported where a run asks
for it: it imports tensorboardX, an optional extra, only once it starts.
"""

from nncli.training.callbacks.base import Callback
from nncli.training.callbacks.console import EpochLog, ProgressBar
from nncli.training.callbacks.files import (
    Checkpointer,
    MetricsWriter,
    NanReporter,
    StepsWriter,
)
from nncli.training.callbacks.threads import ThreadChooser

__all__ = [
    "Callback",
    "Checkpointer",
    "EpochLog",
    "MetricsWriter",
    "NanReporter",
    "ProgressBar",
    "StepsWriter",
    "ThreadChooser",
]
