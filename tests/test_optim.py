import math
import pickle
import threading

import numpy as np
import pytest

from nncli.errors import CheckpointError, ConfigError
from nncli.nn.layers import LAYERS
from nncli.nn.model import Sequential
from nncli.nn.optim import OPTIMIZERS, clip_global_norm

# Update rules written out by hand, one step at a time, in float64 on one parameter.


def sgd_rule(p, grads, lr, momentum=0.0, nesterov=False):
    v = np.zeros_like(p)
    for g in grads:
        if momentum == 0:
            p = p - lr * g
        else:
            v = momentum * v + g
            p = p - lr * (g + momentum * v) if nesterov else p - lr * v
    return p


def adagrad_rule(p, grads, lr, eps=1e-8):
    s = np.zeros_like(p)
    for g in grads:
        s = s + g**2
        p = p - lr * g / (np.sqrt(s) + eps)
    return p


def rmsprop_rule(p, grads, lr, rho=0.9, eps=1e-8, momentum=0.0):
    s = np.zeros_like(p)
    v = np.zeros_like(p)
    for g in grads:
        s = rho * s + (1 - rho) * g**2
        if momentum == 0:
            p = p - lr * g / (np.sqrt(s) + eps)
        else:
            v = momentum * v + g / (np.sqrt(s) + eps)
            p = p - lr * v
    return p


def adam_rule(p, grads, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        p = p - lr * weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def adamw_rule(p, grads, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    return adam_rule(p, grads, lr, beta1, beta2, eps, weight_decay)


RULES = {
    "sgd": sgd_rule,
    "adagrad": adagrad_rule,
    "rmsprop": rmsprop_rule,
    "adam": adam_rule,
    "adamw": adamw_rule,
}

# eps=0.1 is large enough for a misplaced eps to show against gradients of order 1.
CASES = {
    "sgd": [
        {"lr": 0.1},
        {"lr": 0.1, "momentum": 0.9},
        {"lr": 0.1, "momentum": 0.9, "nesterov": True},
    ],
    "adagrad": [{"lr": 0.1}, {"lr": 0.1, "eps": 0.1}],
    "rmsprop": [{"lr": 0.01}, {"lr": 0.01, "rho": 0.5, "eps": 0.1, "momentum": 0.8}],
    "adam": [{"lr": 0.01}, {"lr": 0.01, "beta1": 0.5, "beta2": 0.9, "eps": 0.1}],
    "adamw": [{"lr": 0.01}, {"lr": 0.01, "weight_decay": 0.3, "eps": 0.1}],
}

ALL_CASES = [(name, kwargs) for name, cases in CASES.items() for kwargs in cases]

TOLERANCE = {np.float64: {"rtol": 1e-12, "atol": 1e-14}, np.float32: {"rtol": 2e-6, "atol": 1e-6}}


def make_params(dtype):
    rng = np.random.default_rng(0)
    return {
        "layers.0.W": rng.normal(size=(3, 2)).astype(dtype),
        "layers.0.b": rng.normal(size=2).astype(dtype),
    }


def make_grads(dtype, steps=3, seed=1):
    rng = np.random.default_rng(seed)
    return [
        {
            "layers.0.W": rng.normal(size=(3, 2)).astype(dtype),
            "layers.0.b": rng.normal(size=2).astype(dtype),
        }
        for _ in range(steps)
    ]


def test_every_registered_optimizer_has_cases():
    assert set(CASES) == set(OPTIMIZERS.names()) == set(RULES)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("name", "kwargs"), ALL_CASES)
def test_update_matches_rule_written_by_hand(name, kwargs, dtype):
    params = make_params(dtype)
    initial = {key: p.astype(np.float64) for key, p in params.items()}
    arrays = dict(params)
    grad_steps = make_grads(dtype)
    grads_before = [{key: g.copy() for key, g in grads.items()} for grads in grad_steps]

    optimizer = OPTIMIZERS.get(name)(**kwargs)
    for grads in grad_steps:
        optimizer.step(params, grads)

    for key, p in params.items():
        assert p is arrays[key]  # updated in place, never rebound
        assert p.dtype == dtype
        expected = RULES[name](
            initial[key], [grads[key].astype(np.float64) for grads in grad_steps], **kwargs
        )
        np.testing.assert_allclose(p, expected, **TOLERANCE[dtype])
        assert not np.allclose(p, initial[key])
    for state in optimizer.state.values():
        assert all(arr.dtype == dtype for arr in state.values())
    for grads, before in zip(grad_steps, grads_before, strict=True):
        for key in grads:
            np.testing.assert_array_equal(grads[key], before[key])


def test_adamw_decays_only_the_names_in_decayed():
    params = make_params(np.float64)
    initial = {key: p.copy() for key, p in params.items()}
    grad_steps = make_grads(np.float64)
    optimizer = OPTIMIZERS.get("adamw")(lr=0.01, weight_decay=0.5)
    optimizer.decayed = {"layers.0.W"}
    for grads in grad_steps:
        optimizer.step(params, grads)

    def expected(key, weight_decay):
        return adam_rule(
            initial[key], [g[key] for g in grad_steps], lr=0.01, weight_decay=weight_decay
        )

    np.testing.assert_allclose(params["layers.0.W"], expected("layers.0.W", 0.5), rtol=1e-12)
    np.testing.assert_allclose(params["layers.0.b"], expected("layers.0.b", 0.0), rtol=1e-12)
    assert not np.allclose(params["layers.0.b"], expected("layers.0.b", 0.5))


def test_clip_global_norm_scales_all_grads_together():
    grads = {"a": np.array([[3.0, 0.0], [0.0, 0.0]]), "b": np.array([0.0, 4.0])}  # norm 5
    assert clip_global_norm(grads, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(grads["a"], [[0.6, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(grads["b"], [0.0, 0.8])


def test_clip_global_norm_leaves_small_grads_alone():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([0.0, 4.0])}
    assert clip_global_norm(grads, 5.5) == pytest.approx(5.0)
    np.testing.assert_array_equal(grads["a"], [3.0, 0.0])
    np.testing.assert_array_equal(grads["b"], [0.0, 4.0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_optimizer_clips_before_its_update_without_touching_grads(dtype):
    params = make_params(dtype)
    initial = {key: p.astype(np.float64) for key, p in params.items()}
    (grads,) = make_grads(dtype, steps=1)
    norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
    before = {key: g.copy() for key, g in grads.items()}

    optimizer = OPTIMIZERS.get("sgd")(lr=0.1, clip_norm=norm / 4)
    optimizer.step(params, grads)

    assert optimizer.last_grad_norm == pytest.approx(norm, rel=1e-6)
    for key, p in params.items():
        assert p.dtype == dtype
        expected = initial[key] - 0.1 * before[key].astype(np.float64) / 4
        np.testing.assert_allclose(p, expected, **TOLERANCE[dtype])
        np.testing.assert_array_equal(grads[key], before[key])


def test_optimizer_does_not_scale_grads_under_clip_norm():
    params = make_params(np.float64)
    initial = {key: p.copy() for key, p in params.items()}
    (grads,) = make_grads(np.float64, steps=1)
    optimizer = OPTIMIZERS.get("sgd")(lr=0.1, clip_norm=1e6)
    optimizer.step(params, grads)
    for key, p in params.items():
        np.testing.assert_allclose(p, initial[key] - 0.1 * grads[key], rtol=1e-15)


def is_plain(value):
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str, np.ndarray))


@pytest.mark.parametrize(("name", "kwargs"), ALL_CASES)
def test_state_dict_round_trip_continues_bit_identically(name, kwargs):
    kwargs = {**kwargs, "clip_norm": 2.0}  # the grads' norm is about 3: clipping is active
    grad_steps = make_grads(np.float32, steps=6)

    straight = make_params(np.float32)
    optimizer = OPTIMIZERS.get(name)(**kwargs)
    for grads in grad_steps:
        optimizer.step(straight, grads)

    resumed = make_params(np.float32)
    first = OPTIMIZERS.get(name)(**kwargs)
    for grads in grad_steps[:3]:
        first.step(resumed, grads)
    saved = first.state_dict()
    assert is_plain(saved)
    second = OPTIMIZERS.get(name)(**kwargs)
    second.load_state_dict(pickle.loads(pickle.dumps(saved)))
    for grads in grad_steps[3:]:
        second.step(resumed, grads)

    for key in straight:
        np.testing.assert_array_equal(resumed[key], straight[key])


def test_state_dict_keeps_the_live_lr():
    optimizer = OPTIMIZERS.get("sgd")(lr=0.1)
    optimizer.lr = 0.025  # as the trainer does from the schedule
    fresh = OPTIMIZERS.get("sgd")(lr=0.1)
    fresh.load_state_dict(optimizer.state_dict())
    assert fresh.lr == 0.025
    assert fresh.get_config()["lr"] == 0.1


def test_state_dict_and_load_copy_their_arrays():
    params = make_params(np.float64)
    optimizer = OPTIMIZERS.get("adam")(lr=0.01)
    optimizer.step(params, make_grads(np.float64, steps=1)[0])
    saved = optimizer.state_dict()
    saved["state"]["layers.0.W"]["m"][...] = 7.0
    assert not np.any(optimizer.state["layers.0.W"]["m"] == 7.0)

    fresh = OPTIMIZERS.get("adam")(lr=0.01)
    fresh.load_state_dict(saved)
    saved["state"]["layers.0.W"]["m"][...] = 9.0
    np.testing.assert_array_equal(fresh.state["layers.0.W"]["m"], 7.0)


def test_loading_another_optimizers_state_is_a_checkpoint_error():
    params = make_params(np.float64)
    adam = OPTIMIZERS.get("adam")(lr=0.01)
    adam.step(params, make_grads(np.float64, steps=1)[0])
    with pytest.raises(CheckpointError, match='"adam"'):
        OPTIMIZERS.get("sgd")(lr=0.01).load_state_dict(adam.state_dict())


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_get_config_rebuilds_an_equal_optimizer(name):
    kwargs = {**CASES[name][-1], "clip_norm": 1.5}
    optimizer = OPTIMIZERS.get(name)(**kwargs)
    optimizer.lr = 123.0  # the live lr is state, not config
    config = optimizer.get_config()
    assert config == {**config, **kwargs}
    rebuilt = type(optimizer)(**config)
    assert rebuilt.get_config() == config
    assert config["lr"] == kwargs["lr"]


@pytest.mark.parametrize(
    ("name", "kwargs", "key"),
    [
        ("sgd", {"lr": 0.0}, "lr"),
        ("sgd", {"lr": -0.1}, "lr"),
        ("sgd", {"lr": "fast"}, "lr"),
        ("sgd", {"lr": 0.1, "momentum": 1.0}, "momentum"),
        ("sgd", {"lr": 0.1, "momentum": -0.5}, "momentum"),
        ("sgd", {"lr": 0.1, "nesterov": True}, "nesterov"),
        ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": "yes"}, "nesterov"),
        ("sgd", {"lr": 0.1, "clip_norm": 0.0}, "clip_norm"),
        ("adagrad", {"lr": 0.1, "eps": 0.0}, "eps"),
        ("rmsprop", {"lr": 0.1, "rho": 1.0}, "rho"),
        ("rmsprop", {"lr": 0.1, "momentum": 1.2}, "momentum"),
        ("adam", {"lr": 0.1, "beta1": 1.0}, "beta1"),
        ("adam", {"lr": 0.1, "beta2": -0.1}, "beta2"),
        ("adam", {"lr": 0.1, "eps": -1e-8}, "eps"),
        ("adamw", {"lr": 0.1, "weight_decay": -0.01}, "weight_decay"),
    ],
)
def test_bad_arguments_are_config_errors_keyed_by_name(name, kwargs, key):
    with pytest.raises(ConfigError) as err:
        OPTIMIZERS.get(name)(**kwargs)
    assert err.value.key == key


def packed_model():
    layers = [
        LAYERS.create("linear", {"units": 5}),
        LAYERS.create("batchnorm"),
        LAYERS.create("relu"),
        LAYERS.create("linear", {"units": 3}),
    ]
    model = Sequential(layers)
    model.build((4,), np.random.default_rng(0))
    return model


def fill_grads(model, rng):
    for g in model.grads.values():
        g[...] = rng.normal(size=g.shape)


@pytest.mark.parametrize(("name", "kwargs"), ALL_CASES)
@pytest.mark.parametrize("clip_norm", [None, 1.0])
def test_packed_step_is_bit_identical_to_one_parameter_at_a_time(name, kwargs, clip_norm):
    kwargs = {**kwargs, "clip_norm": clip_norm}
    per_name, packed = packed_model(), packed_model()
    opt_a, opt_b = OPTIMIZERS.get(name)(**kwargs), OPTIMIZERS.get(name)(**kwargs)
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    for step in range(6):
        fill_grads(per_name, rng_a)
        fill_grads(packed, rng_b)
        opt_a.step(per_name.params, per_name.grads)
        opt_b.step(packed.params, packed.grads, packed.flat)
        if step == 2:  # a checkpoint in the middle: the loaded state is packed again
            opt_b = OPTIMIZERS.get(name)(**kwargs)
            opt_b.load_state_dict(pickle.loads(pickle.dumps(opt_a.state_dict())))
    # every optimizer but AdamW (whose decay depends on the name) took the packed path
    assert (opt_b._packed is not None) == (name != "adamw") == opt_b.packable
    initial = packed_model().params
    for key in per_name.params:
        np.testing.assert_array_equal(packed.params[key], per_name.params[key])
        assert not np.array_equal(packed.params[key], initial[key])
    saved_a, saved_b = opt_a.state_dict(), opt_b.state_dict()
    assert saved_a["state"].keys() == saved_b["state"].keys()
    for key, state in saved_a["state"].items():
        for slot, array in state.items():
            np.testing.assert_array_equal(saved_b["state"][key][slot], array)


@pytest.mark.parametrize("apply_to", ["weights", "all"])
def test_packed_weight_penalty_matches_one_parameter_at_a_time(apply_to):
    from nncli.nn.regularizers import Regularizer

    per_name, packed = packed_model(), packed_model()
    for model in (per_name, packed):
        fill_grads(model, np.random.default_rng(1))
        for p in model.params.values():  # gamma is all ones and beta all zeros: make them differ
            p += np.random.default_rng(2).normal(size=p.shape).astype(p.dtype)
    before = {name: g.copy() for name, g in packed.grads.items()}
    flat, per_name.flat = per_name.flat, None  # the model without packing
    Regularizer(l2=0.3, l1=0.05, apply_to=apply_to).add_grads(per_name)
    Regularizer(l2=0.3, l1=0.05, apply_to=apply_to).add_grads(packed)
    per_name.flat = flat
    decayed = set(packed.param_names(decayed_only=True))
    for name, g in packed.grads.items():
        np.testing.assert_array_equal(g, per_name.grads[name])
        changed = not np.array_equal(g, before[name])
        assert changed == (apply_to == "all" or name in decayed), name


@pytest.mark.parametrize(("name", "kwargs"), [case for case in ALL_CASES if case[0] != "adamw"])
@pytest.mark.parametrize("clip_norm", [None, 1.0])
def test_a_packed_step_in_threads_is_bit_identical_to_one_in_one_thread(monkeypatch, name, kwargs, clip_norm):
    """The update is element-wise: the ranges `split_pass` cuts it into, and which thread runs
    each, change no number (MIN_SPLIT lowered so that the model's 53 parameters split in three)."""
    from nncli.nn import parallel

    monkeypatch.setattr(parallel, "MIN_SPLIT", 16)
    kwargs = {**kwargs, "clip_norm": clip_norm}
    one, split = packed_model(), packed_model()
    assert one.flat.params.size >= 3 * 16
    opt_one, opt_split = OPTIMIZERS.get(name)(**kwargs), OPTIMIZERS.get(name)(**kwargs)
    ranges = []
    update = type(opt_split)._update

    def spy(self, name, p, g, state, buf):
        ranges.append((threading.current_thread().name.split("_")[0], p.size))
        return update(self, name, p, g, state, buf)

    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    for _ in range(4):
        fill_grads(one, rng_a)
        fill_grads(split, rng_b)
        opt_one.step(one.params, one.grads, one.flat)
        with monkeypatch.context() as patch:
            patch.setattr(type(opt_split), "_update", spy)
            opt_split.step(split.params, split.grads, split.flat, threads=3)
    np.testing.assert_array_equal(split.flat.params, one.flat.params)
    for slot, array in opt_one._packed[1].items():
        np.testing.assert_array_equal(opt_split._packed[1][slot], array)
    # three ranges a step, cut at 32 and 48: the first in the caller's thread, two in helpers
    assert sorted(ranges) == [("MainThread", 32)] * 4 + [("nncli-pass", 5)] * 4 + [("nncli-pass", 16)] * 4

