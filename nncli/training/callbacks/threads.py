"""The threads that run the model's shards, measured before the first batch and again when the
step times drift (nncli.nn.threads); one line on the run's log each time, saying what was
measured and what was chosen. Nothing here changes a number of the run (see that module)."""

from __future__ import annotations

from time import perf_counter

import numpy as np

from nncli.nn.step import step
from nncli.nn.threads import DriftWatch, measure, threads_word
from nncli.training.callbacks.base import Callback


class ThreadChooser(Callback):
    """Measures `model.workers` where the model's setting lets it (`model.auto_workers`, from
    NNCLI_THREADS unset) and says on `say` (a function of one line; None: silent) how the
    batches run. `choices` keeps every measurement's line."""

    def __init__(self, say=None, watch: DriftWatch | None = None):
        self.say = say
        self.watch = watch or DriftWatch()
        self.choices: list[str] = []
        self.last: float | None = None  # the clock at the last batch's end

    def on_train_begin(self, trainer):
        model, batch = trainer.exp.model, self._batch(trainer)
        sizes = model.shards_for(batch)
        if sizes is None:
            held = "held to one thread" if model.hold_blas else "with its own threads (NNCLI_THREADS=blas)"
            self._tell(f"threads: batches of {batch:,} run whole, the BLAS {held}")
        elif not model.auto_workers:
            workers = model.workers or len(sizes)
            self._tell(f"threads: {len(sizes)} shards of a batch of {batch:,} in {threads_word(workers)}"
                       " (NNCLI_THREADS)")
        else:
            self._measure(trainer, "measured before the first batch")

    def on_epoch_begin(self, trainer, epoch, batches, first_batch):
        self.last = None  # the validation pass between epochs is no step

    def on_batch_end(self, trainer, batch, loss):
        now = perf_counter()
        last, self.last = self.last, now
        model = trainer.exp.model
        if last is None or not model.auto_workers or model.workers is None:
            return
        if self.watch.add(now - last):
            before = model.workers
            self._measure(trainer, f"{self.watch.describe()}; measured again")
            self.watch.reset(changed=model.workers != before)
            self.last = perf_counter()  # the measurement is no step

    def _batch(self, trainer) -> int:
        return min(trainer.exp.config.train.batch_size, len(trainer.exp.splits.x_train))

    def _measure(self, trainer, why: str) -> None:
        exp = trainer.exp
        batch = self._batch(trainer)
        # the first rows, not a random batch: the run's generator is not drawn from
        xb, yb = exp.splits.x_train[:batch], exp.splits.y_train[:batch]

        def run():
            step(exp.model, exp.loss, None, xb, yb, finite_only=False)  # gradients only: no update

        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            choice = measure(exp.model, run, batch)
        if choice is None:
            return
        self.watch.reset()
        line = f"threads: {why}: {choice.describe()}"
        self.choices.append(line)
        self._tell(line)

    def _tell(self, line: str) -> None:
        if self.say is not None:
            self.say(line)
