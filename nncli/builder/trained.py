"""A trained model rebuilt from its checkpoint alone, for use on new inputs.

A checkpoint records what its data looked like (`data_record`): the shape of a sample as loaded,
the task, the class names, the pixel maximum of images and, for a table, its columns. With the
saved config, weights and fitted preprocessing that is all it takes to turn new raw samples
into predictions: no training data and no data directory. `nncli predict`, `nncli.load` and
the notebook's `Model` are built on `TrainedModel`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nncli.builder.checkpoints import checkpoint_config, saved_model
from nncli.builder.experiment import build_loss
from nncli.config.schema import Config
from nncli.data.datasets import Columns, one_hot_classes, one_hot_note
from nncli.data.pipeline import Flatten, Preprocessor
from nncli.errors import CheckpointError, DataError
from nncli.nn.losses import Loss
from nncli.nn.metrics import evaluate, predicted_labels
from nncli.nn.model import Sequential


@dataclass(frozen=True)
class InputSpec:
    """What a raw sample looks like: its `shape` before preprocessing, the `pixel_max` of
    images (None for other data), and a table's `columns` (None for other data)."""

    shape: tuple[int, ...]
    pixel_max: float | None
    columns: Columns | None


class TrainedModel:
    """The model of checkpoint `saved` (a dict from `nncli.training.checkpoint.load`), with
    its loss, its fitted preprocessing and what its inputs and outputs are.

    `x` arguments are raw samples, as the dataset loader gave them: (N, *spec.shape), before
    preprocessing (MNIST: (N, 1, 28, 28) pixels from 0 to 255).
    """

    def __init__(self, saved: dict):
        self.saved = saved
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
            self.class_names: list[str] | None = [str(n) for n in names] if names else None
            self.spec = InputSpec(
                self._raw_shape(record, input_shape),
                None if record.get("pixel_max") is None else float(record["pixel_max"]),
                Columns.from_dict(record["columns"]) if record.get("columns") else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise CheckpointError(f"{self.source} has a damaged data record ({err!r})") from None
        self._check_record(input_shape)
        self.loss: Loss = build_loss(self.config)
        self.model: Sequential = saved_model(saved, self.config, input_shape, self.loss)
        if not all(np.isfinite(p).all() for p in self.model.params.values()):
            raise CheckpointError(f"{self.source} holds weights that are not finite numbers")
        self._probe()

    def _check_record(self, input_shape: tuple[int, ...]) -> None:
        """The data record agrees with itself and with the preprocessing: a damaged or crafted
        checkpoint is refused here, not halfway through a prediction."""
        shape = self.spec.shape
        if not shape or not all(d > 0 for d in shape) or not all(d > 0 for d in input_shape):
            raise CheckpointError(f"{self.source} records a sample shape of {shape} -> {input_shape}")
        try:
            reshaped = self.preprocessor.output_shape(shape)
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

    def _probe(self) -> None:
        """One blank sample through the preprocessing and the model: arrays that do not fit
        each other (a crafted file) fail here, with a sentence, rather than on the user's data."""
        try:
            with np.errstate(all="ignore"):
                out = self.outputs(np.zeros((1, *self.spec.shape), np.float32))
        except (ValueError, TypeError, IndexError) as err:
            raise CheckpointError(f"{self.source}: its arrays do not fit together ({err})") from None
        if out.shape != (1, self.num_outputs):
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

    def check_inputs(self, x: np.ndarray, source: str) -> np.ndarray:
        """`x` as a float array of raw samples; a `DataError` naming `source` otherwise."""
        try:
            x = np.asarray(x)
        except ValueError as err:  # ragged lists
            raise DataError(f"{source} is not an array of samples ({err})") from None
        if x.dtype.kind not in "iuf":
            raise DataError(f"{source} holds {x.dtype} values; the model takes numbers")
        if x.shape[1:] != self.spec.shape:
            expected = f"samples of shape {self.spec.shape}"
            hint = ""
            if x.shape == self.spec.shape:
                hint = " (one sample? give x[None])"
            elif x.ndim >= 1 and x[0:1].size == int(np.prod(self.spec.shape)):
                hint = f" (reshape them with x.reshape(-1, {', '.join(map(str, self.spec.shape))}))"
            raise DataError(f"{source} has samples of shape {x.shape[1:]}; the model takes {expected}{hint}")
        if x.dtype.kind == "f" and x.size:
            too_large = ~np.isfinite(x) | (np.abs(x) > np.finfo(self.preprocessor.dtype).max)
            if too_large.any():
                sample = int(np.argwhere(too_large)[0][0])
                raise DataError(
                    f"{source}: sample {sample} holds a value that is missing, not finite, or beyond"
                    f" {self.preprocessor.dtype.name}"
                )
        return x

    def outputs(self, x: np.ndarray, batch_size: int | None = None, source: str = "the input") -> np.ndarray:
        """The model's raw outputs (logits, scores or values) for raw samples `x`."""
        x = self.check_inputs(x, source)
        batch = batch_size or self.config.train.eval_batch_size
        outs = [
            self.model.forward(self.preprocessor.apply(x[i : i + batch]), training=False)
            for i in range(0, len(x), batch)
        ]
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
            self.preprocessor.apply(x),
            targets,
            batch_size or self.config.train.eval_batch_size,
            num_classes=len(self.classes) if self.task == "classification" else None,
            class_names=self.classes if self.task == "classification" else None,
        )
        return report


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

