"""A run stopped at any moment is either resumable or gone, and a half-trained checkpoint says
so when it is evaluated or plotted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.fixture
def slow_yaml(workdir, spiral) -> Path:
    # 9,000 points: a start-up of about half a second here (imports, data, model), then short
    # epochs; on any machine the signals fall somewhere in start-up or training, and whatever
    # they hit, the run must be resumable or gone
    path = workdir / "slow.yaml"
    path.write_text(spiral({"data.points_per_class": 3000, "train.epochs": 3}))
    return path


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_ctrl_c_anywhere_in_start_up_leaves_a_resumable_run_or_nothing(workdir, slow_yaml, nncli):
    delays = [0.15 + 0.06 * k for k in range(8)]  # from the imports to the first epochs
    outcomes: list[str] = []
    for k, delay in enumerate(delays):
        run = workdir / f"r{k}"
        process = subprocess.Popen(
            [sys.executable, "-m", "nncli", "train", slow_yaml, "--run-dir", run, "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        assert "Traceback" not in err, err
        if not run.exists():
            outcomes.append("gone")
            assert process.returncode == 130 and "interrupted" in err, f"{delay:.2f} s: {err}"
            continue
        assert (run / "checkpoints" / "last.pkl").is_file(), f"{delay:.2f} s: {sorted(run.rglob('*'))}"
        if (run / "summary.json").is_file():  # finished; the signal came as it closed
            outcomes.append("finished")
            assert process.returncode in (0, 130), f"{delay:.2f} s: exit {process.returncode}: {err}"
            continue
        outcomes.append("resumable")
        assert process.returncode == 130 and "interrupted" in err, f"{delay:.2f} s: {err}"
        resumed = nncli("train", "--resume", run, "--quiet")
        assert resumed.exit_code == 0, f"{delay:.2f} s: {resumed.output}"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["epochs_completed"] == 3, f"{delay:.2f} s: {summary}"
    # which outcomes occur depends on the machine's speed (`outcomes` says which did, for a
    # failure's message); each one is checked above: exit 130 and "interrupted" for a stopped
    # run, and a resumed run trains to its last epoch


def test_a_stop_before_the_first_checkpoint_removes_the_run(workdir, nncli, monkeypatch, spiral):
    from nncli.training.callbacks.files import Checkpointer

    (workdir / "spiral.yaml").write_text(spiral())

    def interrupted(self, trainer):
        raise KeyboardInterrupt

    (workdir / "empty").mkdir()
    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "on_train_begin", interrupted)
        assert nncli("train", "spiral.yaml", "--run-dir", "new", "--quiet").exit_code == 130
        assert nncli("train", "spiral.yaml", "--run-dir", "empty", "--quiet").exit_code == 130
        assert nncli("train", "spiral.yaml", "--quiet").exit_code == 130
    assert not (workdir / "new").exists()
    assert list((workdir / "empty").iterdir()) == []  # as it was: empty, and usable again
    assert list((workdir / "runs" / "spiral").iterdir()) == []
    assert nncli("train", "spiral.yaml", "--run-dir", "empty", "--quiet").exit_code == 0


def test_a_checkpoint_from_inside_epoch_one_says_so(workdir, nncli, monkeypatch, spiral):
    from nncli.training.callbacks.files import MetricsWriter

    (workdir / "spiral.yaml").write_text(spiral())

    def stop_in_epoch_one(self, trainer, batch, loss):
        if batch == 2:
            trainer.stop_requested = signal.SIGINT

    with monkeypatch.context() as patch:
        patch.setattr(MetricsWriter, "on_batch_end", stop_in_epoch_one, raising=False)
        assert nncli("train", "spiral.yaml", "--run-dir", "cut", "--quiet").exit_code == 130
    evaluated = nncli("eval", "cut")
    assert evaluated.exit_code == 0, evaluated.output
    assert evaluated.stderr.strip() == (
        f"warning: {Path('cut/checkpoints/last.pkl')} was saved during epoch 1, after 3 of its"
        " batches: the model is partly trained"
    )
    plotted = nncli("plot", "cut", "-o", "c.png")
    assert plotted.exit_code == 1
    assert plotted.stderr.strip() == (
        "error: cut has no finished epoch to plot yet (it was stopped in its first epoch);"
        " resume it with: nncli train --resume cut"
    )
    assert not (workdir / "c.png").exists()
