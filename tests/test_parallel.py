"""nncli/nn/parallel.py: a training batch run as shards in threads gives the serial pass's loss
and, up to rounding, its gradients; it is deterministic, resumes exactly, and stays serial
where it must (batch norm, dropout, small batches, a BLAS it cannot control)."""

from __future__ import annotations

import copy
import json
import pickle
import re
import threading
from contextlib import contextmanager

import numpy as np
import pytest

from nncli.errors import NncliError
from nncli.nn import model as model_module
from nncli.nn import parallel
from nncli.nn.layers import LAYERS
from nncli.nn.losses import LOSSES
from nncli.nn.model import Sequential
from nncli.nn.parallel import MIN_SHARD, shard_bounds, threads_allowed
from nncli.training.callbacks import threads as chooser_module


class FakeControl:
    """A BLAS thread control that only records what it was told: the tests below then shard
    whatever BLAS numpy has. Its count is per thread, as MKL's is: a shard that ran without
    entering `one_thread()` itself would see the count the BLAS started with."""

    def __init__(self, threads: int = 2):
        self.initial = threads
        self.calls: list[int] = []  # the main thread's: 1 on entering one_thread, then the count back
        self.local = threading.local()

    @property
    def current(self) -> int:
        return self.threads()

    def threads(self) -> int:
        return getattr(self.local, "n", self.initial)

    def one_thread(self):
        return self.limit(1)

    @contextmanager
    def limit(self, threads: int):
        previous = self.threads()
        self._set(threads)
        try:
            yield
        finally:
            self._set(previous)

    def _set(self, n: int) -> None:
        if threading.current_thread() is threading.main_thread():
            self.calls.append(n)
        self.local.n = n


@pytest.fixture
def control(monkeypatch):
    fake = FakeControl()
    monkeypatch.setattr(model_module, "thread_control", lambda: fake)
    monkeypatch.setattr(parallel, "thread_control", lambda: fake)
    monkeypatch.setattr(chooser_module, "thread_control", lambda: fake)
    return fake


@pytest.fixture
def dense_shards(monkeypatch):
    """Let a model of linear layers shard too (by itself it does not: see
    `Layer.elementwise_bound`), so that the dense layers' sharding is tested."""
    monkeypatch.setattr(LAYERS.get("tanh"), "elementwise_bound", True)


CNN = [
    ("conv2d", {"filters": 4, "kernel": 3, "padding": 1}),
    ("relu", {}),
    ("maxpool2d", {"size": 2}),
    ("conv2d", {"filters": 6, "kernel": 3, "padding": 1}),
    ("relu", {}),
    ("maxpool2d", {"size": 2}),
    ("flatten", {}),
    ("linear", {"units": 16, "init": "he"}),
    ("relu", {}),
    ("linear", {"units": 5}),
]
MLP = [("linear", {"units": 32, "init": "he"}), ("tanh", {}), ("linear", {"units": 5})]
SHAPES = {"cnn": (1, 8, 8), "mlp": (20,)}


def make_model(spec, dtype, input_shape, threads=2) -> Sequential:
    model = Sequential([LAYERS.create(name, dict(options)) for name, options in spec])
    model.build(input_shape, np.random.default_rng(0), dtype)
    model.threads = threads
    return model


def data(input_shape, n, dtype, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *input_shape)).astype(dtype)
    if len(input_shape) == 1:
        x[:, :3] = 0  # blank input columns: the first linear layer skips them, shard by shard
    return x, rng.integers(0, 5, n)


def step(model, loss, x, y) -> tuple[float, np.ndarray, np.ndarray]:
    value = loss.forward(model.forward(x, training=True), y)
    dx = model.backward(loss.backward())
    return value, model.flat.grads.copy(), dx


@pytest.mark.parametrize("dtype, tolerance", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("net, n", [("cnn", 128), ("cnn", 65), ("mlp", 128), ("mlp", 97)])
def test_shards_give_the_serial_loss_and_gradients(control, dense_shards, net, n, dtype, tolerance):
    spec = CNN if net == "cnn" else MLP
    model = make_model(spec, dtype, SHAPES[net])
    loss = LOSSES.create("softmax_cross_entropy", {})
    x, y = data(SHAPES[net], n, dtype)
    assert model.shards_for(n) == np.diff(shard_bounds(n, 2)).tolist()
    for needs_input_grad in (False, True):
        model.input_gradient(needs_input_grad)
        with model.serial():
            serial = step(model, loss, x, y)
        sharded = step(model, loss, x, y)
        # the loss runs once, on the whole batch, but the shards' forward products have other
        # GEMM shapes than the serial pass's, which every BLAS may round differently
        assert sharded[0] == pytest.approx(serial[0], rel=tolerance)
        scale = np.abs(serial[1]).max()
        assert np.abs(sharded[1] - serial[1]).max() <= tolerance * scale
        if needs_input_grad:
            assert sharded[2].shape == x.shape
            assert np.abs(sharded[2] - serial[2]).max() <= tolerance * np.abs(serial[2]).max()
        else:
            assert sharded[2] is None and serial[2] is None
    # the BLAS held to one thread during each sharded pass, then given back its two
    assert control.calls == [1, 2] * 4 and control.current == 2


def test_sharded_steps_are_deterministic(control):
    x, y = data(SHAPES["cnn"], 128, np.float32)
    loss = LOSSES.create("softmax_cross_entropy", {})
    a, b = (make_model(CNN, np.float32, SHAPES["cnn"], threads=3) for _ in range(2))
    for model in (a, b):
        for _ in range(3):
            step(model, loss, x, y)
            np.subtract(model.flat.params, 0.1 * model.flat.grads, out=model.flat.params)
    assert a.shards_for(128) == [43, 43, 42]
    assert a.shards_for(3 * MIN_SHARD + 2) == [MIN_SHARD + 1, MIN_SHARD + 1, MIN_SHARD]
    assert np.array_equal(a.flat.params, b.flat.params)


def test_workers_run_in_their_own_threads_the_callers_error_state_and_one_blas_thread(
    control, dense_shards, monkeypatch
):
    model = make_model(MLP, np.float32, SHAPES["mlp"])
    seen = []
    relu_forward = LAYERS.get("tanh").forward

    def spy(self, x, training):
        seen.append((threading.current_thread().name, np.geterr()["over"], control.threads()))
        return relu_forward(self, x, training)

    monkeypatch.setattr(LAYERS.get("tanh"), "forward", spy)
    x, _ = data(SHAPES["mlp"], 64, np.float32)
    with np.errstate(over="ignore"):
        model.forward(x, training=True)
    assert len(seen) == 2
    assert {name.startswith("nncli-shard") for name, _, _ in seen} == {True, False}
    assert {state for _, state, _ in seen} == {"ignore"}
    assert [blas for _, _, blas in seen] == [1, 1]  # a per-thread count (MKL's) is held in each
    assert control.current == 2


def test_an_error_in_a_shard_surfaces_and_the_blas_gets_its_threads_back(control, dense_shards,
                                                                         monkeypatch):
    model = make_model(MLP, np.float32, SHAPES["mlp"])
    x, _ = data(SHAPES["mlp"], 64, np.float32)
    model.forward(x, training=True)  # the replicas exist now

    def broken(self, x, training):
        if threading.current_thread().name.startswith("nncli-shard"):
            raise RuntimeError("shard failed")
        return x

    monkeypatch.setattr(LAYERS.get("tanh"), "forward", broken)
    with pytest.raises(RuntimeError, match="shard failed"):
        model.forward(x, training=True)
    assert control.current == 2


@pytest.mark.parametrize("extra", [("dropout", {"p": 0.1}), ("batchnorm", {})])
def test_batch_statistics_and_random_draws_keep_a_model_serial(control, dense_shards, extra):
    spec = [MLP[0], extra, *MLP[1:]]
    model = make_model(spec, np.float32, SHAPES["mlp"])
    assert not LAYERS.get(extra[0]).shardable
    assert model.shards_for(128) is None
    x, _ = data(SHAPES["mlp"], 128, np.float32)
    model.forward(x, training=True)
    assert control.calls == []


def test_models_of_matrix_products_small_batches_and_one_thread_run_serially(control):
    mlp = make_model(MLP, np.float32, SHAPES["mlp"])
    assert mlp.shards_for(128) is None  # products too small to pay for shards (MIN_SHARD_WORK)
    x, _ = data(SHAPES["mlp"], 128, np.float32)
    mlp.forward(x, training=True)
    mlp.predict(x)
    model = make_model(CNN, np.float32, SHAPES["cnn"])
    assert model.shards_for(2 * MIN_SHARD - 1) is None
    assert model.shards_for(2 * MIN_SHARD) == [MIN_SHARD, MIN_SHARD]
    model.forward(data(SHAPES["cnn"], 2 * MIN_SHARD - 1, np.float32)[0], training=True)
    model.threads = 1
    model.forward(data(SHAPES["cnn"], 128, np.float32)[0], training=True)
    assert control.calls == []


def test_evaluation_and_predict_shard_with_the_serial_outputs(control):
    model = make_model(CNN, np.float32, SHAPES["cnn"])
    x, _ = data(SHAPES["cnn"], 200, np.float32)
    with model.serial():
        serial = model.predict(x, batch_size=128)
    sharded = model.predict(x, batch_size=128)  # batches of 128 and 72: two shards each
    np.testing.assert_allclose(sharded, serial, rtol=1e-5, atol=1e-6)
    assert control.calls == [1, 2, 1, 2]


def test_no_blas_control_no_shards(monkeypatch):
    monkeypatch.setattr(model_module, "thread_control", lambda: None)
    monkeypatch.setattr(parallel, "thread_control", lambda: None)
    model = make_model(CNN, np.float32, SHAPES["cnn"])
    assert model.shards_for(128) is None
    monkeypatch.setenv("NNCLI_THREADS", "4")
    assert threads_allowed() == 1


@pytest.mark.parametrize(
    "n, threads, bounds",
    [
        (128, 2, [0, 64, 128]),
        (97, 2, [0, 49, 97]),
        (80, 3, [0, 40, 80]),  # no shard under MIN_SHARD (32) rows
        (100, 3, [0, 34, 67, 100]),
        (63, 2, None),
        (128, 1, None),
    ],
)
def test_shard_bounds(n, threads, bounds):
    assert shard_bounds(n, threads) == bounds


def test_threads_allowed_follows_the_environment(control, monkeypatch):
    monkeypatch.delenv("NNCLI_THREADS", raising=False)
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    control.initial = 3  # OPENBLAS_NUM_THREADS=3, as a sweep of jobs on 12 cores sets it
    assert threads_allowed() == 3
    control.initial = 8
    assert threads_allowed() == 4  # no more than the CPUs the process may run on
    assert threads_allowed({"NNCLI_THREADS": "1"}) == 1
    assert threads_allowed({"NNCLI_THREADS": "6"}) == 6
    for wrong in ("0", "two", "-1"):
        with pytest.raises(NncliError, match="NNCLI_THREADS must be a positive integer"):
            threads_allowed({"NNCLI_THREADS": wrong})


def test_a_sharded_model_copies_and_pickles(control):
    model = make_model(CNN, np.float32, SHAPES["cnn"])
    x, _ = data(SHAPES["cnn"], 64, np.float32)
    model.forward(x, training=True)
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert twin.threads == 2
        np.testing.assert_array_equal(twin.forward(x, training=True), model.forward(x, training=True))


def test_gradient_checks_run_serially(control):
    from nncli.nn.gradcheck import check_model

    model = make_model(CNN[3:], np.float64, (2, 4, 4))
    x, y = data((2, 4, 4), 40, np.float64)
    results = check_model(model, LOSSES.create("softmax_cross_entropy", {}), x, y, samples=3)
    assert all(r.passed for r in results)
    assert control.calls == [] and model.threads == 2


# The commands: training, its resume and its non-finite report, and `nncli time`, sharded

# the conftest's "cnn" config (mnist_small, conv2d 4 filters, relu, maxpool2d, flatten, linear;
# 2 epochs in batches of 100): the batches a shardable model splits in two


def final_params(run) -> dict:
    from nncli.training import checkpoint

    return checkpoint.load(run / "checkpoints" / "last.pkl")["model"]["params"]


def test_sharded_training_is_deterministic_and_resumes_exactly(workdir, nncli, control, monkeypatch,
                                                               make_config):
    monkeypatch.setenv("NNCLI_THREADS", "2")
    make_config(workdir / "cnn.yaml", "cnn")
    for run in ("a", "b"):
        assert nncli("train", "cnn.yaml", "--run-dir", run, "--quiet").exit_code == 0
    assert nncli("train", "cnn.yaml", "--run-dir", "c", "--quiet", "--set", "train.epochs=1").exit_code == 0
    assert nncli("train", "--resume", "c", "--quiet", "--set", "train.epochs=2").exit_code == 0
    assert control.calls  # it did shard: 10 batches of 100, two shards of 50
    a = final_params(workdir / "a")
    for run in ("b", "c"):
        params = final_params(workdir / run)
        assert all(np.array_equal(params[k], a[k]) for k in a), run
    monkeypatch.setenv("NNCLI_THREADS", "1")
    assert nncli("train", "cnn.yaml", "--run-dir", "serial", "--quiet").exit_code == 0
    serial = final_params(workdir / "serial")
    assert all(np.allclose(serial[k], a[k], rtol=1e-3, atol=1e-5) for k in a)  # rounding apart


def test_a_sharded_cnn_reports_a_non_finite_loss(workdir, nncli, control, monkeypatch, make_config):
    monkeypatch.setenv("NNCLI_THREADS", "2")
    make_config(workdir / "cnn.yaml", "cnn")
    result = nncli("train", "cnn.yaml", "--run-dir", "r", "--quiet", "--set", "optimizer.lr=1.0e+30")
    assert result.exit_code == 3, result.output
    report = json.loads((workdir / "r" / "nan_report.json").read_text())
    assert [layer["index"] for layer in report["layers"]] == [0, 1, 2, 3, 4]
    # the ReLU configured before the pool runs after it, as in training (Sequential's order)
    assert report["layers"][1]["activations"]["shape"] == [100, 14, 14, 4]
    assert report["layers"][0]["grads"]["W"]["shape"] == [4, 1, 3, 3]


def test_time_says_how_training_shards_the_step(workdir, nncli, control, monkeypatch, make_config):
    make_config(workdir / "cnn.yaml", "cnn")
    monkeypatch.setenv("NNCLI_THREADS", "2")
    result = nncli("time", "cnn.yaml", "--iters", 2, "--warmup", 0)
    assert result.exit_code == 0, result.output
    line = (r"^training runs this step as 2 shards of 50: in 1 thread [\d.]+ ms, in 2 threads [\d.]+ ms"
            r" a step \(median, alternating\) -> 2 threads, as NNCLI_THREADS forces")
    assert re.search(line, result.stdout, re.MULTILINE), result.stdout
    # the sharded figures are of steps that did run as shards, in one thread and in two
    forwards = []
    run_forward = parallel.Shards.forward

    def counted(self, x, bounds, training=True):
        forwards.append(list(np.diff(bounds)))
        return run_forward(self, x, bounds, training)

    with monkeypatch.context() as patch:
        patch.setattr(parallel.Shards, "forward", counted)
        report = json.loads(nncli("time", "cnn.yaml", "--iters", 1, "--warmup", 0, "--json").stdout)
    # (one untimed pass each way, then blocks of them: as the trainer measures)
    assert len(forwards) >= 4 and all(shards == [50, 50] for shards in forwards)
    sharded = report["sharded"]
    assert sharded["shards"] == [50, 50] and isinstance(sharded["step_ms"], float) and sharded["step_ms"] > 0
    assert sharded["threads"] == 2 and not sharded["measured"]
    assert sharded["step_ms_by_threads"]["2"] == sharded["step_ms"] and sharded["step_ms_by_threads"]["1"] > 0
    monkeypatch.delenv("NNCLI_THREADS")  # measured: training takes the faster
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    report = json.loads(nncli("time", "cnn.yaml", "--iters", 1, "--warmup", 0, "--json").stdout)["sharded"]
    assert report["measured"] and report["step_ms"] == min(report["step_ms_by_threads"].values())
    monkeypatch.setenv("NNCLI_THREADS", "1")
    result = nncli("time", "cnn.yaml", "--iters", 1, "--warmup", 0)
    assert "shards" not in result.stdout
    report = json.loads(nncli("time", "cnn.yaml", "--iters", 1, "--warmup", 0, "--json").stdout)
    assert report["sharded"] is None


def test_split_pass_runs_ranges_by_16s_in_threads_with_the_callers_error_state(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_SPLIT", 16)
    seen = []

    def record(lo, hi):
        seen.append((lo, hi, threading.current_thread().name.split("_")[0], np.geterr()["over"]))

    with np.errstate(over="ignore"):
        parallel.split_pass(record, 100, 4)
    assert sorted(seen) == [(0, 32, "MainThread", "ignore"), (32, 64, "nncli-pass", "ignore"),
                            (64, 80, "nncli-pass", "ignore"), (80, 100, "nncli-pass", "ignore")]
    seen.clear()
    parallel.split_pass(record, 40, 4)  # ranges of 16 at least: two
    assert sorted(lo_hi[:2] for lo_hi in seen) == [(0, 32), (32, 40)]
    seen.clear()
    parallel.split_pass(record, 31, 4)  # one
    assert seen == [(0, 31, "MainThread", "warn")]

    def fail_in_a_helper(lo, hi):
        record(lo, hi)
        if lo > 0:
            raise ValueError(f"range {lo}:{hi}")

    seen.clear()
    with pytest.raises(ValueError, match="range 32:64"):
        parallel.split_pass(fail_in_a_helper, 64, 2)
    assert len(seen) == 2  # the caller's range ran too, and the helper's error came after it


def test_the_update_runs_in_as_many_threads_as_the_batch_did(control, dense_shards, monkeypatch):
    from nncli.nn import optim
    from nncli.nn.step import step as train_step

    model = make_model(MLP, np.float32, SHAPES["mlp"])
    loss = LOSSES.create("softmax_cross_entropy", {})
    x, y = data(SHAPES["mlp"], 128, np.float32)
    told = []
    sgd = optim.OPTIMIZERS.create("sgd", {"lr": 0.1, "momentum": 0.9})
    monkeypatch.setattr(sgd, "step", lambda *args, threads=1: told.append(threads))
    train_step(model, loss, sgd, x, y)  # two shards, one thread each
    model.workers = 1
    train_step(model, loss, sgd, x, y)  # two shards, one after the other
    with model.serial():
        train_step(model, loss, sgd, x, y)  # whole
    model.workers, model.hold_blas, model.blas_threads = None, False, 2
    train_step(model, loss, sgd, x, y)  # whole, the BLAS in its own threads (they spin after)
    assert told == [2, 1, 1, 1]
