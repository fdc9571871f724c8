import math

import numpy as np
import pytest

from nncli.errors import ConfigError
from nncli.nn.layers.core import Linear
from nncli.nn.losses import LOSSES
from nncli.nn.model import Sequential
from nncli.nn.regularizers import Regularizer


def test_cross_entropy_is_stable_for_huge_logits():
    loss = LOSSES.create("softmax_cross_entropy")
    logits = np.array([[10000.0, 10010.0, 10.0]], dtype=np.float32)
    value = loss.forward(logits, np.array([0]))
    # log(1 + e^10) by hand, the third class contributing e^-10000 = 0
    assert value == pytest.approx(math.log1p(math.exp(10)), rel=1e-6)
    grad = loss.backward()
    assert np.all(np.isfinite(grad))
    assert grad.dtype == np.float32
    np.testing.assert_allclose(grad[0], [1 / (1 + math.e**10) - 1, 1 / (1 + math.e**-10), 0], atol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_one_hot_equals_integer_labels(smoothing):
    # integer labels take a path of their own; one-hot targets take the general one
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((8, 4))
    labels = rng.integers(0, 4, 8)
    loss = LOSSES.create("softmax_cross_entropy", {"label_smoothing": smoothing})
    a, ga = loss.forward(logits, labels), loss.backward()
    b, gb = loss.forward(logits, np.eye(4)[labels]), loss.backward()
    assert a == pytest.approx(b)
    np.testing.assert_allclose(ga, gb)


def test_label_smoothing_and_class_weights_by_hand():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    labels = np.array([0, 2])
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    q = np.eye(3)[labels] * 0.8 + 0.2 / 3
    per = -(q * logp).sum(axis=1)
    w = np.array([2.0, 1.0, 0.5])[labels]
    loss = LOSSES.create("softmax_cross_entropy", {"label_smoothing": 0.2, "class_weights": [2, 1, 0.5]})
    assert loss.forward(logits, labels) == pytest.approx((w * per).sum() / w.sum())


def test_hinge_by_hand():
    scores = np.array([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])
    labels = np.array([0, 1, 2])
    # the cs231n worked example: 2.9, 0 and 12.9, mean 5.27
    loss = LOSSES.create("multiclass_hinge")
    assert loss.forward(scores, labels) == pytest.approx((2.9 + 0 + 12.9) / 3)


def test_mse_and_bce_by_hand():
    pred = np.array([[1.0, 2.0], [0.0, -1.0]])
    target = np.array([[0.0, 2.0], [1.0, 1.0]])
    assert LOSSES.create("mse").forward(pred, target) == pytest.approx((1 + 0 + 1 + 4) / 4)
    z = np.array([[0.3], [-2.0], [8.0]])
    t = np.array([1.0, 0.0, 0.0])
    s = 1 / (1 + np.exp(-z[:, 0]))
    naive = -(t * np.log(s) + (1 - t) * np.log(1 - s))
    bce = LOSSES.create("binary_cross_entropy")
    assert bce.forward(z, t) == pytest.approx(naive.mean(), rel=1e-9)
    assert bce.correct(z, t) == 2
    # where the naive form takes log(0), the stable one gives the exact value, z itself
    assert bce.forward(np.array([[800.0]]), np.array([0.0])) == pytest.approx(800.0)


def test_class_weights_must_match_the_outputs():
    loss = LOSSES.create("softmax_cross_entropy", {"class_weights": [1.0, 2.0]})
    with pytest.raises(ConfigError) as err:
        loss.check_outputs(10)
    assert err.value.key == "class_weights"
    with pytest.raises(ConfigError) as err:
        LOSSES.create("softmax_cross_entropy", {"class_weights": [1.0, -2.0]})
    assert err.value.key == "class_weights[1]"


def _mlp(rng, dtype=np.float32):
    model = Sequential([Linear(64), _relu(), Linear(32), _relu(), Linear(10)])
    model.build((784,), rng, dtype)
    return model


def _relu():
    from nncli.nn.layers import LAYERS

    return LAYERS.create("relu")


def test_untrained_classifier_starts_near_ln10():
    # inputs like scaled pixels, in [0, 1]; the default (Xavier) initialization
    rng = np.random.default_rng(0)
    x = rng.random((500, 784), dtype=np.float32)
    y = rng.integers(0, 10, 500)
    loss = LOSSES.create("softmax_cross_entropy")
    value = loss.forward(_mlp(rng).forward(x), y)
    assert abs(value - math.log(10)) < 0.15
    # the tutorials' small-weight initialization puts it right on ln(10)
    small = Sequential([Linear(10, init={"type": "normal", "scale": 1e-3})])
    small.build((784,), rng, np.float32)
    assert loss.forward(small.forward(x), y) == pytest.approx(math.log(10), abs=0.01)


def test_weight_decay_raises_the_loss():
    rng = np.random.default_rng(0)
    model = _mlp(rng)
    x = rng.random((100, 784), dtype=np.float32)
    y = rng.integers(0, 10, 100)
    data_loss = LOSSES.create("softmax_cross_entropy").forward(model.forward(x), y)
    reg = Regularizer(l2=1e-2)
    penalty = reg.penalty(model)
    by_hand = (
        0.5
        * 1e-2
        * sum(float((model.params[f"layers.{i}.W"].astype(np.float64) ** 2).sum()) for i in (0, 2, 4))
    )
    assert penalty == pytest.approx(by_hand, rel=1e-5)
    assert data_loss + penalty > data_loss + 0.1
    # biases are left alone unless asked
    model.params["layers.0.b"][...] = 100.0
    assert reg.penalty(model) == pytest.approx(penalty)
    assert Regularizer(l2=1e-2, apply_to="all").penalty(model) > penalty + 100


@pytest.mark.parametrize("name", LOSSES.names())
def test_config_round_trip(name):
    loss = LOSSES.create(name)
    again = LOSSES.create(name, loss.get_config())
    assert again.get_config() == loss.get_config()


@pytest.mark.parametrize(
    ("name", "options", "make_target"),
    [
        ("softmax_cross_entropy", {"class_weights": [1.0, 5.0, 20.0]}, lambda r: r.integers(0, 3, 50)),
        ("multiclass_hinge", {"class_weights": [1.0, 5.0, 20.0]}, lambda r: r.integers(0, 3, 50)),
        (
            "binary_cross_entropy",
            {"class_weights": [1.0, 4.0]},
            lambda r: r.integers(0, 2, (50, 3)).astype(float),
        ),
        ("mse", {}, lambda r: r.standard_normal((50, 3))),
    ],
)
def test_a_split_mean_does_not_depend_on_the_batch_size(name, options, make_target):
    from nncli.nn.layers import LAYERS
    from nncli.nn.metrics import loss_and_accuracy

    rng = np.random.default_rng(0)
    model = Sequential([LAYERS.create("identity")])
    model.build((3,), rng, np.float64)
    x, y = rng.standard_normal((50, 3)), make_target(rng)
    loss = LOSSES.create(name, options)
    whole = loss.forward(x, y)
    for batch_size in (1, 7, 50):
        assert loss_and_accuracy(model, loss, x, y, batch_size)[0] == pytest.approx(whole, rel=1e-12)
