"""A run stopped at any moment is either resumable or gone, and a half-trained checkpoint says
so when it is evaluated or plotted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from polling import wait_for


@pytest.fixture
def slow_yaml(workdir, spiral) -> Path:
    # 9,000 points: short epochs, three of them, so that training outlasts the signals sent at
    # its start-up's events
    path = workdir / "slow.yaml"
    path.write_text(spiral({"data.points_per_class": 3000, "train.epochs": 3}))
    return path


def _imports_numpy(process: subprocess.Popen) -> bool:
    """Whether the command is importing its modules: numpy's core library is mapped."""
    try:
        return "_multiarray_umath" in Path(f"/proc/{process.pid}/maps").read_text()
    except OSError:
        return False


# the moments of start-up a Ctrl-C lands in, each an event seen from outside the process
START_UP = {
    "imports": _imports_numpy,
    "run directory made": lambda process, run: run.exists(),
    "first checkpoint written": lambda process, run: (run / "checkpoints" / "last.pkl").exists(),
    "first epoch's metrics written": lambda process, run: (run / "metrics.csv").exists(),
}


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("moment", list(START_UP))
def test_a_ctrl_c_anywhere_in_start_up_leaves_a_resumable_run_or_nothing(workdir, slow_yaml, nncli, moment):
    run = workdir / "r"
    process = subprocess.Popen(
        [sys.executable, "-m", "nncli", "train", slow_yaml, "--run-dir", run, "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    event = START_UP[moment]
    try:
        wait_for(lambda: process.poll() is not None or (event(process) if moment == "imports"
                                                         else event(process, run)),
                 f"{moment} (or the command's end)", every=0.002)
        assert process.poll() is None, f"it ended before the event: {process.communicate()}"
        checkpointed = (run / "checkpoints" / "last.pkl").exists()  # before the signal is sent
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert "Traceback" not in err, err
    assert process.returncode == 130 and "interrupted" in err, f"exit {process.returncode}: {err}"
    if not run.exists():  # stopped before its first checkpoint: nothing is left
        assert not checkpointed
        return
    # from the first checkpoint on (it may have come after the look before the signal), the run
    # stays and resumes to its last epoch
    assert (run / "checkpoints" / "last.pkl").is_file(), sorted(run.rglob("*"))
    assert "resume with: nncli train --resume" in err, err
    assert not (run / "summary.json").exists()
    resumed = nncli("train", "--resume", run, "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run / "summary.json").read_text())["epochs_completed"] == 3


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
