"""How the model's batches run: measured before the first batch, then, where the batch shards,
the way not chosen tried now and then on a few training steps, and sooner when the step times
drift (nncli.nn.threads.Trials, DriftWatch); one line on the run's log for the measurement, for
each trial that changes the choice and for each that a drift brought forward, saying what was
timed and what was chosen.

Choosing the threads that run the shards changes no number of the run. Choosing, at a fresh
run's start, to run batches whole with the BLAS's own threads (where that is faster by a
margin: NNCLI_THREADS unset) changes the roundings, so it is made once and kept in the run's
checkpoints (nncli.nn.parallel.setting_record), and a resumed run goes on the same way. The BLAS's
threads are left, for good, when the step times grow past the drift margin: another program
took a core they wait for. The run's numbers from that step on are the held BLAS's; the line
says at which step, and the checkpoints after it say so too."""

from __future__ import annotations

from time import perf_counter

import numpy as np

from nncli._openblas import thread_control
from nncli.builder import full_batch
from nncli.nn.step import step
from nncli.nn.threads import BLAS, BLAS_SPIN_S, WHOLE, DriftWatch, Trials, measure, threads_word, use
from nncli.training.callbacks.base import Callback


class ThreadChooser(Callback):
    """Measures how `model`'s batches run where its setting lets it (`model.auto_workers`, from
    NNCLI_THREADS unset or `held`) and says on `say` (a function of one line; None: silent) how
    they run. `choices` keeps the line of every measurement and of every trial that changed
    the choice or that a drift brought forward."""

    def __init__(self, say=None, watch: DriftWatch | None = None):
        self.say = say
        self.watch = watch or DriftWatch()
        self.trials: Trials | None = None  # where the shards' threads may change mid-run
        self.prompted: str | None = None  # the drift that brought the trial under way forward
        self.pending: str | None = None  # a drift during a trial, for the one after it
        self.choices: list[str] = []
        self.last: float | None = None  # the clock at the last batch's end
        self.watching = False  # whether there is a choice that a drift could change

    def on_train_begin(self, trainer):
        model, batch = trainer.exp.model, self._batch(trainer)
        if model.auto_workers and not model.hold_blas:  # a resumed run that chose the BLAS's threads
            self._tell(f"threads: batches of {batch:,} run whole, the BLAS in"
                       f" {threads_word(model.blas_threads or 1)}, as this run chose at its start")
            self.watching = True
            return
        sizes, blas = model.shards_for(batch), blas_threads(model)
        if model.auto_workers and (sizes is not None or blas is not None):
            self._measure(trainer, "measured before the first batch", blas)
            model.choose_blas = False  # once, at the start: the roundings must not change mid-run
        elif sizes is None:
            held = "held to one thread" if model.hold_blas else "with its own threads (NNCLI_THREADS=blas)"
            self._tell(f"threads: batches of {batch:,} run whole, the BLAS {held}")
        else:
            workers = model.workers or len(sizes)
            self._tell(f"threads: {len(sizes)} shards of a batch of {batch:,} in {threads_word(workers)}"
                       " (NNCLI_THREADS)")

    def on_epoch_begin(self, trainer, epoch, batches, first_batch):
        self.last = None  # the validation pass between epochs is no step

    def on_batch_end(self, trainer, batch, loss):
        now = perf_counter()
        last, self.last = self.last, now
        if last is None or not self.watching:
            return
        model = trainer.exp.model
        if not model.hold_blas:  # the BLAS's own threads: only steps slower than they were matter
            if not self.watch.add(now - last):
                return
            if self.watch.last_median < self.watch.reference:  # faster: the BLAS's threads stay
                self.watch.reset(changed=False)
                return
            self._leave_blas(trainer)
            self.last = perf_counter()  # the measurement is no step
        elif self.trials is not None:
            self._try(trainer, now - last)

    def _try(self, trainer, seconds: float) -> None:
        """Note a step's time with the trials, run the next step as they say, and say how a
        trial ended where it changed the choice or a drift brought it forward. Only the chosen
        way's steps are watched for drift."""
        trials = self.trials
        ran, chosen, other = trials.way, trials.chosen, trials.other
        ended = trials.add(seconds)
        if ended is None and ran == chosen and self.watch.add(seconds):
            drift = self.watch.describe()
            if trials.now():
                self.prompted = drift
            else:  # a trial under way, which the drift may have skewed: the next follows it soon
                self.pending = drift
            self.watch.reset()
        trainer.exp.model.workers = trials.way
        if ended is None:
            return
        why = f"{self.prompted}; " if self.prompted else ""
        prompted, self.prompted, self.pending = self.prompted, self.pending, None
        if not (ended or prompted):
            return
        self.watch.reset(changed=ended)  # the times to come are the new way's, or the gap doubles
        timed, held = trials.last
        outcome = threads_word(other) if ended else f"{threads_word(chosen)} still"
        self._tell(f"threads: after step {trainer.state.step:,}, {why}{trials.block} steps in"
                   f" {threads_word(other)} took {timed * 1e3:.2f} ms a step against {held * 1e3:.2f} in"
                   f" {threads_word(chosen)} (medians) -> {outcome}", keep=True)

    def _leave_blas(self, trainer) -> None:
        """Hold the BLAS to one thread for the rest of the run: its own threads wait for cores
        that another program holds (measured again where the batch shards)."""
        model = trainer.exp.model
        threads = model.blas_threads or 1
        use(model, None, None)
        why = (f"{self.watch.describe()}, the BLAS's {threads} threads waiting for busy cores; from step"
               f" {trainer.state.step + 1:,} on, the BLAS held to one thread (other roundings, kept in the"
               " checkpoints)")
        if not self._measure(trainer, why, changed=True, spun=True):
            use(model, 1, None)
            self._tell(f"threads: {why}: batches whole")

    def _batch(self, trainer) -> int:
        return full_batch(trainer.exp.config, trainer.exp.splits)

    def _measure(self, trainer, why: str, blas: int | None = None, changed: bool | None = None,
                 spun: bool = False) -> bool:
        """Measure the ways `model` may run its batches (the BLAS's own `blas` threads among them
        where given), keep the fastest, say so; False where there was nothing to choose. The
        drift watch starts again (`changed`: see `DriftWatch.reset`), after the BLAS's threads
        have stopped spinning where they ran last (timed here, or `spun`: the steps before)."""
        exp = trainer.exp
        batch = self._batch(trainer)
        # the first rows, not a random batch: the run's generator is not drawn from
        xb, yb = exp.splits.x_train[:batch], exp.splits.y_train[:batch]

        def run():
            step(exp.model, exp.loss, None, xb, yb, finite_only=False)  # gradients only: no update

        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            choice = measure(exp.model, run, batch, blas=blas)
        # watched for drift where a choice remains: the threads of the shards, or the BLAS's
        model = exp.model
        self.watching = choice is not None and (model.shards_for(batch) is not None or not model.hold_blas)
        if choice is None:
            return False
        # where the BLAS's own threads ran last and were not chosen, they spin a while yet
        spin = (spun or BLAS in choice.times) and choice.workers != BLAS
        self.watch.reset(changed=changed, settle_s=BLAS_SPIN_S if spin else 0.0)
        self.trials, self.prompted, self.pending = None, None, None
        if choice.shards is not None and choice.workers not in (BLAS, WHOLE):
            other = 1 if choice.workers > 1 else len(choice.shards)
            ratio = choice.times[other] / max(choice.times[choice.workers], 1e-9)
            self.trials = Trials(choice.workers, other, choice.block, ratio)
        line = f"threads: {why}: {choice.describe()}"
        if choice.workers in (BLAS, WHOLE):  # other roundings than the shards'
            line += " (for the whole run, kept on resume; NNCLI_THREADS=held rounds alike under any load)"
        self._tell(line, keep=True)
        return True

    def _tell(self, line: str, keep: bool = False) -> None:
        if keep:
            self.choices.append(line)
        if self.say is not None:
            self.say(line)


def blas_threads(model) -> int | None:
    """The BLAS's threads a fresh run of `model` may run its batches whole with, timed at its
    start among the held ways; None where it may not (NNCLI_THREADS set, a resumed run, a BLAS
    of one thread or out of nncli's control, a layer that draws at random or keeps batch
    statistics)."""
    control = thread_control()
    if not (model.auto_workers and model.choose_blas and model.hold_blas) or control is None:
        return None
    # a measuring pass must change nothing: no layer may draw from the run's generator (dropout)
    # or keep batch statistics (batch norm) - the layers that also keep a model from sharding
    if not all(layer.shardable for layer in model.layers):
        return None
    return control.initial if control.initial > 1 else None
