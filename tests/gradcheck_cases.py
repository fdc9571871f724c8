"""The gradient checks' shared cases: a small model and loss for every registered layer and
loss, run through `check_model` in float64 (tests/test_gradcheck.py and
tests/test_gradcheck_injected.py)."""

from __future__ import annotations

import numpy as np

from nncli.nn.gradcheck import check_model
from nncli.nn.layers import LAYERS
from nncli.nn.layers.core import Linear
from nncli.nn.losses import LOSSES
from nncli.nn.model import Sequential

TOL = 1e-6
N = 6


def _regression_target(rng, width):
    return rng.standard_normal((N, width))


# Each case: (layers, input shape, loss, targets from rng). A smooth MSE against random
# targets drives the layer cases; the loss cases put a linear layer in front of the loss.
LAYER_CASES = {
    "linear": lambda: ([Linear(4)], (5,), "mse", lambda r: _regression_target(r, 4)),
    "relu": lambda: ([Linear(5), LAYERS.create("relu")], (4,), "mse", lambda r: _regression_target(r, 5)),
    "leaky_relu": lambda: (
        [Linear(5), LAYERS.create("leaky_relu", {"alpha": 0.1})],
        (4,),
        "mse",
        lambda r: _regression_target(r, 5),
    ),
    "sigmoid": lambda: ([LAYERS.create("sigmoid")], (7,), "mse", lambda r: _regression_target(r, 7)),
    "tanh": lambda: ([LAYERS.create("tanh")], (7,), "mse", lambda r: _regression_target(r, 7)),
    "softmax": lambda: ([LAYERS.create("softmax")], (5,), "mse", lambda r: _regression_target(r, 5)),
    "flatten": lambda: (
        [LAYERS.create("flatten"), Linear(3)],
        (2, 3, 2),
        "mse",
        lambda r: _regression_target(r, 3),
    ),
    "identity": lambda: (
        [LAYERS.create("identity"), Linear(3)],
        (4,),
        "mse",
        lambda r: _regression_target(r, 3),
    ),
    "dropout": lambda: (
        [Linear(8), LAYERS.create("dropout", {"p": 0.4})],
        (5,),
        "mse",
        lambda r: _regression_target(r, 8),
    ),
    "batchnorm": lambda: (
        [Linear(5), LAYERS.create("batchnorm")],
        (4,),
        "mse",
        lambda r: _regression_target(r, 5),
    ),
    # images: (C, H, W) in, flattened for the loss
    "conv2d": lambda: (
        [
            LAYERS.create("conv2d", {"filters": 3, "kernel": 3, "stride": 2, "padding": 1}),
            LAYERS.create("conv2d", {"filters": 2, "kernel": [2, 1]}),
            LAYERS.create("flatten"),
        ],
        (2, 6, 5),
        "mse",
        lambda r: _regression_target(r, 12),
    ),
    "maxpool2d": lambda: (
        [
            LAYERS.create("maxpool2d", {"size": 2}),  # windows that tile the input
            LAYERS.create("maxpool2d", {"size": 3, "stride": 1, "padding": 1}),  # overlapping
            LAYERS.create("flatten"),
        ],
        (2, 4, 6),
        "mse",
        lambda r: _regression_target(r, 12),
    ),
    "avgpool2d": lambda: (
        [LAYERS.create("avgpool2d", {"size": 3, "stride": 2, "padding": 1}), LAYERS.create("flatten")],
        (2, 5, 4),
        "mse",
        lambda r: _regression_target(r, 12),
    ),
    "global_avgpool": lambda: (
        [LAYERS.create("conv2d", {"filters": 3, "kernel": 2}), LAYERS.create("global_avgpool")],
        (2, 4, 3),
        "mse",
        lambda r: _regression_target(r, 3),
    ),
}

LOSS_CASES = {
    "softmax_cross_entropy": lambda: (
        [Linear(5)],
        (4,),
        LOSSES.create("softmax_cross_entropy", {"label_smoothing": 0.1, "class_weights": [1, 2, 3, 1, 0.5]}),
        lambda r: r.integers(0, 5, N),
    ),
    "multiclass_hinge": lambda: (
        [Linear(5)],
        (4,),
        LOSSES.create("multiclass_hinge", {"margin": 1.0}),
        lambda r: r.integers(0, 5, N),
    ),
    "mse": lambda: ([Linear(3)], (4,), "mse", lambda r: _regression_target(r, 3)),
    "binary_cross_entropy": lambda: (
        [Linear(2)],
        (4,),
        LOSSES.create("binary_cross_entropy", {"class_weights": [1.0, 3.0]}),
        lambda r: r.integers(0, 2, (N, 2)).astype(np.float64),
    ),
}

ALL = [("layer", n) for n in LAYERS.names()] + [("loss", n) for n in LOSSES.names()]


def _run_case(layers, input_shape, loss, make_target, regularizer=None, seed=0, samples=None):
    rng = np.random.default_rng(seed)
    model = Sequential(layers)
    model.build(input_shape, rng, np.float64)
    loss = LOSSES.create(loss) if isinstance(loss, str) else loss
    x = rng.standard_normal((N, *input_shape))
    return check_model(model, loss, x, make_target(rng), regularizer=regularizer, rng=rng, samples=samples)


def _assert_passes(results):
    for r in results:
        assert r.passed(TOL), (
            f"{r.name}: relative error {r.max_rel_error:.2e} above its noise floor {r.noise_floor:.2e}"
            f" at {r.worst_index}"
        )
