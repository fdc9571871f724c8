"""The learning-rate range test drawn (`nncli lr-find`): the smoothed loss the suggestions were
read from against the learning rate on a log axis, the batch losses faintly behind it, and the
suggestions marked.

matplotlib is imported when the figure is drawn (see nncli.output.plotting).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nncli.output.plotting import pyplot, save
from nncli.training.lrfind import RangeTest, Suggestions

MARKS = (  # suggestion, colour, marker
    ("valley", "tab:green", "o"),
    ("steepest", "tab:orange", "v"),
    ("minimum", "tab:red", "x"),
)


def plot_lr_find(test: RangeTest, suggestions: Suggestions, out: Path, title: str = "") -> Path:
    """One panel: loss against learning rate (log axis). The y axis spans the smoothed curve
    from its lowest point to a little above where it started, so that the divergence at the
    end does not flatten the part worth reading."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    finite = np.isfinite(test.losses)
    ax.plot(test.lrs[finite], test.losses[finite], color="tab:blue", alpha=0.25, linewidth=1,
            label="batch loss")
    curve = suggestions.curve if suggestions.curve is not None else test.smoothed
    lrs = test.lrs[: len(curve)]
    ax.plot(lrs, curve, color="tab:blue", linewidth=2, label="smoothed loss")
    for name, colour, marker in MARKS:
        lr = getattr(suggestions, name)
        if lr is None:
            continue
        loss = float(np.interp(np.log10(lr), np.log10(lrs), curve))
        ax.axvline(lr, color=colour, alpha=0.5, linewidth=1, linestyle="--")
        ax.plot([lr], [loss], marker=marker, color=colour, markersize=9, linestyle="none",
                label=f"{name} {lr:.2g}")
    if suggestions.valley_span is not None:
        ax.axvspan(*suggestions.valley_span, color="tab:green", alpha=0.08, label="valley")
    ax.set_xscale("log")
    smooth = curve[np.isfinite(curve)]
    if len(smooth):
        low, first = float(smooth.min()), float(smooth[: max(1, len(smooth) // 10)].max())
        high = max(first, low) + 0.15 * (max(first, low) - low or abs(low) or 1.0)
        ax.set_ylim(low - 0.05 * (high - low), high)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left")
    ax.set_title(title or "learning-rate range test", fontsize="medium")
    fig.tight_layout()
    return save(fig, out)
