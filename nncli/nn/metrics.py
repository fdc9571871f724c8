"""What a model scores on a dataset split, computed in batches in evaluation mode.

  loss_and_accuracy  the two numbers training reports each epoch (and summary.json's test figures)
  evaluate           the report `nncli eval` prints: for classification loss, accuracy, per-class
                     precision and recall and the confusion matrix (rows: true class, columns:
                     predicted class); for regression loss, MSE, MAE and R^2 (1 - SS_res / SS_tot
                     per output, averaged)

Both take the loss as training computes it (batch losses weighted by `Loss.batch_weight`, so the
mean does not depend on the batch size) and accuracy from `loss.correct`, so `nncli eval`'s test
figures equal those in summary.json.
"""

from __future__ import annotations

import numpy as np

from nncli.errors import NncliError
from nncli.nn.losses import Loss
from nncli.nn.model import Sequential
from nncli.nn.threads import FirstPasses


def _evaluation_pass(
    model: Sequential, loss: Loss, x: np.ndarray, y: np.ndarray, batch_size: int, keep_outputs: bool
) -> tuple[float, int, np.ndarray | None]:
    """The mean loss over (x, y), the count of right predictions, and the outputs if kept."""
    total, weight, correct, outputs = 0.0, 0.0, 0, []
    passes = FirstPasses(model, batch_size, -(-len(x) // batch_size))  # threads measured, if not yet
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        out = passes.forward(xb)
        total += loss.forward(out, yb) * loss.batch_weight
        weight += loss.batch_weight
        correct += loss.correct(out, yb) or 0
        if keep_outputs:
            outputs.append(out)
    mean = total / weight if weight else float("nan")
    return mean, correct, (np.concatenate(outputs) if keep_outputs else None)


def loss_and_accuracy(
    model: Sequential, loss: Loss, x: np.ndarray, y: np.ndarray, batch_size: int
) -> tuple[float, float | None]:
    """Mean loss over the split and accuracy (None for regression; NaN and None when empty)."""
    if len(x) == 0:
        return float("nan"), None
    mean, correct, _ = _evaluation_pass(model, loss, x, y, batch_size, keep_outputs=False)
    return mean, (correct / len(x) if loss.task == "classification" else None)


def predicted_labels(out: np.ndarray) -> np.ndarray:
    """Class indices from outputs: the argmax, or `logit > 0` for a single (binary) output."""
    if out.shape[1] == 1:
        return (out[:, 0] > 0).astype(np.int64)
    return out.argmax(axis=1)


def true_labels(y: np.ndarray) -> np.ndarray:
    """Integer labels (N,) from labels (N,), a single 0/1 column (N, 1) or one-hot rows (N, K)."""
    if y.ndim == 1:
        return y.astype(np.int64, copy=False)
    if y.shape[1] == 1:
        return (y[:, 0] > 0.5).astype(np.int64)
    return y.argmax(axis=1)


def confusion_matrix(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts: entry [i, j] is the number of samples of class i predicted as j."""
    flat = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def precision_recall(matrix: np.ndarray) -> tuple[list[float | None], list[float | None]]:
    """Per class; None where undefined (a class never predicted, or absent from the split)."""
    hits = np.diag(matrix)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = [float(h / p) if p else None for h, p in zip(hits, predicted, strict=True)]
    recall = [float(h / a) if a else None for h, a in zip(hits, actual, strict=True)]
    return precision, recall


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """MSE and MAE over all entries; R^2 per output column, averaged over the columns."""
    pred = pred.astype(np.float64)
    target = target.reshape(pred.shape).astype(np.float64)
    diff = pred - target
    residual = np.sum(diff * diff, axis=0)
    spread = np.sum((target - target.mean(axis=0)) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(spread > 0, 1 - residual / spread, np.nan)
    return {
        "mse": float(np.mean(diff * diff)),
        "mae": float(np.mean(np.abs(diff))),
        "r2": float(np.mean(r2)) if np.isfinite(r2).all() else None,
    }


def evaluate(
    model: Sequential,
    loss: Loss,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
) -> tuple[dict, np.ndarray]:
    """The metrics of `model` on (x, y) as plain data (see the module docstring), and the
    model's outputs."""
    if len(x) == 0:
        raise NncliError("the split has no samples")
    mean_loss, correct, out = _evaluation_pass(model, loss, x, y, batch_size, keep_outputs=True)
    report: dict = {"samples": int(len(x)), "task": loss.task, "loss": mean_loss}
    if loss.task != "classification":
        report.update(regression_metrics(out, y))
        return report, out
    k = num_classes or max(2, out.shape[1])
    matrix = confusion_matrix(true_labels(y), predicted_labels(out), k)
    precision, recall = precision_recall(matrix)
    report.update(
        {
            "accuracy": correct / len(x),
            "classes": list(class_names) if class_names else [str(i) for i in range(k)],
            "precision": precision,
            "recall": recall,
            "support": [int(s) for s in matrix.sum(axis=1)],
            "confusion_matrix": matrix.tolist(),
        }
    )
    return report, out
