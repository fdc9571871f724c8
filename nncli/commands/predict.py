"""`nncli predict`: a trained model applied to new files.

The model, its preprocessing and what its inputs look like come from the checkpoint alone
(`nncli.builder.trained`): never the training data. The inputs may be

    a CSV          rows with the training table's feature columns (by header name, or by
                   position); a target column is ignored, or read with `labels`
    an .npz        an array x of raw samples (and y, with `labels`)
    images         PNG, JPEG, ... files, or folders of them, for a model trained on images:
                   made to look as its training images look (`nncli.data.images`); one that
                   cannot be read is skipped and named in `Prediction.skipped`, the others
                   are predicted (none readable is an error)

One row comes out per input sample: its name (the image file, `file.csv:LINE`, `file.npz[i]`),
then the predicted class by name and its probability (the next best with `top_k`), or the
predicted values under the target columns' names for regression.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nncli.builder.trained import TrainedModel
from nncli.commands.eval import partly_trained
from nncli.data.arrays import read_npz
from nncli.data.images import IMAGE_SUFFIXES, image_files, image_shape, read_pictures
from nncli.data.rows import read_rows
from nncli.errors import DataError, NncliError
from nncli.fileio import printable
from nncli.messages import count
from nncli.training import checkpoint

TABLE_SUFFIXES = (".csv",)
ARRAY_SUFFIXES = (".npz",)


@dataclass
class Inputs:
    """Raw samples gathered from the input files: their names, and their labels or targets
    where asked for."""

    names: list[str] = field(default_factory=list)
    parts: list[np.ndarray] = field(default_factory=list)
    labels: list = field(default_factory=list)
    inverted: list[bool | None] = field(default_factory=list)  # per sample; None: not a picture
    framed: int = 0  # how many pictures were framed as the training images are
    blank: list[bool] = field(default_factory=list)  # per sample: a picture that showed nothing
    skipped: list[str] = field(default_factory=list)  # image files that could not be read, and why

    @property
    def x(self) -> np.ndarray:
        return np.concatenate(self.parts)


@dataclass
class Prediction:
    header: list[str]  # the CSV's columns
    rows: list[list]  # one per input sample
    records: list[dict]  # the same, for JSON
    metrics: dict | None  # with labels: `nncli eval`'s figures on the inputs
    notes: list[str]  # one line each, for stderr
    skipped: list[str] = field(default_factory=list)  # image files not read: "cannot read F as an image: why"

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows(self.rows)
        return out.getvalue()

    def to_json(self) -> str:
        """{"predictions": [...], "metrics": ...} as json.dumps(..., indent=2) writes it, built a
        record at a time (one dumps of a million records held several times their size)."""
        out = io.StringIO()
        out.write('{\n  "predictions": [')
        for i, record in enumerate(self.records):
            text = json.dumps(record, indent=2).replace("\n", "\n    ")
            out.write(("," if i else "") + "\n    " + text)
        out.write("\n  ]" if self.records else "]")
        metrics = json.dumps(self.metrics, indent=2).replace("\n", "\n  ")
        out.write(f',\n  "metrics": {metrics}\n}}')
        return out.getvalue()


def load_model(path: str | Path, warn: Callable[[str], None] | None = None) -> TrainedModel:
    """The trained model of a checkpoint file, a run directory or an `nncli export` file;
    `warn` hears what is unusual about the inputs it is given (default: Python warnings)."""
    return TrainedModel(checkpoint.load(path), warn)


def gather(
    model: TrainedModel, paths: list[str | Path], *, invert: bool | None = None, labels: bool = False
) -> Inputs:
    """The raw samples of every input path, in order; a `DataError` naming the file for any
    input the model cannot take. Pictures are inverted where `invert` says so, or with None where
    their polarity is the opposite of the training images' (`nncli.data.images.read_pictures`)."""
    if not paths:
        raise NncliError("give at least one input: a CSV, an .npz, image files or a folder of them")
    inputs = Inputs()
    pictures: list[Path] = []

    def flush_pictures() -> None:
        if pictures:
            _add_images(model, pictures, inputs, invert=invert, labels=labels)
            pictures.clear()

    for given in paths:
        path = Path(given)
        suffix = path.suffix.lower()
        if path.is_dir() or suffix in IMAGE_SUFFIXES:
            pictures.append(path)
            continue
        flush_pictures()
        if not path.exists():
            raise DataError(f"{path} does not exist")
        if suffix in TABLE_SUFFIXES or (model.spec.columns is not None and suffix not in ARRAY_SUFFIXES):
            # a model trained on a table reads rows from any text file, as training did
            # (UCI's iris.data has no .csv suffix)
            _add_table(model, path, inputs, labels=labels)
        elif suffix in ARRAY_SUFFIXES:
            _add_arrays(model, path, inputs, labels=labels)
        else:
            raise DataError(
                f"cannot tell what {path} is: give a .csv, an .npz, image files"
                f" ({', '.join(IMAGE_SUFFIXES)}) or a folder of them"
            )
    flush_pictures()
    return inputs


def _add_images(
    model: TrainedModel, paths: list[Path], inputs: Inputs, *, invert: bool | None, labels: bool
) -> None:
    shape = image_shape(model.spec.model_shape)
    if shape is None:
        raise DataError(
            f"{paths[0]}: the model takes samples of shape {model.spec.shape}, not pictures;"
            " give a .csv or an .npz"
        )
    if model.spec.pixel_max is None:
        raise DataError(
            f"{paths[0]}: the model was trained on values with no pixel range (uint8 images and"
            " csv's pixel_max give one), so pictures cannot be scaled to them; give an .npz of x"
            " as the model saw it"
        )
    if labels:
        raise NncliError("--labels needs the labels in the inputs: a CSV's target column or an .npz's y")
    files = image_files(paths)
    pictures = read_pictures(
        files, shape, invert=invert, pixel_max=model.spec.pixel_max, profile=model.spec.images,
        skip_unreadable=True,
    )
    inputs.skipped += pictures.skipped
    inputs.names += [str(f) for f in pictures.files]
    inputs.parts.append(model.spec.from_model_layout(pictures.x))
    inputs.inverted += pictures.inverted
    inputs.framed += sum(pictures.framed)
    inputs.blank += pictures.blank


def _add_table(model: TrainedModel, path: Path, inputs: Inputs, *, labels: bool) -> None:
    x, y, lines = read_rows(
        path, model.spec.columns, int(np.prod(model.spec.shape)), targets=labels, task=model.task
    )
    inputs.names += [f"{path}:{line}" for line in lines]
    inputs.inverted += [None] * len(lines)
    inputs.blank += [False] * len(lines)
    inputs.parts.append(x.reshape(len(x), *model.spec.shape))
    if labels:
        inputs.labels.append(np.asarray(y))


def _add_arrays(model: TrainedModel, path: Path, inputs: Inputs, *, labels: bool) -> None:
    arrays = read_npz(path)
    if "x" not in arrays:
        raise DataError(f"{path} has no array x (it holds {', '.join(arrays) or 'none'})")
    x = model.validate_samples(arrays["x"], str(path))
    inputs.names += [f"{path}[{i}]" for i in range(len(x))]
    inputs.inverted += [None] * len(x)
    inputs.blank += [False] * len(x)
    inputs.parts.append(x)
    if labels:
        if "y" not in arrays:
            raise DataError(f"{path} has no array y for --labels (it holds {', '.join(arrays)})")
        if arrays["y"].ndim == 0 or len(arrays["y"]) != len(x):
            raise DataError(f"{path}: x has {len(x):,} samples, y has shape {arrays['y'].shape}")
        inputs.labels.append(arrays["y"])


def predict(
    path: str | Path,
    inputs: list[str | Path],
    *,
    top_k: int = 1,
    batch_size: int | None = None,
    invert: bool | None = None,
    labels: bool = False,
) -> Prediction:
    """Predictions of the model at `path` for every sample of `inputs` (see the module
    docstring); with `labels`, also `nncli eval`'s figures on them. `invert` forces pictures
    to be inverted (True) or not (False); None decides by their polarity."""
    notes: list[str] = []
    model = load_model(path, warn=lambda message: notes.append(f"warning: {message}"))
    if top_k < 1:
        raise NncliError(f"--top-k must be at least 1, got {top_k}")
    classification = model.task == "classification"
    if classification and top_k > len(model.classes):
        raise NncliError(f"--top-k {top_k} asks for more classes than the model's {len(model.classes)}")
    if not classification and top_k != 1:
        raise NncliError("--top-k is for classifiers; this model predicts values")
    gathered = gather(model, inputs, invert=invert, labels=labels)
    polarity_fix = None
    if invert is not None and any(flag is not None for flag in gathered.inverted):
        # pictures inverted (or not) as a flag forced: the fix is to leave the flag out
        polarity_fix = (f"{'--invert' if invert else '--no-invert'} forced it: leave it out to let predict"
                        " decide from each picture's polarity")
    if gathered.skipped and not gathered.names:
        raise DataError(f"no input could be read: {gathered.skipped[0]}" + (
            f" (and {count(len(gathered.skipped) - 1, 'other file')})" if len(gathered.skipped) > 1 else ""))
    x = gathered.x
    if len(x) == 0:
        raise DataError(f"{', '.join(map(str, inputs))} hold no samples")
    outputs = model.outputs(x, batch_size, source=", ".join(map(str, inputs)), polarity_fix=polarity_fix)
    notes += _picture_notes(model, gathered, invert)
    partly = partly_trained(model.saved)
    if partly:
        notes.append(f"warning: {model.source} {partly}")
    metrics = truth = None
    if labels:
        source = ", ".join(map(str, inputs))
        y = np.concatenate(gathered.labels)
        read: list[str] = []
        metrics = model.evaluate(x, y, batch_size, source=source, notes=read)
        notes += [f"note: {line}" for line in read]
        # the true classes by name, as the predicted ones are written
        truth = [model.classes[i] for i in model.labels_of(y, source)] if classification else y
    if classification:
        result = _classes(model, gathered.names, outputs, top_k, truth)
    else:
        result = _values(model, gathered.names, outputs, truth)
    for record, inverted in zip(result[2], gathered.inverted, strict=True):
        if inverted is not None:
            record["inverted"] = inverted
    return Prediction(*result, metrics, notes, gathered.skipped)


def _picture_notes(model: TrainedModel, gathered: Inputs, invert: bool | None) -> list[str]:
    """One `note:` line for pictures inverted by their polarity (blank ones left out of it), one
    `warning:` for blank pictures, one `note:` for pictures framed."""
    notes = []
    flags = zip(gathered.inverted, gathered.blank, strict=True)
    inverted = sum(1 for flag, empty in flags if flag and not empty)
    profile = model.spec.images
    if invert is None and inverted:
        dark = profile is None or profile["background"] < model.spec.pixel_max / 2
        looks, theirs = ("dark on light", "light on dark") if dark else ("light on dark", "dark on light")
        was = "was" if inverted == 1 else "were"
        notes.append(
            f"note: {count(inverted, 'picture')} {was} {looks} and {was} inverted to match the training"
            f" images ({theirs}); --no-invert keeps them as they are"
        )
    blank = sum(gathered.blank)
    if blank:
        its, means = ("its", "its prediction means") if blank == 1 else ("their", "their predictions mean")
        notes.append(f"warning: {count(blank, 'picture')} showed nothing that stands out from {its}"
                     f" background (blank, or too faint to read): {means} little")
    if gathered.framed:
        box = profile["ink_box"]
        height, width = model.spec.shape[1:]
        notes.append(
            f"note: {gathered.framed} {'picture was' if gathered.framed == 1 else 'pictures were'}"
            f" framed as the training images are: cropped to the ink, fitted in a {box}x{box} box"
            f" and centred by mass in {height}x{width}"
        )
    return notes


def _classes(model: TrainedModel, names: list[str], outputs: np.ndarray, top_k: int, truth):
    scores = model.loss.class_scores(outputs)
    kind = "probability" if model.loss.outputs == "probabilities" else "score"
    best = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    classes = model.classes
    header = ["input", "class", kind]
    for k in range(2, top_k + 1):
        header += [f"class_{k}", f"{kind}_{k}"]
    if truth is not None:
        header.append("label")
    rows, records = [], []
    for i, name in enumerate(names):
        name = printable(name, limit=None)  # a file's name may hold anything but / and NUL
        row: list = [name]
        top = []
        for j in best[i]:
            value = float(scores[i, j])
            row += [classes[j], f"{value:.6g}"]
            top.append({"class": classes[j], kind: value})
        record = {"input": name, "class": top[0]["class"], kind: top[0][kind]}
        if top_k > 1:
            record["top"] = top
        if truth is not None:
            row.append(truth[i])
            record["label"] = truth[i]
        rows.append(row)
        records.append(record)
    return header, rows, records


def _values(model: TrainedModel, names: list[str], outputs: np.ndarray, truth):
    values = model.loss.link(outputs).reshape(len(outputs), -1)
    columns = model.spec.columns
    targets = list(columns.target_names) if columns and columns.target_names else None
    if not targets or len(targets) != values.shape[1]:
        targets = ["value"] if values.shape[1] == 1 else [f"value_{j}" for j in range(values.shape[1])]
    header = ["input", *targets]
    rows, records = [], []
    for i, name in enumerate(names):
        name = printable(name, limit=None)
        # 9 significant digits: a float32 read back from the CSV is the float32 written
        rows.append([name, *(f"{v:.9g}" for v in values[i])])
        records.append({"input": name, **{t: float(v) for t, v in zip(targets, values[i], strict=True)}})
    if truth is not None:
        header += [f"true_{t}" for t in targets]
        for row, record, y in zip(rows, records, np.asarray(truth).reshape(len(rows), -1), strict=True):
            row += [f"{v:.9g}" for v in y]
            record["true"] = [float(v) for v in y]
    return header, rows, records


def format_metrics(metrics: dict) -> str:
    """One line for stderr: the figures on the labelled inputs."""
    n = f"{metrics['samples']:,} input{'s' if metrics['samples'] != 1 else ''}"
    if metrics["task"] == "classification":
        return f"accuracy {metrics['accuracy'] * 100:.2f}% on {n} (loss {metrics['loss']:.4f})"
    return f"MSE {metrics['mse']:.6g}   MAE {metrics['mae']:.6g} on {n}"
