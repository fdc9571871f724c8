"""nncli from Python: train a config, load a trained model, predict and evaluate with it.

    import nncli
    run = nncli.train("configs/quickstart.yaml", overrides={"train.epochs": 3})
    run.dir, run.summary["test"]["accuracy"]
    model = nncli.load(run.dir)          # a run directory, a checkpoint or an `nncli export` file
    probs = model.predict(x)             # raw samples in (as the dataset gives them), numpy out
    labels = model.predict_classes(x)    # class names where the data has them
    report = model.evaluate(x, y)        # the figures `nncli eval` prints
    found = nncli.lr_find("configs/quickstart.yaml")   # the learning-rate range test
    found.suggestions.valley, found.folder

These are the functions the command line runs (`nncli.commands`), so the two cannot drift
apart. Errors are exceptions, never `SystemExit`: `nncli.ConfigError` for a wrong config,
`nncli.DataError` for wrong data, `nncli.CheckpointError` for a file that is not a usable
checkpoint, all `nncli.NncliError`s. Nothing is printed unless asked (`progress=True`); a
warning about the config (an activation that does not suit the loss, say) is a Python warning.
"""

from __future__ import annotations

import copy
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nncli.builder.trained import TrainedModel
from nncli.commands import lr_find as range_test
from nncli.commands import predict as predicting
from nncli.commands import train as training
from nncli.commands.export import output_format
from nncli.config.schema import Config, load_config, parse_config
from nncli.config.yamlsource import Source, parse_path, set_value
from nncli.data import resolve_data_dir
from nncli.errors import ConfigError, NncliError
from nncli.training import checkpoint, export

__all__ = ["Model", "Run", "load", "lr_find", "train"]


@dataclass
class Run:
    """A finished run: its directory, `summary` (summary.json's data: the test figures of the
    best checkpoint, the best epoch, ...; None if the run was stopped before its end), its
    `history` (one dict of metrics per epoch) and the notes training gave."""

    dir: Path
    summary: dict | None
    history: list[dict]
    notes: list[str] = field(default_factory=list)

    @property
    def checkpoint(self) -> Path:
        """The best checkpoint (the last one where there is no best)."""
        return checkpoint.resolve(self.dir)

    def load(self) -> Model:
        return load(self.dir)


def train(
    config: str | Path | dict,
    overrides: dict | None = None,
    *,
    data: dict | None = None,
    data_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = False,
) -> Run:
    """Train `config` (a YAML file, or the same data as a dict) and return the finished run.

    `overrides` maps dotted keys to values, as `--set` does: {"train.epochs": 3,
    "model[0].linear.units": 64}. `data` holds arrays x_train, y_train (and x_test, y_test)
    for a config whose data is `{dataset: arrays}`. The run directory is `run_dir`, else a new
    one under runs/<name>/. `resume` continues the run in that directory (give `data` again
    for an arrays run; `config` is then None). `progress` prints what `nncli train` prints.
    """
    notes: list[str] = []
    say = _to_stderr if progress else notes.append  # quiet: every note is kept, for Run.notes
    data_folder = resolve_data_dir(data_dir)
    arrays = _arrays(data)
    changes = []
    if resume is not None:  # a resumed run keeps its config: the overrides as `--set` gives them
        changes = [f"{key}={_yaml(value)}" for key, value in (overrides or {}).items()]
    elif config is not None:
        config = _config(config, overrides)
    result = training.train(
        config,
        changes,
        data_dir=data_folder,
        run_dir=None if run_dir is None else str(run_dir),
        resume=None if resume is None else str(resume),
        verbose=progress,
        bars=progress,
        say=say,
        all_notes=not progress,
        arrays=arrays,
        spelling=training.PYTHON,
    )
    for note in notes:
        if note.startswith("warning"):
            warnings.warn(note.removeprefix("warning: "), UserWarning, stacklevel=2)
    return Run(result.run.path, result.summary, [dict(row) for row in result.state.history], notes)


def lr_find(
    config: str | Path | dict,
    overrides: dict | None = None,
    *,
    start: float = 1e-7,
    end: float = 10.0,
    steps: int = 100,
    data: dict | None = None,
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    write: bool = True,
) -> range_test.LrFindResult:
    """The learning-rate range test of `config` (a YAML file or a dict; `overrides` and `data`
    as for `train`), as `nncli lr-find` runs it: `steps` batches with the learning rate rising
    exponentially from `start` to `end`. The result holds the curve (`test.lrs`,
    `test.smoothed`), the `suggestions` (`valley`, `steepest`, `minimum`) and the `folder`
    written (runs/<name>/lr-find-<time>/, or `out`; nothing when not `write`)."""
    result = range_test.lr_find(
        _config(config, overrides),
        data_dir=resolve_data_dir(data_dir),
        start=start,
        end=end,
        steps=steps,
        out=out,
        write=write,
        arrays=_arrays(data),
        progress=False,
    )
    for note in result.notes:
        if note.startswith("warning"):
            warnings.warn(note.removeprefix("warning: "), UserWarning, stacklevel=2)
    return result


def _config(config: str | Path | dict, overrides: dict | None) -> Config:
    if isinstance(config, (str, Path)):
        source = load_config(config).source
        name = Path(config).stem
    elif isinstance(config, dict):
        source = Source(copy.deepcopy(config), "(config dict)")
        name = "run"
    else:
        raise ConfigError(f"expected a config file's path or a dict, got {type(config).__name__}")
    source.overrides_label = training.PYTHON.overrides
    if overrides is not None and not isinstance(overrides, dict):
        raise ConfigError(f"overrides= takes a dict of dotted keys and values, got {overrides!r}")
    for key, value in (overrides or {}).items():
        if not isinstance(key, str):
            raise ConfigError(f"overrides= takes dotted keys such as 'train.epochs', got {key!r}")
        try:
            path = parse_path(key)
        except ValueError as err:
            raise ConfigError(f"override {key!r}: {err}") from None
        set_value(source, path, copy.deepcopy(value), key)
    return parse_config(source, default_name=name)


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _yaml(value) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _arrays(data: dict | None) -> dict[str, np.ndarray] | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError("data= takes a dict of arrays: x_train, y_train, and optionally x_test, y_test")
    unknown = sorted(set(data) - {"x_train", "y_train", "x_test", "y_test"})
    if unknown:
        raise ConfigError(f"data= has {unknown[0]!r}; it takes x_train, y_train, x_test and y_test")
    return {key: np.asarray(value) for key, value in data.items()}


def load(path: str | Path) -> Model:
    """The trained model of a run directory (its best checkpoint), a checkpoint file or an
    `nncli export` .npz. Needs nothing but that file."""
    if not isinstance(path, (str, Path)):
        raise NncliError(f"nncli.load takes the path of a run directory or checkpoint, got {path!r}")
    return Model(predicting.load_model(path))


def _batch_size(value) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"batch_size must be a positive integer, got {value!r}")
    return value


class Model:
    """A trained model: raw samples in, numpy out, in batches, in evaluation mode.

    `x` is a batch of samples as the dataset gave them, before preprocessing (for MNIST
    (N, 1, 28, 28) pixels from 0 to 255): the model applies its training's preprocessing.
    """

    def __init__(self, trained: TrainedModel):
        self._trained = trained

    @property
    def path(self) -> Path:
        return Path(self._trained.source)

    @property
    def task(self) -> str:
        """"classification" or "regression"."""
        return self._trained.task

    @property
    def classes(self) -> list[str] | None:
        """The class names (the class numbers where the data names none); None for regression."""
        return self._trained.classes if self.task == "classification" else None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one raw sample."""
        return self._trained.spec.shape

    @property
    def config(self) -> dict:
        """The resolved config the model was trained with."""
        return copy.deepcopy(self._trained.saved["config"])

    def predict(self, x, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities (N, K) (a single binary output: P(1), (N, 1)), a hinge loss's
        scores, or the predicted values (N, k) for regression."""
        return self._trained.predict(x, _batch_size(batch_size))

    def predict_classes(self, x, batch_size: int | None = None) -> np.ndarray:
        """The predicted class of each sample: its name where the data names its classes
        (Fashion-MNIST's "Trouser", a CSV's labels), else its number (MNIST's digits too)."""
        if self.task != "classification":
            raise NncliError("predict_classes is for classifiers; this model predicts values: use predict")
        indices = self._trained.class_indices(self._trained.outputs(x, _batch_size(batch_size)))
        names = self._trained.class_names
        if names and names != [str(i) for i in range(len(names))]:
            return np.array(names)[indices]
        return indices  # MNIST's "0".."9" are the numbers themselves

    def evaluate(self, x, y, batch_size: int | None = None) -> dict:
        """What `nncli eval` reports, on samples `x` and their labels `y` (class numbers or
        names) or targets: loss and accuracy, per-class precision and recall and the confusion
        matrix; for regression loss, MSE, MAE and R^2. One-hot label rows (Keras'
        `to_categorical`) are read as their classes, with a UserWarning saying so."""
        notes: list[str] = []
        report = self._trained.evaluate(x, y, _batch_size(batch_size), notes=notes)
        for note in notes:
            warnings.warn(note, UserWarning, stacklevel=2)
        return report

    def summary(self) -> str:
        """The layer table `nncli check` prints: each layer's output shape, parameters and
        multiply-accumulates for one sample, then the totals."""
        from nncli.commands.check import format_bytes, layer_table

        model = self._trained.model
        table = layer_table(model)
        total = model.num_params()
        size = format_bytes(total * np.dtype(self._trained.config.dtype).itemsize)
        return "\n".join([*table[:-1], f"total parameters: {total:,} ({size})", table[-1]])

    def export(self, path: str | Path, format: str | None = None) -> Path:
        """Write the model as `nncli export` does: an .npz of plain arrays, or an ONNX graph
        for a path ending .onnx (or `format="onnx"`; needs the onnx extra); returns the path."""
        path = Path(path)
        if output_format(path, format, option='format="{}"') == "onnx":
            from nncli.training import onnx_export

            onnx_export.export_onnx(self._trained, path)
        else:
            export.export(self._trained.saved, path)
        return path

    def __repr__(self) -> str:
        return f"<nncli.Model {self._trained.config.name} from {self._trained.source}>"
