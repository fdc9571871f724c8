"""One training step: forward, loss, backward, penalty, update.

The trainer, `nncli time` and the non-finite report all run their steps through `step`, and the
model's shards run the model's own forward and backward walk (`Sequential.run_forward`), so the
order of the layers, the channels-last boundary and the ReLU/pool swap live in the model alone.
A per-layer `hook` (see `nncli.nn.model.Hook`) watches a step without changing it: `nncli time`
reads the clock in it, the non-finite report takes each layer's statistics.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from nncli.nn.model import Hook, Sequential


class Step(NamedTuple):
    out: np.ndarray  # the model's output (the logits the loss saw)
    loss: float
    applied: bool  # whether the update was made


def step(
    model: Sequential,
    loss,
    optimizer,
    x: np.ndarray,
    y: np.ndarray,
    *,
    regularizer=None,
    hook: Hook | None = None,
    finite_only: bool = True,
) -> Step:
    """One training step on the batch (x, y): the model's forward in training mode, the loss,
    the model's backward, the regularizer's gradient (if any), the optimizer's update (if an
    optimizer is given: None stops after the gradients).

    With `finite_only`, a loss that is not finite stops the step before backward, so nothing is
    changed (the trainer then reports and stops); without it the step runs to the end whatever
    the loss. A `hook` runs the batch serially and sees every stage (`Hook`)."""
    out = model.forward(x, training=True, hook=hook)
    value = loss.forward(out, y)
    if hook is not None:
        hook("loss", None, value)
    if finite_only and not math.isfinite(value):
        return Step(out, value, False)
    dout = loss.backward()
    if hook is not None:
        hook("loss_backward", None, dout)
    model.backward(dout, hook=hook)
    if optimizer is None:
        return Step(out, value, False)
    if regularizer:
        regularizer.add_grads(model)
        if hook is not None:
            hook("penalty", None, None)
    optimizer.step(model.params, model.grads, model.flat, threads=model.update_threads())
    if hook is not None:
        hook("update", None, None)
    return Step(out, value, True)
