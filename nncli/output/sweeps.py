"""sweep.png: a sweep at a glance.

For each varied key, one panel of the sweep's metric against the key's values: every run a
point, the mean over the runs at each value a line. Numbers on a log axis when they span a
factor of 10 or more, labelled with the values swept (or, with many, the powers of ten only);
whole numbers get whole ticks; strings and lists are categories. Then the metric over the
epochs of the best trials' runs, each trial named by its varied values, one colour per trial
and one marker per seed. The panels stand in a grid of at most three columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nncli.output.curves import numbers
from nncli.output.plotting import pyplot, save

COLUMNS = 3  # panels side by side at most
MARKERS = "os^Dvx*P"  # one per seed
MOST_TICKS = 7  # more values swept than this: the axis picks its own ticks


@dataclass
class SweepCurve:
    """A run of one of the best trials: the trial's label ("lr=0.03, units=64"), its rank
    (0 is the best), the seed's position among the sweep's seeds, and its metrics rows."""

    label: str
    rank: int
    seed: int
    rows: list[dict]


def plot_sweep(
    varied: dict[str, list[tuple[object, float]]],
    curves: list[SweepCurve],
    metric: str,
    out: Path,
    title: str = "",
) -> Path:
    """`varied` maps each varied key to its (value, metric) points, one per run; see the
    module docstring."""
    plt = pyplot()
    panels = len(varied) + (1 if curves else 0)
    if panels == 0:
        raise ValueError("nothing varies and there are no curves to draw")
    columns = min(COLUMNS, panels)
    rows = math.ceil(panels / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.8 * columns, 3.9 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax, (key, points) in zip(flat, varied.items(), strict=False):
        _values_panel(ax, key, points, metric)
    if curves:
        _curves_panel(flat[len(varied)], curves, metric)
    for ax in flat[panels:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, out)


def _values_panel(ax, key: str, points: list[tuple[object, float]], metric: str) -> None:
    from matplotlib.ticker import MaxNLocator, NullFormatter, NullLocator

    xs = [x for x, _ in points]
    numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
    if numeric:
        positions = [float(x) for x in xs]
        order = sorted(set(positions))
    else:
        labels = list(dict.fromkeys(str(x) for x in xs))
        positions = [float(labels.index(str(x))) for x in xs]
        order = [float(i) for i in range(len(labels))]
        ax.set_xticks(order, labels, rotation=30 if max(map(len, labels)) > 6 else 0, ha="right"
                      if max(map(len, labels)) > 6 else "center")
    ys = [y for _, y in points]
    ax.scatter(positions, ys, s=14, alpha=0.6, label="runs")
    means = [float(np.mean([y for p, y in zip(positions, ys, strict=True) if p == x])) for x in order]
    ax.plot(order, means, marker="o", label="mean")
    if numeric:
        log = min(order) > 0 and max(order) / min(order) >= 10
        whole = all(isinstance(x, int) for x in xs)
        if log:
            ax.set_xscale("log")
        if len(order) <= MOST_TICKS:  # label the values swept, and nothing else
            ax.set_xticks(order, [_short(x, whole) for x in order])
            ax.xaxis.set_minor_locator(NullLocator())
        elif log:
            ax.xaxis.set_minor_formatter(NullFormatter())  # the powers of ten only
        elif whole:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)


def _short(value: float, whole: bool) -> str:
    """A tick label: 64, 0.03, 3e-05."""
    return f"{int(value)}" if whole else f"{value:.3g}"


def _curves_panel(ax, curves: list[SweepCurve], metric: str) -> None:
    from matplotlib.ticker import MaxNLocator

    for curve in curves:
        xs, ys = numbers(curve.rows, metric)
        ax.plot(
            xs,
            ys,
            color=f"C{curve.rank % 10}",
            marker=MARKERS[curve.seed % len(MARKERS)],
            markevery=max(1, len(xs) // 10),
            markersize=4,
            alpha=0.85,
            label=curve.label,
        )
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_ylabel(metric)
    ax.set_title("the best trials", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
