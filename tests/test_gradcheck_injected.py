"""The gradient check catches wrong gradients: an error of 1e-5 injected into any layer's or
loss's backward, or into one entry of a network's, fails the check and is named."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck_cases import ALL, LAYER_CASES, LOSS_CASES, TOL, N, _assert_passes, _run_case

from nncli.nn.layers import LAYERS
from nncli.nn.layers.core import Linear
from nncli.nn.losses import LOSSES
from nncli.nn.model import Sequential

ERRORS = [1e-3, 1e-4, 1e-5, 1e-6]


def _inject(obj, error: float, target: str) -> None:
    """Make `obj.backward` wrong by a relative `error`: scale the gradient it returns
    (`target="dx"`) or its `grads[target]` by (1 + error), in every entry."""
    original = obj.backward

    def backward(*args):
        out = original(*args)
        if target == "dx":
            return None if out is None else out * (1 + error)
        obj.grads[target] *= 1 + error
        return out

    obj.backward = backward  # an instance attribute: this object only


def _sites(kind: str, name: str) -> list[tuple[int | None, str]]:
    """Where an error can be injected: (position, target) for each parameter gradient and the
    input gradient ("dx") of every layer named `name` in its case, (None, "dx") for a loss's
    gradient; (None, "?") where the case is missing, so that the test fails saying so."""
    if kind == "loss":
        return [(None, "dx")]
    if name not in LAYER_CASES:
        return [(None, "?")]
    layers, input_shape, _, _ = LAYER_CASES[name]()
    Sequential(layers).build(input_shape, np.random.default_rng(0), np.float64)
    found = [
        (i, target)
        for i, layer in enumerate(layers)
        if layer.name == name
        for target in [*layer.params, "dx"]
    ]
    assert found, f"the case for {name} has no {name} layer"
    return found


def _check_injected(make_case, position, target, error):
    """Run the case with `error` injected into `target` of the layer at `position`, or of the
    loss (position None); the results. The error is in every entry, so 96 entries a tensor find
    it, even in a max-pool's input gradient, which is mostly zero."""
    layers, input_shape, loss, make_target = make_case()
    loss = LOSSES.create(loss) if isinstance(loss, str) else loss
    _inject(loss if position is None else layers[position], error, target)
    return _run_case(layers, input_shape, loss, make_target, samples=96)


def _assert_caught(results, error, what):
    failed = [r for r in results if not r.passed(TOL)]
    expected = error / (2 + error)  # |a(1 + e) - a| / (|a(1 + e)| + |a|)
    if error >= 1e-5:
        assert failed, f"{what}: an error of {error:g} passed: " + ", ".join(
            f"{r.name} {r.max_rel_error:.2e} (noise {r.noise_floor:.2e})" for r in results
        )
        for r in failed:  # what is reported is the injected error itself, whatever the tolerance
            assert r.max_rel_error == pytest.approx(expected, rel=0.1), f"{what}: {r.name}"
    else:
        # 1e-6 is 5e-7 relative: below the tolerance, and reported as such where resolved
        for r in results:
            if r.max_rel_error > r.noise_floor and r.max_rel_error > 1e-7:
                assert r.max_rel_error == pytest.approx(expected, rel=0.1), f"{what}: {r.name}"
    return failed


INJECTIONS = [(kind, name, *site) for kind, name in ALL for site in _sites(kind, name)]


@pytest.mark.parametrize(
    ("kind", "name", "position", "target"),
    INJECTIONS,
    ids=[f"{k}-{n}" + ("" if i is None else f"-layers.{i}") + f"-{t}" for k, n, i, t in INJECTIONS],
)
def test_an_injected_error_of_1e_5_fails_for_every_layer_and_loss(kind, name, position, target):
    cases = LAYER_CASES if kind == "layer" else LOSS_CASES
    if name not in cases:
        pytest.fail(f"registered {kind} {name!r} has no gradient-check case: add one")
    # the correct version of the same case passes: test_gradients_match_central_differences
    for error in ERRORS:
        results = _check_injected(cases[name], position, target, error)
        failed = _assert_caught(results, error, f"{kind} {name}, {position} {target} off by {error:g}")
        if error >= 1e-5 and target != "dx":
            assert f"layers.{position}.{target}" in {r.name for r in failed}  # its own row


def _network(activation: str) -> list:
    return [Linear(6), LAYERS.create(activation), Linear(5), LAYERS.create(activation), Linear(3)]


def _network_targets() -> list[tuple[int, str]]:
    layers = _network("tanh")
    Sequential(layers).build((4,), np.random.default_rng(0), np.float64)
    return [(i, target) for i, layer in enumerate(layers) for target in [*layer.params, "dx"]]


def _check_network(activation, inject=None, seed=0):
    """A check of every entry of linear 4 -> 6 -> 5 -> 3 with `activation` between, under
    softmax cross-entropy; `inject(layers)` makes some gradient wrong first."""
    layers = _network(activation)
    if inject:
        inject(layers)
    loss = LOSSES.create("softmax_cross_entropy")
    return {r.name: r for r in _run_case(layers, (4,), loss, lambda r: r.integers(0, 3, N), seed=seed)}


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_a_correct_network_passes(activation):
    results = _check_network(activation)
    assert list(results) == [f"layers.{i}.{p}" for i in (0, 2, 4) for p in "Wb"] + ["input"]
    _assert_passes(results.values())
    assert all(r.kinks == 0 for r in results.values())


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize(("index", "target"), _network_targets())
def test_injected_errors_in_sigmoid_tanh_and_relu_networks(activation, index, target):
    for error in ERRORS:
        results = _check_network(activation, lambda layers, e=error: _inject(layers[index], e, target))
        what = f"{activation} network, layers.{index} {target} off by {error:g}"
        failed = {r.name for r in _assert_caught(results.values(), error, what)}
        if error < 1e-5:
            continue
        if target == "dx":
            # the input gradient is downstream of every layer's dx, and so is layers.0.W
            assert "input" in failed and (index == 0 or "layers.0.W" in failed), what
        else:
            assert f"layers.{index}.{target}" in failed, what


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_one_wrong_entry_fails(activation):
    # the largest entry of each weight gradient, off by 1e-5 on its own
    for index in (0, 2, 4):

        def one_entry(layers, index=index):
            layer = layers[index]
            original = layer.backward

            def backward(dout):
                out = original(dout)
                g = layer.grads["W"]
                g.flat[np.argmax(np.abs(g))] *= 1 + 1e-5
                return out

            layer.backward = backward

        row = _check_network(activation, one_entry)[f"layers.{index}.W"]
        assert not row.passed(TOL)
        assert row.max_rel_error == pytest.approx(1e-5 / (2 + 1e-5), rel=0.1)
