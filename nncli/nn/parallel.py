"""Data-parallel training steps: a batch run as shards, one thread each.

numpy releases the GIL in its ufuncs, copies and matrix products, but runs each element-wise
pass (im2col copies, pooling comparisons, ReLU) on one core, while OpenBLAS spreads only the
products over the cores. A batch split into K shards, each run through the layers in its own
thread with the BLAS held to one thread, keeps K cores busy through both kinds of work.

`Shards` runs shard 0 in the calling thread on the model's own layers, and shard s > 0 in a
worker thread on replica s: a shallow copy of each layer that shares its parameter arrays (only
read during a step) but keeps its own forward caches (the attributes forward sets) and its own
gradients, views into one array laid out like `model.flat.grads` (`Sequential.replicate`).
Forward concatenates the shards' outputs; the loss then runs once, on the whole batch, in the
caller (its value and dL/d(output) are the serial pass's); backward hands each shard its rows of
dL/d(output) and adds the replicas' gradients into the model's, in shard order. The gradients
differ from the serial pass's in rounding only, and are the same from run to run for the same
number of shards.

Which threads run the shards does not change a number: each shard's passes are the same
whether the shards run one after the other in the calling thread (`Sequential.workers` = 1) or
each in its own, and their gradients are added in shard order either way. So the count of
shards is fixed by the CPUs, the model and the batch size (and kept in a run's checkpoints),
and only how many threads run them is measured (nncli.nn.threads). The BLAS's own thread
count is another matter: OpenBLAS 0.3.31 multiplies (64, 784) @ (784, 256) in float32 with
other roundings in 1, 2, 3, 4 and 8 threads; so it is held to one thread (every shard, and a
batch that runs whole), unless NNCLI_THREADS=blas, or a fresh run measured its own threads
faster at its start (NNCLI_THREADS unset: a model of matrix products alone, on a quiet machine),
a choice its checkpoints record so that a resumed run keeps its roundings.

Only layers whose training forward treats each sample on its own and draws nothing at random
can be split so (`Layer.shardable`): batch norm (batch statistics, running averages) and dropout
(masks drawn from the run's generator in an order thread timing must not change) keep a model
serial. So does a BLAS whose threads cannot be held to one (`nncli._openblas.thread_control`:
threadpoolctl's OpenBLAS, MKL and BLIS).
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import NamedTuple

import numpy as np

from nncli._openblas import ThreadControl, thread_control
from nncli.errors import NncliError
from nncli.nn.layers import Layer

#: no shard is made smaller than this. The MNIST CNN's training pass (forward and backward) on
#: 32 images took 6.0-6.4 ms serially and 5.8-7.1 ms as two shards of 16; on 48, 9.95 against
#: 9.6 as two of 24; on 64, 13.5 against 10.4 as two of 32.
MIN_SHARD = 32
ENV = "NNCLI_THREADS"


#: a model of matrix products alone (no `Layer.elementwise_bound` layer) is split only where
#: each shard holds this many multiply-adds (rows x parameters) or more: the quickstart's MLP
#: (235k parameters, shards of 32) ran its step in 0.86 ms as two shards against 0.65 in one
#: thread; the MNIST MLP (535k, shards of 64) gains from them
MIN_SHARD_WORK = 2**24


class ThreadSetting(NamedTuple):
    """How training and evaluation use the CPUs, from $NNCLI_THREADS (`thread_setting`)."""

    shards: int  # at most this many shards a batch (shard_bounds decides per batch)
    measured: bool  # the threads that run them are chosen by measurement (nncli.nn.threads)
    blas: bool  # unsharded, with the BLAS's own threads: NNCLI_THREADS=blas, or chosen so
    choose_blas: bool = False  # a fresh run may choose the BLAS's own threads at its start
    blas_threads: int | None = None  # the BLAS's threads where `blas` was chosen (None: its own)


#: an element-wise pass over the parameters (the optimizer's update, the sum of the shards'
#: gradients) splits over threads only into ranges of this many elements or more: the MNIST
#: MLP's SGD update (536k float32, its arrays out of cache after the backward pass) took 0.69 ms
#: in one thread against 0.48 in two halves; the quickstart's (235k) gains little
MIN_SPLIT = 2**17

#: a checkpoint's record of more BLAS threads than this is damaged (numpy's OpenBLAS has 64)
MAX_BLAS_THREADS = 1024


def thread_setting(environ=None) -> ThreadSetting:
    """$NNCLI_THREADS read.

    unset, `auto`  a batch splits into shards fixed by the CPUs, the model and the batch size,
                   each run with the BLAS held to one thread, and how many threads run them
                   (one, or one a shard) is measured; at a fresh run's start, running batches
                   whole (with the BLAS's own threads, or held where they would shard) is
                   measured too, and kept where it is clearly faster (its roundings differ:
                   the choice is recorded in the checkpoints)
    `held`         as auto, without the BLAS's own threads: the run's numbers depend only on
                   the CPUs, the model and the batch size, never on the machine's load
    `N`            N shards in N threads (1: one thread), the BLAS held to one
    `blas`         batches whole with the BLAS's own threads (OPENBLAS_NUM_THREADS...), whose
                   count changes the rounding

    Where the BLAS's threads cannot be controlled, `blas`."""
    environ = os.environ if environ is None else environ
    value = environ.get(ENV, "").strip().lower()
    control = thread_control()
    if value == "blas":
        return ThreadSetting(1, False, True)
    if value in ("", "auto", "held"):
        asked = None
    else:
        try:
            asked = int(value)
        except ValueError:
            asked = 0
        if asked < 1:
            raise NncliError(
                f"{ENV} must be a positive integer (1 trains in one thread), auto, held or blas,"
                f" got {environ.get(ENV)!r}"
            )
    if control is None:
        return ThreadSetting(1, False, True)
    if asked is not None:
        return ThreadSetting(asked, False, False)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return ThreadSetting(max(1, min(cpus, control.initial)), True, False, choose_blas=value != "held")


def threads_allowed(environ=None) -> int:
    """How many shards a training batch may run as: $NNCLI_THREADS if a number, else the
    threads the BLAS started with (OPENBLAS_NUM_THREADS, MKL_NUM_THREADS or OMP_NUM_THREADS, as
    `nncli sweep` sets them for its workers, else the CPUs) capped at the CPUs this process may
    run on; 1 (serial) where the BLAS's threads cannot be controlled or NNCLI_THREADS=blas."""
    return thread_setting(environ).shards


def apply_setting(model, setting: ThreadSetting) -> None:
    """Run `model`'s batches as `setting` says; the threads that run its shards are one a shard
    until measured (`model.auto_workers`: whether they may be)."""
    model.threads, model.hold_blas = setting.shards, not setting.blas
    model.workers, model.auto_workers = None, setting.measured
    model.choose_blas, model.blas_threads = setting.choose_blas, setting.blas_threads


def setting_record(model) -> dict:
    """What a checkpoint keeps of how a run splits its batches: enough to resume with the same
    numbers on another machine (the threads that run the shards change none). `blas`: batches
    run whole with the BLAS's own threads, `blas_threads` of them where a measurement chose so
    (`measured`), as many as the BLAS has where NNCLI_THREADS=blas said so."""
    return {
        "shards": int(model.threads),
        "blas": not model.hold_blas,
        "blas_threads": model.blas_threads,
        "measured": bool(model.auto_workers),
    }


def resume_setting(record, setting: ThreadSetting) -> ThreadSetting:
    """The setting a resumed run uses: the one its checkpoint kept (`setting_record`) unless
    NNCLI_THREADS chooses another (a number or `blas`: `setting` not measured; `held`: never the
    BLAS's own threads). A checkpoint from before the record, or a damaged one, leaves `setting`
    as it is but for choosing the BLAS's own threads. A run that had chosen the BLAS's threads by
    measurement goes on with as many of them, and may still leave them for good if the machine
    gets busy (nncli.training.callbacks.threads)."""
    if not setting.measured:
        return setting
    shards, blas = (record.get("shards"), record.get("blas")) if isinstance(record, dict) else (None, None)
    if not _count(shards) or not isinstance(blas, bool):
        return setting._replace(choose_blas=False)  # never another rounding than the run's so far
    if not blas:
        return ThreadSetting(shards, True, False)
    threads = record.get("blas_threads")
    chosen = record.get("measured") is True and _count(threads) and threads <= MAX_BLAS_THREADS
    if not chosen:  # NNCLI_THREADS=blas when the run started (or a record from before `measured`)
        return ThreadSetting(1, False, True)
    if not setting.choose_blas:  # NNCLI_THREADS=held now
        return ThreadSetting(shards, True, False)
    return ThreadSetting(shards, True, True, blas_threads=threads)


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def shard_bounds(n: int, threads: int) -> list[int] | None:
    """Where a batch of `n` splits into at most `threads` shards of at least MIN_SHARD rows,
    as equal as can be (the first ones a row longer): [0, ..., n]; None for one shard."""
    k = min(threads, n // MIN_SHARD)
    if k < 2:
        return None
    size, extra = divmod(n, k)
    bounds = [0]
    for s in range(k):
        bounds.append(bounds[-1] + size + (s < extra))
    return bounds


def split_pass(fn: Callable[[int, int], object], size: int, threads: int) -> None:
    """fn(lo, hi) for contiguous ranges that cover range(size), each in a thread of its own (the
    first in this one): `threads` of them, fewer where a range would hold under MIN_SPLIT
    elements. The cuts fall on multiples of 16 elements, so that no two threads write one
    cache line. For element-wise passes only: each element's result is the same whichever
    range holds it, so the split changes no number."""
    ways = max(1, min(threads, size // MIN_SPLIT))
    if ways == 1:
        fn(0, size)
        return
    cuts = [min(size, (size * i // ways + 15) // 16 * 16) for i in range(ways + 1)]
    pool = _helpers(ways - 1)
    futures = [
        pool.submit(contextvars.copy_context().run, fn, cuts[i], cuts[i + 1]) for i in range(1, ways)
    ]
    try:
        fn(cuts[0], cuts[1])
    finally:
        wait(futures)
    for future in futures:
        future.result()  # a worker's exception, raised here


# the helper threads of `split_pass`: (the process that made them, how many, the pool). A
# forked child makes its own (a pool's threads do not survive a fork), and a larger count a new
# one: the old pool is dropped, not shut down, since another thread may be submitting to it
# (its idle threads end once it is garbage)
_helper_pool: tuple[int, int, ThreadPoolExecutor] | None = None
_helper_lock = threading.Lock()


def _helpers(count: int) -> ThreadPoolExecutor:
    """The pool of helper threads `split_pass` runs ranges in, with `count` of them at least."""
    global _helper_pool
    with _helper_lock:
        made = _helper_pool
        if made is None or made[0] != os.getpid() or made[1] < count:
            count = max(count, (os.cpu_count() or 1) - 1)
            pool = ThreadPoolExecutor(count, thread_name_prefix="nncli-pass")
            made = _helper_pool = (os.getpid(), count, pool)
        return made[2]


class Shards:
    """The replicas and worker threads that run a model's training batch as up to `threads`
    shards (see the module's docstring). `model` is the `Sequential` they belong to."""

    def __init__(self, model, threads: int, control: ThreadControl):
        self.model = model
        self.threads = threads
        self.control = control
        self.flat_grads = [np.zeros_like(model.flat.grads) for _ in range(threads - 1)]
        self.replicas = [model.layers] + [model.replicate(grads) for grads in self.flat_grads]
        self.pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="nncli-shard")

    def close(self) -> None:
        self.pool.shutdown(wait=False)

    def forward(self, x: np.ndarray, bounds: list[int], training: bool = True) -> np.ndarray:
        """The model's output for `x`, shard by shard (`Sequential.run_forward` on each)."""

        def run(layers: list[Layer], xs: np.ndarray) -> np.ndarray:
            return self.model.run_forward(layers, xs, training)

        return np.concatenate(self._map(run, x, bounds))

    def backward(self, dout: np.ndarray, bounds: list[int]) -> np.ndarray | None:
        """Backpropagate each shard's rows of dL/d(output) through the layers that ran it
        forward (`Sequential.run_backward`), then add the replicas' gradients into the model's."""
        dxs = self._map(self.model.run_backward, dout, bounds)
        total, extra = self.model.flat.grads, self.flat_grads[: len(bounds) - 2]

        def add(lo: int, hi: int) -> None:
            for grads in extra:  # in shard order, in every range
                np.add(total[lo:hi], grads[lo:hi], out=total[lo:hi])

        split_pass(add, total.size, self.model.update_threads())  # the threads the shards ran in
        return None if dxs[0] is None else np.concatenate(dxs)

    def _map(self, fn: Callable, a: np.ndarray, bounds: list[int]) -> list:
        """fn(replica s, rows bounds[s]:bounds[s + 1] of a) for every shard: all of them in
        this thread where the model's `workers` is 1, else shard 0 in this thread and the others
        in the pool's, with the BLAS held to one thread meanwhile (in every shard's thread: MKL's
        count is per thread). Each worker runs in a copy of this thread's context, so numpy's
        error state (np.errstate) holds there too."""
        parts = [a[bounds[s] : bounds[s + 1]] for s in range(len(bounds) - 1)]
        if self.model.workers == 1:  # one thread: the same shards, one after the other
            with self.control.one_thread():
                return [fn(self.replicas[s], parts[s]) for s in range(len(parts))]

        def held(layers: list[Layer], rows: np.ndarray):
            with self.control.one_thread():
                return fn(layers, rows)

        futures = []
        with self.control.one_thread():
            try:
                futures = [
                    self.pool.submit(contextvars.copy_context().run, held, self.replicas[s], parts[s])
                    for s in range(1, len(parts))
                ]
                first = fn(self.replicas[0], parts[0])
                return [first] + [future.result() for future in futures]
            finally:
                wait(futures)  # no worker may still run with the BLAS restored to many threads
