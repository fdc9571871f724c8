"""Every picture nncli writes, drawn as matplotlib draws it (Agg) and read as a person would:
no two tick labels of an axis overlap, and every legend names each entry differently.

The figures are caught as they are saved (`Figure.savefig`), so the check covers whatever the
commands draw: curves.png of a run, `nncli plot`, sweep.png, and `nncli eval --plot`'s
confusion matrix and regression scatter.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pytest
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]


def crowding(fig) -> list[str]:
    """What would not read at a glance in `fig`: overlapping tick labels, repeated legend
    entries. Empty when the picture is clean."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            low, high = sorted(axis.get_view_interval())
            shown = [
                label
                for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]
                for label in (tick.label1,)
                if label.get_visible() and label.get_text() and low <= tick.get_loc() <= high
            ]
            boxes = [(label.get_text(), label.get_window_extent(renderer).shrunk(0.98, 0.9))
                     for label in shown]
            for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
                if box_a.overlaps(box_b):
                    where = ax.get_title() or ax.get_xlabel()
                    found.append(f"{where}: {name} tick labels {a!r} and {b!r} overlap")
        legend = ax.get_legend()
        if legend is not None:
            texts = [t.get_text() for t in legend.get_texts()]
            repeated = sorted({t for t in texts if texts.count(t) > 1})
            if repeated:
                found.append(f"{ax.get_xlabel()}: legend repeats {repeated}")
    return found


class _Checked(dict):
    figures: dict


@pytest.fixture
def drawn(monkeypatch):
    """What `crowding` found in each figure saved while the test runs, by the name of the file
    it went to (nncli renders into memory, then writes the file atomically)."""
    from nncli.output import plotting

    checked = _Checked()
    pending: list = []
    savefig, write = Figure.savefig, plotting.atomic_write_bytes

    def checking(self, fname, *args, **kwargs):
        pending.append((crowding(self), self))
        return savefig(self, fname, *args, **kwargs)

    def writing(path, data):
        checked[Path(path).name], checked.figures[Path(path).name] = pending.pop()
        return write(path, data)

    monkeypatch.setattr(Figure, "savefig", checking)
    monkeypatch.setattr(plotting, "atomic_write_bytes", writing)
    checked.figures = {}  # the figures themselves, for what a test checks of one picture
    return checked


def test_the_check_sees_overlapping_labels_and_repeated_legends():
    """The check itself can fail: crowded ticks and a legend naming two lines alike."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([1, 2], [1, 2], label="a")
    ax.plot([1, 2], [2, 1], label="a")
    ax.set_xticks([1, 1.05, 2], ["one thousand", "two thousand", "x"])
    ax.legend()
    found = crowding(fig)
    plt.close(fig)
    assert any("overlap" in line for line in found) and any("repeats ['a']" in line for line in found)


def _fake_run(folder: Path, accuracies: list[float], seed: int) -> None:
    """A finished run as far as the pictures go: its config and metrics.csv."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"name: spiral\nseed: {seed}\n")
    with open(folder / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s"])
        for epoch, acc in enumerate(accuracies, 1):
            writer.writerow([epoch, 1 - acc, acc, 1.1 - acc, acc - 0.02, 0.1, 0.01])


def test_sweep_png_of_four_keys_reads_at_a_glance(tmp_path, drawn):
    """Four keys, one on a log axis with two values (whose minor labels once overlapped), whole
    numbers, a category, and two seeds a trial; the best trials named by their values."""
    from nncli.commands import sweep
    from nncli.commands.sweep_summary import SweepResult, summary_rows
    from nncli.config.sweep import load_sweep

    base = tmp_path / "spiral.yaml"
    base.write_text((ROOT / "configs" / "spiral_mlp.yaml").read_text())
    spec_file = tmp_path / "four.yaml"
    spec_file.write_text(
        f"base: {base}\n"
        "grid:\n"
        "  optimizer.lr: [0.003, 0.03]\n"
        "  model[0].linear.units: [16, 64]\n"
        "  model[1]: [relu, tanh]\n"
        "  train.batch_size: [16, 32]\n"
        "seeds: [0, 1]\n"
        "metric: val_acc\n"
    )
    spec = load_sweep(spec_file)
    out = tmp_path / "out"
    runs = sweep.plan(spec, out)
    for i, run in enumerate(runs):
        _fake_run(run.path, [0.5 + 0.01 * i + 0.05 * e for e in range(6)], run.seed)
        run.status = "finished"
    result = SweepResult(spec, out, runs)
    result.rows = summary_rows(spec, runs)
    assert sweep.draw(result) == out / "sweep.png"
    assert drawn["sweep.png"] == []
    from PIL import Image

    width, height = Image.open(out / "sweep.png").size
    assert width <= 1500 and height > 500, (width, height)  # a grid, not one long row


def test_curves_of_short_and_long_runs_and_of_sweep_runs(workdir, nncli, spiral, drawn):
    (workdir / "one.yaml").write_text(spiral({"train.epochs": 1}))
    (workdir / "twelve.yaml").write_text(spiral({"train.epochs": 12}))
    for name in ("one", "twelve"):
        assert nncli("train", f"{name}.yaml", "--run-dir", name, "-q").exit_code == 0
        assert drawn["curves.png"] == [], name
        loss, accuracy = drawn.figures["curves.png"].axes
        lines = {line.get_label(): line for line in loss.get_lines()}
        # train and validation told apart by colour and named; the batches' losses as a line
        assert lines["train"].get_color() != lines["val"].get_color()
        epochs = 1 if name == "one" else 12
        assert len(lines["train, per batch (smoothed)"].get_xdata()) == 9 * epochs  # 144 samples, 16 a batch
        ticks = [t for t in loss.get_xticks() if loss.get_xlim()[0] <= t <= loss.get_xlim()[1]]
        assert all(float(t).is_integer() for t in ticks), ticks  # whole epochs
        assert drawn.figures["curves.png"]._suptitle.get_text() == f"spiral: {name}"
    assert nncli("plot", "one", "twelve", "-o", "both.png").exit_code == 0
    assert drawn["both.png"] == []


def test_eval_pictures(workdir, nncli, spiral, drawn):
    (workdir / "spiral.yaml").write_text(spiral({"train.epochs": 2}))
    sine = (ROOT / "configs" / "sine_regression.yaml").read_text().replace("epochs: 150", "epochs: 2")
    (workdir / "sine.yaml").write_text(sine)
    for name in ("spiral", "sine"):
        assert nncli("train", f"{name}.yaml", "--run-dir", name, "-q").exit_code == 0
        result = nncli("eval", name, "--plot", f"{name}-eval.png")
        assert result.exit_code == 0, result.output
        assert drawn[f"{name}-eval.png"] == []
