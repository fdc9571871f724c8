"""Numerical gradient checks: analytic gradients against central differences, in float64.

For each parameter tensor (and the input) the check perturbs entries one at a time and
estimates dL/dw with the five-point stencil

    n = (f(w - 2h) - 8 f(w - h) + 8 f(w + h) - f(w + 2h)) / (12 h)

whose truncation error is O(h^4), and compares it with the analytic gradient a. Random layers
are frozen so every evaluation sees the same dropout masks.

Relative error and noise floor. An entry's relative error is |a - n| / (|a| + |n|) (0 where
both are 0): a property of the two gradients, whatever the tolerance. The estimate n carries
the rounding of the loss: each f is a float64 off by about eps |f|, which the stencil's
coefficients, (1 + 8 + 8 + 1) / 12h, amplify to about 1.5 eps |f| / h. Ten times that,
`NOISE_FACTOR * max |f| / h` over the entry's four evaluations, bounds the noise of n; divided
by |a| + |n| it is the entry's noise floor, the smallest relative error the check can resolve
there. An entry fails when its relative error reaches the tolerance *and* exceeds its noise
floor (|a - n| is more than rounding explains): a gradient that is zero up to rounding, such as
a bias feeding batch norm, is not judged by the ratio of two noise-sized numbers.

A tensor's row (`TensorCheck`) reports one entry, chosen without reference to any tolerance:
the entry with the largest relative error among those above their noise floor (it decides the
verdict at every tolerance); where no entry is above its floor, the largest among the entries
whose gradient itself is above the noise, else among all. `max_rel_error` and `noise_floor` are
that entry's, so `passed(tol)` reads off the row: an error below tol, or within the noise.

Kinks. No finite difference measures a derivative where the function is not smooth: a ReLU or
leaky ReLU input at 0, a hinge at its margin, an L1 penalty's weight at 0. Each non-smooth
piece of the model says which side of its switch points the last evaluation fell on
(`switch_pattern()` of layers and losses, `Regularizer.switch_pattern`). An entry whose
stencil changes any of those patterns straddles a kink within +-2h, and is estimated again with
h / 10, then h / 100 (`NARROWER`): in a large network some ReLU input downstream is often that
close to 0, and a narrower stencil clears it. An entry whose every stencil straddles a kink,
and only when its difference exceeds the noise, is excused: counted under "kinks" and left out of
the verdict (an entry that straddles a kink and agrees within the noise is compared: it agrees).
Every other entry is compared and must meet the tolerance: a smooth network (sigmoid, tanh) has
no kinks at all, so nothing in it is excused. A row counts both (`compared`, `kinks`); a tensor
with no entry compared (`unchecked`) says nothing about its gradient and never passes.

Zeros at initialization. A bias initialized to zeros puts every ReLU input that sees a blank
region (MNIST's border) exactly at the kink, so every entry of a conv bias can be excused.
`randomize_zero_params` gives such tensors small random values before a check of an untrained
model: the check is of the backward pass, which must hold at any weights, not of the initializer.

Ties. Max pooling over a constant region (a blank border: every value in the window equal)
has a kink at every input there: moving one input by any amount changes which one is the
maximum. `input_noise` checks the input at the batch plus uniform noise of that fraction of its
standard deviation, so that no window holds a tie.

Parameters are checked with the model as training runs it: the first layer computes no input
gradient, so a linear first layer takes its sparse path (it skips all-zero input columns).
The input is checked in a pass of its own, with the input gradient on.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

STEP = 1e-4
#: the steps, as fractions of `step`, tried in turn while the stencil straddles a kink
NARROWER = (1.0, 0.1, 0.01)
# rounding noise of the stencil is about 1.5 eps |f| / h; ten times that is the level below
# which two estimates cannot be told apart
NOISE_FACTOR = 15 * np.finfo(np.float64).eps

Patterns = Callable[[], list[np.ndarray]]
#: progress(tensor name, entries done, entries to check), called after each entry
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TensorCheck:
    """The outcome for one tensor: the entries `checked` (their derivative estimated), of which
    `kinks` were excused at kinks and the rest `compared`; the reported entry's relative error
    and noise floor (see the module docstring), and where it is (None when none was compared)."""

    name: str
    shape: tuple[int, ...]
    checked: int
    max_rel_error: float
    noise_floor: float
    kinks: int
    worst_index: tuple[int, ...] | None = None

    @property
    def compared(self) -> int:
        """The entries judged against the tolerance: all those checked but the excused."""
        return self.checked - self.kinks

    @property
    def unchecked(self) -> bool:
        """No entry compared: every one checked was excused at a kink."""
        return self.compared == 0

    def passed(self, tol: float) -> bool:
        """Some entry was compared and none has a relative error reaching `tol` above its noise
        floor (NaN fails). An unchecked tensor does not pass."""
        if self.unchecked:
            return False
        return self.max_rel_error < tol or self.max_rel_error <= self.noise_floor


class CheckInterrupted(KeyboardInterrupt):
    """Ctrl-C in the middle of a tensor: `partial` is its row for the entries done (None before
    the first), `total` the entries it was to check."""

    def __init__(self, partial: TensorCheck | None, total: int):
        super().__init__()
        self.partial, self.total = partial, total


def relative_error(analytic, numeric):
    """|a - n| / (|a| + |n|), and 0 where both are 0."""
    analytic, numeric = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    scale = np.abs(analytic) + np.abs(numeric)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, np.abs(analytic - numeric) / scale, 0.0)


def _same_patterns(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def check_array(
    f: Callable[[], float],
    array: np.ndarray,
    analytic: np.ndarray,
    name: str,
    *,
    samples: int | None = None,
    rng: np.random.Generator | None = None,
    step: float = STEP,
    patterns: Patterns | None = None,
    progress: Progress | None = None,
) -> TensorCheck:
    """Compare `analytic` with numerical derivatives of `f` w.r.t. entries of `array`.

    `f` must read `array` (which is perturbed in place and restored exactly, also when
    interrupted). With `samples`, that many entries drawn without replacement are checked, else
    all of them. `patterns`, called after each evaluation of `f`, gives the switch patterns of
    the function's non-smooth pieces (see the module docstring); without it the function counts
    as smooth. `progress` hears of every entry done. Ctrl-C raises `CheckInterrupted` with the
    row of the entries done.
    """
    size = array.size
    if samples is not None and samples < size:
        rng = rng or np.random.default_rng(0)
        flat_indices = np.sort(rng.choice(size, samples, replace=False))
    else:
        flat_indices = np.arange(size)
    count = len(flat_indices)
    f()
    centre = patterns() if patterns else []
    numeric, noise = np.empty(count), np.empty(count)
    crossed = np.zeros(count, dtype=bool)
    flat = array.reshape(-1)  # a view: writes reach `array`
    assert np.shares_memory(flat, array)
    a = analytic.reshape(-1)[flat_indices].astype(np.float64)
    done = 0
    try:
        for k, i in enumerate(flat_indices):
            original = flat[i]
            try:
                # a stencil that straddles a kink is tried narrower: a kink near, not at, the
                # entry is cleared; one at the entry is crossed at every step
                for h in (step * shrink for shrink in NARROWER):
                    values, crossed[k] = [], False
                    for delta in (-2 * h, -h, h, 2 * h):
                        flat[i] = original + delta
                        values.append(f())
                        if patterns and not crossed[k]:
                            crossed[k] = not _same_patterns(patterns(), centre)
                    if not crossed[k]:
                        break
            finally:
                flat[i] = original
            fm2, fm1, fp1, fp2 = values
            numeric[k] = (fm2 - 8 * fm1 + 8 * fp1 - fp2) / (12 * h)
            noise[k] = NOISE_FACTOR * max(abs(v) for v in values) / h
            done = k + 1
            if progress:
                progress(name, done, count)
    except KeyboardInterrupt:
        part = slice(0, done)
        partial = _summarize(
            name, array.shape, flat_indices[part], a[part], numeric[part], noise[part], crossed[part]
        )
        raise CheckInterrupted(partial if done else None, count) from None
    return _summarize(name, array.shape, flat_indices, a, numeric, noise, crossed)


def _summarize(name, shape, flat_indices, a, numeric, noise, crossed) -> TensorCheck:
    """One row from the entries' analytic and numeric gradients (see the module docstring)."""
    diff = np.abs(a - numeric)
    scale = np.abs(a) + np.abs(numeric)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(scale > 0, diff / scale, 0.0)
        floor = np.where(scale > 0, noise / scale, math.inf)
    broken = ~(np.isfinite(a) & np.isfinite(numeric))  # a NaN or inf gradient fails
    rel[broken], floor[broken] = math.nan, math.nan
    resolved = (diff > noise) | broken
    excused = crossed & resolved & ~broken
    kinks = int(np.count_nonzero(excused))
    judged = np.flatnonzero(~excused)
    if len(judged) == 0:
        return TensorCheck(name, tuple(shape), len(flat_indices), math.nan, math.nan, kinks)
    # rank by (above its noise floor, gradient above the noise, relative error); NaN highest
    keys = (np.nan_to_num(rel[judged], nan=math.inf), scale[judged] > noise[judged], resolved[judged])
    best = judged[np.lexsort(keys)[-1]]
    index = tuple(int(j) for j in np.unravel_index(flat_indices[best], shape))
    return TensorCheck(
        name, tuple(shape), len(flat_indices), float(rel[best]), float(floor[best]), kinks, index
    )


def planned_tensors(model, regularizer=None, check_input: bool = True) -> list[str]:
    """The names of the rows `check_model` returns, in order."""
    names = list(model.params)
    if regularizer:
        names += [f"regularization[{name}]" for name in regularizer.names(model)]
    return names + (["input"] if check_input else [])


#: the magnitudes `randomize_zero_params` draws: far from 0 against the stencil's 2h, small
#: against activations of order 1
RANDOM_BIAS = (0.01, 0.1)


def randomize_zero_params(model, rng: np.random.Generator) -> list[str]:
    """Give every parameter tensor of `model` that is all zeros (the biases of linear and
    convolution layers and batch norm's beta, as initialized) values of random sign and
    magnitude uniform in `RANDOM_BIAS`, drawn from `rng`, in place; return their names.

    For a check of an untrained model: zero biases over blank inputs put ReLU inputs exactly at
    their kink, where no entry can be compared (see the module docstring)."""
    low, high = RANDOM_BIAS
    names = []
    for name, value in model.params.items():
        if value.size and not value.any():
            magnitude = rng.uniform(low, high, size=value.shape)
            value[...] = np.where(rng.random(value.shape) < 0.5, -magnitude, magnitude)
            names.append(name)
    return names


def check_model(
    model,
    loss,
    x: np.ndarray,
    y: np.ndarray,
    *,
    regularizer=None,
    samples: int | None = None,
    rng: np.random.Generator | None = None,
    check_input: bool = True,
    input_noise: float = 0.0,
    progress: Progress | None = None,
) -> list[TensorCheck]:
    """Check every parameter tensor, the regularization term and the input of `model`.

    The model must be built in float64. Its buffers (batch-norm running statistics) are
    restored afterwards, and its random layers unfrozen. The input is checked at `x` plus
    uniform noise of `input_noise` times its standard deviation (see the module docstring).
    `progress` hears of every entry done.
    """
    with contextlib.closing(
        iter_check_model(
            model,
            loss,
            x,
            y,
            regularizer=regularizer,
            samples=samples,
            rng=rng,
            check_input=check_input,
            input_noise=input_noise,
            progress=progress,
        )
    ) as checks:
        return list(checks)


def iter_check_model(
    model,
    loss,
    x: np.ndarray,
    y: np.ndarray,
    *,
    regularizer=None,
    samples: int | None = None,
    rng: np.random.Generator | None = None,
    check_input: bool = True,
    input_noise: float = 0.0,
    progress: Progress | None = None,
) -> Iterator[TensorCheck]:
    """`check_model` one tensor at a time, so that a caller interrupted half-way keeps the
    tensors already checked. Close it (or run it to the end) to restore the model."""
    if any(p.dtype != np.float64 for p in model.params.values()) or x.dtype != np.float64:
        raise ValueError("gradient checks need float64 parameters and input")
    rng = rng or np.random.default_rng(0)
    saved = model.state_dict()
    x = x.copy()
    model.freeze_randomness(True)
    threads, model.threads = model.threads, 1  # the serial pass: shards only add rounding
    try:

        def total_loss() -> float:
            value = loss.forward(model.forward(x, training=True), y)
            return value + (regularizer.penalty(model) if regularizer else 0.0)

        def patterns() -> list[np.ndarray]:
            found = model.switch_patterns() + _present(loss.switch_pattern())
            return found + (_present(regularizer.switch_pattern(model)) if regularizer else [])

        def check(array, analytic, name) -> TensorCheck:
            return check_array(
                total_loss,
                array,
                analytic,
                name,
                samples=samples,
                rng=rng,
                patterns=patterns,
                progress=progress,
            )

        # The parameters as training computes them: no input gradient in the first layer, so a
        # linear first layer skips the input columns that are zero across the batch.
        model.input_gradient(False)
        total_loss()  # draws the masks every later evaluation reuses
        model.backward(loss.backward())
        if regularizer:
            regularizer.add_grads(model)
        analytic = {name: g.copy() for name, g in model.grads.items()}
        for name in model.params:
            yield check(model.params[name], analytic[name], name)
        if regularizer:
            yield from _check_regularizer(model, regularizer, samples, rng, progress)
        if check_input:
            if input_noise:
                spread = float(np.std(x))
                spread = spread if math.isfinite(spread) and spread > 0 else 1.0
                x += rng.uniform(-1.0, 1.0, size=x.shape) * (input_noise * spread)
            model.input_gradient(True)
            total_loss()
            dx = model.backward(loss.backward()).copy()
            yield check(x, dx, "input")
    finally:
        model.threads = threads
        model.freeze_randomness(False)
        model.input_gradient(False)
        model.load_state_dict(saved)


def _check_regularizer(model, regularizer, samples, rng, progress) -> Iterator[TensorCheck]:
    """The penalty's own gradient, apart from the data loss, for each tensor it covers."""
    for g in model.grads.values():
        g[...] = 0
    regularizer.add_grads(model)
    analytic = {name: model.grads[name].copy() for name in regularizer.names(model)}
    for name in regularizer.names(model):
        yield check_array(
            lambda: regularizer.penalty(model),
            model.params[name],
            analytic[name],
            f"regularization[{name}]",
            samples=samples,
            rng=rng,
            patterns=lambda: _present(regularizer.switch_pattern(model)),
            progress=progress,
        )


def _present(pattern: np.ndarray | None) -> list[np.ndarray]:
    return [] if pattern is None else [pattern]
