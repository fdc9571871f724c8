"""Optimizers: update a model's parameters in place from their gradients.

The trainer hands `step` two dicts keyed by parameter name ("layers.0.W"): the layers' own
parameter arrays, which are updated in place and never rebound, and their gradients, which
are only read. Per-parameter state (velocities, moments) is keyed by the same names, created
on first use with the parameter's shape and dtype, so float32 training stays float32.

When the model keeps its parameters packed in one array (`Sequential.flat`), `step(...,
flat=model.flat)` updates them all at once: the state is packed the same way, each name's
entry a view into it, so checkpoints see the same per-name arrays. The update rules are
element-wise, so both ways give bit-identical results; the packed one makes its passes over one
array instead of over each parameter in turn (SGD with momentum on the MNIST MLP: 290 -> 240 us
a step). Only optimizers that set `packable` take it.

Every update runs through `Optimizer.step`; a subclass only says how one parameter moves
(`_update`) and what state it keeps (`_new_state`). Updates write into preallocated scratch
buffers with `out=` rather than allocating temporaries: this loop runs once per batch.

`optimizer.lr` is the live learning rate, which the trainer sets from the schedule before each
step; `optimizer.base_lr` is the `lr` it was built with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from nncli import validate
from nncli.errors import CheckpointError, ConfigError
from nncli.nn.parallel import split_pass
from nncli.registry import Registry

if TYPE_CHECKING:
    from nncli.nn.model import FlatParams

OPTIMIZERS: Registry[type[Optimizer]] = Registry("optimizer")

State = dict[str, np.ndarray]


def global_norm(grads: Mapping[str, np.ndarray]) -> float:
    """The L2 norm of all gradients taken together, as if concatenated into one vector."""
    return math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))


def clip_global_norm(grads: Mapping[str, np.ndarray], max_norm: float) -> float:
    """Scale every gradient in place by min(1, max_norm / global_norm); return the norm before.

    The optimizer's own `clip_norm` does the same without writing into the gradients.
    """
    norm = global_norm(grads)
    if norm > max_norm:
        for g in grads.values():
            g *= max_norm / norm
    return norm


class Optimizer:
    """Base class. `clip_norm`, when set, clips the gradients' global L2 norm before the update:
    g <- g * min(1, clip_norm / ||g||), with ||g|| taken over all parameters together.
    """

    registered_name = ""  # set on each subclass by OPTIMIZERS.register
    #: whether `_update` treats every parameter alike (element-wise, whatever its name or
    #: shape), so that it may run once on the packed parameters. Opt-in: an update that looks
    #: at names or per-tensor norms must not run packed.
    packable = False
    #: other libraries' option names, named in the error (`nncli.registry.check_options`)
    option_hints = {"learning_rate": "lr", "epsilon": "eps", "beta_1": "beta1", "beta_2": "beta2",
                    "betas": ("beta1", "beta2"), "clipnorm": "clip_norm", "alpha": "rho"}
    #: the learning rate a config that names no `lr` gets (with a note; see config.schema)
    default_lr: float | None = None

    def __init__(self, lr: float, clip_norm: float | None = None):
        self.base_lr = validate.positive_float("lr", lr)
        self.lr = self.base_lr
        self.clip_norm = None if clip_norm is None else validate.positive_float("clip_norm", clip_norm)
        self.steps = 0  # calls to step(); Adam's t
        self.state: dict[str, State] = {}
        self.last_grad_norm: float | None = None  # set by step() when clip_norm is set
        self._buffers: dict[tuple, np.ndarray] = {}
        self._packed: tuple[np.ndarray, State] | None = None  # (the flat params, packed state)

    def step(
        self,
        params: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        flat: FlatParams | None = None,
        threads: int = 1,
    ) -> None:
        """Update every array in `params` in place from `grads` (same keys and shapes).

        `flat`, the model's packed parameters (which `params` and `grads` are views into),
        lets the update run on all of them at once, and in up to `threads` threads, each on a
        range of them (`nncli.nn.parallel.split_pass`: the update is element-wise, so the
        numbers are the same).
        """
        scale = 1.0
        if self.clip_norm is not None:
            self.last_grad_norm = global_norm(grads)
            if self.last_grad_norm > self.clip_norm:
                scale = self.clip_norm / self.last_grad_norm
        self.steps += 1
        if flat is not None and self.packable:
            p, g, state = flat.params, flat.grads, self._packed_state(flat)
            if scale != 1.0:
                g = self._clipped(g, scale)
            scratch = self._buffer("scratch", p)

            def update(lo: int, hi: int) -> None:
                part = {key: array[lo:hi] for key, array in state.items()}
                self._update("", p[lo:hi], g[lo:hi], part, scratch[lo:hi])

            split_pass(update, p.size, threads)
            return
        for name, p in params.items():
            g = grads[name] if scale == 1.0 else self._clipped(grads[name], scale)
            self._update(name, p, g, self._state_of(name, p), self._buffer("scratch", p))

    def _clipped(self, g: np.ndarray, scale: float) -> np.ndarray:
        """`g * scale` in a buffer of ours: the gradients belong to the layers."""
        return np.multiply(g, scale, out=self._buffer("clipped", g))

    def _state_of(self, name: str, p: np.ndarray) -> State:
        state = self.state.get(name)
        if state is None:
            state = self.state[name] = self._new_state(p)
        return state

    def _packed_state(self, flat: FlatParams) -> State:
        """The state packed like `flat.params`, with `self.state[name]` made views into it.

        Packed on the first packed step, and again after `load_state_dict` replaced the state.
        """
        if self._packed is not None and self._packed[0] is flat.params:
            return self._packed[1]
        packed = self._new_state(flat.params)
        for name in flat.slices:
            saved = self.state.get(name)
            views = {key: flat.view(array, name) for key, array in packed.items()}
            if saved is not None:
                for key, view in views.items():
                    view[...] = saved[key]
            self.state[name] = views
        self._packed = (flat.params, packed)
        return packed

    def _new_state(self, p: np.ndarray) -> State:
        return {}

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, state: State, buf: np.ndarray):
        """Move `p` in place; `buf` is scratch space of p's shape and dtype."""
        raise NotImplementedError

    def _buffer(self, slot: str, p: np.ndarray) -> np.ndarray:
        # Shared by every parameter of the same shape and dtype: they are updated one at a time.
        key = (slot, p.shape, p.dtype.str)
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = np.empty(p.shape, p.dtype)
        return buf

    def get_config(self) -> dict:
        """The constructor's arguments: `type(o)(**o.get_config())` rebuilds the optimizer."""
        return {"lr": self.base_lr, "clip_norm": self.clip_norm}

    def state_dict(self) -> dict:
        """Everything `step` depends on besides the config, as builtins and copied arrays."""
        return {
            "optimizer": self.registered_name,
            "lr": self.lr,
            "steps": self.steps,
            "state": {
                name: {key: arr.copy() for key, arr in state.items()}
                for name, state in self.state.items()
            },
        }

    def load_state_dict(self, saved: dict) -> None:
        """Restore what `state_dict` returned (into new arrays: `saved` is not aliased)."""
        if saved.get("optimizer") != self.registered_name:
            raise CheckpointError(
                f'the checkpoint holds the state of a "{saved.get("optimizer")}" optimizer,'
                f' not "{self.registered_name}"'
            )
        self.lr = float(saved["lr"])
        self.steps = int(saved["steps"])
        self.state = {
            name: {key: np.array(arr, copy=True) for key, arr in state.items()}
            for name, state in saved["state"].items()
        }
        self._packed = None


@OPTIMIZERS.register("sgd")
class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum, as in PyTorch.

    Without momentum:  p <- p - lr * g
    With momentum mu:  v <- mu * v + g
                       p <- p - lr * v                  (nesterov: p <- p - lr * (g + mu * v))
    v starts at zero.
    """

    packable = True
    default_lr = 1e-2

    def __init__(
        self,
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        clip_norm: float | None = None,
    ):
        super().__init__(lr, clip_norm)
        self.momentum = validate.fraction("momentum", momentum)
        self.nesterov = validate.boolean("nesterov", nesterov)
        if self.nesterov and self.momentum == 0:
            raise ConfigError("Nesterov momentum needs momentum > 0", key="nesterov")

    def _new_state(self, p):
        return {"velocity": np.zeros_like(p)} if self.momentum else {}

    def _update(self, name, p, g, state, buf):
        if not self.momentum:
            np.multiply(g, self.lr, out=buf)
        else:
            v = state["velocity"]
            v *= self.momentum
            v += g
            if self.nesterov:
                np.multiply(v, self.momentum, out=buf)
                buf += g
                buf *= self.lr
            else:
                np.multiply(v, self.lr, out=buf)
        p -= buf

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


@OPTIMIZERS.register("adagrad")
class Adagrad(Optimizer):
    """Adagrad: each coordinate's step shrinks with the sum of its squared gradients.

    s <- s + g^2
    p <- p - lr * g / (sqrt(s) + eps)
    s starts at zero.
    """

    packable = True
    default_lr = 1e-2

    def __init__(self, lr: float, eps: float = 1e-8, clip_norm: float | None = None):
        super().__init__(lr, clip_norm)
        self.eps = validate.positive_float("eps", eps)

    def _new_state(self, p):
        return {"sum_sq": np.zeros_like(p)}

    def _update(self, name, p, g, state, buf):
        s = state["sum_sq"]
        np.multiply(g, g, out=buf)
        s += buf
        _scaled_step(g, s, self.eps, self.lr, out=buf)
        p -= buf

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}


@OPTIMIZERS.register("rmsprop")
class RMSprop(Optimizer):
    """RMSprop: divide by a running root mean square of the gradients.

    s <- rho * s + (1 - rho) * g^2
    p <- p - lr * g / (sqrt(s) + eps)
    With momentum mu (as in PyTorch):  v <- mu * v + g / (sqrt(s) + eps);  p <- p - lr * v
    s and v start at zero.
    """

    packable = True
    default_lr = 1e-3

    def __init__(
        self,
        lr: float,
        rho: float = 0.9,
        eps: float = 1e-8,
        momentum: float = 0.0,
        clip_norm: float | None = None,
    ):
        super().__init__(lr, clip_norm)
        self.rho = validate.fraction("rho", rho)
        self.eps = validate.positive_float("eps", eps)
        self.momentum = validate.fraction("momentum", momentum)

    def _new_state(self, p):
        state = {"square_avg": np.zeros_like(p)}
        if self.momentum:
            state["velocity"] = np.zeros_like(p)
        return state

    def _update(self, name, p, g, state, buf):
        s = state["square_avg"]
        _moving_average(s, np.multiply(g, g, out=buf), self.rho, buf)
        if self.momentum:
            v = state["velocity"]
            _scaled_step(g, s, self.eps, 1.0, out=buf)
            v *= self.momentum
            v += buf
            np.multiply(v, self.lr, out=buf)
        else:
            _scaled_step(g, s, self.eps, self.lr, out=buf)
        p -= buf

    def get_config(self):
        return {
            **super().get_config(),
            "rho": self.rho,
            "eps": self.eps,
            "momentum": self.momentum,
        }


@OPTIMIZERS.register("adam")
class Adam(Optimizer):
    """Adam, with bias correction; t counts the optimizer's steps, starting at 1.

    m <- beta1 * m + (1 - beta1) * g
    v <- beta2 * v + (1 - beta2) * g^2
    p <- p - lr * m_hat / (sqrt(v_hat) + eps)
    where m_hat = m / (1 - beta1^t) and v_hat = v / (1 - beta2^t).
    m and v start at zero.
    """

    packable = True
    default_lr = 1e-3

    def __init__(
        self,
        lr: float,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        clip_norm: float | None = None,
    ):
        super().__init__(lr, clip_norm)
        self.beta1 = validate.fraction("beta1", beta1)
        self.beta2 = validate.fraction("beta2", beta2)
        self.eps = validate.positive_float("eps", eps)

    def _new_state(self, p):
        return {"m": np.zeros_like(p), "v": np.zeros_like(p)}

    def _update(self, name, p, g, state, buf):
        m, v = state["m"], state["v"]
        _moving_average(m, g, self.beta1, buf)
        _moving_average(v, np.multiply(g, g, out=buf), self.beta2, buf)
        # sqrt(v_hat) + eps, then m_hat / that, scaled by lr: three passes, no temporaries.
        np.sqrt(v, out=buf)
        buf *= 1.0 / math.sqrt(1.0 - self.beta2**self.steps)
        buf += self.eps
        np.divide(m, buf, out=buf)
        buf *= self.lr / (1.0 - self.beta1**self.steps)
        p -= buf

    def get_config(self):
        return {
            **super().get_config(),
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
        }


@OPTIMIZERS.register("adamw")
class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), applied before the Adam step:

    p <- p - lr * weight_decay * p        (only for names in `decayed`; all when it is None)
    then the Adam update above.

    `decayed` is not a constructor argument: the builder sets it to the weights' names, leaving
    out biases and batch-norm gamma/beta.
    """

    packable = False  # the decay depends on the parameter's name
    default_lr = 1e-3

    def __init__(
        self,
        lr: float,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        clip_norm: float | None = None,
    ):
        super().__init__(lr, beta1, beta2, eps, clip_norm)
        self.weight_decay = validate.non_negative_float("weight_decay", weight_decay)
        self.decayed: set[str] | None = None

    def _update(self, name, p, g, state, buf):
        if self.weight_decay and (self.decayed is None or name in self.decayed):
            p *= 1.0 - self.lr * self.weight_decay
        super()._update(name, p, g, state, buf)

    def get_config(self):
        return {**super().get_config(), "weight_decay": self.weight_decay}


def _moving_average(avg: np.ndarray, x: np.ndarray, decay: float, buf: np.ndarray) -> None:
    """avg <- decay * avg + (1 - decay) * x, in place; `buf` is scratch and may be `x` itself."""
    avg *= decay
    np.multiply(x, 1.0 - decay, out=buf)
    avg += buf


def _scaled_step(g: np.ndarray, s: np.ndarray, eps: float, lr: float, out: np.ndarray) -> None:
    """out <- lr * g / (sqrt(s) + eps), without temporaries."""
    np.sqrt(s, out=out)
    out += eps
    np.divide(g, out, out=out)
    out *= lr
