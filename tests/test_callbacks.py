"""nncli/training/callbacks: what each callback writes, and when, driven by a real Trainer on
the small spiral config (no command around it)."""

from __future__ import annotations

import csv
import io
import json
import signal

import pytest

from nncli.builder import build_experiment
from nncli.config.schema import load_config
from nncli.training import checkpoint
from nncli.training.callbacks import (
    Callback,
    Checkpointer,
    EpochLog,
    MetricsWriter,
    NanReporter,
    ProgressBar,
    StepsWriter,
)
from nncli.training.rundir import RunDir, read_steps
from nncli.training.trainer import Interrupted, NonFiniteLoss, Trainer


def experiment(folder, spiral, changes=None):
    path = folder / "spiral.yaml"
    path.write_text(spiral(changes))
    return build_experiment(load_config(path), folder)


@pytest.fixture
def run(tmp_path) -> RunDir:
    path = tmp_path / "run"
    (path / "checkpoints").mkdir(parents=True)
    return RunDir(path)


class Look(Callback):
    """At every epoch's end, after the callbacks before it: what the run directory holds."""

    def __init__(self, run: RunDir):
        self.run, self.seen = run, []

    def on_epoch_end(self, trainer, row):
        last = checkpoint.load(self.run.last)
        best = checkpoint.load(self.run.best)["epoch"] if self.run.best.exists() else None
        named = last["training"]["best_epoch"]
        self.seen.append((row["epoch"], last["epoch"], named, best, trainer.improved))


def test_the_checkpointer_saves_last_every_epoch_and_best_when_it_improves(tmp_path, run, spiral):
    # a rate that makes the validation loss rise after a while: not every epoch is a best
    exp = experiment(tmp_path, spiral, {"train.epochs": 6, "optimizer.lr": 1.5})
    look = Look(run)
    trainer = Trainer(exp, [Checkpointer(run, {"name": "spiral"}), look])
    state = trainer.fit()
    assert [epoch for epoch, *_ in look.seen] == [1, 2, 3, 4, 5, 6]
    for epoch, last, best_named, best, improved in look.seen:
        assert last == epoch  # last.pkl is this epoch's
        assert best == best_named  # best.pkl is the one last.pkl names
        assert (best == epoch) == improved
    values = [row["val_loss"] for row in state.history]
    assert state.best_epoch == 1 + values.index(min(values)) == checkpoint.load(run.best)["epoch"]
    assert not all(improved for *_, improved in look.seen), values  # the case this test is for
    assert checkpoint.load(run.last)["config"] == {"name": "spiral"}


def test_the_first_checkpoint_is_written_before_training_and_never_over_a_resumed_one(tmp_path, run, spiral):
    exp = experiment(tmp_path, spiral, {"train.epochs": 1})

    class Before(Callback):
        def on_epoch_begin(self, trainer, epoch, batches, first_batch):
            self.epoch = checkpoint.load(run.last)["epoch"]

    before = Before()
    Trainer(exp, [Checkpointer(run, {}), before]).fit()
    assert before.epoch == 0  # written at the start: a run stopped in epoch 1 can resume
    kept = run.last.read_bytes()
    Checkpointer(run, {}).on_train_begin(Trainer(experiment(tmp_path, spiral)))
    assert run.last.read_bytes() == kept


def test_an_interrupt_saves_where_the_epoch_stopped(tmp_path, run, spiral):
    exp = experiment(tmp_path, spiral, {"train.epochs": 2})

    class Stop(Callback):
        def on_batch_end(self, trainer, batch, loss):
            if trainer.state.epoch == 1 and batch == 2:
                trainer.stop_requested = signal.SIGTERM

    trainer = Trainer(exp, [Checkpointer(run, {}), Stop()])
    with pytest.raises(Interrupted):
        trainer.fit()
    saved = checkpoint.load(run.last)
    assert saved["epoch"] == 1 and saved["training"]["progress"]["epoch"] == 1
    assert saved["training"]["progress"]["batch"] == 3  # batches 0, 1 and 2 are done


def test_the_metrics_file_is_the_history_one_row_an_epoch(tmp_path, run, spiral):
    exp = experiment(tmp_path, spiral, {"train.epochs": 3})

    class Rows(Callback):
        def on_epoch_end(self, trainer, row):
            with open(run.metrics, newline="") as f:
                self.rows = list(csv.DictReader(f))

    rows = Rows()
    state = Trainer(exp, [MetricsWriter(run), rows]).fit()
    assert [int(row["epoch"]) for row in rows.rows] == [1, 2, 3]  # complete at each epoch's end
    assert list(rows.rows[0]) == list(state.history[0])
    for row, want in zip(rows.rows, state.history, strict=True):
        for key, value in want.items():
            assert float(row[key]) == pytest.approx(value, rel=1e-9), key


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow under test
def test_the_nan_reporter_writes_the_report_and_the_run_stops(tmp_path, run, spiral):
    exp = experiment(tmp_path, spiral, {"optimizer.lr": 1.0e30, "train.epochs": 3})
    with pytest.raises(NonFiniteLoss, match="the loss became"):
        Trainer(exp, [NanReporter(run)]).fit()
    report = json.loads(run.nan_report.read_text())
    assert report["epoch"] >= 1 and report["layers"], report
    assert [layer["index"] for layer in report["layers"]] == list(range(len(report["layers"])))


def test_the_epoch_log_prints_one_line_an_epoch_and_why_it_stopped_early(tmp_path, spiral):
    changes = {"train.epochs": 5, "train.early_stopping": {"monitor": "val_loss", "patience": 1,
                                                          "min_delta": 100}}
    exp = experiment(tmp_path, spiral, changes)
    stream = io.StringIO()
    Trainer(exp, [EpochLog(stream)]).fit()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines  # the second epoch cannot improve by 100: it stops there
    assert lines[0].startswith("epoch 1/5  train_loss ") and " train_acc " in lines[0]
    assert " val_loss " in lines[0] and " val_acc " in lines[0] and " lr 0.1  " in lines[0]
    assert lines[1].startswith("epoch 2/5  ") and lines[1].endswith("s")
    assert lines[2] == "early stopping: val_loss has not improved for 1 epoch"


def test_the_epoch_log_leaves_out_accuracy_for_regression(tmp_path, spiral):
    exp = experiment(tmp_path, spiral, {"data": {"dataset": "sine", "samples": 100, "val_size": 20},
                                        "model": [{"linear": {"units": 8}}, "tanh", {"linear": {"units": 1}}],
                                        "loss": "mse", "train.epochs": 1})
    stream = io.StringIO()
    Trainer(exp, [EpochLog(stream)]).fit()
    (line,) = stream.getvalue().splitlines()
    assert "train_loss" in line and "val_loss" in line and "acc" not in line


def test_the_progress_bar_counts_the_batches_of_each_epoch_and_closes(tmp_path, spiral):
    exp = experiment(tmp_path, spiral, {"train.epochs": 2})
    stream = io.StringIO()
    bar = ProgressBar(stream)

    class Open(Callback):
        def on_batch_end(self, trainer, batch, loss):
            self.n = bar.bar.n

    seen = Open()
    Trainer(exp, [bar, seen]).fit()
    assert bar.bar is None  # closed at the epoch's end
    assert seen.n == 9  # 144 training samples in batches of 16
    assert "epoch 1/2" in stream.getvalue() and "epoch 2/2" in stream.getvalue()


def test_the_steps_file_has_every_batch_its_loss_and_rate(tmp_path, run, spiral):
    schedule = {"type": "step", "step_size": 1, "gamma": 0.5}  # 0.1 in epoch 1, 0.05 in epoch 2
    exp = experiment(tmp_path, spiral, {"train.epochs": 2, "schedule": schedule})

    class Losses(Callback):
        def __init__(self):
            self.seen = []

        def on_batch_end(self, trainer, batch, loss):
            self.seen.append(loss)

    losses = Losses()
    Trainer(exp, [losses, StepsWriter(run)]).fit()
    steps = read_steps(run.steps)
    assert [step for step, *_ in steps] == list(range(1, 19))  # 9 batches an epoch
    assert [loss for _, _, loss, _ in steps] == losses.seen  # written as repr: read back exactly
    assert (steps[0][1], steps[8][1], steps[17][1]) == pytest.approx((1 / 9, 1.0, 2.0))
    assert [lr for *_, lr in steps] == pytest.approx([0.1] * 9 + [0.05] * 9)
