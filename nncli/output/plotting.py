"""Loss and accuracy curves from metrics rows, drawn with matplotlib's Agg backend (no
display needed). Used by training (curves.png, through the `CurvePlotter` callback) and by
`nncli plot`; `nncli eval --plot` draws the confusion matrix (or, for regression, predictions
against targets), and `nncli sweep` its comparison of trials.

Every figure is written, atomically, as PNG, SVG or PDF according to the file's extension. SVG keeps its
text as text (not glyph outlines), so labels and legends can be searched and read.

matplotlib is imported when the first figure is drawn, not when this module is: checking a file
name (`check_format`) or building a training run's callbacks costs nothing.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from nncli.errors import NncliError
from nncli.fileio import atomic_write_bytes
from nncli.training.callbacks.base import Callback
from nncli.training.rundir import RunDir


def _pyplot():
    """matplotlib.pyplot on the Agg backend, imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class CurvePlotter(Callback):
    """curves.png at the end of training (and when interrupted, for what there is)."""

    def __init__(self, run: RunDir, name: str):
        self.run, self.name = run, name

    def _draw(self, trainer):
        if trainer.state.history:
            plot_curves([(self.name, trainer.state.history)], self.run.curves)

    def on_train_end(self, trainer):
        self._draw(trainer)

    def on_interrupt(self, trainer, signum):
        self._draw(trainer)


def _numbers(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
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


def plot_curves(runs: list[tuple[str, list[dict]]], out: Path, metrics: list[str] | None = None) -> Path:
    """One panel per metric family (loss, accuracy, or each of `metrics`); train solid and
    validation dashed; one colour per run, named in the legend when there are several."""
    plt = _pyplot()
    panels = metrics or ["loss", "acc"]
    panels = [m for m in panels if any(_numbers(rows, k)[0] for _, rows in runs for k in _keys(m))]
    if not panels:
        raise ValueError("no metric to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes[0], panels, strict=True):
        for i, (label, rows) in enumerate(runs):
            for key in _keys(metric):
                xs, ys = _numbers(rows, key)
                if not xs:
                    continue
                split = key.split("_", 1)[0] if "_" in key else key
                name = f"{label} {split}" if len(runs) > 1 else split
                ax.plot(
                    xs,
                    ys,
                    color=colours[i % len(colours)],
                    linestyle="--" if split == "val" else "-",
                    marker="o" if len(xs) < 30 else None,
                    markersize=3,
                    label=name,
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel({"loss": "loss", "acc": "accuracy"}.get(metric, metric))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, out)


def _keys(metric: str) -> list[str]:
    """`loss` -> train_loss, val_loss; a full column name stands for itself."""
    if metric in ("loss", "acc"):
        return [f"train_{metric}", f"val_{metric}"]
    return [metric]


FORMATS = (".png", ".svg", ".pdf")


def check_format(out: Path | str) -> None:
    """Raise `NncliError` unless `out` ends in .png, .svg or .pdf."""
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        given = f"{suffix!r}" if suffix else "no extension"
        raise NncliError(f"{out}: cannot tell the image format from {given}; use .png, .svg or .pdf")


def _save(fig, out: Path | str) -> Path:
    plt = _pyplot()
    out = Path(out)
    try:
        check_format(out)
        image = io.BytesIO()
        with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "nncli"}):
            fig.savefig(image, dpi=100, format=out.suffix.lower()[1:])
    finally:
        plt.close(fig)
    atomic_write_bytes(out, image.getvalue())  # like every file nncli writes: whole or not at all
    return out


def plot_confusion(matrix, class_names: list[str], out: Path, title: str = "") -> Path:
    """The confusion matrix as a heat map (rows: true class, columns: predicted class), each
    cell annotated with its count while there are at most 20 classes."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    k = len(matrix)
    size = min(12.0, 2.5 + 0.5 * k)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k), class_names, rotation=45 if max(map(len, class_names)) > 2 else 0, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title)
    if k <= 20:
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    f"{matrix[i, j]:,}",
                    ha="center",
                    va="center",
                    fontsize="small",
                    color="white" if matrix[i, j] > threshold else "black",
                )
    fig.tight_layout()
    return _save(fig, out)


def plot_predictions(pred, target, out: Path, title: str = "") -> Path:
    """Regression: each prediction against its target, with the line y = x."""
    plt = _pyplot()
    pred, target = np.ravel(pred), np.ravel(target)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(target, pred, s=6, alpha=0.5)
    low = float(min(target.min(), pred.min())) if pred.size else 0.0
    high = float(max(target.max(), pred.max())) if pred.size else 1.0
    ax.plot([low, high], [low, high], color="black", linewidth=1, linestyle="--", label="y = x")
    ax.set_xlabel("target")
    ax.set_ylabel("prediction")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, out)


def plot_sweep(
    varied: dict[str, list[tuple[object, float]]],
    curves: list[tuple[str, list[dict]]],
    metric: str,
    out: Path,
    title: str = "",
) -> Path:
    """A sweep at a glance: for each varied key, one panel of the metric against its values (every
    run a point, the mean over the runs at each value a line; numbers on a log axis when they
    span a factor of 10 or more, other values in order); then `curves`, the metric over the
    epochs of the best trials' runs."""
    plt = _pyplot()
    panels = len(varied) + (1 if curves else 0)
    if panels == 0:
        raise ValueError("nothing varies and there are no curves to draw")
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.8), squeeze=False)
    for ax, (key, points) in zip(axes[0], varied.items(), strict=False):
        xs = [x for x, _ in points]
        numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
        if numeric:
            positions = [float(x) for x in xs]
            order = sorted(set(positions))
        else:
            labels = list(dict.fromkeys(str(x) for x in xs))
            positions = [float(labels.index(str(x))) for x in xs]
            order = [float(i) for i in range(len(labels))]
            ax.set_xticks(order, labels, rotation=30 if max(map(len, labels)) > 6 else 0)
        ys = [y for _, y in points]
        ax.scatter(positions, ys, s=14, alpha=0.6, label="runs")
        means = [float(np.mean([y for p, y in zip(positions, ys, strict=True) if p == x])) for x in order]
        ax.plot(order, means, marker="o", label="mean")
        if numeric and min(order) > 0 and max(order) / min(order) >= 10:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    if curves:
        ax = axes[0][-1]
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (label, rows) in enumerate(curves):
            xs, ys = _numbers(rows, metric)
            ax.plot(xs, ys, color=colours[i % len(colours)], label=label, alpha=0.8)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title("the best trials", fontsize="medium")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out)
