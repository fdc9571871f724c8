"""A small MLP learns a 3-class spiral: the engine works end to end without the trainer."""

import numpy as np

from nncli.layers import LAYERS
from nncli.layers.core import Linear
from nncli.losses import LOSSES
from nncli.model import Sequential
from nncli.optim import OPTIMIZERS
from nncli.regularizers import Regularizer


def spiral(rng, classes=3, per_class=100):
    """The classic tutorial spiral: `classes` arms of `per_class` noisy points each."""
    x = np.zeros((classes * per_class, 2), np.float32)
    y = np.repeat(np.arange(classes), per_class)
    for k in range(classes):
        r = np.linspace(0.0, 1.0, per_class)
        t = np.linspace(k * 4, (k + 1) * 4, per_class) + rng.standard_normal(per_class) * 0.2
        x[k * per_class : (k + 1) * per_class] = np.c_[r * np.sin(t), r * np.cos(t)]
    return x, y


def test_mlp_fits_a_spiral():
    rng = np.random.default_rng(0)
    x, y = spiral(rng)
    model = Sequential([Linear(100, init="he"), LAYERS.create("relu"), Linear(3)])
    model.build((2,), rng)
    loss = LOSSES.create("softmax_cross_entropy")
    reg = Regularizer(l2=1e-4)
    opt = OPTIMIZERS.create("adam", {"lr": 0.01})
    for _ in range(300):
        for idx in np.array_split(rng.permutation(len(x)), 3):
            loss.forward(model.forward(x[idx], training=True), y[idx])
            model.backward(loss.backward())
            reg.add_grads(model)
            opt.step(model.params, model.grads)
    accuracy = np.mean(model.predict(x).argmax(axis=1) == y)
    assert accuracy >= 0.95
    assert all(p.dtype == np.float32 for p in model.params.values())
