"""Loss and accuracy curves from metrics rows, drawn with matplotlib's Agg backend (no
display needed). Used by training (curves.png) and by `nncli plot`."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _keys(metric: str) -> list[str]:
    """`loss` -> train_loss, val_loss; a full column name stands for itself."""
    if metric in ("loss", "acc"):
        return [f"train_{metric}", f"val_{metric}"]
    return [metric]
