"""The learning-rate range test (Smith 2015; fastai's `lr_find`, Lightning's `Tuner.lr_find`).

Train briefly with the learning rate rising exponentially from `start` to `end` over `steps`
batches, one trainer step each (nncli.nn.step: the config's optimizer, batch size, regularizer
and augmentations; the schedule is ignored), and record each batch's loss. The curve read is the
loss smoothed by an exponential average, bias-corrected as Adam corrects its moments:

    avg_i = beta * avg_(i-1) + (1 - beta) * loss_i        smoothed_i = avg_i / (1 - beta^(i+1))

The test stops early once the smoothed loss passes `diverge` (4) times the lowest it has been,
or a loss is not finite (that step is not applied).

Three suggestions are read from the smoothed curve (`suggest`: the same average, but of the
batch losses with isolated spikes taken out, `read_curve`), all against log10(lr), the axis
the rates are spread evenly on (a slope against the rate itself is the slope per decade divided
by lr ln 10, and favours the smallest rates, where the loss has barely begun to move):

    valley    fastai's default: the longest stretch over which the loss keeps falling (from
              the longest strictly decreasing subsequence: `longest_valley`), and the rate
              halfway along it
    steepest  where the loss falls fastest per decade (over half a decade), before its minimum
    minimum   the lowest point (fastai's lr_min is a tenth of its rate: a minimum is already
              at the edge of divergence)

The first tenth of the planned steps (where the average has seen few batches and an early
spike weighs most) and, when the test stopped early, the last 5 points (the climb into
divergence) are left out of the suggestions, as fastai leaves them out.

This module is the engine: it draws nothing and writes nothing (nncli.commands.lr_find does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from nncli.builder import Experiment
from nncli.nn.step import step

BETA = 0.98  # the smoothing of fastai and Lightning
DIVERGE = 4.0  # stop once the smoothed loss is this many times its lowest
TAIL = 5  # points before the stop left out of the suggestions
MIN_POINTS = 5  # fewer points in the window than this: no suggestion
SPIKE = 5.0  # noise scales from its neighbours' median that make a batch loss a spike (`despiked`)
SLOPE_SPAN = 0.5  # decades of learning rate a slope is taken over (see `steepest_descent`)


@dataclass
class RangeTest:
    """What the test recorded, one entry per step taken: the learning rate, the batch's loss
    (the last one may be non-finite, when that stopped the test) and the smoothed loss (NaN
    where the loss was not finite)."""

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    planned: int  # the steps asked for
    stop: str  # "end" (every step ran), "diverged" or "nonfinite"
    start: float  # the range asked for
    end: float

    @property
    def steps(self) -> int:
        return len(self.lrs)


@dataclass
class Suggestions:
    """The suggested rates (None where the curve is too short to read), the smoothed curve's
    lowest point, the window of steps they were read from, and notes for the reader."""

    valley: float | None
    steepest: float | None
    minimum: float | None
    minimum_loss: float | None
    valley_span: tuple[float, float] | None = None  # the learning rates where the valley starts and ends
    window: tuple[int, int] = (0, 0)  # steps [first, stop) read
    notes: list[str] = field(default_factory=list)
    curve: np.ndarray | None = None  # the curve read, one value per finite loss (see `read_curve`)


def rates(start: float, end: float, steps: int) -> np.ndarray:
    """`steps` learning rates from `start` to `end`, evenly spaced on a log axis."""
    if not (0 < start < end and math.isfinite(end)) or steps < 2:
        raise ValueError(f"need 0 < start < end and steps >= 2; got {start}, {end}, {steps}")
    return start * (end / start) ** (np.arange(steps) / (steps - 1))


def range_test(
    exp: Experiment,
    start: float,
    end: float,
    steps: int,
    *,
    beta: float = BETA,
    diverge: float = DIVERGE,
) -> RangeTest:
    """Run the range test on `exp` (its model and optimizer are trained and changed: build a
    fresh experiment for it). Batches are drawn from shuffled training data, a new permutation
    each time the data runs out, from the experiment's generator."""
    lrs = rates(start, end, steps)
    x, y = exp.splits.x_train, exp.splits.y_train
    batch = exp.config.train.batch_size
    optimizer = exp.optimizer
    order, position = exp.rng.permutation(len(x)), 0
    losses, smoothed = [], []
    average, best, stop = 0.0, math.inf, "end"
    for i, lr in enumerate(lrs):
        if position >= len(x):
            order, position = exp.rng.permutation(len(x)), 0
        idx = order[position : position + batch]
        position += batch
        xb, yb = x.take(idx, axis=0), y[idx]
        if exp.augment is not None:
            xb = exp.augment(xb, exp.rng)
        optimizer.lr = float(lr)
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging step is expected here
            value = step(exp.model, exp.loss, optimizer, xb, yb, regularizer=exp.regularizer).loss
        losses.append(value)
        if not math.isfinite(value):
            smoothed.append(math.nan)
            stop = "nonfinite"
            break
        average = beta * average + (1 - beta) * value
        current = average / (1 - beta ** (i + 1))
        smoothed.append(current)
        if not math.isfinite(current):
            stop = "nonfinite"
            break
        best = min(best, current)
        if current > diverge * best:
            stop = "diverged"
            break
    n = len(losses)
    return RangeTest(lrs[:n].copy(), np.array(losses, float), np.array(smoothed, float), steps, stop,
                     float(start), float(end))


def smooth(losses: np.ndarray, beta: float = BETA) -> np.ndarray:
    """The bias-corrected exponential average of `losses`, as `range_test` keeps it."""
    out, average = np.empty(len(losses)), 0.0
    for i, value in enumerate(losses):
        average = beta * average + (1 - beta) * float(value)
        out[i] = average / (1 - beta ** (i + 1))
    return out


def despiked(losses: np.ndarray) -> np.ndarray:
    """`losses` with each isolated spike (or dip) replaced by the median of it and its two
    neighbours on each side: a value is one where it lies more than SPIKE noise scales from that
    median, the scale being the median distance of every value from its own (times 1.4826, a
    standard deviation for normal noise). A steady descent or a climb of several steps moves
    the medians with it and is kept."""
    n = len(losses)
    medians = np.array([np.median(losses[max(0, i - 2) : i + 3]) for i in range(n)])
    distance = np.abs(losses - medians)
    scale = 1.4826 * float(np.median(distance)) if n else 0.0
    if scale <= 0:
        return losses.copy()
    return np.where(distance > SPIKE * scale, medians, losses)


def read_curve(test: RangeTest) -> np.ndarray:
    """The curve the suggestions are read from: the smoothed loss as the test kept it, but of
    the batch losses with their isolated spikes taken out (`despiked`). Early in the test the
    average has seen few batches and one bad batch weighs as much as a quarter of it: a spike
    at the fourth step lifts the curve for dozens of steps, and the fall back from it reads as
    a valley and as the steepest descent. The non-finite loss that ended a test is left out."""
    finite = test.losses[: test.steps - (test.stop == "nonfinite")]
    return smooth(despiked(finite))


def suggest(test: RangeTest, read: np.ndarray | None = None) -> Suggestions:
    """valley, steepest and minimum from the smoothed curve (see the module's docstring): from
    `read_curve(test)`, or from `read` where given (one value per step taken)."""
    first = test.planned // 10
    stop = test.steps - (TAIL if test.stop != "end" else 0)
    if test.stop == "nonfinite":
        stop = min(stop, test.steps - 1)  # the non-finite point itself is never read
    read = read_curve(test) if read is None else np.asarray(read, dtype=float)
    lrs, curve = test.lrs[first:stop], read[first:stop]
    if len(curve) < MIN_POINTS or not np.isfinite(curve).all():
        ended = {"diverged": "the loss diverged", "nonfinite": "the loss stopped being finite"}
        why = ended.get(test.stop, "the test ended")
        return Suggestions(
            None, None, None, None, window=(first, max(first, stop)),
            notes=[f"{why} after {test.steps} of {test.planned} steps (learning rate"
                   f" {test.lrs[-1]:.3g}), too soon to suggest a rate: start lower (--start) or take"
                   " more steps (--steps)"],
            curve=read,
        )
    low = int(np.argmin(curve))
    minimum, minimum_loss = float(lrs[low]), float(curve[low])
    steepest = steepest_descent(lrs[: low + 1], curve[: low + 1])
    begin, finish = longest_valley(curve)
    valley = float(lrs[begin + (finish - begin) // 2])
    notes = []
    if low == 0:
        notes.append("the loss is lowest at the first learning rate read: the rates tried are too"
                     " high, start lower (--start)")
    elif test.stop == "end" and low >= len(curve) - 2:
        notes.append(f"the loss was still falling at the last rate ({test.lrs[-1]:.3g}): try a"
                     " higher --end")
    picked = [s for s in (valley, steepest) if s is not None]
    if len(picked) == 2 and max(picked) / min(picked) > 10:
        notes.append("valley and steepest are more than a decade apart: look at the plot before"
                     " picking one")
    return Suggestions(valley, steepest, minimum, minimum_loss, (float(lrs[begin]), float(lrs[finish])),
                       (first, stop), notes, read)


def steepest_descent(lrs: np.ndarray, curve: np.ndarray, decades: float = SLOPE_SPAN) -> float | None:
    """The learning rate where `curve` falls fastest per decade of `lrs`: the drop over a span
    of about `decades` (steps of less than a decade each), at the span's middle on the log
    axis. A slope between neighbours would follow the smoothed curve's wiggles: on a noisy flat
    stretch one of them can be steeper than the real descent. None for fewer than two points."""
    if len(curve) < 2:
        return None
    logs = np.log10(lrs)
    per_step = (logs[-1] - logs[0]) / (len(logs) - 1)
    k = int(min(max(1, math.ceil(decades / per_step)), max(1, (len(curve) - 1) // 2)))
    slopes = (curve[k:] - curve[:-k]) / (logs[k:] - logs[:-k])
    j = int(np.argmin(slopes))
    return float(10 ** ((logs[j] + logs[j + k]) / 2))


def longest_valley(values: np.ndarray) -> tuple[int, int]:
    """(first, last) index of fastai's "longest valley": the longest strictly decreasing
    subsequence of `values` (the earliest-ending among equals) gives its end and its length L,
    and the valley is the stretch of L points that ends there. Where the subsequence crosses a
    noisy, nearly flat stretch it skips points, so such a stretch counts for less than a steady
    descent: the valley is where the loss falls, not where it merely does not rise."""
    n = len(values)
    length = np.ones(n, dtype=int)
    for i in range(1, n):
        above = values[:i] > values[i]
        if above.any():
            length[i] = length[:i][above].max() + 1
    last = int(np.argmax(length))
    return last - int(length[last]) + 1, last
