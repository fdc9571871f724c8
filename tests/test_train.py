"""`nncli train` end to end on small synthetic problems."""

from __future__ import annotations

import csv
import errno
import json
import os
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from polling import wait_for

from nncli.errors import CheckpointError
from nncli.training import checkpoint


@pytest.fixture(autouse=True)
def spiral_yaml(workdir, spiral):
    (workdir / "spiral.yaml").write_text(spiral())


@pytest.fixture
def train(nncli):
    """`nncli train ARGS...`: (exit code, output)."""

    def run(*args) -> tuple[int, str]:
        result = nncli("train", *args)
        return result.exit_code, result.output

    return run


def rows(run: Path, name: str = "metrics.csv") -> list[dict]:
    with open(run / name, newline="") as f:
        return list(csv.DictReader(f))


def without_times(table: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in table]


def test_a_run_directory_has_everything(workdir, train):
    code, out = train("spiral.yaml", "--run-dir", "run", "--quiet")
    assert code == 0, out
    run = workdir / "run"
    for name in (
        "config.yaml",
        "metrics.csv",
        "curves.png",
        "summary.json",
        "checkpoints/last.pkl",
        "checkpoints/best.pkl",
    ):
        assert (run / name).is_file(), name
    table = rows(run)
    assert [r["epoch"] for r in table] == ["1", "2", "3", "4"]
    assert set(table[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s"}
    assert float(table[-1]["train_loss"]) < float(table[0]["train_loss"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] in (1, 2, 3, 4)
    assert summary["test"]["samples"] > 0 and 0 <= summary["test"]["accuracy"] <= 1
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the saved config is resolved (defaults filled in) and trains again as it is
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"][0] == {
        "linear": {"units": 32, "bias": True, "init": {"type": "he", "distribution": "normal"}}
    }
    assert saved["optimizer"]["nesterov"] is False
    code, out = train(str(run / "config.yaml"), "--run-dir", "again", "--quiet")
    assert code == 0, out
    assert without_times(rows(workdir / "again")) == without_times(table)


def test_new_run_directories_never_collide(workdir, train):
    for _ in range(2):
        assert train("spiral.yaml", "--quiet", "--set", "train.epochs=1")[0] == 0
    runs = sorted((workdir / "runs" / "spiral").iterdir())
    assert len(runs) == 2


def test_same_seed_same_metrics_and_overrides_apply(workdir, train):
    train("spiral.yaml", "--run-dir", "a", "--quiet")
    train("spiral.yaml", "--run-dir", "b", "--quiet")
    assert without_times(rows(workdir / "a")) == without_times(rows(workdir / "b"))
    train("spiral.yaml", "--run-dir", "c", "--quiet", "--set", "seed=4", "--set", "model[0].linear.units=8")
    assert without_times(rows(workdir / "c")) != without_times(rows(workdir / "a"))
    assert yaml.safe_load((workdir / "c" / "config.yaml").read_text())["model"][0]["linear"]["units"] == 8


def test_resume_is_exact(workdir, train):
    assert train("spiral.yaml", "--run-dir", "straight", "--quiet")[0] == 0
    assert train("spiral.yaml", "--run-dir", "split", "--quiet", "--set", "train.epochs=2")[0] == 0
    assert len(rows(workdir / "split")) == 2
    code, out = train("--resume", "split", "--quiet", "--set", "train.epochs=4")
    assert code == 0, out
    assert without_times(rows(workdir / "split")) == without_times(rows(workdir / "straight"))
    a = checkpoint.load(workdir / "straight" / "checkpoints" / "last.pkl")["model"]["params"]
    b = checkpoint.load(workdir / "split" / "checkpoints" / "last.pkl")["model"]["params"]
    assert all((a[k] == b[k]).all() for k in a)


def test_warmup_starts_at_the_first_steps_share_and_resumes_exactly(workdir, monkeypatch, train):
    from nncli.training.callbacks.files import MetricsWriter

    warm = ("--set", "schedule={type: constant, warmup_epochs: 3}")
    assert train("spiral.yaml", "--run-dir", "straight", "--quiet", *warm)[0] == 0
    # 144 training samples in batches of 16: 9 steps an epoch, 27 warmup steps; the lr column
    # is each epoch's first step: 1/27, 10/27 and 19/27 of the base 0.1, then the base
    lrs = [float(row["lr"]) for row in rows(workdir / "straight")]
    assert lrs == pytest.approx([0.1 / 27, 0.1 * 10 / 27, 0.1 * 19 / 27, 0.1], rel=1e-12)

    def stop_in_epoch_two(self, trainer, batch, loss):  # in the middle of the warmup
        if trainer.state.epoch == 1 and batch == 4:
            trainer.stop_requested = signal.SIGINT

    with monkeypatch.context() as patch:
        patch.setattr(MetricsWriter, "on_batch_end", stop_in_epoch_two, raising=False)
        assert train("spiral.yaml", "--run-dir", "cut", "--quiet", *warm)[0] == 130
    assert train("--resume", "cut", "--quiet")[0] == 0
    assert without_times(rows(workdir / "cut")) == without_times(rows(workdir / "straight"))
    # steps.csv: every batch once, in order, as the uninterrupted run has them (lr included)
    assert (workdir / "cut" / "steps.csv").read_text() == (workdir / "straight" / "steps.csv").read_text()
    steps = [int(row["step"]) for row in rows(workdir / "cut", "steps.csv")]
    assert steps == list(range(1, 37))


def test_steps_written_past_the_checkpoint_are_dropped_on_resume(workdir, train):
    """A run killed after steps.csv was written and before last.pkl was (the checkpoint is an
    epoch behind): resuming goes on from the checkpoint's step, never writing a step twice."""
    assert train("spiral.yaml", "--run-dir", "straight", "--quiet")[0] == 0
    assert train("spiral.yaml", "--run-dir", "r", "--quiet", "--set", "train.epochs=2")[0] == 0
    ahead = (workdir / "straight" / "steps.csv").read_text().splitlines()[: 1 + 27]  # 3 epochs
    (workdir / "r" / "steps.csv").write_text("\n".join(ahead) + "\n")
    assert train("--resume", "r", "--quiet", "--set", "train.epochs=4")[0] == 0
    assert (workdir / "r" / "steps.csv").read_text() == (workdir / "straight" / "steps.csv").read_text()


def test_resume_refuses_other_changes_and_finished_runs(workdir, train):
    train("spiral.yaml", "--run-dir", "r", "--quiet", "--set", "train.epochs=1")
    code, out = train("--resume", "r", "--set", "optimizer.lr=0.5")
    assert code == 2 and "only train.epochs" in out
    code, out = train("--resume", "r", "--set", "train.batch_size=64")
    assert code == 2 and "only train.epochs" in out
    code, out = train("--resume", "r")
    assert code == 1 and "already finished 1 epoch;" in out  # not "1 epochs"
    code, out = train("--resume", "nowhere")
    assert code != 0 and "no such run directory" in out
    # the rule is the command's, in the command line's words
    code, out = train("spiral.yaml", "--resume", "r")
    assert code == 2 and "give CONFIG or --resume, not both" in out and "with --set" in out
    code, out = train("--resume", "r", "--run-dir", "elsewhere")
    assert code == 2 and "--run-dir and --resume cannot be combined" in out
    code, out = train()
    assert code == 2 and "missing CONFIG" in out


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_malicious_checkpoint_is_refused_and_runs_nothing(workdir, train):
    train("spiral.yaml", "--run-dir", "r", "--quiet", "--set", "train.epochs=1")
    last = workdir / "r" / "checkpoints" / "last.pkl"
    state = checkpoint.load(last)
    state.pop("path")
    state["config"]["name"] = _Boom()
    last.write_bytes(pickle.dumps(state))
    with pytest.raises(CheckpointError, match="refusing to load"):
        checkpoint.load(last)
    code, out = train("--resume", "r", "--set", "train.epochs=2")
    assert code == 1
    assert "refusing to load checkpoint" in out
    assert "system" in out  # names what it refused: posix.system
    assert "Traceback" not in out
    assert not (workdir / "pwned").exists()


def test_a_non_finite_loss_stops_with_a_report(workdir, train):
    code, out = train(
        "spiral.yaml",
        "--run-dir",
        "r",
        "--quiet",
        "--set",
        "optimizer.lr=1.0e+30",
        "--set",
        "optimizer.momentum=0.0",
    )
    assert code == 3, out
    assert "try a smaller learning rate" in out
    report = json.loads((workdir / "r" / "nan_report.json").read_text())
    assert {"epoch", "batch", "lr", "layers"} <= set(report)
    assert report["lr"] == pytest.approx(1e30)
    assert report["layers"][0]["layer"].startswith("linear")
    assert "grads" in report["layers"][0] and "activations" in report["layers"][0]
    # the last good checkpoint stays
    assert checkpoint.load(workdir / "r" / "checkpoints" / "last.pkl")["epoch"] == report["epoch"] - 1


def test_regression_leaves_accuracy_empty(workdir, train, make_config):
    make_config(workdir / "sine.yaml", "sine", {"train.epochs": 2})
    code, out = train("sine.yaml", "--run-dir", "r", "--quiet")
    assert code == 0, out
    table = rows(workdir / "r")
    assert table[0]["train_acc"] == "" and table[0]["val_acc"] == ""
    assert float(table[0]["val_loss"]) > 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_and_the_run_resumes_exactly(workdir, signum, spiral):
    (workdir / "slow.yaml").write_text(spiral({"data.points_per_class": 3000, "train.epochs": 6}))
    command = [sys.executable, "-m", "nncli", "train", "slow.yaml", "--quiet"]
    straight = subprocess.run([*command, "--run-dir", "straight"], capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    proc = subprocess.Popen(
        [*command, "--run-dir", "cut"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # the event: the first epoch's row is written; the signal lands at that epoch's end or early
    # in the second, and either is a moment to resume from
    wait_for(lambda: (workdir / "cut" / "metrics.csv").exists() or proc.poll() is not None,
             "the first epoch's metrics", every=0.01)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert "resume with: nncli train --resume cut" in err
    assert "Traceback" not in err
    # last.pkl holds the moment the message names: inside an epoch (its 0-based index is the
    # count of epochs done, and at least one batch of it ran) or at the end of one
    saved = checkpoint.load(workdir / "cut" / "checkpoints" / "last.pkl")
    done, progress = saved["epoch"], saved["training"]["progress"]
    assert 1 <= done < 6 and len(rows(workdir / "cut")) == done, (done, err)
    if progress is not None:
        assert progress["epoch"] == done and progress["batch"] >= 1, progress
        assert f"(epoch {done + 1}, batch {progress['batch']})" in err, err
    else:
        assert f"(epoch {done})" in err, err
    resumed = subprocess.run(
        [sys.executable, "-m", "nncli", "train", "--resume", "cut", "--quiet"], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert without_times(rows(workdir / "cut")) == without_times(rows(workdir / "straight"))


def test_a_regression_loss_on_class_labels_gets_one_hot_targets(workdir, train, spiral):
    (workdir / "mse.yaml").write_text(spiral({"loss": "mse"}))
    code, out = train("mse.yaml", "--run-dir", "r", "--quiet", "--set", "train.epochs=2")
    assert code == 0, out
    assert float(rows(workdir / "r")[-1]["train_loss"]) < 1.0  # per-entry MSE against one-hot rows
    saved = checkpoint.load(workdir / "r" / "checkpoints" / "last.pkl")
    assert [s["name"] for s in saved["preprocessor"]["steps"]][-1] == "one_hot"


def test_an_early_stopped_run_resumes_only_when_asked_to_go_on(workdir, train):
    code, out = train(
        "spiral.yaml",
        "--run-dir",
        "r",
        "--quiet",
        "--set",
        "train.epochs=6",
        "--set",
        "train.early_stopping={monitor: val_loss, patience: 1, min_delta: 100}",
    )
    assert code == 0, out
    assert len(rows(workdir / "r")) == 2  # the second epoch cannot improve by 100
    code, out = train("--resume", "r")
    assert code == 1 and "stopped early after 2 epochs" in out
    assert len(rows(workdir / "r")) == 2
    code, out = train("--resume", "r", "--quiet", "--set", "train.early_stopping.min_delta=0")
    assert code == 0, out
    assert len(rows(workdir / "r")) > 2


def test_the_resume_line_gives_the_data_folder_the_run_read(workdir, monkeypatch, train):
    """A run given --data-dir (where $NNCLI_DATA_DIR and the cache are elsewhere) is resumed
    with it: the line printed without it sent the resume to the cache, to download there."""
    from nncli.training.callbacks.files import MetricsWriter

    def stop_in_epoch_two(self, trainer, batch, loss):
        if trainer.state.epoch == 1 and batch == 2:
            trainer.stop_requested = signal.SIGINT

    monkeypatch.delenv("NNCLI_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(workdir / "cache"))
    (workdir / "my data").mkdir()
    with monkeypatch.context() as patch:
        patch.setattr(MetricsWriter, "on_batch_end", stop_in_epoch_two, raising=False)
        code, out = train("spiral.yaml", "--run-dir", "cut", "--quiet", "--data-dir", "my data")
    assert code == 130 and "resume with: nncli train --resume cut --data-dir 'my data'" in out, out
    with monkeypatch.context() as patch:  # the cache itself, or $NNCLI_DATA_DIR: no option needed
        patch.setattr(MetricsWriter, "on_batch_end", stop_in_epoch_two, raising=False)
        code, out = train("spiral.yaml", "--run-dir", "cached", "--quiet",
                          "--data-dir", str(workdir / "cache" / "nncli"))
        assert code == 130 and out.rstrip().endswith("resume with: nncli train --resume cached"), out
        patch.setenv("NNCLI_DATA_DIR", "my data")
        code, out = train("spiral.yaml", "--run-dir", "env", "--quiet")
        assert code == 130 and out.rstrip().endswith("resume with: nncli train --resume env"), out


def test_an_interrupted_epoch_must_be_finished(workdir, monkeypatch, train):
    """The epoch count cannot drop below an unfinished epoch, and finishing it is exact."""
    from nncli.training.callbacks.files import MetricsWriter

    def stop_in_epoch_two(self, trainer, batch, loss):
        if trainer.state.epoch == 1 and batch == 2:
            trainer.stop_requested = signal.SIGINT

    with monkeypatch.context() as patch:
        patch.setattr(MetricsWriter, "on_batch_end", stop_in_epoch_two, raising=False)
        code, out = train("spiral.yaml", "--run-dir", "cut", "--quiet")
    assert code == 130 and "resume with: nncli train --resume cut" in out
    code, out = train("--resume", "cut", "--set", "train.epochs=1")
    assert code == 2 and "interrupted in epoch 2" in out, out
    assert train("spiral.yaml", "--run-dir", "straight", "--quiet")[0] == 0
    assert train("--resume", "cut", "--quiet")[0] == 0
    assert without_times(rows(workdir / "cut")) == without_times(rows(workdir / "straight"))


# Images through augmentation, without convolutions: mnist_small's 5,500 training images in
# 43 batches an epoch, each randomly cropped and flipped with draws from the run's generator.
AUGMENTED = {  # the "cnn" config with batch norm on images, augmented, in batches of 128
    "name": "augmented",
    "seed": 1,
    "data": {"dataset": "mnist_small", "val_size": 4500, "preprocess": ["scale"],
             "augment": [{"random_crop": {"padding": 2}}, "hflip"]},
    "model": [{"conv2d": {"filters": 4, "kernel": 3, "padding": 1}}, "batchnorm", "relu",
              {"maxpool2d": {"size": 2}}, "flatten", {"linear": {"units": 10}}],
    "train": {"epochs": 2},
}


def test_resume_is_exact_with_augmentation(workdir, monkeypatch, train, make_config):
    from nncli.training.callbacks.files import MetricsWriter

    make_config(workdir / "aug.yaml", "cnn", **AUGMENTED)
    assert train("aug.yaml", "--run-dir", "straight", "--quiet")[0] == 0
    # resumed at an epoch's end
    assert train("aug.yaml", "--run-dir", "split", "--quiet", "--set", "train.epochs=1")[0] == 0
    assert train("--resume", "split", "--quiet", "--set", "train.epochs=2")[0] == 0

    # and in the middle of an epoch
    def stop_in_epoch_two(self, trainer, batch, loss):
        if trainer.state.epoch == 1 and batch == 5:
            trainer.stop_requested = signal.SIGINT

    with monkeypatch.context() as patch:
        patch.setattr(MetricsWriter, "on_batch_end", stop_in_epoch_two, raising=False)
        assert train("aug.yaml", "--run-dir", "cut", "--quiet")[0] == 130
    assert checkpoint.load(workdir / "cut" / "checkpoints" / "last.pkl")["training"]["progress"]["batch"] == 6
    assert train("--resume", "cut", "--quiet")[0] == 0

    straight = without_times(rows(workdir / "straight"))
    assert len(straight) == 2
    final = checkpoint.load(workdir / "straight" / "checkpoints" / "last.pkl")["model"]["params"]
    for run in ("split", "cut"):
        assert without_times(rows(workdir / run)) == straight, run
        params = checkpoint.load(workdir / run / "checkpoints" / "last.pkl")["model"]["params"]
        assert all((params[k] == final[k]).all() for k in final), run

    # the augmentation changes training, and only training
    make_config(workdir / "plain.yaml", "cnn", {"data.augment": []}, **AUGMENTED)
    assert train("plain.yaml", "--run-dir", "plain", "--quiet")[0] == 0
    plain = without_times(rows(workdir / "plain"))
    assert all(a["train_loss"] != b["train_loss"] for a, b in zip(plain, straight, strict=True))
    assert float(straight[-1]["train_loss"]) > float(plain[-1]["train_loss"])  # harder to fit


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to tell files apart")
def test_a_full_disk_names_the_file_and_the_run_which_resumes_exactly(workdir, monkeypatch, train):
    real_fsync, written = os.fsync, []

    def fsync(fd):  # the third last.pkl finds the disk full
        name = os.readlink(f"/proc/self/fd/{fd}")
        written.append(Path(name).name)
        if sum(n.startswith(".last.pkl.") for n in written) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", fsync)
        code, out = train("spiral.yaml", "--run-dir", "full", "--quiet")
    assert code == 1, out
    assert out.strip().splitlines() == [
        f"error: cannot write {Path('full/checkpoints/last.pkl')}: No space left on device; the run full"
        " keeps its last checkpoint; make room, then resume with: nncli train --resume full"
    ]
    assert not list((workdir / "full").rglob("*.tmp"))
    assert checkpoint.load(workdir / "full" / "checkpoints" / "last.pkl")["epoch"] == 1
    assert train("--resume", "full", "--quiet")[0] == 0
    assert train("spiral.yaml", "--run-dir", "straight", "--quiet")[0] == 0
    assert without_times(rows(workdir / "full")) == without_times(rows(workdir / "straight"))


def test_a_checkpoint_without_training_state_is_one_error(workdir, train):
    train("spiral.yaml", "--run-dir", "r", "--quiet", "--set", "train.epochs=1")
    last = workdir / "r" / "checkpoints" / "last.pkl"
    state = checkpoint.load(last)
    del state["training"], state["path"]
    last.write_bytes(pickle.dumps(state))
    code, out = train("--resume", "r", "--set", "train.epochs=2")
    assert code == 1 and "no usable training state" in out and "Traceback" not in out


def test_run_dir_refuses_a_folder_that_holds_other_files(workdir, train):
    (workdir / "mine").mkdir()
    (workdir / "mine" / "config.yaml").write_text("# my notes\n")
    code, out = train("spiral.yaml", "--run-dir", "mine")
    assert code == 1 and "not empty" in out
    assert (workdir / "mine" / "config.yaml").read_text() == "# my notes\n"


def test_a_cnn_reports_a_non_finite_loss(workdir, train):
    """The report re-runs the layers in the model's order: a ReLU before a max pool runs after
    it (nncli.nn.model), and backward expects the caches that order leaves."""
    (workdir / "cnn.yaml").write_text(
        "seed: 2\n"
        "data: {dataset: mnist_small, val_size: 5000, preprocess: [scale]}\n"
        "model: [{conv2d: {filters: 4, padding: 1}}, relu, maxpool2d, flatten, {linear: {units: 10}}]\n"
        "loss: softmax_cross_entropy\n"
        "optimizer: {type: sgd, lr: 1.0e+30}\n"
        "train: {epochs: 1, batch_size: 100}\n"
    )
    code, out = train("cnn.yaml", "--run-dir", "r", "--quiet")
    assert code == 3, out
    report = json.loads((workdir / "r" / "nan_report.json").read_text())
    assert [layer["index"] for layer in report["layers"]] == [0, 1, 2, 3, 4]
    assert report["layers"][1]["activations"]["shape"] == [100, 14, 14, 4]  # pooled first
    assert report["layers"][0]["grads"]["W"]["shape"] == [4, 1, 3, 3]


@pytest.mark.parametrize(("spec", "lr"), [("adam", 1e-3), ({"type": "rmsprop"}, 1e-3), ("adamw", 1e-3),
                                          ({"type": "sgd", "momentum": 0.9}, 1e-2), ("adagrad", 1e-2)])
def test_an_optimizer_without_lr_uses_the_usual_default_and_says_so(workdir, train, spiral, spec, lr):
    (workdir / "x.yaml").write_text(spiral({"optimizer": spec, "train.epochs": 1}))
    code, out = train("x.yaml", "--run-dir", "r")
    assert code == 0, out
    name = spec if isinstance(spec, str) else spec["type"]
    assert re.search(rf"note: x.yaml:\d+ optimizer: no lr given; {name} uses its usual default,"
                     rf" lr {lr:g} \(set optimizer.lr to choose\)", out), out
    saved = yaml.safe_load((workdir / "r" / "config.yaml").read_text())
    assert saved["optimizer"]["type"] == name and saved["optimizer"]["lr"] == lr
    assert float(rows(workdir / "r")[0]["lr"]) == pytest.approx(lr)
    # resuming reads the recorded rate: no note, the same rate
    code, out = train("--resume", "r", "--set", "train.epochs=2")
    assert code == 0 and "no lr given" not in out, out
    assert float(rows(workdir / "r")[1]["lr"]) == pytest.approx(lr)


def test_an_optimizer_with_lr_gets_no_note(workdir, train):
    code, out = train("spiral.yaml", "--run-dir", "r", "--set", "train.epochs=1")
    assert code == 0 and "no lr given" not in out, out


def test_a_new_run_still_training_cannot_be_resumed_beside_it(workdir, nncli, spiral):
    """The new run holds its folder as a resumed one does: a `--resume` of it started while it
    trains (its last.pkl already there) is turned away, not run beside it on the same files."""
    (workdir / "s.yaml").write_text(spiral({"data.points_per_class": 2000, "train.epochs": 200}))
    first = subprocess.Popen([sys.executable, "-m", "nncli", "train", "s.yaml", "--run-dir", "r", "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        metrics = workdir / "r" / "metrics.csv"
        wait_for(lambda: metrics.exists() and len(rows(workdir / "r")) >= 2, "the new run's second epoch")
        second = nncli("train", "--resume", "r", "--quiet", "--set", "train.epochs=300")
        assert second.exit_code == 1
        assert "r is being trained by another process; wait for it to end" in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    # the lock went with its process: the run resumes, one epoch further
    done = len(rows(workdir / "r"))
    again = nncli("train", "--resume", "r", "--quiet", "--set", f"train.epochs={done + 1}")
    assert again.exit_code == 0, again.output
    assert len(rows(workdir / "r")) == done + 1


def test_a_run_is_resumed_by_one_process_at_a_time(workdir, nncli, spiral):
    (workdir / "s.yaml").write_text(spiral({"data.points_per_class": 2000, "train.epochs": 1}))
    assert nncli("train", "s.yaml", "--run-dir", "r", "--quiet").exit_code == 0
    first = subprocess.Popen([sys.executable, "-m", "nncli", "train", "--resume", "r", "--quiet",
                              "--set", "train.epochs=200"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        wait_for(lambda: len(rows(workdir / "r")) >= 2, "the first resume's second epoch")
        second = nncli("train", "--resume", "r", "--quiet", "--set", "train.epochs=200")
        assert second.exit_code == 1
        assert "r is being trained by another process; wait for it to end" in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    # the lock went with its process: the run resumes again, to its end
    again = nncli("train", "--resume", "r", "--quiet", "--set", "train.epochs=200")
    assert again.exit_code == 0, again.output
    assert len(rows(workdir / "r")) == 200
