"""prune.png: a pruned sweep's runs, their metric over the epochs, the pruned ones ending in a
cross where they were stopped, and the rungs at which they were judged (`nncli sweep` with
`prune:`; see nncli.commands.sweep_prune)."""

from __future__ import annotations

from pathlib import Path

from nncli.output.curves import numbers
from nncli.output.plotting import pyplot, save


def plot_pruning(runs: list[tuple[str, list[dict], bool]], rungs: list[int], metric: str, out: Path,
                 title: str = "") -> Path:
    """`runs`: (trial label, metrics rows, pruned) for each run; the runs that went on in colour
    (one per trial, labelled), the pruned in grey, each ending in a cross; `rungs`, the epochs
    of the decisions, as dotted lines."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    trials = list(dict.fromkeys(label for label, _, pruned in runs if not pruned))
    labelled = set()
    for label, rows, pruned in runs:
        xs, ys = numbers(rows, metric)
        if not xs:
            continue
        if pruned:
            ax.plot(xs, ys, color="0.6", alpha=0.7, linewidth=1,
                    label=None if "pruned" in labelled else "pruned")
            ax.plot(xs[-1:], ys[-1:], "x", color="0.35", markersize=7)
            labelled.add("pruned")
        else:
            colour = colours[trials.index(label) % len(colours)]
            ax.plot(xs, ys, color=colour, alpha=0.9, linewidth=1.5,
                    label=None if label in labelled else label)
            labelled.add(label)
    for epoch in rungs:
        ax.axvline(epoch, color="0.4", linestyle=":", linewidth=1)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", loc="best")
    if title:
        ax.set_title(title, fontsize="medium")
    fig.tight_layout()
    return save(fig, out)
