"""`nncli eval`: a saved model measured on one split of its data.

The model, its data and the preprocessing come from the checkpoint alone (`builder.rebuild`).
The split runs through the model in batches, in evaluation mode, and gives:

  classification  loss, accuracy, per-class precision and recall, the confusion matrix
                  (rows: true class, columns: predicted class)
  regression      loss, MSE, MAE and R^2 (1 - SS_res / SS_tot per output, averaged)

Loss and accuracy are computed as training computes them (the batch losses weighted by batch
size, `loss.correct` for accuracy), so the test figures equal those in `summary.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nncli import checkpoint
from nncli.builder import rebuild
from nncli.errors import NncliError
from nncli.losses import Loss
from nncli.model import Sequential

SPLITS = ("test", "val", "train")
SPLIT_NAMES = {"test": "test", "val": "validation", "train": "training"}


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
    total, weight, correct, outputs = 0.0, 0.0, 0, []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        out = model.forward(xb, training=False)
        total += loss.forward(out, yb) * loss.batch_weight  # see Loss.batch_weight
        weight += loss.batch_weight
        if loss.task == "classification":
            correct += loss.correct(out, yb)
        outputs.append(out)
    out = np.concatenate(outputs)
    report: dict = {"samples": int(len(x)), "task": loss.task, "loss": total / weight}
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


@dataclass
class Evaluation:
    report: dict  # plain data, ready for JSON
    outputs: np.ndarray  # the model's outputs on the split
    targets: np.ndarray
    checkpoint: dict


def evaluate_checkpoint(
    path: str | Path, split: str, data_dir: Path, batch_size: int | None = None
) -> Evaluation:
    """`split` of the data the checkpoint was trained on, through its model.

    `path` is a checkpoint file or a run directory (its best checkpoint, else its last).
    """
    if split not in SPLITS:
        raise NncliError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    saved = checkpoint.load(path)
    built = rebuild(saved, data_dir)
    splits = built.splits
    x, y = {
        "test": (splits.x_test, splits.y_test),
        "val": (splits.x_val, splits.y_val),
        "train": (splits.x_train, splits.y_train),
    }[split]
    if x is None or len(x) == 0:
        hint = {
            "val": " (its config has no data.val_size); use --split test or --split train",
            "test": f" ({splits.info.name} has no test set here); use --split val or --split train",
        }.get(split, "")
        raise NncliError(f"{saved['path']} has no {SPLIT_NAMES[split]} split{hint}")
    info = splits.info
    report, outputs = evaluate(
        built.model,
        built.loss,
        x,
        y,
        batch_size or built.config.train.eval_batch_size,
        num_classes=info.num_classes,
        class_names=list(info.class_names) if info.class_names else None,
    )
    head = {
        "name": built.config.name,
        "checkpoint": saved["path"],
        "epoch": int(saved["epoch"]),
        "split": split,
    }
    return Evaluation({**head, **report}, outputs, y, saved)


def format_report(report: dict) -> str:
    """The report for a person: a headline, then per-class figures and the confusion matrix."""
    lines = [
        f"{report['checkpoint']} (epoch {report['epoch']}) on the {SPLIT_NAMES[report['split']]} split,"
        f" {report['samples']:,} samples"
    ]
    if report["task"] != "classification":
        r2 = "n/a" if report["r2"] is None else f"{report['r2']:.4f}"
        lines.append(
            f"loss {report['loss']:.6g}   MSE {report['mse']:.6g}   MAE {report['mae']:.6g}   R^2 {r2}"
        )
        return "\n".join(lines)
    lines.append(f"loss {report['loss']:.4f}   accuracy {report['accuracy'] * 100:.2f}%")
    names = report["classes"]
    width = max(5, *(len(n) for n in names))

    def share(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    lines += ["", f"{'class':<{width}}  precision  recall  support"]
    for name, p, r, s in zip(names, report["precision"], report["recall"], report["support"], strict=True):
        lines.append(f"{name:<{width}}  {share(p):>9}  {share(r):>6}  {s:>7,}")
    matrix = report["confusion_matrix"]
    cell = max(len(n) for n in names)
    cell = max(cell, *(len(f"{v:,}") for row in matrix for v in row))
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)"]
    lines.append(" " * width + "".join(f"  {n:>{cell}}" for n in names))
    for name, row in zip(names, matrix, strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"  {v:>{cell},}" for v in row))
    return "\n".join(lines)
