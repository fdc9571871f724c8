"""A small MLP learns a 3-class spiral: the engine works end to end without the trainer."""

import numpy as np

from nncli.data import DATASETS
from nncli.nn.layers import LAYERS
from nncli.nn.layers.core import Linear
from nncli.nn.losses import LOSSES
from nncli.nn.model import Sequential
from nncli.nn.optim import OPTIMIZERS
from nncli.nn.regularizers import Regularizer


def test_mlp_fits_a_spiral():
    rng = np.random.default_rng(0)
    data = DATASETS.create("spiral", {"data_dir": None, "rng": rng, "classes": 3, "points_per_class": 100})
    x, y = data.x_train.astype(np.float32), data.y_train
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
