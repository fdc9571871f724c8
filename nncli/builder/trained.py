"""A trained model rebuilt from its checkpoint alone, for use on new inputs.

A checkpoint records what its data looked like (`data_record`): the shape of a sample as loaded,
the task, the class names, the pixel maximum of images and what they look like and, for a
table, its columns. With the saved config, weights and fitted preprocessing that is all it
takes to turn new raw samples into predictions: no training data and no data directory.
`nncli predict`, `nncli.load` and the notebook's `Model` are built on `TrainedModel`.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from nncli.builder.checkpoints import checkpoint_config, saved_model
from nncli.builder.experiment import build_loss
from nncli.config.schema import Config
from nncli.data import contract
from nncli.data.datasets import LAYOUTS, Columns, one_hot_classes, one_hot_note
from nncli.data.images import check_profile, image_shape
from nncli.data.inputs import Inputs
from nncli.data.preprocess import Flatten, Preprocessor
from nncli.errors import CheckpointError, DataError
from nncli.fileio import MAX_NAME, MAX_NAMES, printable
from nncli.nn.losses import Loss
from nncli.nn.metrics import evaluate, predicted_labels
from nncli.nn.model import Sequential
from nncli.nn.threads import FirstPasses


@dataclass(frozen=True)
class InputSpec:
    """What a raw sample looks like: its `shape` before preprocessing, the `pixel_max` of
    images (None for other data), a table's `columns` (None for other data), the `layout` of
    images ("channels_last": (H, W, C), turned to (C, H, W) before the model; None or
    "channels_first": as the model takes them), `inputs`, what the training inputs looked
    like (`nncli.data.contract.describe`), and `images`, what the training images looked like
    to read pictures as they did (`nncli.data.images.image_profile`); each None in checkpoints
    written before it was recorded, `images` also for data that is not pictures."""

    shape: tuple[int, ...]
    pixel_max: float | None
    columns: Columns | None
    layout: str | None = None
    inputs: dict | None = None
    images: dict | None = None  # `nncli.data.images.image_profile` of the training images

    @property
    def model_shape(self) -> tuple[int, ...]:
        """A sample's shape as the preprocessing takes it: channels first."""
        if self.layout == "channels_last":
            height, width, channels = self.shape
            return channels, height, width
        return self.shape

    def to_model_layout(self, x: np.ndarray) -> np.ndarray:
        """Samples (N, *shape) as the preprocessing takes them (N, *model_shape)."""
        return x.transpose(0, 3, 1, 2) if self.layout == "channels_last" else x

    def from_model_layout(self, x: np.ndarray) -> np.ndarray:
        """Samples (N, *model_shape) laid out as the user gives them (N, *shape)."""
        return x.transpose(0, 2, 3, 1) if self.layout == "channels_last" else x

    @property
    def feature_names(self) -> list[str] | None:
        """How warnings name a table's features: header names, else their column positions."""
        return None if self.columns is None else self.columns.feature_labels
    images: dict | None = None


class TrainedModel:
    """The model of checkpoint `saved` (a dict from `nncli.training.checkpoint.load`), with
    its loss, its fitted preprocessing and what its inputs and outputs are.

    `x` arguments are raw samples, as the dataset loader gave them: (N, *spec.shape), before
    preprocessing (MNIST: (N, 1, 28, 28) pixels from 0 to 255).
    """

    def __init__(self, saved: dict, warn: Callable[[str], None] | None = None):
        self.saved = saved
        self._warn = warn
        self._warned: set[str] = set()
        self.source = str(saved.get("path", "the checkpoint"))
        record = saved.get("data")
        if not isinstance(record, dict) or "input_shape" not in record:
            raise CheckpointError(
                f"{self.source} was written by an nncli that did not record its inputs' shape;"
                " `nncli eval` still reads it, but to predict, train the config again"
            )
        self.config: Config = checkpoint_config(saved)
        if "preprocessor" not in saved:
            raise CheckpointError(f"{self.source} has no preprocessing state")
        self.preprocessor = Preprocessor.from_state(saved["preprocessor"])
        try:
            input_shape = tuple(int(d) for d in record["input_shape"])
            self.task: str = str(record["task"])
            self.num_outputs = int(record["num_outputs"])
            names = record.get("class_names")
            self.class_names: list[str] | None = self._read_names(names, "class") if names else None
            columns = record.get("columns")
            if columns and columns.get("header") is not None:
                columns = {**columns, "header": self._read_names(columns["header"], "column")}
            self.spec = InputSpec(
                self._raw_shape(record, input_shape),
                None if record.get("pixel_max") is None else float(record["pixel_max"]),
                Columns.from_dict(columns) if columns else None,
                record.get("layout"),
                contract.read_record(record.get("inputs")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise CheckpointError(f"{self.source} has a damaged data record ({err!r})") from None
        self._check_record(input_shape)
        self._check_images(record.get("images"))
        self.loss: Loss = build_loss(self.config)
        self.model: Sequential = saved_model(saved, self.config, input_shape, self.loss)
        if not all(np.isfinite(p).all() for p in self.model.params.values()):
            raise CheckpointError(f"{self.source} holds weights that are not finite numbers")
        self._probe()

    def _read_names(self, names, kind: str) -> list[str]:
        """Names the file gives (of classes, of table columns) as they may be printed: control
        characters escaped and each cut to MAX_NAME characters (`nncli.fileio.printable`),
        with a warning where any was; a file naming more than MAX_NAMES is refused."""
        if not isinstance(names, (list, tuple)):
            raise TypeError(f"{kind} names of type {type(names).__name__}")
        if len(names) > MAX_NAMES:
            raise CheckpointError(
                f"{self.source} names {len(names):,} {kind}s; at most {MAX_NAMES:,} are read"
            )
        given = [str(n) for n in names]
        read = [printable(n) for n in given]
        if read != given:
            longest = max(map(len, given))
            cut = (f", cut to {MAX_NAME} characters (the longest has {longest:,})"
                   if longest > MAX_NAME else "")
            self.warn(f"{self.source} has {kind} names with control characters or of more than"
                      f" {MAX_NAME} characters: they are shown escaped{cut}")
            if len(set(read)) < len(set(given)):
                raise CheckpointError(f"{self.source} has {kind} names that are the same once cut to"
                                      f" {MAX_NAME} characters")
        return read

    def _check_record(self, input_shape: tuple[int, ...]) -> None:
        """The data record agrees with itself and with the preprocessing: a damaged or crafted
        checkpoint is refused here, not halfway through a prediction."""
        shape = self.spec.shape
        if not shape or not all(d > 0 for d in shape) or not all(d > 0 for d in input_shape):
            raise CheckpointError(f"{self.source} records a sample shape of {shape} -> {input_shape}")
        layout = self.spec.layout
        if layout not in (None, *LAYOUTS) or (layout == "channels_last" and len(shape) != 3):
            raise CheckpointError(f"{self.source} records a layout of {self.spec.layout!r} for samples"
                                  f" of shape {shape}")
        inputs = self.spec.inputs
        if inputs is not None and inputs["groups"] != contract.groups_of(self.spec.model_shape):
            raise CheckpointError(f"{self.source} records its inputs by {inputs['groups']} for samples"
                                  f" of shape {shape}")
        try:
            reshaped = self.preprocessor.output_shape(self.spec.model_shape)
        except (TypeError, ValueError):
            reshaped = None
        if reshaped is None or tuple(reshaped) != input_shape:
            raise CheckpointError(
                f"{self.source}: its preprocessing turns samples of shape {shape} into {reshaped},"
                f" not the {input_shape} its model takes"
            )
        if self.spec.pixel_max is not None and not self.spec.pixel_max > 0:
            raise CheckpointError(f"{self.source} records a pixel maximum of {self.spec.pixel_max}")
        if self.task not in ("classification", "regression") or self.num_outputs < 1:
            raise CheckpointError(
                f"{self.source} records a {self.task!r} task with {self.num_outputs} outputs"
            )
        if self.class_names is not None and len(self.class_names) != max(2, self.num_outputs):
            raise CheckpointError(
                f"{self.source} names {len(self.class_names)} classes for {self.num_outputs} outputs"
            )
        columns = self.spec.columns
        if columns is not None:
            used = (*columns.features, *columns.targets)
            if (
                len(columns.features) != int(np.prod(shape))
                or not all(0 <= i < columns.width for i in used)
                or (columns.header is not None and len(columns.header) != columns.width)
            ):
                raise CheckpointError(f"{self.source} records table columns that do not fit its samples")

    def _check_images(self, profile) -> None:
        """The recorded image profile, validated, into `spec.images`."""
        if profile is None:
            return
        shape = image_shape(self.spec.model_shape)
        if shape is None or self.spec.pixel_max is None:
            raise CheckpointError(f"{self.source} records an image profile for samples that are not images")
        try:
            checked = check_profile(profile, shape, self.spec.pixel_max)
        except ValueError as err:
            raise CheckpointError(f"{self.source}: {err}") from None
        self.spec = replace(self.spec, images=checked)

    def _probe(self) -> None:
        """One blank sample through the preprocessing and the model: arrays that do not fit
        each other (a crafted file) fail here, with a sentence, rather than on the user's data."""
        try:
            with np.errstate(all="ignore"):
                out = self._forward(np.zeros((1, *self.spec.model_shape), np.float32))
        except (ValueError, TypeError, IndexError) as err:
            raise CheckpointError(f"{self.source}: its arrays do not fit together ({err})") from None
        # two classes under binary_cross_entropy: one output, the second class's logit
        binary = self.num_outputs == 2 and self.loss.name == "binary_cross_entropy"
        if out.shape != (1, self.num_outputs) and not (binary and out.shape == (1, 1)):
            raise CheckpointError(
                f"{self.source}: its model gives {out.shape[1:]} outputs, its record says {self.num_outputs}"
            )

    def _raw_shape(self, record: dict, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if record.get("raw_shape"):
            return tuple(int(d) for d in record["raw_shape"])
        # written before raw shapes were recorded: right unless a step reshaped the samples
        if any(isinstance(step, Flatten) for step in self.preprocessor.steps):
            raise CheckpointError(
                f"{self.source} was written by an nncli that did not record the shape of its raw"
                " samples, and its preprocessing flattens them; train the config again to predict"
            )
        return input_shape

    @property
    def classes(self) -> list[str]:
        """The name of each class: the dataset's, else the class numbers."""
        if self.class_names:
            return self.class_names
        return [str(i) for i in range(max(2, self.num_outputs))]

    def check_inputs(self, x: np.ndarray, source: str, polarity_fix: str | None = None) -> np.ndarray:
        """`x`, raw samples as the training data gave them, as an array laid out as the model
        takes them (channels first); a `DataError` naming `source` when they cannot be its
        samples, and a warning (see `warn`) for each way they look unlike the training inputs
        (`polarity_fix`: see `nncli.data.contract.differences`)."""
        x = self.spec.to_model_layout(self.validate_samples(x, source))
        if self.spec.inputs is not None and len(x):
            for message in contract.differences(
                self.spec.inputs, contract.describe(x), source=source,
                names=self.spec.feature_names, pixel_max=self.spec.pixel_max, polarity_fix=polarity_fix,
            ):
                self.warn(message)
        return x

    def validate_samples(self, x, source: str) -> np.ndarray:
        """`x` as an array of raw samples of the model's shape, finite numbers; a `DataError`
        naming `source` otherwise."""
        try:
            x = np.asarray(x)
        except ValueError as err:  # ragged lists
            raise DataError(f"{source} is not an array of samples ({err})") from None
        if x.dtype.kind not in "iuf":
            raise DataError(f"{source} holds {x.dtype} values; the model takes numbers")
        if x.shape[1:] != self.spec.shape:
            raise DataError(f"{source} has samples of shape {x.shape[1:]}; the model takes samples of"
                            f" shape {self.spec.shape}{self._shape_hint(x.shape)}")
        if x.dtype.kind == "f" and x.size:
            too_large = ~np.isfinite(x) | (np.abs(x) > np.finfo(self.preprocessor.dtype).max)
            if too_large.any():
                sample = int(np.argwhere(too_large)[0][0])
                raise DataError(
                    f"{source}: sample {sample} holds a value that is missing, not finite, or beyond"
                    f" {self.preprocessor.dtype.name}"
                )
        return x

    def _shape_hint(self, shape: tuple[int, ...]) -> str:
        """What to do about inputs of `shape` (with the batch axis) that are not the model's."""
        if shape == self.spec.shape:
            return " (one sample? give x[None])"
        transpose = contract.channels_last_hint(shape[1:], self.spec.shape)
        if transpose:
            return f"; {transpose}"
        if len(shape) >= 1 and int(np.prod(shape[1:])) == int(np.prod(self.spec.shape)):
            if sorted(shape[1:]) == sorted(self.spec.shape):
                return ""  # the same axes in another order: no reshape can be right
            dims = ", ".join(map(str, self.spec.shape))
            if len(self.spec.shape) == 3 and self.spec.shape[0] > 1 and self.spec.layout != "channels_last":
                channels, height, width = self.spec.shape
                return (f" (flat rows of pixels in channel, row, column order: x.reshape(-1, {dims}); in"
                        f" row, column, channel order, as Keras and PIL flatten them:"
                        f" x.reshape(-1, {height}, {width}, {channels}).transpose(0, 3, 1, 2))")
            return f" (reshape them with x.reshape(-1, {dims}))"
        return ""

    def warn(self, message: str) -> None:
        """Say `message`: once to the `warn` given at construction (the command line prints a
        `warning:` line), else as a Python `UserWarning` each time (Python's filters decide how
        often it shows)."""
        if self._warn is None:
            warnings.warn(message, UserWarning, stacklevel=_caller_level())
        elif message not in self._warned:
            self._warned.add(message)
            self._warn(message)

    def outputs(self, x: np.ndarray, batch_size: int | None = None, source: str = "the input",
                polarity_fix: str | None = None) -> np.ndarray:
        """The model's raw outputs (logits, scores or values) for raw samples `x`."""
        return self._forward(self.check_inputs(x, source, polarity_fix), batch_size)

    def _forward(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """The outputs for samples `x` already checked and laid out as the model takes them."""
        batch = batch_size or self.config.train.eval_batch_size
        passes = FirstPasses(self.model, batch, -(-len(x) // batch))  # threads measured, if not yet
        chunks = Inputs(x, self.preprocessor).chunks(batch)  # converted a chunk at a time
        outs = [passes.forward(chunk) for chunk in chunks]
        if not outs:
            return np.empty((0, *self.model.output_shape), self.preprocessor.dtype)
        return np.concatenate(outs)

    def predict(self, x: np.ndarray, batch_size: int | None = None, source: str = "the input") -> np.ndarray:
        """Probabilities (cross-entropy losses), scores (hinge) or predicted values
        (regression), one row per sample; `loss.outputs` says which."""
        return self.loss.link(self.outputs(x, batch_size, source))

    def class_indices(self, outputs: np.ndarray) -> np.ndarray:
        return predicted_labels(outputs)

    def labels_of(self, y, source: str, notes: list[str] | None = None) -> np.ndarray:
        """Class labels as indices 0..K-1, from class names, from the indices themselves, or
        from one-hot rows (Keras' `to_categorical`), which `notes` is told of."""
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        classes = one_hot_classes(y)
        if classes is not None:
            if y.shape[1] != len(self.classes):
                raise DataError(f"{source} holds one-hot rows of {y.shape[1]} classes; the model has"
                                f" {len(self.classes)}")
            if notes is not None:
                notes.append(one_hot_note(source, y.shape[1]))
            y = classes
        if y.ndim != 1:
            raise DataError(f"{source} has labels of shape {y.shape}; expected one per sample")
        classes = self.classes
        if y.dtype.kind in "US" or y.dtype == object:
            index = {name: i for i, name in enumerate(classes)}
            y = np.array([_label_name(str(v), index) for v in y.tolist()])
            unknown = sorted(set(y.tolist()) - index.keys())
            if unknown:
                raise DataError(
                    f"{source} has class {unknown[0]!r}, which the model does not know"
                    f" (its classes: {', '.join(classes)})"
                )
            return np.array([index[str(v)] for v in y.tolist()], dtype=np.int64)
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise DataError(f"{source} has class labels that are missing or not finite")
        if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
            raise DataError(f"{source} has class labels that are not whole numbers")
        if self.class_names and y.dtype.kind in "iuf":
            # numeric labels of a model whose classes have names: the names may be numbers
            # themselves ("1", "2", "3" for labels 1..3), which is how a user writes them
            as_names = [str(int(v)) for v in y.tolist()]
            if set(as_names) <= set(classes):
                return self.labels_of(np.array(as_names), source)
        labels = y.astype(np.int64)
        bad = labels[(labels < 0) | (labels >= len(classes))]
        if bad.size:
            raise DataError(f"{source} has label {bad[0]}; the model's classes are 0 to {len(classes) - 1}")
        return labels

    def targets_of(self, y, source: str, notes: list[str] | None = None) -> np.ndarray:
        """What `evaluate` compares the outputs with: class indices (classification) or float
        targets (N, k) (regression); `notes` as for `labels_of`."""
        if self.task == "classification":
            return self.preprocessor.apply_labels(self.labels_of(y, source, notes))
        try:
            y = np.asarray(y, dtype=self.preprocessor.dtype)
        except (ValueError, TypeError):
            raise DataError(f"{source} has targets that are not numbers") from None
        if not np.isfinite(y).all():
            raise DataError(f"{source} has targets that are missing or not finite")
        if y.ndim == 1:
            y = y[:, None]
        if y.ndim != 2 or y.shape[1] != self.num_outputs:
            raise DataError(
                f"{source} has targets of shape {y.shape[1:]}; the model predicts {self.num_outputs}"
            )
        return y

    def evaluate(
        self, x, y, batch_size: int | None = None, source: str = "the input", notes: list[str] | None = None
    ) -> dict:
        """The figures `nncli eval` prints, for raw samples `x` and their labels or targets `y`;
        what was read on the user's behalf (one-hot rows as classes) goes to `notes`."""
        x = self.check_inputs(x, source)
        targets = self.targets_of(y, source, notes)
        if len(targets) != len(x):
            raise DataError(f"{source}: {len(x):,} samples but {len(targets):,} labels")
        report, _ = evaluate(
            self.model,
            self.loss,
            Inputs(x, self.preprocessor),  # converted a chunk at a time
            targets,
            batch_size or self.config.train.eval_batch_size,
            num_classes=len(self.classes) if self.task == "classification" else None,
            class_names=self.classes if self.task == "classification" else None,
        )
        return report


def _caller_level() -> int:
    """The `stacklevel` of `warnings.warn`, called from the caller of this function, that names
    the first frame outside nncli: the user's line that passed the inputs."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def _label_name(cell: str, names: dict[str, int]) -> str:
    """A label cell as the class name training gave it: whole numbers written as floats
    ("2.0") are the class "2", as the csv loader reads them."""
    if cell in names:
        return cell
    try:
        value = float(cell)
    except ValueError:
        return cell
    return str(int(value)) if np.isfinite(value) and value == round(value) else cell

