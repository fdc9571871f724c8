"""Numerical gradient checks: analytic gradients against central differences, in float64.

For each parameter tensor (and the input) the check perturbs entries one at a time and
estimates dL/dw with the five-point stencil

    (f(w - 2h) - 8 f(w - h) + 8 f(w + h) - f(w + 2h)) / (12 h)

whose truncation error is O(h^4), then compares it with the analytic gradient a by the
relative error |a - n| / max(|a| + |n|, noise / tol). The floor matters only for gradients
that are (nearly) zero, such as a bias feeding batch norm: rounding in f leaves about
eps * |f| / h of noise in n, and below that level an entry is judged by absolute error
against the noise rather than by a ratio of two noise-sized numbers. Random layers are
frozen so every evaluation sees the same dropout masks.

Kinks. No finite difference measures a derivative where the function is not smooth: a ReLU or
leaky ReLU input at 0, a hinge at its margin, an L1 penalty's weight at 0. Each non-smooth
piece of the model says which side of its switch points the last evaluation fell on
(`switch_pattern()` of layers and losses, `Regularizer.switch_pattern`). An entry whose
stencil changes any of those patterns straddles a kink within +-2h; only such an entry, and
only when it fails, is excused and counted under "kinks". Every other entry must meet the
tolerance: a smooth network (sigmoid, tanh) has no kinks at all, so nothing in it is excused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

STEP = 1e-4
# rounding noise of the stencil is about 1.5 eps |f| / h; ten times that is the level below
# which two estimates cannot be told apart
NOISE_FACTOR = 15 * np.finfo(np.float64).eps

Patterns = Callable[[], list[np.ndarray]]


@dataclass(frozen=True)
class TensorCheck:
    """The outcome for one tensor."""

    name: str
    shape: tuple[int, ...]
    checked: int
    max_rel_error: float
    kinks: int
    worst_index: tuple[int, ...] | None = None

    def passed(self, tol: float) -> bool:
        return self.max_rel_error < tol


def relative_error(analytic, numeric, floor: float = 1e-12):
    return np.abs(analytic - numeric) / np.maximum(np.abs(analytic) + np.abs(numeric), floor)


def _same_patterns(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def check_array(
    f: Callable[[], float],
    array: np.ndarray,
    analytic: np.ndarray,
    name: str,
    *,
    tol: float = 1e-6,
    samples: int | None = None,
    rng: np.random.Generator | None = None,
    step: float = STEP,
    patterns: Patterns | None = None,
) -> TensorCheck:
    """Compare `analytic` with numerical derivatives of `f` w.r.t. entries of `array`.

    `f` must read `array` (which is perturbed in place and restored exactly). With `samples`,
    that many entries drawn without replacement are checked, else all of them. `patterns`,
    called after each evaluation of `f`, gives the switch patterns of the function's
    non-smooth pieces (see the module docstring); without it the function counts as smooth.
    """
    size = array.size
    if samples is not None and samples < size:
        rng = rng or np.random.default_rng(0)
        flat_indices = np.sort(rng.choice(size, samples, replace=False))
    else:
        flat_indices = np.arange(size)
    f0 = f()
    centre = patterns() if patterns else []
    noise = NOISE_FACTOR * max(abs(f0), 1e-30) / step
    floor = max(noise / tol, 1e-12)
    worst, worst_index, kinks = 0.0, None, 0
    flat = array.reshape(-1)  # a view: writes reach `array`
    assert np.shares_memory(flat, array)
    for i in flat_indices:
        original = flat[i]
        values, crossed = [], False
        for delta in (-2 * step, -step, step, 2 * step):
            flat[i] = original + delta
            values.append(f())
            if patterns and not crossed:
                crossed = not _same_patterns(patterns(), centre)
        flat[i] = original
        fm2, fm1, fp1, fp2 = values
        numeric = (fm2 - 8 * fm1 + 8 * fp1 - fp2) / (12 * step)
        a = float(analytic.reshape(-1)[i])
        err = float(relative_error(a, numeric, floor))
        if err >= tol and crossed:
            kinks += 1
            continue
        if err > worst or worst_index is None:
            worst, worst_index = err, tuple(int(j) for j in np.unravel_index(i, array.shape))
    return TensorCheck(name, tuple(array.shape), len(flat_indices), worst, kinks, worst_index)


def check_model(
    model,
    loss,
    x: np.ndarray,
    y: np.ndarray,
    *,
    regularizer=None,
    tol: float = 1e-6,
    samples: int | None = None,
    rng: np.random.Generator | None = None,
    check_input: bool = True,
) -> list[TensorCheck]:
    """Check every parameter tensor, the regularization term and the input of `model`.

    The model must be built in float64. Its buffers (batch-norm running statistics) are
    restored afterwards, and its random layers unfrozen.
    """
    if any(p.dtype != np.float64 for p in model.params.values()) or x.dtype != np.float64:
        raise ValueError("gradient checks need float64 parameters and input")
    rng = rng or np.random.default_rng(0)
    saved = model.state_dict()
    x = x.copy()
    model.input_gradient(check_input)
    model.freeze_randomness(True)
    try:

        def total_loss() -> float:
            value = loss.forward(model.forward(x, training=True), y)
            return value + (regularizer.penalty(model) if regularizer else 0.0)

        def patterns() -> list[np.ndarray]:
            found = model.switch_patterns() + _present(loss.switch_pattern())
            return found + (_present(regularizer.switch_pattern(model)) if regularizer else [])

        total_loss()  # draws the masks every later evaluation reuses
        dx = model.backward(loss.backward())
        if regularizer:
            regularizer.add_grads(model)
        analytic = {name: g.copy() for name, g in model.grads.items()}

        results = [
            check_array(
                total_loss,
                model.params[name],
                analytic[name],
                name,
                tol=tol,
                samples=samples,
                rng=rng,
                patterns=patterns,
            )
            for name in model.params
        ]
        if regularizer:
            results.extend(_check_regularizer(model, regularizer, tol, samples, rng))
        if check_input:
            results.append(
                check_array(total_loss, x, dx, "input", tol=tol, samples=samples, rng=rng, patterns=patterns)
            )
        return results
    finally:
        model.freeze_randomness(False)
        model.input_gradient(False)
        model.load_state_dict(saved)


def _check_regularizer(model, regularizer, tol, samples, rng) -> list[TensorCheck]:
    """The penalty's own gradient, apart from the data loss, for each tensor it covers."""
    for g in model.grads.values():
        g[...] = 0
    regularizer.add_grads(model)
    return [
        check_array(
            lambda: regularizer.penalty(model),
            model.params[name],
            model.grads[name].copy(),
            f"regularization[{name}]",
            tol=tol,
            samples=samples,
            rng=rng,
            patterns=lambda: _present(regularizer.switch_pattern(model)),
        )
        for name in regularizer.names(model)
    ]


def _present(pattern: np.ndarray | None) -> list[np.ndarray]:
    return [] if pattern is None else [pattern]
