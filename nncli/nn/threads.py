"""The threads that run a model's shards, chosen by measurement, and measured again when the
machine changes under a run.

A batch's shards are fixed by the CPUs, the model and the batch size (nncli.nn.parallel), and
every shard holds the BLAS to one thread, so the numbers of a run never depend on how busy the
machine was. What is left to choose changes no number: whether the shards run each in its own
thread (fast on a quiet machine) or one after the other in the caller's (fast when another
program holds a core: a thread that waits for a busy core holds up the whole step).
`measure` times a few passes each way, alternating, and keeps the faster; `DriftWatch` reads
the training loop's step times and says when they have moved far enough from those that
followed the last measurement (another program started, or ended) for a new one to pay.

A measuring pass is a gradient-only step (no update) on a batch that is not drawn at random:
only a model that shards runs one, and such a model has no layer that draws at random or keeps
batch statistics (`Layer.shardable`), so it changes nothing but the gradients and caches that
the next step overwrites. The run's generator is never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from statistics import median
from time import perf_counter

#: time spent measuring at most, warm-up included, unless two passes each way take longer
BUDGET_S = 0.3
ROUNDS = 3  # timed passes each way at most


@dataclass
class Choice:
    shards: list[int]  # the shards' sizes
    workers: int  # the threads that run them: 1, or one a shard
    times: dict[int, float]  # workers -> median seconds of a pass
    passes: int  # timed passes each way

    def describe(self) -> str:
        """'2 shards of 64: in 1 thread 11.2 ms, in 2 threads 7.3 ms a step -> 2 threads'."""
        k, sizes = len(self.shards), sorted(set(self.shards), reverse=True)
        of = f"{sizes[0]:,}" if len(sizes) == 1 else " and ".join(f"{n:,}" for n in sizes)
        timed = ", ".join(f"in {threads_word(w)} {t * 1e3:.2f} ms" for w, t in sorted(self.times.items()))
        return f"{k} shards of {of}: {timed} a step (median of {self.passes}) -> {threads_word(self.workers)}"


def threads_word(n: int) -> str:
    return "1 thread" if n == 1 else f"{n} threads"


def measure(
    model, run: Callable[[], object], batch: int, budget_s: float = BUDGET_S, rounds: int = ROUNDS
) -> Choice | None:
    """Time `run()` (one pass of `batch` rows through `model`) with the shards in one thread and
    in one thread each, alternating (`rounds` each way at most, fewer past `budget_s` but two at
    least), after
    one untimed pass each way; leave `model.workers` at
    the faster and return what was measured. None (nothing measured) where a batch of `batch`
    runs whole: there is nothing to choose."""
    sizes = model.shards_for(batch)
    if sizes is None:
        return None
    candidates = [1, len(sizes)]
    times: dict[int, list[float]] = {w: [] for w in candidates}
    start = perf_counter()
    try:
        for w in candidates:  # untimed: replicas made, caches and pages touched
            model.workers = w
            run()
        for r in range(rounds):
            for w in candidates if r % 2 == 0 else candidates[::-1]:
                model.workers = w
                t = perf_counter()
                run()
                times[w].append(perf_counter() - t)
            if r >= 1 and perf_counter() - start > budget_s:  # two each way at least: one is noise
                break
    except BaseException:
        model.workers = None
        raise
    medians = {w: median(ts) for w, ts in times.items()}
    best = min(candidates, key=lambda w: medians[w])
    model.workers = best
    return Choice(sizes, best, medians, len(times[best]))


class DriftWatch:
    """Says when a loop's step times have drifted: the median of each `window` steps is compared
    with that of the first full window after the last measurement (`reset`); two windows in a
    row off by more than a factor `margin`, either way, are a drift. After a drift, the next is
    reported no sooner than `gap` steps on; a measurement that keeps the same choice doubles
    `gap` (a machine whose load comes and goes is not measured without end), one that changes it
    sets `gap` back. Costs one list append a step and one median a window."""

    def __init__(self, window: int = 16, margin: float = 1.5, gap: int = 64):
        self.window, self.margin, self.first_gap = window, margin, gap
        self.gap = gap
        self.reference: float | None = None
        self.times: list[float] = []
        self.off = 0  # windows in a row off the reference
        self.since = 0  # steps since the last measurement
        self.last_median: float | None = None

    def reset(self, changed: bool | None = None) -> None:
        """A measurement was made (`changed`: whether it changed the choice; None, the first)."""
        if changed is not None:
            self.gap = self.first_gap if changed else self.gap * 2
        self.reference, self.times, self.off, self.since = None, [], 0, 0

    def describe(self) -> str:
        """'step times went from 10.00 to 50.00 ms' (the reference, then the last window's)."""
        if self.reference is None or self.last_median is None:
            return "step times drifted"
        return f"step times went from {self.reference * 1e3:.2f} to {self.last_median * 1e3:.2f} ms"

    def add(self, seconds: float) -> bool:
        """Note one step's time; True when the step times have drifted (measure, then `reset`)."""
        self.since += 1
        self.times.append(seconds)
        if len(self.times) < self.window:
            return False
        now, self.times = median(self.times), []
        self.last_median = now
        if self.reference is None:
            self.reference = now
            return False
        drifted = now > self.reference * self.margin or now * self.margin < self.reference
        self.off = self.off + 1 if drifted else 0
        return self.off >= 2 and self.since >= self.gap


class FirstPasses:
    """An evaluation's forward passes, the first of them measuring: where `model` may choose its
    threads and has not yet (`auto_workers`, `workers` None) and the input makes at least
    `2 * len(PLAN)` batches of `batch` rows (8: MNIST's 10,000 test images in batches of 1,024
    make 10), its first full batches run in one thread and in one a shard by turns (PLAN), and
    the rest with the faster. The
    outputs are the same either way: the measurement costs nothing beyond the passes made
    anyway. `forward(xb)` is `model.forward(xb, training=False)`."""

    PLAN = (1, 0, 0, 1)  # 1: one thread; 0: one a shard (the first pass of each pays its warm-up)

    def __init__(self, model, batch: int, batches: int):
        self.model, self.batch = model, batch
        sizes = model.shards_for(batch) if model.auto_workers and model.workers is None else None
        few = sizes is None or batches < 2 * len(self.PLAN)
        self.plan = [] if few else [w or len(sizes) for w in self.PLAN]
        self.times: dict[int, list[float]] = {w: [] for w in self.plan}
        self.choice: Choice | None = None

    def forward(self, xb):
        if not self.plan or len(xb) != self.batch:
            return self.model.forward(xb, training=False)
        w = self.model.workers = self.plan.pop(0)
        t = perf_counter()
        out = self.model.forward(xb, training=False)
        self.times[w].append(perf_counter() - t)
        if not self.plan:
            medians = {w: median(ts) for w, ts in self.times.items()}
            best = min(medians, key=lambda w: medians[w])
            self.model.workers = best
            self.choice = Choice(self.model.shards_for(self.batch), best, medians, len(self.times[best]))
        return out
