"""Every registered layer and loss, proven against numerical gradients in float64."""

from __future__ import annotations

import numpy as np
import pytest

from nncli.nn.gradcheck import check_model
from nncli.nn.layers import LAYERS
from nncli.nn.layers.core import Linear
from nncli.nn.losses import LOSSES
from nncli.nn.model import Sequential
from nncli.nn.regularizers import Regularizer

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


def _run_case(layers, input_shape, loss, make_target, regularizer=None, seed=0):
    rng = np.random.default_rng(seed)
    model = Sequential(layers)
    model.build(input_shape, rng, np.float64)
    loss = LOSSES.create(loss) if isinstance(loss, str) else loss
    x = rng.standard_normal((N, *input_shape))
    return check_model(model, loss, x, make_target(rng), regularizer=regularizer, tol=TOL, rng=rng)


@pytest.mark.parametrize(("kind", "name"), ALL, ids=[f"{k}-{n}" for k, n in ALL])
def test_gradients_match_central_differences(kind, name):
    cases = LAYER_CASES if kind == "layer" else LOSS_CASES
    if name not in cases:
        pytest.fail(f"registered {kind} {name!r} has no gradient-check case: add one")
    results = _run_case(*cases[name]())
    assert results, "nothing was checked"
    for r in results:
        assert r.checked > 0
        assert r.max_rel_error < TOL, f"{r.name}: relative error {r.max_rel_error:.2e} at {r.worst_index}"
        assert r.kinks <= r.checked // 4, f"{r.name}: {r.kinks} of {r.checked} entries at kinks"
    names = {r.name for r in results}
    assert "input" in names


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_gradients_without_class_weights(smoothing):
    # integer labels without class weights take the loss's own fast path
    layers = [Linear(7), LAYERS.create("relu"), Linear(5)]
    loss = LOSSES.create("softmax_cross_entropy", {"label_smoothing": smoothing})
    results = _run_case(layers, (4,), loss, lambda r: r.integers(0, 5, N))
    assert {r.name for r in results} >= {"input", "layers.0.W", "layers.2.W"}
    for r in results:
        assert r.max_rel_error < TOL, f"{r.name}: relative error {r.max_rel_error:.2e}"


def test_regularization_term_gradients():
    reg = Regularizer(l2=0.3, l1=0.05, apply_to="all")
    layers = [Linear(6), LAYERS.create("tanh"), Linear(3)]
    results = _run_case(layers, (4,), "mse", lambda r: _regression_target(r, 3), regularizer=reg)
    reg_rows = [r for r in results if r.name.startswith("regularization")]
    assert {r.name for r in reg_rows} == {f"regularization[layers.{i}.{p}]" for i in (0, 2) for p in "Wb"}
    assert all(r.max_rel_error < TOL for r in results)


class _BrokenLinear(Linear):
    """dW off by a factor in one column: the kind of bug a gradient check exists to find."""

    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["W"][:, 0] *= 1.01
        return dx


def test_a_wrong_gradient_fails_and_is_named():
    results = _run_case(
        [_BrokenLinear(3), LAYERS.create("tanh")], (4,), "mse", lambda r: _regression_target(r, 3)
    )
    by_name = {r.name: r for r in results}
    assert by_name["layers.0.W"].max_rel_error > 1e-3
    assert by_name["layers.0.W"].worst_index[1] == 0
    assert by_name["layers.0.W"].kinks == 0
    assert by_name["layers.0.b"].max_rel_error < TOL


def test_kinks_are_reported_not_failed():
    # ReLU inputs placed exactly at 0: the derivative does not exist there.
    from nncli.nn.gradcheck import check_model as run

    model = Sequential([LAYERS.create("relu")])
    model.build((4,), np.random.default_rng(0), np.float64)
    x = np.array([[0.0, 1.0, -1.0, 0.0], [0.5, 0.0, -0.5, 2.0]])
    results = run(model, LOSSES.create("mse"), x, np.ones((2, 4)) * 3, tol=TOL)
    (inp,) = results
    assert inp.kinks == 3
    assert inp.max_rel_error < TOL


def test_gradcheck_leaves_the_model_as_it_was():
    rng = np.random.default_rng(1)
    model = Sequential([Linear(4), LAYERS.create("batchnorm"), LAYERS.create("dropout", {"p": 0.5})])
    model.build((3,), rng, np.float64)
    before = model.state_dict()
    check_model(model, LOSSES.create("mse"), rng.standard_normal((5, 3)), rng.standard_normal((5, 4)))
    after = model.state_dict()
    for kind in ("params", "buffers"):
        for k in before[kind]:
            np.testing.assert_array_equal(before[kind][k], after[kind][k])
    assert not model.layers[2].frozen


class _ScaledInputGradient(Linear):
    """dL/dx scaled by (1 + error): a small bug in the input gradient."""

    def __init__(self, units, error):
        super().__init__(units)
        self.error = error

    def backward(self, dout):
        dx = super().backward(dout)
        return None if dx is None else dx * (1 + self.error)


def _input_check(hidden, seed=0):
    """The input row of a full check (every entry) of linear 16 -> `hidden` -> linear 10 on
    50 sparse, MNIST-like inputs under softmax cross-entropy: gradients small against the loss,
    where wrong entries used to pass as kinks."""
    rng = np.random.default_rng(seed)
    first = hidden.pop(0) if isinstance(hidden[0], Linear) else Linear(16)
    model = Sequential([first, *hidden, Linear(10)])
    model.build((50,), rng, np.float64)
    x = rng.random((8, 50)) * (rng.random((8, 50)) > 0.7)
    results = check_model(
        model, LOSSES.create("softmax_cross_entropy"), x, rng.integers(0, 10, 8), tol=TOL, rng=rng
    )
    return {r.name: r for r in results}["input"]


def test_a_smooth_network_excuses_no_entry():
    # sigmoid has no kinks: every entry must meet the tolerance, and a 1e-5 error in the input
    # gradient must fail (entries used to be excused when step sizes disagreed: 7 of 400 here)
    good = _input_check([LAYERS.create("sigmoid")])
    assert good.kinks == 0 and good.max_rel_error < TOL
    bad = _input_check([_ScaledInputGradient(16, 1e-5), LAYERS.create("sigmoid")])
    assert bad.kinks == 0 and bad.max_rel_error > TOL


def test_batchnorm_then_relu_inputs_are_kinks_only_where_a_relu_input_crosses_zero():
    # batch norm couples the samples, so moving one input moves every ReLU input a little; an
    # entry is a kink only if some ReLU input actually crosses 0 within the stencil
    good = _input_check([LAYERS.create("batchnorm"), LAYERS.create("relu")], seed=3)
    assert good.kinks == 0 and good.max_rel_error < TOL
    hidden = [_ScaledInputGradient(16, 1e-5), LAYERS.create("batchnorm"), LAYERS.create("relu")]
    bad = _input_check(hidden, seed=3)
    assert bad.kinks == 0 and bad.max_rel_error > TOL


def test_an_l1_weight_at_zero_is_a_kink_of_the_penalty():
    reg = Regularizer(l1=0.1)
    model = Sequential([Linear(2)])
    model.build((2,), np.random.default_rng(0), np.float64)
    model.params["layers.0.W"][...] = [[0.0, 0.5], [-0.5, 1e-5]]
    results = check_model(
        model, LOSSES.create("mse"), np.ones((1, 2)), np.zeros((1, 2)), regularizer=reg, tol=TOL
    )
    penalty = {r.name: r for r in results}["regularization[layers.0.W]"]
    # at exactly 0 the symmetric stencil of |w| gives 0, as sign(0) does: no failure to excuse;
    # 1e-5 is within 2h of the kink, so the stencil is off there, and excused
    assert penalty.kinks == 1 and penalty.max_rel_error < TOL
    # without the L1 term the same weights are smooth: nothing is excused
    results = check_model(
        model, LOSSES.create("mse"), np.ones((1, 2)), np.zeros((1, 2)), regularizer=Regularizer(l2=0.1)
    )
    assert all(r.kinks == 0 and r.max_rel_error < TOL for r in results)
