"""`nncli eval`: a saved model measured on one split of its data.

The model, its data and the preprocessing come from the checkpoint alone (`builder.rebuild`);
the figures are those of `nncli.nn.metrics.evaluate`, so the test split's loss and accuracy
equal those in `summary.json`. `plot` draws the confusion matrix (regression: predictions
against targets).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nncli.builder import rebuild, refuse_changed_data
from nncli.data import contract
from nncli.errors import CheckpointError, NncliError
from nncli.nn.metrics import evaluate
from nncli.training import checkpoint

SPLITS = ("test", "val", "train")
SPLIT_NAMES = {"test": "test", "val": "validation", "train": "training"}


@dataclass
class Evaluation:
    report: dict  # plain data, ready for JSON
    outputs: np.ndarray  # the model's outputs on the split
    targets: np.ndarray
    checkpoint: dict
    warnings: list[str]  # one line each, for stderr


def evaluate_checkpoint(
    path: str | Path,
    split: str,
    data_dir: Path,
    batch_size: int | None = None,
    allow_data_change: bool = False,
) -> Evaluation:
    """`split` of the data the checkpoint was trained on, through its model.

    `path` is a checkpoint file or a run directory (its best checkpoint, else its last). When
    the data changed since training, the validation split is refused (it could hold training
    rows) unless `allow_data_change`; other splits are evaluated with a warning.
    """
    if split not in SPLITS:
        raise NncliError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    saved = checkpoint.load(path)
    built = rebuild(saved, data_dir)
    splits = built.splits
    change = refuse_changed_data(saved, splits, allow_data_change or split != "val")
    warnings = [f"warning: {change}; the figures are of the data as it is now"] if change else []
    partly = partly_trained(saved)
    if partly:
        warnings.append(f"warning: {saved['path']} {partly}")
    warnings += input_warnings(saved, splits, split)
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
    return Evaluation({**head, **report}, outputs, y, saved, warnings)


def input_warnings(saved: dict, splits, split: str) -> list[str]:
    """A warning for each way the split's raw inputs look unlike those the model was trained on
    (`nncli.data.contract`): data edited since, or a test set in other units."""
    record = saved["data"].get("inputs") if isinstance(saved.get("data"), dict) else None
    profile = splits.profiles.get(split)
    try:
        record = contract.read_record(record)
    except (TypeError, ValueError, KeyError):
        raise CheckpointError(f"{saved['path']} has a damaged description of its inputs") from None
    if record is None or profile is None:
        return []
    info = splits.info
    return [f"warning: {line}" for line in contract.differences(
        record, profile, source=f"the {SPLIT_NAMES[split]} split",
        names=info.columns.feature_labels if info.columns else None, pixel_max=info.pixel_max)]


def partly_trained(saved: dict) -> str | None:
    """What is unusual about when `saved` was written: inside an epoch, or before any."""
    training = saved.get("training")
    progress = training.get("progress") if isinstance(training, dict) else None
    if isinstance(progress, dict):
        return (
            f"was saved during epoch {progress['epoch'] + 1}, after {progress['batch']} of its batches:"
            " the model is partly trained"
        )
    if saved["epoch"] == 0:
        return "was saved before the first batch: the model is untrained"
    return None


def plot(result: Evaluation, path: str | Path) -> Path:
    """Draw `result`'s confusion matrix (regression: predictions against targets) into `path`."""
    from nncli.output.plotting import plot_confusion, plot_predictions  # matplotlib only when asked

    report = result.report
    title = f"{report['name']} (epoch {report['epoch']}), {report['split']} split"
    if report["task"] == "classification":
        return plot_confusion(report["confusion_matrix"], report["classes"], Path(path), title)
    return plot_predictions(result.outputs, result.targets, Path(path), title)


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
