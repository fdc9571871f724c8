"""Metrics of a model on a dataset split, computed in batches in evaluation mode."""

from __future__ import annotations

import numpy as np

from nncli.losses import Loss
from nncli.model import Sequential


def loss_and_accuracy(
    model: Sequential, loss: Loss, x: np.ndarray, y: np.ndarray, batch_size: int
) -> tuple[float, float | None]:
    """Mean loss over the split, the same whatever the batch size (each batch's mean counts by
    its weight: see `Loss.batch_weight`), and accuracy (None for regression)."""
    total, weight, correct, seen = 0.0, 0.0, 0, 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        out = model.forward(xb, training=False)
        total += loss.forward(out, yb) * loss.batch_weight
        weight += loss.batch_weight
        correct += loss.correct(out, yb) or 0
        seen += len(xb)
    if seen == 0:
        return float("nan"), None
    return total / weight, (correct / seen if loss.task == "classification" else None)
