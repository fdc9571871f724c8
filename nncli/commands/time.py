"""`nncli time`: where a training step's time goes, layer by layer, like `caffe time`.

The experiment is built as `train` builds it (data, model, loss, regularizer, optimizer) and
one batch of training samples goes through the trainer's step (nncli.nn.step), `warmup` times
untimed and then `iters` times timed, with a hook that reads the clock between its stages:

    the augmentations                       (only when the config has data.augment)
    the batch into the layers' layout       (model.inside: images travel channels-last; a row
                                             only where it changes the batch)
    each layer's forward, in order          (training mode: dropout draws, batch statistics)
    the loss's forward, then its backward
    each layer's backward, in reverse       (until one returns no gradient, as Sequential does:
                                             the first layer needs no dL/d(data) in training)
    the regularizer's gradient              (only when the config has a penalty)
    the optimizer's step

A row's milliseconds are medians over the timed iterations, its total their sum (so that the
table adds up: forward plus backward is the total, the rows' totals the step); its share is its
part of the sum of every row's total. The weights move with every step, as in training: the
experiment is thrown away afterwards. The batch gather, the learning-rate schedule and the
accuracy count of the trainer's loop are left out (they cost microseconds and belong to no
layer), and so is an output layer (a final softmax or sigmoid that only `predict` applies).

The table times the layers one after the other on the whole batch. Where training runs the
batch as shards (nncli.nn.parallel), the whole step is then timed as training may run it: the
shards in one thread and in one thread each, alternating, as the trainer measures at the start
of a run (nncli.nn.threads.measure: blocks of passes, two or three rounds), and the line says which
training takes and why (NNCLI_THREADS=N forces one thread a shard). Where a fresh run may also
run its batches whole with the BLAS's own threads (NNCLI_THREADS unset, a BLAS of several
threads), that way is timed among them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

import numpy as np

from nncli.builder import build_experiment
from nncli.commands.check import describe_layer
from nncli.config.schema import load_config
from nncli.nn.step import step
from nncli.nn.threads import BLAS, BLAS_MARGIN, WHOLE, measure, shards_words, threads_word
from nncli.training.callbacks.threads import blas_threads

BAR_WIDTH = 40  # characters of '#' for a share of 100%


@dataclass
class Row:
    kind: str  # "augment", "input", "layer", "loss", "regularizer" or "optimizer"
    name: str
    index: int | None  # the layer's position in the model (model[i]); None for the other rows
    forward_ms: float | None  # None where a row has no forward or backward (the update steps)
    backward_ms: float | None
    total_ms: float
    share: float = 0.0  # of the sum of every row's total_ms, from 0 to 1

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class TimeResult:
    config: str
    name: str
    dataset: str
    dtype: str
    batch: int
    iters: int
    warmup: int
    rows: list[Row]
    step_ms: float  # the median wall time of one whole iteration, the timers included
    output_layer: tuple[int, str] | None = None  # (index, name) of the predict-only layer
    notes: list[str] = field(default_factory=list)
    shards: list[int] | None = None  # the shards' sizes where training runs the batch so
    sharded_step_ms: float | None = None  # the median wall time of such a step, as training runs it
    threads_ms: dict[int, float] | None = None  # threads that run the shards -> the step's ms
    threads: int | None = None  # how many of them training uses, or nncli.nn.threads' BLAS or WHOLE
    measured: bool = True  # whether training measures that (NNCLI_THREADS unset)
    blas_held: bool = True  # whether a batch run whole holds the BLAS to one thread
    blas_ms: float | None = None  # the step whole with the BLAS's own threads, where timed
    blas_threads: int | None = None  # how many threads the BLAS then ran
    whole_ms: float | None = None  # the step whole, held to one thread, where it shards and was timed

    @property
    def total_ms(self) -> float:
        return sum(row.total_ms for row in self.rows)

    @property
    def slowest(self) -> Row | None:
        """The layer that takes the most time (None for a model without layers)."""
        layers = [row for row in self.rows if row.kind == "layer"]
        return max(layers, key=lambda row: row.total_ms) if layers else None

    def to_dict(self) -> dict:
        slowest = self.slowest
        return {
            "config": self.config,
            "name": self.name,
            "dataset": self.dataset,
            "dtype": self.dtype,
            "batch": self.batch,
            "iters": self.iters,
            "warmup": self.warmup,
            "rows": [row.to_dict() for row in self.rows],
            "totals": {
                "forward_ms": sum(row.forward_ms or 0.0 for row in self.rows),
                "backward_ms": sum(row.backward_ms or 0.0 for row in self.rows),
                "total_ms": self.total_ms,
                "step_ms": self.step_ms,
            },
            "slowest_layer": None if slowest is None else slowest.index,
            "output_layer": None
            if self.output_layer is None
            else {"index": self.output_layer[0], "name": self.output_layer[1]},
            "notes": list(self.notes),
            "sharded": None
            if self.shards is None
            else {
                "shards": list(self.shards),
                "step_ms": self.sharded_step_ms,
                "threads": None if self.threads in (BLAS, WHOLE) else self.threads,
                "step_ms_by_threads": {str(w): t for w, t in sorted(self.threads_ms.items())},
                "measured": self.measured,
            },
            "whole": None
            if self.whole_ms is None
            else {"step_ms": self.whole_ms, "chosen": self.threads == WHOLE},
            "blas": None
            if self.blas_ms is None
            else {"threads": self.blas_threads, "step_ms": self.blas_ms, "chosen": self.threads == BLAS},
        }


def time_layers(
    config_path: str,
    overrides=(),
    *,
    data_dir: Path,
    batch: int | None = None,
    iters: int = 20,
    warmup: int = 3,
) -> TimeResult:
    """Time `iters` training steps of `config_path`'s experiment on one batch of `batch`
    training samples (default: train.batch_size), after `warmup` untimed ones."""
    if iters < 1 or warmup < 0 or (batch is not None and batch < 1):
        raise ValueError(f"need iters >= 1, warmup >= 0 and batch >= 1; got {iters}, {warmup}, {batch}")
    config = load_config(config_path, overrides)
    exp = build_experiment(config, data_dir)
    model, loss, regularizer, optimizer = exp.model, exp.loss, exp.regularizer, exp.optimizer
    x_train, y_train = exp.splits.x_train, exp.splits.y_train
    n = len(x_train)
    notes = []
    if batch is None:
        batch = min(config.train.batch_size, n)  # the trainer's batches are never larger
    elif batch > n:
        notes.append(f"the training set has {n:,} samples: the batch of {batch:,} repeats them")
    rows = np.arange(batch) % n
    x, y = x_train.take(rows, axis=0), y_train.take(rows, axis=0)

    layers, augment = model.layers, exp.augment
    forward = np.zeros((iters, len(layers)))
    backward = np.zeros((iters, len(layers)))  # stays 0 for layers below one returning None
    augmenting, step_times = np.zeros(iters), np.zeros(iters)
    stages = {event: np.zeros(iters) for event in ("input", "loss", "loss_backward", "penalty", "update")}
    layout = None  # the batch's shape before and after model.inside, where it changes them
    r, t = 0, 0.0  # the row being written and the clock's last reading

    def lap(event: str, index: int | None, value) -> None:
        # the step's hook: the time since the last stage is this stage's
        nonlocal t, layout
        now = perf_counter()
        times = forward if event == "forward" else backward if event == "backward" else stages[event]
        if index is None:
            times[r] = now - t
        else:
            times[r, index] = now - t
        if event == "input" and value is not xb:
            layout = (xb.shape, value.shape)
        t = perf_counter()  # the hook's own work is nobody's time

    # a step that diverges on the one batch it repeats is still timed, without warnings
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for it in range(-warmup, iters):
            r = max(it, 0)  # the warm-up steps write row 0, which the first timed one overwrites
            start = t = perf_counter()
            xb = x
            if augment is not None:
                xb = augment(xb, exp.rng)
                augmenting[r] = perf_counter() - t
                t = perf_counter()
            # the trainer's step, with the hook: serially, layer by layer (see nncli.nn.step)
            step(model, loss, optimizer, xb, y, regularizer=regularizer, hook=lap, finite_only=False)
            step_times[r] = perf_counter() - start

    def ms(times: np.ndarray) -> float:
        return float(np.median(times)) * 1e3

    shards = model.shards_for(batch)
    choice = None
    blas, blas_held = blas_threads(model), model.hold_blas
    if shards is not None or blas is not None:
        auto = model.auto_workers

        def run():
            xb = x if augment is None else augment(x, exp.rng)
            step(model, loss, optimizer, xb, y, regularizer=regularizer, finite_only=False)

        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            choice = measure(model, run, batch, blas=blas)  # as training measures at its start
        if not auto:
            choice.workers = len(shards)  # NNCLI_THREADS forces a thread a shard
    held = None if choice is None else {w: t * 1e3 for w, t in choice.times.items() if w > 0}
    loss_forward, loss_backward, entering = stages["loss"], stages["loss_backward"], stages["input"]

    def both(kind: str, name: str, index: int | None, fwd: np.ndarray, bwd: np.ndarray) -> Row:
        return Row(kind, name, index, ms(fwd), ms(bwd), ms(fwd) + ms(bwd))

    result_rows = []
    if augment is not None:
        names = ", ".join(next(iter(entry)) for entry in augment.get_config())
        result_rows.append(Row("augment", f"augment({names})", None, ms(augmenting), None, ms(augmenting)))
    if layout is not None:
        before, after = layout
        result_rows.append(Row("input", f"input {before} -> {after}", None, ms(entering), None, ms(entering)))
    result_rows += [
        both("layer", describe_layer(layer), i, forward[:, i], backward[:, i])
        for i, layer in enumerate(layers)
    ]
    result_rows.append(both("loss", f"loss {loss.name}", None, loss_forward, loss_backward))
    if regularizer:
        result_rows.append(Row("regularizer", _describe_regularizer(regularizer), None, None, None,
                               ms(stages["penalty"])))
    optimizer_name = f"optimizer {type(optimizer).registered_name}"
    result_rows.append(Row("optimizer", optimizer_name, None, None, None, ms(stages["update"])))
    total = sum(row.total_ms for row in result_rows)
    for row in result_rows:
        row.share = row.total_ms / total if total > 0 else 0.0

    output = None if model.output is None else (len(layers), describe_layer(model.output))
    return TimeResult(
        config=str(config_path),
        name=config.name,
        dataset=exp.splits.info.name,
        dtype=config.dtype,
        batch=batch,
        iters=iters,
        warmup=warmup,
        rows=result_rows,
        step_ms=ms(step_times),
        output_layer=output,
        notes=notes,
        shards=shards,
        sharded_step_ms=None if shards is None else held.get(choice.workers, min(held.values())),
        threads_ms=held,
        threads=None if choice is None else choice.workers,
        measured=model.auto_workers,
        blas_held=blas_held,
        blas_ms=None if choice is None or BLAS not in choice.times else choice.times[BLAS] * 1e3,
        blas_threads=blas,
        whole_ms=None if choice is None or WHOLE not in choice.times else choice.times[WHOLE] * 1e3,
    )


def _threads_line(result: TimeResult) -> str:
    """How training runs the step, as measured: 'training runs this step as 2 shards of 64: in
    1 thread 1.8 ms, in 2 threads 1.4 ms, whole with the BLAS in 2 threads 1.0 ms a step (median,
    alternating) -> the BLAS in 2 threads, ...'."""
    timed = []
    if result.shards is not None:
        what = f"as {shards_words(result.shards)}"
        timed += [f"in {threads_word(w)} {t:.3f} ms" for w, t in sorted(result.threads_ms.items())]
        whole = "whole with the BLAS"
    else:
        what = "whole"
        timed.append(f"the BLAS held to one thread {result.threads_ms[1]:.3f} ms")
        whole = "the BLAS"
    if result.whole_ms is not None:
        timed.append(f"whole, held to one thread {result.whole_ms:.3f} ms")
    if result.blas_ms is not None:
        timed.append(f"{whole} in {threads_word(result.blas_threads)} {result.blas_ms:.3f} ms")
    if result.threads == BLAS:
        chosen = f"the BLAS in {threads_word(result.blas_threads)}"
    elif result.threads == WHOLE:
        chosen = "whole, the BLAS held to one thread"
    else:
        chosen = threads_word(result.threads) if result.shards is not None else "the BLAS held to one thread"
    if not result.measured:
        why = "as NNCLI_THREADS forces"
    elif result.blas_ms is None:
        why = "the faster, measured again as training starts"
    else:
        why = (f"the faster (a whole batch only by {BLAS_MARGIN:.0%} by median and in most rounds: it"
               " changes the run's roundings), measured again as a fresh run starts")
    rows = "; the rows above run whole (NNCLI_THREADS=1 trains so)" if result.shards is not None else ""
    return (f"training runs this step {what}: {', '.join(timed)} a step (median, alternating) -> {chosen},"
            f" {why}{rows}")


def _describe_regularizer(regularizer) -> str:
    terms = [f"weight_decay={regularizer.l2:g}"] if regularizer.l2 else []
    terms += [f"l1={regularizer.l1:g}"] if regularizer.l1 else []
    return f"regularizer({', '.join(terms)})"


def format_timings(result: TimeResult) -> str:
    """The table: one row per layer, then the loss, the regularizer and the optimizer, each with
    its median milliseconds, its share and a bar of that share; the slowest layer is marked."""
    slowest = result.slowest

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    rows = [("#", "layer", "forward", "backward", "total", "share", "")]
    for row in result.rows:
        bar = "#" * round(row.share * BAR_WIDTH)
        if row is slowest:
            bar += "  <- slowest layer"
        index = "" if row.index is None else str(row.index)
        rows.append((index, row.name, cell(row.forward_ms), cell(row.backward_ms), cell(row.total_ms),
                     f"{row.share * 100:.1f}%", bar))
    totals = result.to_dict()["totals"]
    rows.append(("", "total", cell(totals["forward_ms"]), cell(totals["backward_ms"]),
                 cell(totals["total_ms"]), "100.0%", ""))
    widths = [max(len(r[c]) for r in rows) for c in range(6)]
    table = [
        f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}"
        f"  {r[4]:>{widths[4]}}  {r[5]:>{widths[5]}}  {r[6]}".rstrip()
        for r in rows
    ]
    lines = [
        f"{result.config}: {result.name}, a batch of {result.batch:,} {result.dataset} training samples,"
        f" {result.dtype}",
        f"median milliseconds over {result.iters:,} timed {'step' if result.iters == 1 else 'steps'}"
        f" after {result.warmup:,} untimed, in training mode",
        *table,
    ]
    if result.step_ms > 0:
        lines.append(
            f"one training step: {result.step_ms:.3f} ms, {result.batch / result.step_ms * 1e3:,.0f}"
            " samples/s (median, the timers included)"
        )
    if result.threads is not None:
        lines.append(_threads_line(result))
    else:
        held = ("the BLAS held to one thread" if result.blas_held
                else "the BLAS with its own threads (NNCLI_THREADS=blas)")
        lines.append(f"training runs this step as the rows above do: whole, {held}")
    if result.output_layer is not None:
        index, name = result.output_layer
        lines.append(f"not timed: model[{index}] {name}, applied to predictions only (training runs"
                     " the loss on the logits before it)")
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)
