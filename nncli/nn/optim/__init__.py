"""Optimizers, learning-rate schedules and gradient clipping."""

from nncli.nn.optim.optimizers import OPTIMIZERS, Optimizer, clip_global_norm
from nncli.nn.optim.schedules import SCHEDULES, Schedule

__all__ = ["OPTIMIZERS", "SCHEDULES", "Optimizer", "Schedule", "clip_global_norm"]
