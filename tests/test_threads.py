"""nncli/nn/threads.py and the trainer's ThreadChooser: the threads that run a batch's shards
are measured, and measured again on drift, without changing a number of the run; NNCLI_THREADS
forces them; a resumed run keeps the shards its checkpoint recorded."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import config_text

from nncli._openblas import thread_control
from nncli.builder import build_experiment
from nncli.config.schema import load_config
from nncli.errors import NncliError
from nncli.nn import parallel
from nncli.nn.parallel import ThreadSetting, resume_setting, thread_setting
from nncli.nn.threads import DriftWatch
from nncli.training import checkpoint
from nncli.training.callbacks import threads as chooser_module
from nncli.training.callbacks.threads import ThreadChooser
from nncli.training.trainer import Trainer

# the conftest CNN with augmentation (drawn from the run's generator between batches) and
# batches of 96: two shards of 48
CNN = config_text("cnn", {"name": "threads", "seed": 3, "train.batch_size": 96,
                          "data.augment": [{"random_shift": {"pixels": 1}}]})


@pytest.fixture
def two_cpus(monkeypatch):
    """numpy's own BLAS, held to one thread per shard for real, on what looks like 2 CPUs: the
    CNN's batches of 96 run as two shards of 48 (the last batch, of 40, whole). NNCLI_THREADS
    is `held`: the threads of the shards are measured, the BLAS's own threads are not (tests
    that measure those set NNCLI_THREADS themselves)."""
    control = thread_control()
    if control is None:
        pytest.skip("threadpoolctl cannot hold this numpy's BLAS to one thread")
    monkeypatch.setenv("NNCLI_THREADS", "held")
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(control, "initial", max(2, control.initial))
    return control


def params(run) -> dict:
    return checkpoint.load(run / "checkpoints" / "last.pkl")["model"]["params"]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def force_workers(monkeypatch, workers: int | None) -> list:
    """The trainer's measurements still run, then choose `workers` (None: 1 and 2 by turns), as
    a machine busier or quieter than this one would have; returns the list of choices made."""
    made = []

    def measure(model, run, batch, **options):
        choice = real(model, run, batch, **options)
        choice.workers = model.workers = workers or 1 + len(made) % 2
        made.append(choice)
        return choice

    real = chooser_module.measure
    monkeypatch.setattr(chooser_module, "measure", measure)
    return made


def test_the_threads_measured_change_no_number(workdir, nncli, two_cpus, monkeypatch):
    (workdir / "cnn.yaml").write_text(CNN)
    runs = {}
    for workers in (1, 2):
        with monkeypatch.context() as patch:
            made = force_workers(patch, workers)
            result = nncli("train", "cnn.yaml", "--run-dir", f"w{workers}")
            assert result.exit_code == 0, result.output
        assert [c.workers for c in made] == [workers] and made[0].shards == [48, 48]
        runs[workers] = params(workdir / f"w{workers}")
    # one thread, or one a shard: the same shards, the same numbers, bit for bit
    assert same(runs[1], runs[2])
    # measured for real, or not at all (NNCLI_THREADS=2): measuring draws nothing from the
    # run's generator (the augmentation draws from it) and changes no weight
    result = nncli("train", "cnn.yaml", "--run-dir", "auto")
    assert result.exit_code == 0
    assert "threads: measured before the first batch: 2 shards of 48: in 1 thread" in result.stderr
    monkeypatch.setenv("NNCLI_THREADS", "2")
    forced = nncli("train", "cnn.yaml", "--run-dir", "forced")
    assert "threads: 2 shards of a batch of 96 in 2 threads (NNCLI_THREADS)" in forced.stderr
    assert same(params(workdir / "auto"), runs[1]) and same(params(workdir / "forced"), runs[1])
    # measured again and again mid-epoch, as on a machine whose load keeps changing
    monkeypatch.setenv("NNCLI_THREADS", "held")
    with monkeypatch.context() as patch:
        made = force_workers(patch, None)  # 1 and 2 threads by turns
        calls = iter(range(10**6))
        patch.setattr(DriftWatch, "add", lambda self, seconds: next(calls) % 3 == 2)  # every third step
        flipping = nncli("train", "cnn.yaml", "--run-dir", "flipping")
    assert {c.workers for c in made} == {1, 2}, flipping.stderr
    assert flipping.exit_code == 0 and flipping.stderr.count("measured again") >= 5, flipping.stderr
    assert same(params(workdir / "flipping"), runs[1])
    # a whole batch in one BLAS thread (NNCLI_THREADS=1) has other roundings, not other results
    monkeypatch.setenv("NNCLI_THREADS", "1")
    assert nncli("train", "cnn.yaml", "--run-dir", "one", "--quiet").exit_code == 0
    one = params(workdir / "one")
    assert not same(one, runs[1])
    assert all(np.allclose(one[k], runs[1][k], rtol=1e-3, atol=1e-5) for k in one)


def test_a_resumed_run_keeps_its_shards_on_another_machine(workdir, nncli, two_cpus, monkeypatch):
    (workdir / "cnn.yaml").write_text(CNN)
    assert nncli("train", "cnn.yaml", "--run-dir", "whole", "--quiet").exit_code == 0
    assert nncli("train", "cnn.yaml", "--run-dir", "cut", "--quiet", "--set", "train.epochs=1").exit_code == 0
    saved = checkpoint.load(workdir / "cut" / "checkpoints" / "last.pkl")
    assert saved["threads"] == {"shards": 2, "blas": False, "blas_threads": None, "measured": True}
    # resumed where the BLAS has one thread: a new run would train whole, the resumed one keeps 2 shards
    monkeypatch.setattr(two_cpus, "initial", 1)
    assert thread_setting() == ThreadSetting(1, True, False, choose_blas=False)
    result = nncli("train", "--resume", "cut", "--set", "train.epochs=2")
    assert result.exit_code == 0, result.output
    assert "threads: measured before the first batch: 2 shards of 48" in result.stderr
    assert same(params(workdir / "cut"), params(workdir / "whole"))


def test_resume_setting():
    auto = ThreadSetting(4, True, False, choose_blas=True)
    held = ThreadSetting(4, True, False)
    for setting in (auto, held):
        assert resume_setting({"shards": 2, "blas": False}, setting) == ThreadSetting(2, True, False)
        # NNCLI_THREADS=blas at the run's start (or a record from before `measured`): blas again
        assert resume_setting({"shards": 2, "blas": True}, setting) == ThreadSetting(1, False, True)
        assert resume_setting({"shards": 1, "blas": True, "blas_threads": None, "measured": False},
                              setting) == ThreadSetting(1, False, True)
    # the BLAS's 2 threads, measured faster at the run's start: as many again, still watched
    chosen = {"shards": 2, "blas": True, "blas_threads": 2, "measured": True}
    assert resume_setting(chosen, auto) == ThreadSetting(2, True, True, blas_threads=2)
    assert resume_setting(chosen, held) == ThreadSetting(2, True, False)  # NNCLI_THREADS=held wins
    forced = ThreadSetting(3, False, False)  # NNCLI_THREADS=3 wins over the record
    assert resume_setting({"shards": 2, "blas": False}, forced) == forced
    assert resume_setting(chosen, forced) == forced
    for damaged in (None, "2", {"shards": 0, "blas": False}, {"shards": True, "blas": False}, {"shards": 2},
                    {**chosen, "blas_threads": 0}, {**chosen, "blas_threads": 10**9}):
        resumed = resume_setting(damaged, auto)
        # a resumed run never takes other roundings than its own by measurement
        assert resumed in (held, ThreadSetting(1, False, True)), damaged
    assert resume_setting(None, auto) == held


def test_nncli_threads_values(two_cpus):
    assert thread_setting({}) == ThreadSetting(2, True, False, choose_blas=True)
    assert thread_setting({"NNCLI_THREADS": " Auto "}) == ThreadSetting(2, True, False, choose_blas=True)
    assert thread_setting({"NNCLI_THREADS": "held"}) == ThreadSetting(2, True, False)
    assert thread_setting({"NNCLI_THREADS": "3"}) == ThreadSetting(3, False, False)
    assert thread_setting({"NNCLI_THREADS": "blas"}) == ThreadSetting(1, False, True)
    for wrong in ("0", "many", "-2", "2.5"):
        with pytest.raises(NncliError, match=r"NNCLI_THREADS must be a positive integer .* auto, held or"):
            thread_setting({"NNCLI_THREADS": wrong})


def test_blas_mode_runs_whole_with_the_blas_threads(two_cpus, tmp_path, monkeypatch):
    (tmp_path / "cnn.yaml").write_text(CNN)
    monkeypatch.setenv("NNCLI_THREADS", "blas")
    exp = build_experiment(load_config(tmp_path / "cnn.yaml"), tmp_path)
    assert exp.model.shards_for(96) is None and not exp.model.hold_blas and not exp.model.auto_workers
    monkeypatch.delenv("NNCLI_THREADS")
    exp = build_experiment(load_config(tmp_path / "cnn.yaml"), tmp_path)
    assert exp.model.shards_for(96) == [48, 48] and exp.model.hold_blas and exp.model.auto_workers


def feed(watch: DriftWatch, seconds: float, steps: int) -> list[int]:
    """The steps (counted from 1) at which `watch` said the times drifted."""
    return [i for i in range(1, steps + 1) if watch.add(seconds)]


def test_drift_is_two_windows_off_the_reference_and_backs_off():
    watch = DriftWatch(window=4, margin=1.5, gap=8)
    assert feed(watch, 0.010, 40) == []  # the first window is the reference; steady times
    assert feed(watch, 0.014, 40) == []  # within the margin
    assert feed(watch, 0.030, 8) == [8]  # two windows off: after 48 steps, past the gap
    watch.reset(changed=False)  # measured, the same choice: the gap doubles
    assert watch.gap == 16
    assert feed(watch, 0.030, 4) == []  # the new reference: a machine busy for good is no drift
    assert feed(watch, 0.005, 12) == [12]  # faster too (the other program ended), 16 steps on
    watch.reset(changed=True)
    assert watch.gap == 8
    watch = DriftWatch(window=4, margin=1.5, gap=8)
    assert feed(watch, 0.010, 4) == [] and feed(watch, 0.030, 4) == []  # one window off only
    assert feed(watch, 0.010, 8) == []


def test_the_trainer_measures_again_when_step_times_drift(tmp_path, two_cpus, monkeypatch):
    (tmp_path / "cnn.yaml").write_text(CNN)
    exp = build_experiment(load_config(tmp_path / "cnn.yaml", ["train.epochs=3"]), tmp_path)
    clock = iter(np.cumsum([0.01] * 14 + [0.05] * 1000))  # a step of 10 ms, then of 50
    monkeypatch.setattr(chooser_module, "perf_counter", lambda: float(next(clock)))
    lines = []
    chooser = ThreadChooser(lines.append, DriftWatch(window=2, margin=1.5, gap=4))
    Trainer(exp, [chooser]).fit()
    assert lines[0].startswith("threads: measured before the first batch: 2 shards of 48")
    assert len(lines) == 2, lines
    again = "threads: step times went from 10.00 to 50.00 ms; measured again: 2 shards of 48"
    assert lines[1].startswith(again)


def test_evaluation_measures_on_its_own_first_batches_and_gives_the_same_outputs(two_cpus, monkeypatch):
    from nncli.nn.layers import LAYERS
    from nncli.nn.losses import LOSSES
    from nncli.nn.metrics import loss_and_accuracy
    from nncli.nn.model import Sequential

    spec = [("conv2d", {"filters": 3, "kernel": 3, "padding": 1}), ("relu", {}), ("maxpool2d", {"size": 2}),
            ("flatten", {}), ("linear", {"units": 5})]
    model = Sequential([LAYERS.create(name, options) for name, options in spec])
    model.build((1, 8, 8), np.random.default_rng(0), np.float32)
    model.threads, model.hold_blas, model.auto_workers = 2, True, True
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((64 * 9, 1, 8, 8)).astype(np.float32), rng.integers(0, 5, 64 * 9)
    loss = LOSSES.create("softmax_cross_entropy", {})
    ran = []
    forward = Sequential.forward

    def spy(self, xb, training=False, hook=None):
        ran.append(self.workers)
        return forward(self, xb, training, hook)

    monkeypatch.setattr(Sequential, "forward", spy)
    measured = loss_and_accuracy(model, loss, x, y, batch_size=64)
    assert ran[:4] == [1, 2, 2, 1] and len(set(ran[4:])) == 1 and model.workers == ran[4]
    for workers in (1, 2):  # the same outputs, whichever threads ran them
        model.workers = workers
        assert loss_and_accuracy(model, loss, x, y, batch_size=64) == measured
    model.workers = None  # too few batches to measure: one thread a shard, as before
    ran.clear()
    loss_and_accuracy(model, loss, x[: 64 * 7], y[: 64 * 7], batch_size=64)
    assert set(ran) == {None}


def test_a_huge_shard_count_makes_no_more_replicas_than_a_batch_needs(two_cpus):
    from nncli.nn.layers import LAYERS
    from nncli.nn.model import Sequential

    # NNCLI_THREADS=1000000000, or a checkpoint's record saying so: shards of 32 rows at least
    assert resume_setting({"shards": 10**9, "blas": False}, ThreadSetting(2, True, False)).shards == 10**9
    model = Sequential([LAYERS.create("conv2d", {"filters": 2, "kernel": 3}), LAYERS.create("flatten", {})])
    model.build((1, 6, 6), np.random.default_rng(0), np.float32)
    model.threads, model.hold_blas = 10**9, True
    x = np.zeros((128, 1, 6, 6), np.float32)
    assert model.forward(x, training=True).shape == (128, 32)
    assert model.shards_for(128) == [32] * 4 and len(model._shards.replicas) == 4


@pytest.mark.parametrize(
    "units, batch, shards",
    [((512, 256, 10), 128, [64, 64]), ((256, 128, 10), 64, None), ((256, 128, 10), 160, [80, 80])],
)
def test_models_of_products_shard_where_each_shard_has_work_enough(two_cpus, units, batch, shards):
    from nncli.nn.layers import LAYERS
    from nncli.nn.model import Sequential
    from nncli.nn.parallel import MIN_SHARD_WORK

    layers = []
    for n in units:
        layers += [LAYERS.create("linear", {"units": n}), LAYERS.create("relu", {})]
    model = Sequential(layers[:-1])
    model.build((784,), np.random.default_rng(0), np.float32)
    model.threads = 2
    assert model.shards_for(batch) == shards  # the MNIST MLP's batches, the quickstart's, and bigger ones
    per_shard = model.num_params() * (batch // 2)
    assert (per_shard >= MIN_SHARD_WORK) == (shards is not None)


def test_a_measurement_falls_due_unprompted_at_growing_intervals(tmp_path, two_cpus, monkeypatch):
    watch = DriftWatch(window=100, recheck=4, recheck_factor=3)
    due = [i for i in range(1, 40) if (watch.add(0.01), watch.due())[1]]
    assert due == [4, 12, 36]  # steady times: no drift, and yet measured again
    assert not DriftWatch(recheck=None).due()
    # in a run: steps steadily slow from the start (a choice made in a bad moment) are measured again
    (tmp_path / "cnn.yaml").write_text(CNN)
    exp = build_experiment(load_config(tmp_path / "cnn.yaml", ["train.epochs=3"]), tmp_path)
    clock = iter(np.cumsum([0.01] * 1000))
    monkeypatch.setattr(chooser_module, "perf_counter", lambda: float(next(clock)))
    lines = []
    Trainer(exp, [ThreadChooser(lines.append, DriftWatch(window=100, recheck=5, recheck_factor=4))]).fit()
    assert len(lines) == 3, lines
    assert lines[1].startswith("threads: 5 steps on, measured again: 2 shards of 48")
    assert lines[2].startswith("threads: 20 steps on, measured again: 2 shards of 48")
