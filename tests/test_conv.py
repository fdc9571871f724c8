"""Convolution and pooling against straightforward loops over samples and pixels (channels
first, as the textbook writes them), on random inputs: outputs and input gradients."""

from __future__ import annotations

import numpy as np
import pytest

from nncli.errors import ConfigError
from nncli.nn import LAYERS, Sequential

RNG = np.random.default_rng(0)


def model_of(name: str, options: dict, shape: tuple[int, ...], dtype=np.float64) -> Sequential:
    model = Sequential([LAYERS.create(name, options)])
    model.build(shape, np.random.default_rng(1), dtype)
    model.input_gradient(True)
    if name == "conv2d" and "b" in model.params:
        model.params["layers.0.b"][...] = RNG.standard_normal(model.params["layers.0.b"].shape)
    return model


def padded(x: np.ndarray, pads, value=0.0) -> np.ndarray:
    (top, bottom), (left, right) = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def windows_of(shape, k, s, pads):
    """(i, j, row slice, column slice) of every output pixel, by the textbook formula."""
    _, _, h, w = shape
    (top, bottom), (left, right) = pads
    oh = (h + top + bottom - k[0]) // s[0] + 1
    ow = (w + left + right - k[1]) // s[1] + 1
    for i in range(oh):
        for j in range(ow):
            yield i, j, slice(i * s[0], i * s[0] + k[0]), slice(j * s[1], j * s[1] + k[1])


def conv_loop(x, W, b, s, pads, dout=None):
    n, c, h, w = x.shape
    f, _, kh, kw = W.shape
    xp = padded(x, pads)
    items = list(windows_of(x.shape, (kh, kw), s, pads))
    oh, ow = items[-1][0] + 1, items[-1][1] + 1
    out = np.zeros((n, f, oh, ow))
    dxp = np.zeros_like(xp)
    for m in range(n):
        for i, j, rows, cols in items:
            for g in range(f):
                out[m, g, i, j] = np.sum(xp[m, :, rows, cols] * W[g]) + b[g]
                if dout is not None:
                    dxp[m, :, rows, cols] += dout[m, g, i, j] * W[g]
    (top, _), (left, _) = pads
    return out, dxp[:, :, top : top + h, left : left + w]


def pool_loop(x, k, s, pads, kind, dout=None):
    n, c, h, w = x.shape
    xp = padded(x, pads, -np.inf if kind == "max" else 0.0)
    items = list(windows_of(x.shape, k, s, pads))
    oh, ow = items[-1][0] + 1, items[-1][1] + 1
    out = np.zeros((n, c, oh, ow))
    dxp = np.zeros_like(xp)
    for m in range(n):
        for ch in range(c):
            for i, j, rows, cols in items:
                window = xp[m, ch, rows, cols]
                if kind == "max":
                    out[m, ch, i, j] = window.max()
                    first = np.unravel_index(np.argmax(window), window.shape)  # the first maximum
                    if dout is not None:
                        dxp[m, ch, rows, cols][first] += dout[m, ch, i, j]
                else:
                    out[m, ch, i, j] = window.mean()
                    if dout is not None:
                        dxp[m, ch, rows, cols] += dout[m, ch, i, j] / window.size
    (top, _), (left, _) = pads
    return out, dxp[:, :, top : top + h, left : left + w]


def run(model: Sequential, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = model.forward(x, training=True)
    dout = RNG.standard_normal(out.shape)
    return out, dout, model.backward(dout)


CONV_CASES = [
    ({"filters": 4, "kernel": 3, "padding": 1}, (3, 8, 8), ((1, 1), (1, 1))),
    ({"filters": 2, "kernel": 3, "stride": 2}, (2, 9, 7), ((0, 0), (0, 0))),  # odd sizes
    ({"filters": 3, "kernel": [2, 3], "stride": [1, 2]}, (1, 6, 7), ((0, 0), (0, 0))),  # non-square
    ({"filters": 2, "kernel": 3, "stride": 2, "padding": "same"}, (2, 7, 8), ((1, 1), (0, 1))),
    ({"filters": 2, "kernel": 4, "padding": "same"}, (1, 5, 5), ((1, 2), (1, 2))),
    ({"filters": 2, "kernel": 5, "padding": [2, 0], "bias": False}, (2, 6, 6), ((2, 2), (0, 0))),
    # stride 1 with channels: the correlation backward, uneven padding and a non-square kernel
    ({"filters": 2, "kernel": 4, "padding": "same"}, (3, 5, 6), ((1, 2), (1, 2))),
    ({"filters": 3, "kernel": [3, 2], "padding": [1, 1]}, (2, 6, 5), ((1, 1), (1, 1))),
    # stride 1 padded by the kernel's size: output pixels over padding alone, the per-offset backward
    ({"filters": 2, "kernel": 2, "padding": 2}, (2, 5, 4), ((2, 2), (2, 2))),
]


@pytest.mark.parametrize(("options", "shape", "pads"), CONV_CASES)
def test_conv2d_matches_the_loop(options, shape, pads):
    model = model_of("conv2d", options, shape)
    x = RNG.standard_normal((3, *shape))
    out, dout, dx = run(model, x)
    W = model.params["layers.0.W"]
    b = model.params.get("layers.0.b", np.zeros(W.shape[0]))
    stride = options.get("stride", 1)
    stride = tuple(stride) if isinstance(stride, list) else (stride, stride)
    expected, expected_dx = conv_loop(x, W, b, stride, pads, dout)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-12, atol=1e-12)
    # dW by the loop's definition: the sum over outputs of dout times the window
    xp = padded(x, pads)
    dW = np.zeros_like(W)
    for i, j, rows, cols in windows_of(x.shape, W.shape[2:], stride, pads):
        dW += np.einsum("nf,nchw->fchw", dout[:, :, i, j], xp[:, :, rows, cols])
    np.testing.assert_allclose(model.grads["layers.0.W"], dW, rtol=1e-12, atol=1e-12)


POOL_CASES = [
    ({"size": 2}, (3, 8, 6), ((0, 0), (0, 0))),  # tiling windows: the reshape path
    ({"size": 2}, (2, 7, 5), ((0, 0), (0, 0))),  # odd sizes: the last row and column are dropped
    ({"size": 3, "stride": 2}, (2, 9, 8), ((0, 0), (0, 0))),  # overlapping
    ({"size": 3, "stride": 2, "padding": 1}, (1, 7, 7), ((1, 1), (1, 1))),
    ({"size": [2, 3], "stride": [2, 1]}, (2, 6, 7), ((0, 0), (0, 0))),
]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize(("options", "shape", "pads"), POOL_CASES)
def test_pooling_matches_the_loop(kind, options, shape, pads):
    model = model_of(f"{kind}pool2d", options, shape)
    x = RNG.standard_normal((4, *shape))
    out, dout, dx = run(model, x)
    k = options["size"] if isinstance(options["size"], list) else [options["size"]] * 2
    s = options.get("stride", k)
    s = s if isinstance(s, list) else [s, s]
    expected, expected_dx = pool_loop(x, tuple(k), tuple(s), pads, kind, dout)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("options", [{"size": 2}, {"size": 3, "stride": 2, "padding": 1}])
def test_a_tie_sends_the_gradient_to_the_first_maximum_of_the_window(options):
    model = model_of("maxpool2d", options, (2, 6, 6))
    x = np.round(RNG.standard_normal((3, 2, 6, 6)))  # integers: many ties in each window
    x[0] = 1.0  # every window of the first sample is one tie
    out, dout, dx = run(model, x)
    k = (options["size"],) * 2
    s = (options.get("stride", options["size"]),) * 2
    p = options.get("padding", 0)
    _, expected_dx = pool_loop(x, k, s, ((p, p), (p, p)), "max", dout)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-12, atol=1e-12)
    if options == {"size": 2}:  # the top-left cell of each 2x2 window takes it all
        np.testing.assert_allclose(dx[0, :, ::2, ::2], dout[0])
        assert not dx[0, :, 1::2].any() and not dx[0, :, :, 1::2].any()


def test_global_avgpool_and_batchnorm_on_images():
    x = RNG.standard_normal((5, 3, 4, 6))
    model = model_of("global_avgpool", {}, (3, 4, 6))
    out, dout, dx = run(model, x)
    np.testing.assert_allclose(out, x.mean(axis=(2, 3)))
    np.testing.assert_allclose(dx, np.broadcast_to(dout[:, :, None, None] / 24, x.shape))

    bn = model_of("batchnorm", {}, (3, 4, 6))
    out = bn.forward(x, training=True)
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    std = np.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, (x - mean) / std, rtol=1e-10, atol=1e-10)
    assert bn.params["layers.0.gamma"].shape == (3,)
    running = bn.layers[0].buffers["running_mean"]
    np.testing.assert_allclose(running, 0.1 * mean.ravel(), rtol=1e-10)


def test_flatten_orders_features_as_pytorch_does():
    conv = LAYERS.create("conv2d", {"filters": 2, "kernel": 1, "bias": False})
    model = Sequential([conv, LAYERS.create("flatten")])
    model.build((1, 2, 3), np.random.default_rng(0), np.float64)
    model.params["layers.0.W"][...] = np.array([1.0, 10.0]).reshape(2, 1, 1, 1)
    x = np.arange(6.0).reshape(1, 1, 2, 3)
    # channel 0's six pixels row by row, then channel 1's
    np.testing.assert_array_equal(model.forward(x), [[0, 1, 2, 3, 4, 5, 0, 10, 20, 30, 40, 50]])


def test_float32_stays_float32():
    model = Sequential([
        LAYERS.create("conv2d", {"filters": 4, "kernel": 3, "padding": "same"}),
        LAYERS.create("batchnorm"), LAYERS.create("relu"), LAYERS.create("maxpool2d"),
        LAYERS.create("avgpool2d", {"size": 2, "stride": 1}), LAYERS.create("global_avgpool"),
    ])
    model.build((1, 8, 8), np.random.default_rng(0), np.float32)
    x = RNG.standard_normal((2, 1, 8, 8)).astype(np.float32)
    model.input_gradient(True)
    out = model.forward(x, training=True)
    assert out.dtype == np.float32 and out.shape == (2, 4)
    assert model.backward(np.ones_like(out)).dtype == np.float32
    assert all(g.dtype == np.float32 for g in model.grads.values())


def test_evaluation_keeps_nothing_for_a_backward_and_gives_what_training_gives():
    # the columns of a convolution are the largest array of a forward pass (113 MB for 1,000
    # MNIST digits in the second layer): an evaluation pass must not hold them afterwards
    model = Sequential([
        LAYERS.create("conv2d", {"filters": 4, "kernel": 3, "padding": 1}), LAYERS.create("relu"),
        LAYERS.create("maxpool2d"), LAYERS.create("conv2d", {"filters": 3, "kernel": 3}),
        LAYERS.create("maxpool2d", {"size": 3}), LAYERS.create("flatten"),
        LAYERS.create("linear", {"units": 2}),
    ])
    model.build((1, 16, 16), np.random.default_rng(0), np.float32)  # the second pool is tiled: 6 by 3
    x = RNG.standard_normal((5, 1, 16, 16)).astype(np.float32)
    trained = model.forward(x, training=True)
    evaluated = model.forward(x, training=False)
    assert evaluated.tobytes() == trained.tobytes()
    kept = {name: getattr(layer, name, None) for layer in model.layers
            for name in ("cols", "inputs", "padded", "out", "x", "left_top", "upper", "saved")}
    assert all(value is None for value in kept.values()), [k for k, v in kept.items() if v is not None]
    model.forward(x, training=True)  # and training after evaluation still has its backward
    assert model.backward(np.ones_like(trained)) is None


@pytest.mark.parametrize(
    ("layers", "shape", "words"),
    [
        ([("conv2d", {"filters": 2, "kernel": 5})], (1, 4, 4), "larger than the input's height (4)"),
        ([("conv2d", {"filters": 2, "kernel": 5, "padding": 1})], (1, 2, 8), "(2 padded to 4)"),
        ([("flatten", {}), ("conv2d", {"filters": 2})], (1, 4, 4), "after flatten or on flat data"),
        ([("maxpool2d", {"size": 3})], (2, 2, 9), "larger than the input's height (2)"),
        ([("linear", {"units": 3})], (1, 4, 4), "put a flatten layer before it"),
    ],
)
def test_a_layer_that_cannot_take_its_input_says_which_and_why(layers, shape, words):
    model = Sequential([LAYERS.create(n, o) for n, o in layers])
    with pytest.raises(ConfigError) as err:
        model.build(shape, np.random.default_rng(0), np.float32)
    assert words in str(err.value)
    assert err.value.key.startswith(f"[{len(layers) - 1}].")


@pytest.mark.parametrize(
    ("name", "options", "key"),
    [
        ("conv2d", {"filters": 0}, "filters"),
        ("conv2d", {"filters": 2, "kernel": [3, 3, 3]}, "kernel"),
        ("conv2d", {"filters": 2, "padding": "full"}, "padding"),
        ("conv2d", {"filters": 2, "stride": 0}, "stride"),
        ("maxpool2d", {"size": 2, "padding": 2}, "padding"),
    ],
)
def test_bad_options_are_keyed(name, options, key):
    with pytest.raises(ConfigError) as err:
        LAYERS.create(name, options)
    assert err.value.key == key


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("between", [[], ["relu"], ["batchnorm", "relu"]])
def test_a_convolution_blocked_for_its_pool_changes_nothing_but_speed(channels, between):
    # conv -> (layers indifferent to pixel order) -> 2x2 max pool: the model lets the conv
    # write its output by window corner; values and every gradient are those of the plain path
    def build(blocked: bool) -> Sequential:
        layers = [LAYERS.create("conv2d", {"filters": 4, "kernel": 3, "padding": 1})]
        layers += [LAYERS.create(name) for name in between]
        layers += [LAYERS.create("maxpool2d"), LAYERS.create("flatten")]
        layers += [LAYERS.create("linear", {"units": 3})]
        model = Sequential(layers)
        model.build((channels, 6, 8), np.random.default_rng(2), np.float64)
        model.input_gradient(True)
        assert layers[0].blocked and layers[len(between) + 1].blocked
        if not blocked:
            layers[0].blocked = layers[len(between) + 1].blocked = False
        return model

    x = np.round(RNG.standard_normal((5, channels, 6, 8)), 1)  # ties in some windows
    dout = RNG.standard_normal((5, 3))
    results = []
    for blocked in (True, False):
        model = build(blocked)
        out = model.forward(x, training=True)
        dx = model.backward(dout)
        results.append((out, dx, {k: g.copy() for k, g in model.grads.items()}))
    (out_b, dx_b, g_b), (out_p, dx_p, g_p) = results
    np.testing.assert_allclose(out_b, out_p, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx_b, dx_p, rtol=1e-12, atol=1e-12)
    for name in g_p:
        np.testing.assert_allclose(g_b[name], g_p[name], rtol=1e-12, atol=1e-12, err_msg=name)


def test_only_a_pool_the_convolution_feeds_is_blocked():
    def blocked(names_and_options, shape=(2, 8, 8)):
        layers = [LAYERS.create(n, o) for n, o in names_and_options]
        Sequential(layers).build(shape, np.random.default_rng(0), np.float32)
        return [getattr(layer, "blocked", None) for layer in layers]

    conv = ("conv2d", {"filters": 2, "kernel": 3, "padding": 1})
    assert blocked([conv, ("relu", {}), ("maxpool2d", {})]) == [True, None, True]
    assert blocked([conv, ("avgpool2d", {}), ("maxpool2d", {})]) == [False, None, False]
    assert blocked([("conv2d", {"filters": 2, "kernel": 3, "stride": 2, "padding": 1}),
                    ("maxpool2d", {})]) == [False, False]
    assert blocked([conv, ("maxpool2d", {"size": 3, "stride": 2})]) == [False, False]
    assert blocked([conv, ("maxpool2d", {})], shape=(2, 7, 7)) == [False, False]  # odd: not tiled


def test_chunk_count_is_a_divisor_near_the_target():
    from nncli.nn.layers.conv import chunk_count

    # the MNIST CNN's second convolution: 196 rows of 145 float32 values a sample
    assert chunk_count(128, 196 * 145 * 4, 1 << 20) == 16
    assert chunk_count(96, 196 * 145 * 4, 1 << 20) == 12
    assert chunk_count(2, 196 * 145 * 4, 1 << 20) == 1  # small batches: one chunk
    assert chunk_count(7, 10**6, 1 << 20) == 7  # one sample a chunk is the nearest
    assert chunk_count(97, 196 * 145 * 4, 1 << 20) == 1  # 97 chunks of one would be too small
    for n in range(1, 40):
        assert n % chunk_count(n, 50_000, 1 << 17) == 0


@pytest.mark.parametrize("blocked", [True, False])
@pytest.mark.parametrize(
    "options",
    [
        {"filters": 4, "kernel": 3, "padding": 1},
        {"filters": 3, "kernel": [2, 3], "stride": [2, 1], "bias": False},
    ],
)
def test_a_convolution_in_chunks_gives_what_one_chunk_gives(monkeypatch, options, blocked):
    # the batch of 6 as 6 chunks of one sample, or 3 of two, against one chunk of all six:
    # outputs, weight gradients and input gradients agree to rounding
    from nncli.nn.layers import conv

    def run(samples_a_chunk: int):
        layers = [LAYERS.create("conv2d", options), LAYERS.create("maxpool2d"), LAYERS.create("flatten")]
        model = Sequential([*layers, LAYERS.create("linear", {"units": 3})])
        model.build((3, 8, 8), np.random.default_rng(2), np.float64)
        model.input_gradient(True)
        if not blocked:
            layers[0].blocked = layers[1].blocked = False
        assert layers[0].blocked == (blocked and options.get("stride", 1) == 1)
        (oh, ow), width = layers[0].out_hw, layers[0]._width()
        monkeypatch.setattr(conv, "CHUNK_BYTES", samples_a_chunk * oh * ow * width * 8)
        x = np.random.default_rng(3).standard_normal((6, 3, 8, 8))
        out = model.forward(x, training=True)
        dx = model.backward(np.random.default_rng(4).standard_normal(out.shape))
        return layers[0].chunks, out, dx, {k: g.copy() for k, g in model.grads.items()}

    chunks, *whole = run(6)
    assert chunks == 1
    for samples in (1, 2):
        chunks, *parts = run(samples)
        assert chunks == 6 // samples
        for got, want in zip(parts[:2], whole[:2], strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        for name, grad in whole[2].items():
            np.testing.assert_allclose(parts[2][name], grad, rtol=1e-12, atol=1e-12, err_msg=name)


def test_the_correlation_backward_is_taken_where_it_applies():
    def conv_after(options, shape=(2, 6, 6)):
        conv = LAYERS.create("conv2d", options)
        model = Sequential([LAYERS.create("conv2d", {"filters": shape[0], "kernel": 1}), conv])
        model.build((1, *shape[1:]), np.random.default_rng(0), np.float64)
        model.forward(RNG.standard_normal((2, 1, *shape[1:])), training=True)
        return conv.full_grad, conv.inputs is not None

    assert conv_after({"filters": 2, "kernel": 3, "padding": 1}) == (True, True)
    assert conv_after({"filters": 2, "kernel": 4, "padding": "same"}) == (True, True)
    assert conv_after({"filters": 2, "kernel": 3, "stride": 2}) == (False, False)
    assert conv_after({"filters": 2, "kernel": 2, "padding": [1, 2]}) == (False, False)
    # the first layer computes no input gradient: nothing to correlate
    first = model_of("conv2d", {"filters": 2, "kernel": 3, "padding": 1}, (2, 5, 5))
    first.input_gradient(False)
    first.forward(RNG.standard_normal((2, 2, 5, 5)), training=True)
    assert first.layers[0].full_grad and first.layers[0].inputs is None


@pytest.mark.parametrize("blocked", [True, False])
@pytest.mark.parametrize(
    "options",
    [
        {"filters": 4, "kernel": 3, "padding": 1},
        {"filters": 3, "kernel": [4, 2], "padding": "same", "bias": False},  # pads (1, 2) and (0, 1)
    ],
)
def test_the_correlation_backward_gives_what_the_per_offset_backward_gives(monkeypatch, options, blocked):
    # in two chunks of three samples, blocked for the pool or not
    from nncli.nn.layers import conv

    monkeypatch.setattr(conv, "CHUNK_BYTES", 3 * 6 * 8 * 30 * 8)
    x = RNG.standard_normal((6, 3, 6, 8))
    dout = RNG.standard_normal((6, 3))
    results = []
    for correlates in (True, False):
        monkeypatch.setattr(conv.Conv2D, "full_grad", property(lambda self, c=correlates: c))
        layers = [LAYERS.create("conv2d", options), LAYERS.create("maxpool2d"), LAYERS.create("flatten")]
        model = Sequential([*layers, LAYERS.create("linear", {"units": 3})])
        model.build((3, 6, 8), np.random.default_rng(3), np.float64)
        model.input_gradient(True)
        layers[0].blocked = layers[1].blocked = blocked
        out = model.forward(x, training=True)
        assert layers[0].chunks == 2 and (layers[0].inputs is not None) == correlates
        results.append((out, model.backward(dout), {k: g.copy() for k, g in model.grads.items()}))
    (out_c, dx_c, g_c), (out_p, dx_p, g_p) = results
    np.testing.assert_array_equal(out_c, out_p)
    np.testing.assert_allclose(dx_c, dx_p, rtol=1e-12, atol=1e-12)
    for name in g_p:
        np.testing.assert_allclose(g_c[name], g_p[name], rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize(
    ("options", "channels"),
    [
        ({"filters": 4, "kernel": 3, "padding": 1}, 1),  # one channel: the columns kept
        ({"filters": 4, "kernel": 3, "padding": 1}, 3),  # the correlation backward
        ({"filters": 3, "kernel": [2, 3], "stride": [2, 1], "bias": False}, 2),  # per offset
    ],
)
def test_products_one_a_sample_give_what_one_product_gives(monkeypatch, options, channels):
    # nncli.nn.layers.blas.small_blocks: with no product small enough, one a sample
    from nncli.nn.layers import blas

    x = RNG.standard_normal((4, channels, 6, 8))
    dout = RNG.standard_normal((4, 3))
    results = []
    monkeypatch.setattr(blas, "small_products_unpacked", lambda: True)  # whatever this BLAS's kernels
    for limit in (10**9, 0):  # one product for the 4 samples, then one a sample
        monkeypatch.setattr(blas, "SMALL_PRODUCT", limit)
        layers = [LAYERS.create("conv2d", options), LAYERS.create("maxpool2d"), LAYERS.create("flatten")]
        model = Sequential([*layers, LAYERS.create("linear", {"units": 3})])
        model.build((channels, 6, 8), np.random.default_rng(3), np.float64)
        model.input_gradient(True)
        out = model.forward(x, training=True)
        assert layers[0].chunks == 1
        assert blas.product_blocks(4, 12, 9, 4) == (1 if limit else 4)
        results.append((out, model.backward(dout), {k: g.copy() for k, g in model.grads.items()}))
    (out_1, dx_1, g_1), (out_n, dx_n, g_n) = results
    np.testing.assert_allclose(out_1, out_n, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx_1, dx_n, rtol=1e-12, atol=1e-12)
    for name in g_1:
        np.testing.assert_allclose(g_1[name], g_n[name], rtol=1e-12, atol=1e-12, err_msg=name)
