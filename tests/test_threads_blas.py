"""A fresh run's choice of the BLAS's own threads (NNCLI_THREADS unset): timed at the start
among the held ways and taken only past a margin, recorded in the checkpoints and kept on
resume, and left for good when the step times grow (another program took a core)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import config_text

from nncli._openblas import thread_control
from nncli.builder import build_experiment
from nncli.config.schema import load_config
from nncli.nn import parallel
from nncli.nn import threads as threads_module
from nncli.nn.parallel import setting_record
from nncli.nn.threads import BLAS, BLAS_MARGIN, DriftWatch, measure, use
from nncli.training import checkpoint
from nncli.training.callbacks import threads as chooser_module
from nncli.training.callbacks.threads import ThreadChooser
from nncli.training.trainer import Trainer

# the conftest MLP on the shipped MNIST subset, 3 epochs: matrix products alone, batches of 64
# that run whole (too little work a shard to split)
MLP = config_text("images", {"name": "blas", "train.epochs": 3})
KEPT = "threads: batches of 64 run whole, the BLAS in 2 threads, as this run chose at its start"


@pytest.fixture
def auto(monkeypatch):
    """NNCLI_THREADS unset, on what looks like 2 CPUs with a BLAS of 2 threads (numpy's own,
    held and set for real)."""
    control = thread_control()
    if control is None:
        pytest.skip("threadpoolctl cannot control this numpy's BLAS threads")
    monkeypatch.delenv("NNCLI_THREADS", raising=False)
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(control, "initial", max(2, control.initial))
    return control


def take_blas(monkeypatch) -> list:
    """The start's measurement still runs, then takes the BLAS's own threads, as on a machine
    where they are faster; returns the choices made."""
    made, real = [], chooser_module.measure

    def measure_then_take(model, run, batch, blas=None, **options):
        choice = real(model, run, batch, blas=blas, **options)
        if blas is not None:
            choice.workers = BLAS
            use(model, BLAS, blas)
        made.append(choice)
        return choice

    monkeypatch.setattr(chooser_module, "measure", measure_then_take)
    return made


def params(run) -> dict:
    return checkpoint.load(run / "checkpoints" / "last.pkl")["model"]["params"]


def test_the_blas_threads_chosen_at_the_start_are_kept_on_resume(workdir, nncli, auto, monkeypatch):
    (workdir / "mlp.yaml").write_text(MLP)
    # no drift: on a loaded machine one could leave the BLAS's threads mid-run (tested below)
    monkeypatch.setattr(DriftWatch, "add", lambda self, seconds: False)
    with monkeypatch.context() as patch:
        made = take_blas(patch)
        whole = nncli("train", "mlp.yaml", "--run-dir", "whole")
        assert whole.exit_code == 0, whole.output
        start = "threads: measured before the first batch: batches whole: the BLAS held to 1 thread"
        assert start in whole.stderr
        assert "-> the BLAS in 2 threads (for the whole run, kept on resume; NNCLI_THREADS=held" in (
            whole.stderr)
        cut = nncli("train", "mlp.yaml", "--run-dir", "cut", "--set", "train.epochs=1", "--quiet")
        assert cut.exit_code == 0 and len(made) == 2 and all(c.blas_threads == 2 for c in made)
    saved = checkpoint.load(workdir / "cut" / "checkpoints" / "last.pkl")["threads"]
    assert saved == {"shards": 2, "blas": True, "blas_threads": 2, "measured": True}
    # resumed with no measurement patched: the record is followed, nothing is measured again
    with monkeypatch.context() as patch:
        measured = []
        patch.setattr(chooser_module, "measure", lambda *a, **k: measured.append(a))
        resumed = nncli("train", "--resume", "cut", "--set", "train.epochs=3")
    assert resumed.exit_code == 0, resumed.output
    assert KEPT in resumed.stderr
    assert measured == []
    a, b = params(workdir / "whole"), params(workdir / "cut")
    assert all(np.array_equal(a[k], b[k]) for k in a)  # the same roundings as the run never stopped
    # the same seed with the BLAS held (NNCLI_THREADS=held): other roundings, the same training
    monkeypatch.setenv("NNCLI_THREADS", "held")
    held = nncli("train", "mlp.yaml", "--run-dir", "held", "--quiet")
    assert held.exit_code == 0
    assert checkpoint.load(workdir / "held" / "checkpoints" / "last.pkl")["threads"]["blas"] is False
    # and summary.json says how each ran
    whole = json.loads((workdir / "whole" / "summary.json").read_text())["threads"]
    # batches of 64 too small to split: at most 2 shards, none made
    assert whole["blas_threads"] == 2 and whole["shards"] == 2 and whole["batch_shards"] == 1
    assert json.loads((workdir / "held" / "summary.json").read_text())["threads"]["blas"] is False
    c = params(workdir / "held")
    assert all(np.allclose(a[k], c[k], rtol=1e-3, atol=1e-5) for k in a)


def blas_run(tmp_path, clock_steps: list[float], monkeypatch):
    """The MLP trained in-process from the BLAS's 2 threads (as a resumed run that chose them),
    its steps timed by a fake clock; returns (the chooser's lines, the model)."""
    (tmp_path / "mlp.yaml").write_text(MLP)
    exp = build_experiment(load_config(tmp_path / "mlp.yaml"), tmp_path)
    use(exp.model, BLAS, 2)
    exp.model.choose_blas = False
    clock = iter(np.cumsum(clock_steps))
    monkeypatch.setattr(chooser_module, "perf_counter", lambda: float(next(clock)))
    lines = []
    Trainer(exp, [ThreadChooser(lines.append, DriftWatch(window=2, margin=1.5, gap=4))]).fit()
    return lines, exp.model


def test_slower_steps_leave_the_blas_threads_for_good(tmp_path, auto, monkeypatch):
    lines, model = blas_run(tmp_path, [0.01] * 14 + [0.05] * 10_000, monkeypatch)
    assert lines[0] == KEPT
    assert len(lines) == 2, lines
    assert lines[1].startswith("threads: step times went from 10.00 to 50.00 ms, the BLAS's 2 threads"
                               " waiting for busy cores; from step ")
    assert lines[1].endswith("on, the BLAS held to one thread (other roundings, kept in the checkpoints):"
                             " batches whole")
    assert model.hold_blas and model.blas_threads is None
    assert setting_record(model) == {"shards": 2, "blas": False, "blas_threads": None, "measured": True}


def test_faster_steps_keep_the_blas_threads(tmp_path, auto, monkeypatch):
    lines, model = blas_run(tmp_path, [0.05] * 14 + [0.01] * 10_000, monkeypatch)
    assert len(lines) == 1 and not model.hold_blas and model.blas_threads == 2


@pytest.mark.parametrize("blas_ms, chosen", [(8.0, BLAS), (10.0 * (1 - BLAS_MARGIN) + 0.2, 1)])
def test_the_blas_threads_are_taken_only_past_the_margin(auto, monkeypatch, blas_ms, chosen):
    from nncli.nn.layers import LAYERS
    from nncli.nn.model import Sequential

    model = Sequential([LAYERS.create("linear", {"units": 8})])
    model.build((4,), np.random.default_rng(0), np.float32)
    model.threads, model.hold_blas = 2, True
    now = [0.0]
    monkeypatch.setattr(threads_module, "perf_counter", lambda: now[0])
    seen = []

    def run():  # a step of 10 ms held, of blas_ms with the BLAS's threads
        seen.append((model.hold_blas, model.blas_threads))
        now[0] += 0.010 if model.hold_blas else blas_ms / 1e3

    choice = measure(model, run, 64, blas=2)
    assert set(seen) == {(True, None), (False, 2)}
    # the BLAS's threads after the held ways: theirs spin on for a while, on a core a held pass wants
    assert seen.index((False, 2)) > len(seen) - 1 - seen[::-1].index((True, None))
    assert choice.workers == chosen and choice.times[BLAS] == pytest.approx(blas_ms / 1e3)
    assert (model.hold_blas, model.blas_threads) == ((False, 2) if chosen == BLAS else (True, None))
    assert measure(model, run, 64, blas=None) is None  # whole batches held: nothing to choose


def blas_second_round(model, monkeypatch, second_s: float):
    """A pass of `model` on a fake clock: 10 ms held, 7 ms with the BLAS's threads but `second_s`
    in their second timed round (one untimed pass, then blocks of 3: 25 ms / 10). Returns the
    pass and the list that counts the BLAS's passes."""
    now, blas_passes = [0.0], []
    monkeypatch.setattr(threads_module, "perf_counter", lambda: now[0])

    def run():
        if model.hold_blas:
            now[0] += 0.010
            return
        blas_passes.append(1)
        block = (len(blas_passes) - 2) // 3
        now[0] += second_s if block == 1 else 0.007

    return run, blas_passes


@pytest.mark.parametrize("rounds, chosen", [(2, 1), (3, BLAS)])
def test_the_blas_threads_must_win_most_rounds(auto, monkeypatch, rounds, chosen):
    from nncli.nn.layers import LAYERS
    from nncli.nn.model import Sequential

    model = Sequential([LAYERS.create("linear", {"units": 8})])
    model.build((4,), np.random.default_rng(0), np.float32)
    model.hold_blas = True
    # held: 10 ms; the BLAS's threads: 7 ms, but 11 in their second round
    run, _ = blas_second_round(model, monkeypatch, 0.011)
    choice = measure(model, run, 64, blas=2, rounds=rounds)
    assert choice.block == 3 and choice.passes == rounds
    # two rounds: faster by the median (0.9 of the held time), but in one round of two
    assert choice.workers == chosen and model.hold_blas == (chosen == 1)


def test_the_blas_threads_are_judged_on_all_their_rounds(auto, monkeypatch):
    from nncli.nn.layers import LAYERS
    from nncli.nn.model import Sequential

    # a model that shards: the held ways (1, 2, whole) get 2 rounds of the budget, the BLAS's
    # threads, timed alone after them, 3
    model = Sequential([LAYERS.create("conv2d", {"filters": 2, "kernel": 3}), LAYERS.create("flatten", {})])
    model.build((1, 6, 6), np.random.default_rng(0), np.float32)
    model.threads, model.hold_blas = 2, True
    # held 10 ms every way; the BLAS's threads 7, but 20 in their second round
    run, blas_passes = blas_second_round(model, monkeypatch, 0.020)
    choice = measure(model, run, 64, blas=2, budget_s=0.3)
    # 3 rounds of theirs, against 2 of the held ways': blocks of 3 passes, as the held ways',
    # but of 2 after their 20 ms round (a block lasts 25 ms by their last pass)
    assert len(blas_passes) == 1 + 3 + 3 + 2
    assert choice.workers == BLAS and choice.passes == 3 and choice.times[BLAS] == pytest.approx(0.007)


def test_the_blas_threads_far_slower_than_held_cost_a_few_passes(auto, monkeypatch):
    """With both cores busy the quickstart's step took 39 ms with the BLAS's threads against 1.0
    held: timed in the held ways' blocks of 11 passes, they cost the run's start 1.3 s."""
    from nncli.nn.layers import LAYERS
    from nncli.nn.model import Sequential

    model = Sequential([LAYERS.create("linear", {"units": 8})])
    model.build((4,), np.random.default_rng(0), np.float32)
    model.hold_blas = True
    now, passes = [0.0], {True: 0, False: 0}
    monkeypatch.setattr(threads_module, "perf_counter", lambda: now[0])

    def run():
        passes[model.hold_blas] += 1
        now[0] += 0.001 if model.hold_blas else 0.039

    choice = measure(model, run, 64, blas=2)
    assert choice.workers == 1 and choice.block == 25 and choice.times[BLAS] == pytest.approx(0.039)
    assert passes[False] == 1 + 3  # one untimed, then three rounds of one pass
    assert now[0] < 0.25  # the held ways' 3 blocks of 25 ms, and 0.16 s of the BLAS's (not 3 s)


def test_a_batch_whole_and_held_is_taken_where_the_shards_only_cost(auto, monkeypatch):
    from nncli.nn.layers import LAYERS
    from nncli.nn.model import Sequential
    from nncli.nn.threads import WHOLE

    model = Sequential([LAYERS.create("conv2d", {"filters": 2, "kernel": 3}), LAYERS.create("flatten", {})])
    model.build((1, 6, 6), np.random.default_rng(0), np.float32)
    model.threads, model.hold_blas = 2, True
    now, seen = [0.0], []
    monkeypatch.setattr(threads_module, "perf_counter", lambda: now[0])

    def run():  # the shards 10 ms either way, whole and held 8, the BLAS's threads 12
        sharded = model.shards_for(64) is not None
        seen.append((sharded, model.hold_blas))
        now[0] += 0.010 if sharded else 0.008 if model.hold_blas else 0.012

    choice = measure(model, run, 64, blas=2)
    # the BLAS's threads timed after every held pass (their threads spin on for a while)
    assert max(i for i, s in enumerate(seen) if s[1]) < min(i for i, s in enumerate(seen) if not s[1])
    assert choice.times[BLAS] == pytest.approx(0.012)
    assert choice.workers == WHOLE and choice.times[WHOLE] == pytest.approx(0.008)
    assert model.threads == 1 and model.shards_for(64) is None and model.hold_blas
    assert setting_record(model) == {"shards": 1, "blas": False, "blas_threads": None, "measured": False}
    assert "-> whole, the BLAS held to one thread" in choice.describe()
    # held (no `blas`): the shards' own ways only, whatever they cost
    model.threads = 2
    choice = measure(model, run, 64)
    assert set(choice.times) == {1, 2} and model.shards_for(64) == [32, 32]


def test_a_model_with_dropout_is_not_measured_and_trains_as_held(workdir, nncli, auto, monkeypatch):
    # the spiral MLP has dropout: a measuring pass would draw from the run's generator
    (workdir / "spiral.yaml").write_text(config_text("spiral"))
    measured = []
    with monkeypatch.context() as patch:
        patch.setattr(chooser_module, "measure", lambda *a, **k: measured.append(a))
        result = nncli("train", "spiral.yaml", "--run-dir", "auto")
    assert result.exit_code == 0, result.output
    assert measured == []
    assert "threads: batches of 16 run whole, the BLAS held to one thread" in result.stderr
    monkeypatch.setenv("NNCLI_THREADS", "held")
    assert nncli("train", "spiral.yaml", "--run-dir", "held", "--quiet").exit_code == 0
    a, b = params(workdir / "auto"), params(workdir / "held")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_ways_first_pass_after_another_way_is_not_timed(auto, monkeypatch):
    """A way's first pass after another way's pays for the switch (a core that sat idle wakes):
    on a fake clock the shards take 6 ms a pass in two threads, but 30 ms the first pass after
    a pass in one thread, which takes 10. Timed from the second pass on, two threads win."""
    from nncli.nn.layers import LAYERS
    from nncli.nn.model import Sequential

    model = Sequential([LAYERS.create("conv2d", {"filters": 2, "kernel": 3}), LAYERS.create("flatten", {})])
    model.build((1, 6, 6), np.random.default_rng(0), np.float32)
    model.threads, model.hold_blas = 2, True
    now, switched = [0.0], [False]
    monkeypatch.setattr(threads_module, "perf_counter", lambda: now[0])
    real_use = threads_module.use

    def switch(model_, way, *args):
        switched[0] = switched[0] or way != model_.workers
        real_use(model_, way, *args)

    def run():
        now[0] += 0.010 if model.workers == 1 else 0.030 if switched[0] else 0.006
        switched[0] = False

    monkeypatch.setattr(threads_module, "use", switch)
    choice = measure(model, run, 64)
    assert choice.workers == 2 and choice.times[2] == pytest.approx(0.006)

