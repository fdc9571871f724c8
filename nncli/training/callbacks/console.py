"""The terminal: a tqdm bar per epoch with the running loss, and one line per epoch."""

from __future__ import annotations

import sys

from tqdm import tqdm

from nncli.messages import count
from nncli.training.callbacks.base import Callback


def format_row(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}"]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        value = row.get(key)
        if value is not None:
            parts.append(f"{key} {value * 100:.2f}%" if key.endswith("acc") else f"{key} {value:.4f}")
    parts.append(f"lr {row['lr']:.3g}")
    parts.append(f"{row['epoch_time_s']:.2f}s")
    return "  ".join(parts)


class ProgressBar(Callback):
    """A bar per epoch on stderr; the running loss refreshes every few batches."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.bar = None

    def on_epoch_begin(self, trainer, epoch, batches, first_batch):
        epochs = trainer.exp.config.train.epochs
        self.bar = tqdm(
            total=batches,
            initial=first_batch,
            desc=f"epoch {epoch + 1}/{epochs}",
            file=self.stream,
            leave=False,
            dynamic_ncols=True,
            mininterval=0.2,
            unit="batch",
        )
        self.loss_sum, self.count = 0.0, 0

    def on_batch_end(self, trainer, batch, loss):
        self.loss_sum += loss
        self.count += 1
        if self.count % 20 == 0:
            self.bar.set_postfix(loss=f"{self.loss_sum / self.count:.4f}", refresh=False)
        self.bar.update()

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_epoch_end(self, trainer, row):
        self._close()

    def on_interrupt(self, trainer, signum):
        self._close()

    def on_nonfinite(self, trainer, report):
        self._close()


class EpochLog(Callback):
    """One summary line per epoch on stderr."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr

    def on_epoch_end(self, trainer, row):
        print(format_row(row, trainer.exp.config.train.epochs), file=self.stream, flush=True)
        if trainer.state.stopped_early:
            early = trainer.exp.config.train.early_stopping
            print(
                f"early stopping: {early.monitor} has not improved for {count(early.patience, 'epoch')}",
                file=self.stream,
                flush=True,
            )
