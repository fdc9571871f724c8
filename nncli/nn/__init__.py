"""The numpy engine: layers, losses, optimizers and schedules (each registered under its YAML
name), the sequential model, weight penalties, metrics and gradient checks.

It imports numpy and nothing of the command line, progress bars or plotting, so it can be used
on its own:

    from nncli.nn import LAYERS, Sequential
    model = Sequential([LAYERS.create("linear", {"units": 10})])
"""

from nncli.nn.layers import LAYERS, Layer
from nncli.nn.losses import LOSSES, Loss
from nncli.nn.model import Sequential
from nncli.nn.optim import OPTIMIZERS, SCHEDULES, Optimizer, Schedule
from nncli.nn.regularizers import Regularizer

__all__ = [
    "LAYERS",
    "LOSSES",
    "OPTIMIZERS",
    "SCHEDULES",
    "Layer",
    "Loss",
    "Optimizer",
    "Regularizer",
    "Schedule",
    "Sequential",
]
