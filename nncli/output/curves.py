"""The curves of runs: a run's curves.png (drawn by the `CurvePlotter` callback when training
ends or is interrupted) and `nncli plot`'s comparison of runs.

One panel per metric family (loss, accuracy, or the metrics asked for). Train and validation
are told apart by colour and named in the legend; several runs get one colour each, train solid
and validation dashed. Epochs are whole numbers on the x axis, and where steps.csv has the loss
of every training batch it is drawn as a light, smoothed line under the per-epoch points, so a
one-epoch run has a curve too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nncli.output.plotting import pyplot, save
from nncli.training.callbacks.base import Callback
from nncli.training.rundir import RunDir, read_steps

TRAIN, VAL = "C0", "C1"  # a single run's colours: matplotlib's blue and orange


@dataclass
class Curves:
    """What is drawn of one run: its label, its metrics rows (one per epoch) and its per-batch
    training losses (steps.csv's rows: step, fractional epoch, loss, lr)."""

    label: str
    rows: list[dict]
    steps: list[tuple] = field(default_factory=list)


class CurvePlotter(Callback):
    """curves.png at the end of training (and when interrupted, for what there is); it comes
after the `StepsWriter` among the callbacks, and reads the steps.csv that one wrote."""

    def __init__(self, run: RunDir, name: str):
        self.run, self.name = run, name

    def _draw(self, trainer):
        if not trainer.state.history:
            return
        steps = read_steps(self.run.steps)  # written before this callback is called
        title = f"{self.name}: {self.run.path}"
        plot_curves([Curves(self.name, trainer.state.history, steps)], self.run.curves, title=title)

    def on_train_end(self, trainer):
        self._draw(trainer)

    def on_interrupt(self, trainer, signum):
        self._draw(trainer)


def numbers(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of the finite values of column `key` in metrics rows."""
    xs, ys = [], []
    for row in rows:
        value = row.get(key)
        if value is None or value == "":
            continue
        value = float(value)
        if math.isfinite(value):
            xs.append(float(row["epoch"]))
            ys.append(value)
    return xs, ys


def smoothed(values: np.ndarray) -> np.ndarray:
    """An exponential moving average, bias-corrected (so the first values are not pulled towards
    zero), spanning about a thirtieth of the values (between 1 and 100)."""
    span = min(100.0, max(1.0, len(values) / 30))
    beta = 1.0 - 1.0 / span
    out = np.empty(len(values))
    average = 0.0
    for i, value in enumerate(values):
        average = beta * average + (1 - beta) * value
        out[i] = average / (1 - beta ** (i + 1)) if beta else value
    return out


def plot_curves(
    runs: list[Curves], out: Path, metrics: list[str] | None = None, title: str = ""
) -> Path:
    """One panel per metric family (loss, accuracy, or each of `metrics`); see the module
    docstring for how runs and splits are told apart."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    panels = metrics or ["loss", "acc"]
    panels = [m for m in panels if any(numbers(run.rows, k)[0] for run in runs for k in _keys(m))]
    if not panels:
        raise ValueError("no metric to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    single = len(runs) == 1
    last_epoch = max(max(numbers(run.rows, "epoch")[0] or [1.0]) for run in runs)
    for ax, metric in zip(axes[0], panels, strict=True):
        for i, run in enumerate(runs):
            own = f"C{i % 10}"
            if metric == "loss" and len(run.steps) > 1:
                steps = np.asarray(run.steps, dtype=np.float64)
                finite = np.isfinite(steps[:, 2])
                ax.plot(
                    steps[finite, 1],
                    smoothed(steps[finite, 2]),
                    color=TRAIN if single else own,
                    alpha=0.35,
                    linewidth=1.2,
                    label=("train, per batch (smoothed)" if single else f"{run.label} train, per batch"),
                )
            for key in _keys(metric):
                xs, ys = numbers(run.rows, key)
                if not xs:
                    continue
                split = key.split("_", 1)[0] if "_" in key else key
                ax.plot(
                    xs,
                    ys,
                    color=(VAL if split == "val" else TRAIN) if single else own,
                    linestyle="--" if split == "val" and not single else "-",
                    marker="o" if len(xs) < 30 else None,
                    markersize=4,
                    label=split if single else f"{run.label} {split}",
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel({"loss": "loss", "acc": "accuracy"}.get(metric, metric))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(0, last_epoch + max(0.05 * last_epoch, 0.1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    return save(fig, out)


def _keys(metric: str) -> list[str]:
    """`loss` -> train_loss, val_loss; a full column name stands for itself."""
    if metric in ("loss", "acc"):
        return [f"train_{metric}", f"val_{metric}"]
    return [metric]
