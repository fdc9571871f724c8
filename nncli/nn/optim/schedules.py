"""Learning-rate schedules: the lr as a function of fractional epoch progress.

The trainer calls `setup(base_lr, total_epochs, steps_per_epoch)` once, then `lr_at(t)` before
every optimizer step, with t = epoch_index + batch_index / steps_per_epoch (0.0 at the very
start), and `observe(metrics)` at the end of every epoch.

Every schedule takes a linear warmup of W = `warmup_epochs` epochs:

    lr(t) = base * (warmup_start + (1 - warmup_start) * min(1, (t + 1/S) / W))   for t < W
    lr(t) = the schedule's formula at t - W, over a horizon T = total_epochs - W,   from W on

S is the number of steps per epoch: each warmup step takes the lr the ramp reaches at the end
of the step, so the first one trains at 1/(W S) of the way up (not at warmup_start, which would
waste it at lr 0 by default) and the last warmup step reaches the base lr. Without S (None) the
ramp is read at t itself.
"""

from __future__ import annotations

import bisect
import math

from nncli import validate
from nncli.errors import CheckpointError, ConfigError
from nncli.messages import count, did_you_mean
from nncli.registry import Registry

SCHEDULES: Registry[type[Schedule]] = Registry("schedule")


class Schedule:
    """Base class; a subclass gives its formula in `_lr(t, horizon)`, t counted after warmup."""

    registered_name = ""  # set on each subclass by SCHEDULES.register

    def __init__(self, warmup_epochs: float = 0.0, warmup_start: float = 0.0):
        self.warmup_epochs = validate.non_negative_float("warmup_epochs", warmup_epochs)
        self.warmup_start = validate.fraction("warmup_start", warmup_start)
        self.base_lr: float | None = None
        self.total_epochs: float | None = None
        self.step_share = 0.0  # 1 / steps per epoch: how far one step moves t

    def setup(self, base_lr: float, total_epochs: float, steps_per_epoch: int | None = None) -> None:
        self.base_lr = validate.positive_float("lr", base_lr)
        self.total_epochs = validate.positive_float("epochs", total_epochs)
        if steps_per_epoch is not None:
            self.step_share = 1.0 / validate.positive_int("steps_per_epoch", steps_per_epoch)
        if self.warmup_epochs >= self.total_epochs:
            raise ConfigError(
                f"expected fewer warmup epochs than the {count(total_epochs, 'epoch')} of training,"
                f" got {self.warmup_epochs:g}",
                key="warmup_epochs",
            )

    def lr_at(self, t: float) -> float:
        if self.base_lr is None or self.total_epochs is None:
            raise RuntimeError("Schedule.setup() must be called before lr_at()")
        w = self.warmup_epochs
        if t < w:
            ramp = min(1.0, (t + self.step_share) / w)
            return self.base_lr * (self.warmup_start + (1.0 - self.warmup_start) * ramp)
        return self._lr(t - w, self.total_epochs - w)

    def _lr(self, t: float, horizon: float) -> float:
        raise NotImplementedError

    def observe(self, epoch_metrics: dict[str, float]) -> None:
        """Called at each epoch's end with its metrics (val_loss, train_loss, ...)."""

    def get_config(self) -> dict:
        """The constructor's arguments: `type(s)(**s.get_config())` rebuilds the schedule."""
        return {"warmup_epochs": self.warmup_epochs, "warmup_start": self.warmup_start}

    def state_dict(self) -> dict:
        return {
            "schedule": self.registered_name,
            "base_lr": self.base_lr,
            "total_epochs": self.total_epochs,
        }

    def load_state_dict(self, saved: dict) -> None:
        if saved.get("schedule") != self.registered_name:
            raise CheckpointError(
                f'the checkpoint holds the state of a "{saved.get("schedule")}" schedule,'
                f' not "{self.registered_name}"'
            )
        self.base_lr = saved["base_lr"]
        self.total_epochs = saved["total_epochs"]


def _decay_factor(key: str, value: object) -> float:
    return validate.fraction(key, value, closed_low=False, closed_high=True)


@SCHEDULES.register("constant")
class Constant(Schedule):
    """lr = base"""

    def _lr(self, t, horizon):
        return self.base_lr


@SCHEDULES.register("step")
class Step(Schedule):
    """lr = base * gamma ** floor(t / step_size); step_size=1 decays once per epoch."""

    def __init__(
        self,
        step_size: float = 1,
        gamma: float = 0.1,
        warmup_epochs: float = 0.0,
        warmup_start: float = 0.0,
    ):
        super().__init__(warmup_epochs, warmup_start)
        self.step_size = validate.positive_float("step_size", step_size)
        self.gamma = _decay_factor("gamma", gamma)

    def _lr(self, t, horizon):
        return self.base_lr * self.gamma ** math.floor(t / self.step_size)

    def get_config(self):
        return {**super().get_config(), "step_size": self.step_size, "gamma": self.gamma}


@SCHEDULES.register("multistep")
class MultiStep(Schedule):
    """lr = base * gamma ** (number of milestones <= t); milestones in epochs, increasing."""

    def __init__(
        self,
        milestones: list[float],
        gamma: float = 0.1,
        warmup_epochs: float = 0.0,
        warmup_start: float = 0.0,
    ):
        super().__init__(warmup_epochs, warmup_start)
        if not isinstance(milestones, (list, tuple)) or not milestones:
            raise ConfigError(
                f"expected a non-empty list of epochs, got {milestones!r}", key="milestones"
            )
        self.milestones = [
            validate.positive_float(f"milestones[{i}]", m) for i, m in enumerate(milestones)
        ]
        for i in range(1, len(self.milestones)):
            if self.milestones[i] <= self.milestones[i - 1]:
                raise ConfigError(
                    f"expected milestones in increasing order, got {list(milestones)!r}",
                    key=f"milestones[{i}]",
                )
        self.gamma = _decay_factor("gamma", gamma)

    def _lr(self, t, horizon):
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, t)

    def get_config(self):
        return {**super().get_config(), "milestones": list(self.milestones), "gamma": self.gamma}


@SCHEDULES.register("exponential")
class Exponential(Schedule):
    """lr = base * gamma ** t  (continuous in t: it decays within an epoch too)."""

    def __init__(self, gamma: float, warmup_epochs: float = 0.0, warmup_start: float = 0.0):
        super().__init__(warmup_epochs, warmup_start)
        self.gamma = _decay_factor("gamma", gamma)

    def _lr(self, t, horizon):
        return self.base_lr * self.gamma**t

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


@SCHEDULES.register("cosine")
class Cosine(Schedule):
    """lr = min_lr + (base - min_lr) * (1 + cos(pi * min(t, T) / T)) / 2, T the horizon."""

    def __init__(self, min_lr: float = 0.0, warmup_epochs: float = 0.0, warmup_start: float = 0.0):
        super().__init__(warmup_epochs, warmup_start)
        self.min_lr = validate.non_negative_float("min_lr", min_lr)

    def setup(self, base_lr, total_epochs, steps_per_epoch=None):
        super().setup(base_lr, total_epochs, steps_per_epoch)
        if self.min_lr > self.base_lr:
            raise ConfigError(
                f"expected at most the learning rate {self.base_lr:g}, got {self.min_lr:g}",
                key="min_lr",
            )

    def _lr(self, t, horizon):
        progress = min(t, horizon) / horizon
        cosine = 1.0 + math.cos(math.pi * progress)
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * cosine

    def get_config(self):
        return {**super().get_config(), "min_lr": self.min_lr}


@SCHEDULES.register("plateau")
class Plateau(Schedule):
    """lr = max(min_lr, base * factor ** reductions), reduced when a metric stops improving.

    At each epoch's end `observe` reads `monitor`. An epoch improves on the best so far when
    the metric beats it by more than `threshold` relative to it (mode "min": below
    best - threshold * |best|; "max": above best + threshold * |best|). After `patience`
    epochs in a row without improvement the lr is reduced once; the `cooldown` epochs after a
    reduction do not count. Reductions stop once the lr reaches min_lr.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 2,
        threshold: float = 1e-4,
        min_lr: float = 0.0,
        cooldown: int = 0,
        warmup_epochs: float = 0.0,
        warmup_start: float = 0.0,
    ):
        super().__init__(warmup_epochs, warmup_start)
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError(f"expected the name of a metric, got {monitor!r}", key="monitor")
        self.monitor = monitor
        self.mode = validate.one_of("mode", mode, ("min", "max"))
        self.factor = validate.fraction("factor", factor, closed_low=False)
        self.patience = validate.positive_int("patience", patience)
        self.threshold = validate.non_negative_float("threshold", threshold)
        self.min_lr = validate.non_negative_float("min_lr", min_lr)
        self.cooldown = validate.non_negative_int("cooldown", cooldown)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.bad_epochs = 0
        self.reductions = 0
        self.cooldown_left = 0

    def _lr(self, t, horizon):
        return self._reduced_lr()

    def _reduced_lr(self) -> float:
        return max(self.min_lr, self.base_lr * self.factor**self.reductions)

    def observe(self, epoch_metrics):
        if self.monitor not in epoch_metrics:
            available = ", ".join(sorted(epoch_metrics)) or "none"
            hint = did_you_mean(self.monitor, list(epoch_metrics))
            raise ConfigError(
                f'no metric "{self.monitor}" to monitor{hint}; available: {available}',
                key="monitor",
            )
        value = float(epoch_metrics[self.monitor])
        if self._improves(value):
            self.best = value
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:
            # The epochs right after a reduction are the new lr's to settle: they do not count.
            self.cooldown_left -= 1
            self.bad_epochs = 0
        if self.bad_epochs >= self.patience and self._reduced_lr() > self.min_lr:
            self.reductions += 1
            self.cooldown_left = self.cooldown
            self.bad_epochs = 0

    def _improves(self, value: float) -> bool:
        margin = self.threshold * abs(self.best) if math.isfinite(self.best) else 0.0
        if self.mode == "min":
            return value < self.best - margin
        return value > self.best + margin

    def get_config(self):
        return {
            **super().get_config(),
            "monitor": self.monitor,
            "mode": self.mode,
            "factor": self.factor,
            "patience": self.patience,
            "threshold": self.threshold,
            "min_lr": self.min_lr,
            "cooldown": self.cooldown,
        }

    def state_dict(self):
        return {
            **super().state_dict(),
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "reductions": self.reductions,
            "cooldown_left": self.cooldown_left,
        }

    def load_state_dict(self, saved):
        super().load_state_dict(saved)
        self.best = float(saved["best"])
        self.bad_epochs = int(saved["bad_epochs"])
        self.reductions = int(saved["reductions"])
        self.cooldown_left = int(saved["cooldown_left"])
