"""nncli/nn/model.py and nncli/nn/step.py: the model's plan (which layer runs when, which
convolution hands its pool a blocked output) follows what the layers declare, and one training
step is forward, loss, backward, penalty and update, watched by an optional per-layer hook."""

from __future__ import annotations

import numpy as np
import pytest

from nncli.nn.layers import LAYERS, Layer
from nncli.nn.layers.activations import ReLU
from nncli.nn.layers.core import Identity
from nncli.nn.losses import LOSSES
from nncli.nn.model import Sequential
from nncli.nn.optim.optimizers import SGD
from nncli.nn.regularizers import Regularizer
from nncli.nn.step import step

RNG = np.random.default_rng(7)
CNN = [
    ("conv2d", {"filters": 3, "kernel": 3, "padding": 1}),
    ("relu", {}),
    ("maxpool2d", {}),
    ("flatten", {}),
    ("linear", {"units": 4}),
]


def build(spec, shape=(1, 6, 6), dtype=np.float64, seed=0) -> Sequential:
    layers = [spec_layer if isinstance(spec_layer, Layer) else LAYERS.create(*spec_layer)
              for spec_layer in spec]
    model = Sequential(layers)
    model.build(shape, np.random.default_rng(seed), dtype)
    return model


def batch(shape=(1, 6, 6), n=5, dtype=np.float64):
    return RNG.standard_normal((n, *shape)).astype(dtype), RNG.integers(0, 4, n)


class Bend(Identity):
    """An unregistered stand-in for ReLU that declares the same property under another name."""

    commutes_with_max_pool = True


class Plain(ReLU):
    """A ReLU that declares nothing: the model must not move it nor block through it."""

    commutes_with_max_pool = False
    any_pixel_order = False


def test_the_plan_follows_what_layers_declare_not_their_names():
    conv = ("conv2d", {"filters": 2, "kernel": 3, "padding": 1})
    moved = build([conv, Bend(), ("maxpool2d", {})])
    assert moved.order == [0, 2, 1]
    kept = build([conv, Plain(), ("maxpool2d", {})])
    assert kept.order == [0, 1, 2]
    assert not kept.layers[0].blocked and not kept.layers[2].blocked  # Plain may reorder pixels
    assert build([conv, ("relu", {}), ("maxpool2d", {})]).order == [0, 2, 1]
    assert build([conv, ("tanh", {}), ("maxpool2d", {})]).order == [0, 1, 2]  # not declared


@pytest.mark.parametrize("name", [n for n in LAYERS.names() if LAYERS.get(n).commutes_with_max_pool])
def test_a_layer_that_says_it_commutes_with_max_pooling_does(name):
    """Values and gradients, ties included, are the same with the layer before the pool or
    after it."""
    x = np.round(RNG.standard_normal((3, 2, 4, 4)), 1)  # ties and zeros in some windows
    x[0, 0, :2, :2] = -0.5  # a window of equal negative values
    dout = RNG.standard_normal((3, 2, 2, 2))
    results = []
    for order in ((name, "maxpool2d"), ("maxpool2d", name)):
        layers = [LAYERS.create(n) for n in order]
        shape = (2, 4, 4)
        for layer in layers:
            shape = layer.build(shape, np.random.default_rng(0), np.float64)
        h = Sequential.inside(x)
        for layer in layers:
            h = layer.forward(h, True)
        d = Sequential.inside(dout)
        for layer in reversed(layers):
            d = layer.backward(d)
        results.append((h, d))
    (out_a, dx_a), (out_b, dx_b) = results
    np.testing.assert_array_equal(out_a, out_b)
    np.testing.assert_array_equal(dx_a, dx_b)


@pytest.mark.parametrize("name", [n for n in LAYERS.names() if LAYERS.get(n).any_pixel_order])
def test_a_layer_that_says_any_pixel_order_is_indifferent_to_it(name):
    """Permuting the pixels before the layer permutes its output and its input gradient alike."""
    x = RNG.standard_normal((4, 6, 6, 3))  # channels-last, as inside a model
    dout = RNG.standard_normal((4, 6, 6, 3))
    perm = RNG.permutation(36)

    def shuffle(a):
        return a.reshape(4, 36, 3)[:, perm].reshape(4, 6, 6, 3)

    outs = []
    for xs, ds in ((x, dout), (shuffle(x), shuffle(dout))):
        layer = LAYERS.create(name)
        layer.build((3, 6, 6), np.random.default_rng(0), np.float64)
        training = name != "dropout"  # its masks are drawn per position; at eval it passes x
        outs.append((layer.forward(xs, training), layer.backward(ds)))
    np.testing.assert_allclose(shuffle(outs[0][0]), outs[1][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(shuffle(outs[0][1]), outs[1][1], rtol=1e-12, atol=1e-12)


def manual_step(model, loss, optimizer, regularizer, x, y):
    out = model.forward(x, training=True)
    value = loss.forward(out, y)
    model.backward(loss.backward())
    regularizer.add_grads(model)
    optimizer.step(model.params, model.grads, model.flat)
    return out, value


def test_step_is_forward_loss_backward_penalty_and_update():
    x, y = batch()
    results = []
    for use_step in (True, False):
        model = build(CNN)
        loss = LOSSES.create("softmax_cross_entropy")
        optimizer, regularizer = SGD(lr=0.1, momentum=0.9), Regularizer(l2=1e-2)
        for _ in range(3):
            if use_step:
                out, value, applied = step(model, loss, optimizer, x, y, regularizer=regularizer)
                assert applied
            else:
                out, value = manual_step(model, loss, optimizer, regularizer, x, y)
        results.append((out, value, model.flat.params.copy()))
    (out_a, value_a, params_a), (out_b, value_b, params_b) = results
    assert value_a == value_b
    np.testing.assert_array_equal(out_a, out_b)
    np.testing.assert_array_equal(params_a, params_b)


def test_a_hook_sees_every_stage_with_the_layers_in_execution_order():
    model = build(CNN)
    x, y = batch()
    events = []

    def hook(event, index, value):
        events.append((event, index))
        if event in ("input", "forward"):
            assert value.ndim == 2 or value.shape[-1] in (1, 3)  # channels-last inside
        if event == "backward" and index == 0:
            assert value is None  # training needs no dL/d(data)

    step(model, LOSSES.create("softmax_cross_entropy"), SGD(lr=0.1), x, y,
         regularizer=Regularizer(l2=1e-3), hook=hook)
    assert events == [
        ("input", None),
        ("forward", 0), ("forward", 2), ("forward", 1), ("forward", 3), ("forward", 4),
        ("loss", None), ("loss_backward", None),
        ("backward", 4), ("backward", 3), ("backward", 1), ("backward", 2), ("backward", 0),
        ("penalty", None), ("update", None),
    ]


def test_a_hook_changes_nothing():
    x, y = batch()
    params = []
    for hook in (None, lambda event, index, value: None):
        model = build(CNN)
        step(model, LOSSES.create("softmax_cross_entropy"), SGD(lr=0.1), x, y, hook=hook)
        params.append(model.flat.params.copy())
    np.testing.assert_array_equal(*params)


def test_a_loss_that_is_not_finite_stops_the_step_before_anything_changes():
    model = build(CNN)
    x, y = batch()
    x[0, 0, 0, 0] = np.nan
    loss, optimizer = LOSSES.create("softmax_cross_entropy"), SGD(lr=0.1)
    before = model.flat.params.copy()
    with np.errstate(invalid="ignore"):
        out, value, applied = step(model, loss, optimizer, x, y)
    assert not applied and np.isnan(value)
    np.testing.assert_array_equal(model.flat.params, before)
    assert not model.flat.grads.any()  # backward never ran
    with np.errstate(invalid="ignore"):
        _, _, applied = step(model, loss, optimizer, x, y, finite_only=False)
    assert applied and np.isnan(model.flat.params).any()


def test_without_an_optimizer_the_step_stops_at_the_gradients():
    model = build(CNN)
    x, y = batch()
    before = model.flat.params.copy()
    _, _, applied = step(model, LOSSES.create("softmax_cross_entropy"), None, x, y)
    assert not applied
    np.testing.assert_array_equal(model.flat.params, before)
    assert model.flat.grads.any()
