import copy
import pickle

import numpy as np
import pytest

from nncli.errors import ConfigError
from nncli.nn.initializers import INITIALIZERS, get_initializer
from nncli.nn.layers import LAYERS
from nncli.nn.layers.core import Linear
from nncli.nn.model import Sequential

# the smallest valid arguments for layers that need some
REQUIRED = {"linear": {"units": 3}, "conv2d": {"filters": 2}}
# layers that take images: built for (C, H, W), called channels-last as inside a model
IMAGES = {"conv2d", "maxpool2d", "avgpool2d", "global_avgpool"}


@pytest.mark.parametrize("name", LAYERS.names())
def test_config_round_trip(name):
    layer = LAYERS.create(name, REQUIRED.get(name))
    again = LAYERS.create(name, layer.get_config())
    assert again.get_config() == layer.get_config()
    assert type(again) is type(layer)


def test_model_infers_shapes_and_names_parameters():
    model = Sequential(
        [
            LAYERS.create("flatten"),
            Linear(16),
            LAYERS.create("batchnorm"),
            LAYERS.create("relu"),
            Linear(10, bias=False),
        ]
    )
    out = model.build((1, 28, 28), np.random.default_rng(0))
    assert out == (10,)
    assert list(model.params) == ["layers.1.W", "layers.1.b", "layers.2.gamma", "layers.2.beta", "layers.4.W"]
    assert model.params["layers.1.W"].shape == (784, 16)
    assert model.num_params() == 784 * 16 + 16 + 2 * 16 + 16 * 10
    assert model.param_names(decayed_only=True) == ["layers.1.W", "layers.4.W"]
    assert all(p.dtype == np.float32 for p in model.params.values())
    assert [row[2] for row in model.summary()] == [(784,), (16,), (16,), (16,), (10,)]


def test_linear_on_images_without_flatten_is_a_config_error():
    model = Sequential([LAYERS.create("relu"), Linear(10)])
    with pytest.raises(ConfigError) as err:
        model.build((1, 28, 28), np.random.default_rng(0))
    assert err.value.key == "[1].linear"
    assert "flatten" in err.value.message


def test_bad_arguments_name_their_key():
    with pytest.raises(ConfigError) as err:
        LAYERS.create("linear", {"units": -3})
    assert (err.value.key, err.value.message) == ("units", "expected a positive integer, got -3")
    with pytest.raises(ConfigError) as err:
        LAYERS.create("linear", {"unit": 3})
    assert err.value.key == "unit" and 'did you mean "units"' in err.value.message
    with pytest.raises(ConfigError) as err:
        LAYERS.create("dropout", {"p": 1.0})
    assert err.value.key == "p"
    with pytest.raises(ConfigError) as err:
        LAYERS.get("rleu")
    assert 'did you mean "relu"' in str(err.value)


def test_dropout_is_inverted_seeded_and_identity_at_eval():
    def run(seed):
        layer = LAYERS.create("dropout", {"p": 0.25})
        layer.build((1000,), np.random.default_rng(seed), np.float32)
        return layer, layer.forward(np.ones((50, 1000), np.float32), training=True)

    layer, out = run(0)
    kept = out != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(out[kept], 1 / 0.75, rtol=1e-6)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, run(0)[1])
    assert not np.array_equal(out, run(1)[1])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert layer.forward(x, training=False) is x
    dout = np.ones_like(out)
    np.testing.assert_array_equal(
        layer.forward(np.ones((50, 1000), np.float32), True) != 0, layer.backward(dout) != 0
    )


def test_batchnorm_running_statistics_are_used_at_eval():
    rng = np.random.default_rng(0)
    bn = LAYERS.create("batchnorm", {"momentum": 0.0})
    bn.build((3,), rng, np.float64)
    x = rng.normal(5.0, 2.0, (400, 3))
    y = bn.forward(x, training=True)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(y.std(axis=0), 1, atol=1e-4)
    np.testing.assert_allclose(bn.buffers["running_mean"], x.mean(axis=0))
    # at eval a single sample is normalized with the stored statistics, not its own
    one = x[:1]
    np.testing.assert_allclose(bn.forward(one, training=False), y[:1], atol=1e-4)


def test_backward_leaves_its_input_alone():
    rng = np.random.default_rng(0)
    for name in LAYERS.names():
        layer = LAYERS.create(name, REQUIRED.get(name))
        image = name in IMAGES
        layer.build((2, 6, 6) if image else (6,), rng, np.float64)
        out = layer.forward(rng.standard_normal((4, 6, 6, 2) if image else (4, 6)), training=True)
        dout = rng.standard_normal(out.shape)
        before = dout.copy()
        layer.backward(dout)
        np.testing.assert_array_equal(dout, before, err_msg=name)


@pytest.mark.parametrize(
    ("name", "dist", "var"),
    [
        ("he", "normal", 2 / 400),
        ("kaiming", "uniform", 2 / 400),
        ("xavier", "uniform", 2 / 700),
        ("glorot", "normal", 2 / 700),
        ("lecun", "normal", 1 / 400),
    ],
)
def test_initializer_variances(name, dist, var):
    init = get_initializer({"type": name, "distribution": dist})
    w = init((400, 300), 400, 300, np.random.default_rng(0), np.float32)
    assert w.dtype == np.float32
    assert w.var() == pytest.approx(var, rel=0.03)
    if dist == "uniform":
        assert np.abs(w).max() <= np.sqrt(3 * var) * (1 + 1e-6)


def test_normal_and_zeros_initializers():
    w = get_initializer({"type": "normal", "scale": 0.5})(
        (300, 300), 300, 300, np.random.default_rng(0), np.float64
    )
    assert w.std() == pytest.approx(0.5, rel=0.02)
    assert not get_initializer("zeros")((3, 2), 3, 2, None, np.float32).any()
    assert set(INITIALIZERS.names()) == {"normal", "xavier", "he", "lecun", "zeros"}


def test_first_layer_skips_zero_columns_exactly():
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(2):  # a different 40% of the features blank in each batch
        x = rng.random((32, 100)).astype(np.float64)
        x[:, rng.choice(100, 40, replace=False)] = 0
        batches.append((x, rng.standard_normal((32, 7))))
    results = []
    for first in (True, False):
        layer = Linear(7)
        layer.build((100,), np.random.default_rng(1), np.float64)
        layer.needs_input_grad = not first
        for x, dout in batches:
            layer.grads["W"] += 123.0  # what a weight penalty leaves there: backward overwrites all
            out = layer.forward(x, training=True)
            layer.backward(dout)
        results.append((out, layer.grads["W"].copy(), layer.grads["b"].copy(), layer.cols))
    (out_s, dw_s, db_s, cols), (out_d, dw_d, db_d, dense_cols) = results
    assert cols is not None and np.count_nonzero(cols) == 60 and dense_cols is None
    np.testing.assert_allclose(out_s, out_d, rtol=1e-12)
    np.testing.assert_allclose(dw_s, dw_d, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(dw_s[~cols], 0)
    np.testing.assert_array_equal(db_s, db_d)


def test_parameters_and_gradients_are_views_into_one_packed_array_each():
    model = Sequential([Linear(6), LAYERS.create("batchnorm"), Linear(3, bias=False)])
    model.build((4,), np.random.default_rng(0))
    flat = model.flat
    assert flat.params.size == model.num_params() == 4 * 6 + 6 + 2 * 6 + 6 * 3
    for name, p in model.params.items():
        assert np.shares_memory(p, flat.params) and np.shares_memory(model.grads[name], flat.grads)
        np.testing.assert_array_equal(flat.view(flat.params, name), p)
    # the decayed weights are the packed arrays' first slice, whatever their order in the model
    decayed = model.param_names(decayed_only=True)
    assert decayed == ["layers.0.W", "layers.2.W"]
    assert flat.decayed == slice(0, 4 * 6 + 6 * 3)
    assert sorted(flat.slices[name].start for name in decayed) == [0, 4 * 6]
    model.layers[0].params["W"][0, 0] = 42.0  # a layer's array and the packed one are the same memory
    assert 42.0 in flat.params[flat.slices["layers.0.W"]]


@pytest.mark.parametrize("copy_model", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))])
def test_a_copied_model_packs_its_own_parameters(copy_model):
    model = Sequential([Linear(3), LAYERS.create("relu"), Linear(2)])
    model.build((4,), np.random.default_rng(0))
    clone = copy_model(model)
    assert not np.shares_memory(clone.flat.params, model.flat.params)
    for name, p in clone.params.items():
        assert np.shares_memory(p, clone.flat.params)
        assert np.shares_memory(clone.grads[name], clone.flat.grads)
        assert clone.layers[int(name.split(".")[1])].params[name.rsplit(".", 1)[1]] is p
        np.testing.assert_array_equal(p, model.params[name])
    clone.flat.params[...] += 1.0  # what a packed optimizer step does: the clone's layers see it
    np.testing.assert_array_equal(clone.layers[0].params["W"], model.layers[0].params["W"] + 1.0)


def test_astype_packs_the_converted_parameters_again():
    model = Sequential([Linear(3), LAYERS.create("relu"), Linear(2)])
    model.build((4,), np.random.default_rng(0))
    before = {name: p.copy() for name, p in model.params.items()}
    model.astype(np.float64)
    assert model.flat.params.dtype == np.float64
    for name, p in model.params.items():
        assert p.dtype == np.float64 and np.shares_memory(p, model.flat.params)
        np.testing.assert_array_equal(p, before[name])
        assert model.layers[int(name.split(".")[1])].params[name.rsplit(".", 1)[1]] is p


def test_relu_matches_maximum_whatever_the_input_layout():
    relu = LAYERS.create("relu")
    rng = np.random.default_rng(0)
    full = rng.standard_normal((6, 8)).astype(np.float32)
    full[0, :3] = [np.nan, -np.inf, np.inf]
    # C order, the last smaller batch, Fortran order, a strided view, then C order again
    for x in (full, full[:4], np.asfortranarray(full), full[:, ::2], full.astype(np.float64)):
        np.testing.assert_array_equal(relu.forward(x, training=True), np.maximum(x, 0))
        np.testing.assert_array_equal(relu.backward(np.ones_like(x)), (x > 0).astype(x.dtype))


@pytest.mark.parametrize(("m", "k", "n"), [(8, 5, 12), (12, 5, 8), (7, 7, 7), (1, 3, 4)])
@pytest.mark.parametrize("order", ["C", "F"])
def test_products_and_column_sums_whatever_their_orientation(m, k, n, order):
    from nncli.nn.layers.blas import column_sums, matmul

    rng = np.random.default_rng(0)
    a = np.asarray(rng.standard_normal((m, k)), order=order)
    b = rng.standard_normal((k, n))
    np.testing.assert_allclose(matmul(a, b), a @ b, rtol=1e-12)
    out = np.empty(k)
    assert column_sums(a, out=out) is out
    np.testing.assert_allclose(out, a.sum(axis=0), rtol=1e-12)


def test_small_blocks_keep_each_product_within_the_small_kernel():
    from nncli.nn.layers.blas import SMALL_PRODUCT, small_blocks

    # the MNIST CNN: a chunk of 8 samples of conv2 as 8 products; conv1's 128 samples as 32
    assert small_blocks(8, 196, 145, 32) == 8 and small_blocks(8, 196, 288, 16) == 8
    assert small_blocks(128, 784, 10, 16) == 32
    assert small_blocks(6, 10, 10, 10) == 1  # all six fit: one product
    assert small_blocks(5, 10**4, 10, 10) == 5  # not even one sample fits: one a sample
    for samples in range(1, 30):
        blocks = small_blocks(samples, 7, 50, 30)
        assert samples % blocks == 0
        assert blocks == samples or (samples // blocks) * 7 * 50 * 30 <= SMALL_PRODUCT


@pytest.mark.parametrize("order", ["C", "F"])
def test_row_blocks_are_views_of_consecutive_rows(order):
    from nncli.nn.layers.blas import row_blocks

    a = np.asarray(np.arange(24.0).reshape(6, 4), order=order)
    blocks = row_blocks(a, 3)
    assert blocks.shape == (3, 2, 4) and np.shares_memory(blocks, a)
    for i in range(3):
        np.testing.assert_array_equal(blocks[i], a[2 * i : 2 * i + 2])
