"""nncli/nn/threads.py and the trainer's ThreadChooser: the threads that run a batch's shards
are measured, and measured again on drift, without changing a number of the run; NNCLI_THREADS
forces them; a resumed run keeps the shards its checkpoint recorded."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import config_text

from nncli._openblas import thread_control
from nncli.builder import build_experiment
from nncli.config.schema import load_config
from nncli.errors import NncliError
from nncli.nn import parallel
from nncli.nn.parallel import ThreadSetting, resume_setting, thread_setting
from nncli.nn.threads import BLAS, BLAS_SPIN_S, Choice, DriftWatch, Trials
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
    # the threads changed again and again mid-epoch, as on a machine whose load keeps changing:
    # every trial switches, one every 9 steps (3 in the chosen way, 3 the other, 3 the chosen)
    monkeypatch.setenv("NNCLI_THREADS", "held")
    with monkeypatch.context() as patch:
        fixed_choice(patch, 1)
        patch.setattr(Trials, "FIRST", 1)
        patch.setattr(Trials, "SWITCH", -1.0)  # the way tried always wins
        patch.setattr(Trials, "COST", 1e9)  # and the gap stays at its least
        flipping = nncli("train", "cnn.yaml", "--run-dir", "flipping")
    assert flipping.exit_code == 0, flipping.output
    # 2 epochs of 11 steps, the first of each untimed (and run the way the step before it was)
    switches = re.findall(r"after step (\d+), 3 steps in (\d) thread", flipping.stderr)
    assert switches == [("10", "2"), ("20", "1")]
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
    # summary.json says what a batch split into, too
    summary = json.loads((workdir / "whole" / "summary.json").read_text())["threads"]
    assert summary == {**saved["threads"], "batch_shards": 2}
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
    # after a measurement whose BLAS threads spin on: the steps of the next 0.05 s are not watched
    watch = DriftWatch(window=4, margin=1.5, gap=8)
    watch.reset(settle_s=0.05)
    assert feed(watch, 0.020, 3) == []  # slowed by the spinning threads: no reference
    assert feed(watch, 0.010, 40) == []  # the first window after them is the reference
    assert watch.reference == 0.010
    watch.reset(settle_s=0.05)
    assert feed(watch, 0.030, 2) == [] and feed(watch, 0.010, 4) == []
    assert feed(watch, 0.030, 8) == [8]  # two windows off the reference of the 4 steps at 10 ms


@pytest.mark.parametrize("chosen, settle", [(2, BLAS_SPIN_S), (BLAS, 0.0)])
def test_steps_are_watched_once_the_blas_threads_timed_at_the_start_stop_spinning(
        tmp_path, two_cpus, monkeypatch, chosen, settle):
    (tmp_path / "cnn.yaml").write_text(CNN)
    exp = build_experiment(load_config(tmp_path / "cnn.yaml"), tmp_path)

    def measure(model, run, batch, **options):  # the BLAS's own threads timed last, as at a start
        return Choice([48, 48], chosen, {1: 0.02, 2: 0.01, BLAS: 0.015}, 3, blas_threads=2, block=1)

    monkeypatch.setattr(chooser_module, "measure", measure)
    chooser = ThreadChooser()
    assert chooser._measure(Trainer(exp, [chooser]), "measured", blas=2)
    assert chooser.watch.settle_s == settle
    # a measurement of the held ways alone (after a drift) leaves no BLAS thread spinning
    monkeypatch.setattr(chooser_module, "measure",
                        lambda model, run, batch, **options: Choice([48, 48], 2, {1: 0.02, 2: 0.01}, 3))
    assert chooser._measure(Trainer(exp, [chooser]), "measured again") and chooser.watch.settle_s == 0
    # ... but one made as a run leaves the BLAS's threads it ran its steps in does
    chooser.watch.gap = 256
    assert chooser._measure(Trainer(exp, [chooser]), "left", changed=True, spun=True)
    assert chooser.watch.settle_s == BLAS_SPIN_S and chooser.watch.gap == chooser.watch.first_gap


def feed_trials(trials: Trials, times: dict[int, float], steps: int) -> list[tuple[int, int]]:
    """Run `steps` steps, each taking `times[way]`; the (step, way taken) of every switch."""
    switches = []
    for i in range(1, steps + 1):
        if trials.add(times[trials.way]):
            switches.append((i, trials.chosen))
    return switches


def test_trials_take_the_other_way_where_it_wins_and_try_it_as_often_as_it_costs_little():
    trials = Trials(1, 2, block=1, ratio=1.0)  # measured alike: the first trial after 8 blocks of 3
    assert (trials.block, trials.gap) == (3, 24)
    ways = []
    for _ in range(33):
        ways.append(trials.way)
        trials.add(0.01)
    assert ways == [1] * 24 + [2] * 3 + [1] * 6  # the trial's 3 steps, the 3 after, the next gap
    trials = Trials(1, 2, block=1, ratio=1.0)
    # 2 threads twice as fast: taken after the first trial (24 + 3 + 3 steps), kept after that
    assert feed_trials(trials, {1: 0.010, 2: 0.005}, 400) == [(30, 2)]
    assert trials.last == (0.010, 0.005)  # the last trial's medians: 1 thread tried, against 2
    # the way given up is twice as slow: a trial of 3 steps costs 3 steps, so 300 steps between
    assert trials.gap == 300
    trials = Trials(2, 1, block=1, ratio=2.0)
    assert trials.gap == 300
    assert feed_trials(trials, {1: 0.010, 2: 0.005}, 306) == []  # the first trial: steps 301-306
    assert trials.gap == 300 and trials.phase == "wait"
    # 1 thread 20% slower: 3 steps of it cost 0.6 of a step, 1% of 60
    assert feed_trials(trials, {1: 0.006, 2: 0.005}, 300 + 6) == [] and trials.gap == 60
    # within SWITCH: no switch
    trials = Trials(1, 2, block=4, ratio=1.0)
    assert feed_trials(trials, {1: 0.0100, 2: 0.0097}, 200) == []
    # a drift brings the trial forward: the next step is tried the other way
    trials = Trials(1, 2, block=1, ratio=1.0)
    trials.add(0.01)
    trials.now()
    assert trials.way == 2
    assert feed_trials(trials, {1: 0.01, 2: 0.001}, 6) == [(6, 2)]  # 3 steps tried, 3 after


def fixed_choice(monkeypatch, workers: int) -> None:
    """The trainer's measurement chooses `workers` threads for 2 shards of 48, timed alike."""

    def measure(model, run, batch, **options):
        model.workers = workers
        return Choice([48, 48], workers, {1: 0.01, 2: 0.01}, 3, block=1)

    monkeypatch.setattr(chooser_module, "measure", measure)


def test_a_run_takes_the_faster_threads_found_by_trials_and_changes_no_number(tmp_path, two_cpus,
                                                                              monkeypatch):
    (tmp_path / "cnn.yaml").write_text(CNN)
    exp = build_experiment(load_config(tmp_path / "cnn.yaml", ["train.epochs=3"]), tmp_path)
    fixed_choice(monkeypatch, 1)  # a wrong choice at the start: 2 threads are twice as fast
    now = [0.0]

    def clock():  # a step takes 10 ms in 1 thread, 5 in 2 threads
        now[0] += 0.005 if exp.model.workers == 2 else 0.010
        return now[0]

    monkeypatch.setattr(chooser_module, "perf_counter", clock)
    monkeypatch.setattr(Trials, "FIRST", 1)
    lines = []
    chooser = ThreadChooser(lines.append)
    Trainer(exp, [chooser]).fit()
    assert lines[0].startswith("threads: measured before the first batch: 2 shards of 48: in 1 thread 10.00")
    assert len(lines) == 2, lines
    assert lines[1] == ("threads: after step 10, 3 steps in 2 threads took 5.00 ms a step against 10.00 in"
                        " 1 thread (medians) -> 2 threads")
    assert chooser.choices == lines and exp.model.workers == 2
    # a run that keeps 1 thread (but for its trials), trained the same: the same weights, bit for bit
    other = build_experiment(load_config(tmp_path / "cnn.yaml", ["train.epochs=3"]), tmp_path / "one")
    monkeypatch.setattr(Trials, "SWITCH", 1.0)  # never switches
    lines.clear()
    Trainer(other, [ThreadChooser(lines.append)]).fit()
    assert len(lines) == 1, lines
    assert same(exp.model.state_dict()["params"], other.model.state_dict()["params"])


@pytest.mark.parametrize("one_thread, outcome", [(0.010, "1 thread"), (0.080, "2 threads still")])
def test_a_drift_brings_the_next_trial_forward(tmp_path, two_cpus, monkeypatch, one_thread, outcome):
    (tmp_path / "cnn.yaml").write_text(CNN)
    exp = build_experiment(load_config(tmp_path / "cnn.yaml", ["train.epochs=3"]), tmp_path)
    fixed_choice(monkeypatch, 2)
    now, steps = [0.0], [0]

    def clock():  # 2 threads: 5 ms a step until another program takes a core at the 8th step
        steps[0] += 1
        busy = steps[0] > 8
        now[0] += (0.050 if busy else 0.005) if exp.model.workers == 2 else one_thread
        return now[0]

    monkeypatch.setattr(chooser_module, "perf_counter", clock)
    lines = []
    Trainer(exp, [ThreadChooser(lines.append, DriftWatch(window=2, margin=1.5, gap=4))]).fit()
    # two windows of 2 steps off after the 8th, a trial of 3 steps and 3 after: the first trial
    # was otherwise due after 24 timed steps, and would have ended after the 30th timed step, the
    # 33rd (and said nothing where it kept the choice)
    assert len(lines) == 2, lines
    assert lines[1] == (f"threads: after step 18, step times went from 5.00 to 50.00 ms; 3 steps in 1"
                        f" thread took {one_thread * 1e3:.2f} ms a step against 50.00 in 2 threads (medians)"
                        f" -> {outcome}")
    assert exp.model.workers == (1 if outcome == "1 thread" else 2)


def test_a_drift_during_a_trial_brings_the_next_one_a_block_after_it():
    trials = Trials(2, 1, block=1, ratio=1.0)
    assert feed_trials(trials, {1: 0.010, 2: 0.005}, 25) == [] and trials.phase == "trial"
    assert not trials.now()  # under way: this one ends as it was, the next comes a block after
    assert trials.way == 1
    assert feed_trials(trials, {1: 0.010, 2: 0.005}, 5) == [] and trials.phase == "wait"
    assert trials.wait == 3 and trials.gap == 300
    ways = []
    for _ in range(4):
        trials.add(0.005)
        ways.append(trials.way)
    assert ways == [2, 2, 1, 1]  # 3 steps of the chosen way, then the trial
    trials = Trials(2, 1, block=1, ratio=1.0)
    assert feed_trials(trials, {1: 0.010, 2: 0.005}, 5) == [] and trials.now() and trials.way == 1


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
