"""What every figure shares (matplotlib's Agg backend, no display needed; the formats; the
atomic save), and `nncli eval --plot`'s figures: the confusion matrix, or for regression the
predictions against their targets. The curves of runs are `nncli.output.curves`, a sweep's
comparison of trials `nncli.output.sweeps`.

Every figure is written, atomically, as PNG, SVG or PDF according to the file's extension. SVG keeps its
text as text (not glyph outlines), so labels and legends can be searched and read.

matplotlib is imported when the first figure is drawn, not when this module is: checking a file
name (`check_format`) or building a training run's callbacks costs nothing.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from nncli.errors import NncliError
from nncli.fileio import atomic_write_bytes


def pyplot():
    """matplotlib.pyplot on the Agg backend, imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


FORMATS = (".png", ".svg", ".pdf")


def check_format(out: Path | str) -> None:
    """Raise `NncliError` unless `out` ends in .png, .svg or .pdf."""
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        given = f"{suffix!r}" if suffix else "no extension"
        raise NncliError(f"{out}: cannot tell the image format from {given}; use .png, .svg or .pdf")


def save(fig, out: Path | str) -> Path:
    plt = pyplot()
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
    plt = pyplot()
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
    return save(fig, out)


def plot_predictions(pred, target, out: Path, title: str = "") -> Path:
    """Regression: each prediction against its target, with the line y = x."""
    plt = pyplot()
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
    return save(fig, out)
