"""Every registered layer and loss, proven against numerical gradients in float64 (the
injected errors the check must catch are in tests/test_gradcheck_injected.py)."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck_cases import (
    ALL,
    LAYER_CASES,
    LOSS_CASES,
    TOL,
    N,
    _assert_passes,
    _regression_target,
    _run_case,
)

from nncli.nn.gradcheck import check_model
from nncli.nn.layers import LAYERS
from nncli.nn.layers.core import Linear
from nncli.nn.losses import LOSSES
from nncli.nn.model import Sequential
from nncli.nn.regularizers import Regularizer


@pytest.mark.parametrize(("kind", "name"), ALL, ids=[f"{k}-{n}" for k, n in ALL])
def test_gradients_match_central_differences(kind, name):
    cases = LAYER_CASES if kind == "layer" else LOSS_CASES
    if name not in cases:
        pytest.fail(f"registered {kind} {name!r} has no gradient-check case: add one")
    results = _run_case(*cases[name]())
    assert results, "nothing was checked"
    _assert_passes(results)
    for r in results:
        assert r.checked > 0
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
    _assert_passes(results)


def test_regularization_term_gradients():
    reg = Regularizer(l2=0.3, l1=0.05, apply_to="all")
    layers = [Linear(6), LAYERS.create("tanh"), Linear(3)]
    results = _run_case(layers, (4,), "mse", lambda r: _regression_target(r, 3), regularizer=reg)
    reg_rows = [r for r in results if r.name.startswith("regularization")]
    assert {r.name for r in reg_rows} == {f"regularization[layers.{i}.{p}]" for i in (0, 2) for p in "Wb"}
    _assert_passes(results)


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
    assert not by_name["layers.0.W"].passed(TOL)
    assert by_name["layers.0.b"].max_rel_error < TOL and by_name["layers.0.b"].passed(TOL)


def test_kinks_are_reported_not_failed():
    # ReLU inputs placed exactly at 0: the derivative does not exist there.
    from nncli.nn.gradcheck import check_model as run

    model = Sequential([LAYERS.create("relu")])
    model.build((4,), np.random.default_rng(0), np.float64)
    x = np.array([[0.0, 1.0, -1.0, 0.0], [0.5, 0.0, -0.5, 2.0]])
    results = run(model, LOSSES.create("mse"), x, np.ones((2, 4)) * 3)
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
    results = check_model(model, LOSSES.create("softmax_cross_entropy"), x, rng.integers(0, 10, 8), rng=rng)
    return {r.name: r for r in results}["input"]


def test_a_smooth_network_excuses_no_entry():
    # sigmoid has no kinks: every entry must meet the tolerance, and a 1e-5 error in the input
    # gradient must fail (entries used to be excused when step sizes disagreed: 7 of 400 here)
    good = _input_check([LAYERS.create("sigmoid")])
    assert good.kinks == 0 and good.max_rel_error < TOL
    bad = _input_check([_ScaledInputGradient(16, 1e-5), LAYERS.create("sigmoid")])
    assert bad.kinks == 0 and bad.max_rel_error > TOL and not bad.passed(TOL)


def test_batchnorm_then_relu_inputs_are_kinks_only_where_a_relu_input_crosses_zero():
    # batch norm couples the samples, so moving one input moves every ReLU input a little; an
    # entry is a kink only if some ReLU input actually crosses 0 within the stencil
    good = _input_check([LAYERS.create("batchnorm"), LAYERS.create("relu")], seed=3)
    assert good.kinks == 0 and good.max_rel_error < TOL
    hidden = [_ScaledInputGradient(16, 1e-5), LAYERS.create("batchnorm"), LAYERS.create("relu")]
    bad = _input_check(hidden, seed=3)
    assert bad.kinks == 0 and bad.max_rel_error > TOL and not bad.passed(TOL)


def test_an_l1_weight_at_zero_is_a_kink_of_the_penalty():
    reg = Regularizer(l1=0.1)
    model = Sequential([Linear(3)])
    model.build((2,), np.random.default_rng(0), np.float64)
    model.params["layers.0.W"][...] = [[0.0, 0.5, 1e-7], [-0.5, 1e-5, 0.3]]
    results = check_model(model, LOSSES.create("mse"), np.ones((1, 2)), np.zeros((1, 3)), regularizer=reg)
    penalty = {r.name: r for r in results}["regularization[layers.0.W]"]
    # at exactly 0 the symmetric stencil of |w| gives 0, as sign(0) does: no failure to excuse;
    # 1e-5 is within 2h of the kink but not within 2h / 100, where it is compared; 1e-7 is
    # within every stencil, and excused
    assert penalty.kinks == 1 and penalty.compared == 5 and penalty.max_rel_error < TOL
    # without the L1 term the same weights are smooth: nothing is excused
    results = check_model(
        model, LOSSES.create("mse"), np.ones((1, 2)), np.zeros((1, 3)), regularizer=Regularizer(l2=0.1)
    )
    assert all(r.kinks == 0 and r.max_rel_error < TOL for r in results)
    _assert_passes(results)


def test_the_sparse_first_layer_path_is_checked():
    # 80 input columns, half of them zero across the batch: in training the first linear layer
    # computes no input gradient and skips those columns, and the check must take that path
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, 80))
    x[:, ::2] = 0
    y = rng.standard_normal((N, 3))

    def check(error):
        model = Sequential([Linear(6), LAYERS.create("tanh"), Linear(3)])
        model.build((80,), np.random.default_rng(1), np.float64)
        first, original, sparse = model.layers[0], model.layers[0].backward, []

        def backward(dout):  # wrong on the sparse path only
            out = original(dout)
            sparse.append(first.cols is not None)
            if first.cols is not None:
                first.grads["W"] *= 1 + error
            return out

        first.backward = backward
        results = {r.name: r for r in check_model(model, LOSSES.create("mse"), x, y, samples=200)}
        return results, sparse

    results, sparse = check(0.0)
    assert sparse[0], "the parameters were not checked on the sparse path"
    _assert_passes(results.values())
    results, _ = check(1e-5)
    assert not results["layers.0.W"].passed(TOL)
    assert results["input"].passed(TOL)  # checked with the input gradient on: the dense path


def test_the_relative_error_is_reported_as_it_is_and_noise_decides_only_below_the_floor():
    from nncli.nn.gradcheck import NOISE_FACTOR, STEP, check_array

    def stencil(f, w, i):
        values = []
        for delta in (-2 * STEP, -STEP, STEP, 2 * STEP):
            w[i] += delta
            values.append(f())
            w[i] -= delta
        return (values[0] - 8 * values[1] + 8 * values[2] - values[3]) / (12 * STEP)

    w = np.zeros(2)
    # a gradient of 1e-9 under a loss of 1e3: rounding (about 3e-8 here) hides it entirely
    loss = lambda: 1e3 + 1e-9 * w[0] + 1e-9 * w[1]  # noqa: E731
    analytic = np.array([1.1e-9, 1e-9])
    tiny = check_array(loss, w, analytic, "w")
    a, n = analytic[tiny.worst_index], stencil(loss, w, tiny.worst_index[0])
    assert tiny.max_rel_error == pytest.approx(abs(a - n) / (abs(a) + abs(n)))  # unmodified
    assert tiny.max_rel_error > TOL
    assert tiny.noise_floor > tiny.max_rel_error and tiny.passed(TOL) and tiny.passed(1e-12)
    assert tiny.noise_floor == pytest.approx(NOISE_FACTOR * 1e3 / STEP / (abs(a) + abs(n)), rel=1e-6)
    # the same loss with a gradient of 3: a relative error of 5e-6 is resolved, and fails
    big = check_array(lambda: 1e3 + 3 * w[0] + 3 * w[1], w, np.array([3 * (1 + 1e-5), 3.0]), "w")
    assert big.max_rel_error == pytest.approx(1e-5 / (2 + 1e-5), rel=1e-3)
    assert big.worst_index == (0,) and big.noise_floor < 1e-8
    assert not big.passed(TOL) and big.passed(1e-5)
    # a NaN gradient is never within the noise
    nan = check_array(lambda: 1e3 + 3 * w[0], w[:1], np.array([np.nan]), "w")
    assert not nan.passed(TOL) and not nan.passed(1.0)


def test_progress_hears_of_every_entry_in_order():
    rng = np.random.default_rng(0)
    model = Sequential([Linear(3), LAYERS.create("tanh")])
    model.build((2,), rng, np.float64)
    heard = []
    results = check_model(
        model,
        LOSSES.create("mse"),
        rng.standard_normal((4, 2)),
        rng.standard_normal((4, 3)),
        progress=lambda name, done, total: heard.append((name, done, total)),
    )
    expected = [(r.name, k + 1, r.checked) for r in results for k in range(r.checked)]
    assert heard == expected
    assert [r.name for r in results] == ["layers.0.W", "layers.0.b", "input"]


def test_an_interrupted_check_keeps_the_finished_tensors_and_restores_the_model():
    from nncli.nn.gradcheck import CheckInterrupted, iter_check_model

    rng = np.random.default_rng(0)
    model = Sequential([Linear(3), LAYERS.create("dropout", {"p": 0.5}), Linear(2)])
    model.build((4,), rng, np.float64)
    before = model.state_dict()

    def stop(name, done, total):
        if name == "layers.0.b" and done == 2:  # half-way through the second tensor
            raise KeyboardInterrupt

    finished = []
    checks = iter_check_model(
        model, LOSSES.create("mse"), rng.standard_normal((5, 4)), rng.standard_normal((5, 2)), progress=stop
    )
    with pytest.raises(KeyboardInterrupt) as stop:
        for check in checks:
            finished.append(check)
    assert [c.name for c in finished] == ["layers.0.W"]
    assert isinstance(stop.value, CheckInterrupted)
    assert (stop.value.partial.name, stop.value.partial.checked, stop.value.total) == ("layers.0.b", 2, 3)
    after = model.state_dict()
    for name, value in before["params"].items():
        np.testing.assert_array_equal(value, after["params"][name])
    assert not model.layers[1].frozen and not model.layers[0].needs_input_grad


def test_the_planned_tensors_are_the_rows_checked():
    from nncli.nn.gradcheck import planned_tensors

    reg = Regularizer(l2=0.1)
    model = Sequential([Linear(3), LAYERS.create("tanh"), Linear(2)])
    rng = np.random.default_rng(0)
    model.build((4,), rng, np.float64)
    x, y = rng.standard_normal((5, 4)), rng.standard_normal((5, 2))
    results = check_model(model, LOSSES.create("mse"), x, y, regularizer=reg)
    assert [r.name for r in results] == planned_tensors(model, reg)
    assert planned_tensors(model, check_input=False) == [
        "layers.0.W",
        "layers.0.b",
        "layers.2.W",
        "layers.2.b",
    ]


CONV_VARIANTS = {
    "conv same padding, stride 2, odd sizes": (
        [("conv2d", {"filters": 2, "kernel": 3, "stride": 2, "padding": "same"})], (2, 7, 5)),
    "conv non-square kernel and stride": (
        [("conv2d", {"filters": 3, "kernel": [2, 3], "stride": [1, 2]})], (2, 5, 7)),
    "conv valid, no bias": ([("conv2d", {"filters": 2, "kernel": 4, "bias": False})], (1, 6, 5)),
    "conv stride 1, uneven padding, channels": (
        [("conv2d", {"filters": 2, "kernel": [4, 3], "padding": "same", "bias": False})], (3, 5, 6)),
    "conv stride 1, padded by the kernel's size": (
        [("conv2d", {"filters": 2, "kernel": 2, "padding": 2})], (2, 4, 5)),
    "maxpool odd sizes": ([("maxpool2d", {"size": 2})], (2, 5, 7)),
    "maxpool overlapping": ([("maxpool2d", {"size": 3, "stride": 2})], (2, 7, 7)),
    "maxpool padded, non-square": (
        [("maxpool2d", {"size": [2, 3], "stride": [2, 1], "padding": 1})], (1, 6, 5)),
    "avgpool padded, odd": ([("avgpool2d", {"size": 3, "stride": 2, "padding": 1})], (2, 7, 5)),
    "conv blocked for its pool, one channel": (
        [("conv2d", {"filters": 3, "kernel": 3, "padding": 1}), ("relu", {}), ("maxpool2d", {})], (1, 6, 6)),
    "conv blocked for its pool, batchnorm between": (
        [("conv2d", {"filters": 3, "kernel": 3, "padding": 1}), ("batchnorm", {}), ("tanh", {}),
         ("maxpool2d", {})], (2, 4, 6)),
}


@pytest.mark.parametrize("case", list(CONV_VARIANTS))
def test_convolution_and_pooling_variants_match_central_differences(case):
    _, results = _check_conv_variant(case, seed=4)
    _assert_passes(results)
    assert {r.name for r in results} >= {"input"}


def _check_conv_variant(case: str, seed: int):
    """CONV_VARIANTS[case], then flatten and a linear layer, checked against central differences
    on random inputs: (its layers, the check's results)."""
    specs, shape = CONV_VARIANTS[case]
    layers = [LAYERS.create(name, options) for name, options in specs]
    model = Sequential([*layers, LAYERS.create("flatten"), Linear(3)])
    rng = np.random.default_rng(seed)
    model.build(shape, rng, np.float64)
    x = rng.standard_normal((N, *shape))
    return layers, check_model(model, LOSSES.create("mse"), x, _regression_target(rng, 3), rng=rng)


@pytest.mark.parametrize(
    "case", ["conv blocked for its pool, batchnorm between", "conv same padding, stride 2, odd sizes"]
)
def test_convolutions_in_chunks_match_central_differences(monkeypatch, case):
    # one sample a chunk (nncli.nn.layers.conv.chunk_count): the columns made again in backward
    from nncli.nn.layers import conv

    monkeypatch.setattr(conv, "CHUNK_BYTES", 1)
    layers, results = _check_conv_variant(case, seed=6)
    _assert_passes(results)
    assert layers[0].chunks == N > 1


def test_pooling_ties_are_kinks_and_the_rest_is_exact():
    # integer inputs: many windows hold two equal maxima; perturbing either changes which one
    # wins (a kink), and every other entry must meet the tolerance
    model = Sequential([LAYERS.create("maxpool2d", {"size": 2}), LAYERS.create("flatten"), Linear(3)])
    rng = np.random.default_rng(5)
    model.build((2, 4, 4), rng, np.float64)
    x = np.round(rng.standard_normal((N, 2, 4, 4)))
    results = check_model(model, LOSSES.create("mse"), x, _regression_target(rng, 3), rng=rng)
    _assert_passes(results)
    inp = {r.name: r for r in results}["input"]
    assert inp.kinks > 0


# --- What a row counts: the entries compared and the entries excused --------------------------


def test_a_kink_near_an_entry_is_cleared_by_a_narrower_stencil():
    # 1.5 steps from a ReLU's kink: the stencil's -2h point crosses 0, so the wide estimate is
    # off; h / 10 clears the kink, agrees, and the entry is compared. At the kink itself every
    # stencil straddles it, and the entry is excused.
    from nncli.nn.gradcheck import STEP

    model = Sequential([LAYERS.create("relu")])
    model.build((4,), np.random.default_rng(0), np.float64)
    x = np.array([[1.5 * STEP, 1.0, -1.0, 0.0]])
    (inp,) = check_model(model, LOSSES.create("mse"), x, np.full((1, 4), 2.0))
    assert (inp.checked, inp.compared, inp.kinks) == (4, 3, 1)
    assert inp.max_rel_error < 1e-9 and inp.passed(TOL)


def test_a_tensor_with_no_entry_compared_is_unchecked_and_does_not_pass():
    # every ReLU input exactly at 0: each entry is excused, so nothing is known of the gradient
    model = Sequential([LAYERS.create("relu")])
    model.build((3,), np.random.default_rng(0), np.float64)
    (inp,) = check_model(model, LOSSES.create("mse"), np.zeros((2, 3)), np.ones((2, 3)))
    assert (inp.checked, inp.compared, inp.kinks) == (6, 0, 6)
    assert inp.unchecked and inp.worst_index is None
    assert not inp.passed(TOL) and not inp.passed(1.0)


def _blank_bordered_cnn(seed=0):
    """A small CNN at initialization (zero biases) and 6 one-channel 16x16 images blank but for
    a 4x4 square in the middle, as MNIST's digits are framed by blank pixels."""
    rng = np.random.default_rng(seed)
    layers = [
        LAYERS.create("conv2d", {"filters": 3, "kernel": 3, "padding": 1}),
        LAYERS.create("relu"),
        LAYERS.create("maxpool2d", {"size": 2}),
        LAYERS.create("conv2d", {"filters": 4, "kernel": 3, "padding": 1}),
        LAYERS.create("relu"),
        LAYERS.create("maxpool2d", {"size": 2}),
        LAYERS.create("flatten"),
        Linear(3),
    ]
    model = Sequential(layers)
    model.build((1, 16, 16), rng, np.float64)
    x = np.zeros((N, 1, 16, 16))
    x[:, :, 6:10, 6:10] = rng.random((N, 1, 4, 4))
    return model, x, rng.integers(0, 3, N), rng


def test_zero_biases_over_blank_pixels_leave_conv_biases_unchecked():
    # what `nncli gradcheck` reported as "ok": every ReLU input over the blank border is exactly
    # 0, and moving any conv bias moves them all across it
    model, x, y, rng = _blank_bordered_cnn()
    loss = LOSSES.create("softmax_cross_entropy")
    rows = {r.name: r for r in check_model(model, loss, x, y, rng=rng, check_input=False)}
    for name in ("layers.0.b", "layers.3.b"):
        assert rows[name].unchecked and not rows[name].passed(TOL)
        assert rows[name].kinks == rows[name].checked > 0


def test_random_biases_and_input_noise_compare_the_entries_of_a_blank_bordered_cnn():
    from nncli.nn.gradcheck import RANDOM_BIAS, randomize_zero_params

    model, x, y, rng = _blank_bordered_cnn()
    weights = model.params["layers.0.W"].copy()
    assert randomize_zero_params(model, rng) == ["layers.0.b", "layers.3.b", "layers.7.b"]
    np.testing.assert_array_equal(model.params["layers.0.W"], weights)  # not all zeros: kept
    for name in ("layers.0.b", "layers.3.b", "layers.7.b"):
        magnitude = np.abs(model.params[name])
        assert np.all((magnitude >= RANDOM_BIAS[0]) & (magnitude <= RANDOM_BIAS[1]))
    biases = model.params["layers.3.b"].copy()
    assert np.any(biases < 0) and np.any(biases > 0)

    loss = LOSSES.create("softmax_cross_entropy")
    results = check_model(model, loss, x, y, rng=rng, samples=200, input_noise=0.01)
    _assert_passes(results)
    *params, inp = results
    for r in params:  # every entry compared: no ReLU input at 0, no tie to break
        assert (r.compared, r.kinks) == (r.checked, 0), r
    # the input, 9 in 10 of it blank: two values of a pooling window closer than the stencil
    # are rare (about 1 in 100 entries)
    assert inp.checked == 200 and inp.compared >= 190
    # the same seed draws the same biases
    again, _, _, rng = _blank_bordered_cnn()
    randomize_zero_params(again, rng)
    np.testing.assert_array_equal(again.params["layers.3.b"], biases)


def test_without_input_noise_blank_pixels_tie_the_max_pools():
    # with random biases, a blank region gives each pooling window four equal values: moving any
    # input there breaks the tie, a kink at every step; the noise is what makes them comparable
    from nncli.nn.gradcheck import randomize_zero_params

    model, x, y, rng = _blank_bordered_cnn()
    randomize_zero_params(model, rng)
    loss = LOSSES.create("softmax_cross_entropy")

    def input_row(noise):
        results = check_model(model, loss, x, y, rng=np.random.default_rng(1), samples=200, input_noise=noise)
        return results[-1]

    plain, noisy = input_row(0.0), input_row(0.01)
    assert plain.kinks > 100
    assert noisy.compared >= 190
    np.testing.assert_array_equal(x[:, :, :6], 0)  # the caller's batch is left as it was
