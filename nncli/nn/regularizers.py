"""L2 and L1 penalties added to the data loss.

    penalty = 0.5 * l2 * sum(W^2) + l1 * sum(|W|)      gradient: l2 * W + l1 * sign(W)

over the model's weights (`Layer.decayed`: linear and conv kernels, not biases or batch-norm
gamma/beta) or, with `apply_to: all`, over every parameter. With the 0.5, `l2` is the
`weight_decay` of PyTorch's SGD: the gradient gains `weight_decay * W`.
"""

from __future__ import annotations

import numpy as np

from nncli import validate


class Regularizer:
    def __init__(self, l2: float = 0.0, l1: float = 0.0, apply_to: str = "weights"):
        self.l2 = validate.non_negative_float("weight_decay", l2)
        self.l1 = validate.non_negative_float("l1", l1)
        self.apply_to = validate.one_of("decay_applies_to", apply_to, ("weights", "all"))
        self._scratch: dict[str, np.ndarray] = {}  # per-parameter buffers: no allocation per step
        self._names: tuple[object, list[str]] | None = None  # (model, its covered names)

    def __bool__(self) -> bool:
        return bool(self.l2 or self.l1)

    def names(self, model) -> list[str]:
        """The names of the parameters the penalty covers, worked out once per model (a built
        model's parameters do not change): 3.5 us a call, against 0.1 us."""
        if self._names is None or self._names[0] is not model:
            self._names = (model, model.param_names(decayed_only=self.apply_to == "weights"))
        return self._names[1]

    def penalty(self, model) -> float:
        params = model.params
        total = 0.0
        for name in self.names(model):
            w = params[name]
            if self.l2:
                total += 0.5 * self.l2 * float(np.vdot(w, w))
            if self.l1:
                total += self.l1 * float(np.abs(w).sum())
        return total

    def switch_pattern(self, model) -> np.ndarray | None:
        """The signs of the covered weights when there is an L1 term (|w| has a kink at 0),
        else None: the L2 term is smooth (see `Layer.switch_pattern`)."""
        if not self.l1:
            return None
        return np.concatenate([np.sign(model.params[name]).ravel() for name in self.names(model)])

    def add_grads(self, model) -> None:
        """Add the penalty's gradient to the model's gradients, in place."""
        flat = model.flat
        if flat is not None:
            # packed parameters: the decayed weights are one slice, so two or three passes in all
            covered = flat.decayed if self.apply_to == "weights" else slice(None)
            self._add(flat.params[covered], flat.grads[covered], "")
            return
        for name in self.names(model):
            self._add(model.params[name], model.grads[name], name)

    def _add(self, w: np.ndarray, g: np.ndarray, name: str) -> None:
        buf = self._scratch.get(name)
        if buf is None or buf.shape != w.shape or buf.dtype != w.dtype:
            buf = self._scratch[name] = np.empty_like(w)
        if self.l2:
            np.multiply(w, w.dtype.type(self.l2), out=buf)
            g += buf
        if self.l1:
            np.sign(w, out=buf)
            buf *= w.dtype.type(self.l1)
            g += buf
