"""The configuration: YAML turned into validated, frozen dataclasses.

Top-level keys are fixed: name, seed, dtype, data, model, loss, optimizer, schedule, train.
This module checks the structure, the names of registered components and the names of their
options; the values of those options are checked by the classes themselves when the builder
constructs them (`Config.located` gives their errors the file, line and YAML path).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from nncli import validate
from nncli.config.yamlsource import Source, YamlPath, apply_override, load_yaml
from nncli.data.datasets import CONTEXT, LAYOUTS
from nncli.errors import ConfigError
from nncli.messages import did_you_mean
from nncli.registry import Registry, accepted_options, check_options

TOP_LEVEL = ("name", "seed", "dtype", "data", "model", "loss", "optimizer", "schedule", "train")
DTYPES = ("float32", "float64")
# options of the optimizer block that configure the regularizer rather than the optimizer
REGULARIZATION_KEYS = ("weight_decay", "l1", "decay_applies_to")
DATA_KEYS = ("dataset", "val_size", "preprocess", "augment", "layout")


@dataclass(frozen=True)
class Component:
    """A registered class and its YAML options (`linear: {units: 512}`)."""

    type: str
    options: Mapping[str, Any]
    path: YamlPath

    def to_yaml(self, name_key: bool = True):
        options = dict(self.options)
        return {"type": self.type, **options} if name_key else {self.type: options}


@dataclass(frozen=True)
class DataConfig:
    dataset: str
    options: Mapping[str, Any]
    val_size: int | float | None
    preprocess: tuple
    augment: tuple[Component, ...] = ()  # applied to training batches only, in this order
    layout: str | None = None  # "channels_last": images given as (H, W, C), transposed on load


@dataclass(frozen=True)
class EarlyStopping:
    monitor: str
    patience: int
    min_delta: float
    mode: str | None


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    monitor: str | None
    mode: str | None
    early_stopping: EarlyStopping | None
    eval_batch_size: int
    # metrics.csv is always written (runs, plot and sweep read it); "tensorboard" adds event files
    loggers: tuple[str, ...] = ("csv",)
    histograms: bool = False  # train.tensorboard.histograms: the weights' histograms every epoch


@dataclass(frozen=True)
class Regularization:
    weight_decay: float
    l1: float
    decay_applies_to: str


@dataclass(frozen=True)
class Config:
    name: str
    seed: int
    dtype: str
    data: DataConfig
    model: tuple[Component, ...]
    loss: Component
    optimizer: Component
    regularization: Regularization
    schedule: Component
    train: TrainConfig
    source: Source = field(compare=False, repr=False)
    # one located line each ("note: x.yaml:4 optimizer: ..."), for what parsing filled in on
    # the user's behalf; the builder shows them with its own
    notes: tuple[str, ...] = field(default=(), compare=False)

    @contextlib.contextmanager
    def located(self, path: YamlPath) -> Iterator[None]:
        """Re-raise a `ConfigError` from inside with the file, line and full YAML path."""
        try:
            yield
        except ConfigError as err:
            if err.location:
                raise
            full = _join(path, err.key)
            raise self.source.error(full, err.message) from None

    def to_dict(self) -> dict:
        """The configuration as plain YAML data (what `config.yaml` of a run holds)."""
        data = {"dataset": self.data.dataset, **self.data.options}
        if self.data.val_size is not None:
            data["val_size"] = self.data.val_size
        data["preprocess"] = list(self.data.preprocess)
        data["augment"] = [step.to_yaml(name_key=False) for step in self.data.augment]
        if self.data.layout is not None:  # only where given: older runs' configs stay as they were
            data["layout"] = self.data.layout
        optimizer = self.optimizer.to_yaml()
        for key in REGULARIZATION_KEYS:
            optimizer[key] = getattr(self.regularization, key)
        train = {
            "epochs": self.train.epochs,
            "batch_size": self.train.batch_size,
            "eval_batch_size": self.train.eval_batch_size,
            "monitor": self.train.monitor,
            "mode": self.train.mode,
            "early_stopping": None
            if self.train.early_stopping is None
            else dict(vars(self.train.early_stopping)),
        }
        if self.train.loggers != ("csv",):  # only where given: older runs' configs stay as they were
            train["loggers"] = list(self.train.loggers)
        if self.train.histograms:
            train["tensorboard"] = {"histograms": True}
        return {
            "name": self.name,
            "seed": self.seed,
            "dtype": self.dtype,
            "data": data,
            "model": [layer.to_yaml(name_key=False) for layer in self.model],
            "loss": self.loss.to_yaml(),
            "optimizer": optimizer,
            "schedule": self.schedule.to_yaml(),
            "train": train,
        }


def _join(path: YamlPath, key: str | None) -> YamlPath:
    """`path` extended by a key relative to it (`units`, `[1].linear`, `init.scale`)."""
    if not key:
        return path
    from nncli.config.yamlsource import parse_path

    try:
        return (*path, *parse_path(key))
    except ValueError:
        return (*path, key)


def load_config(path: str | Path, overrides: tuple[str, ...] | list[str] = (),
                overrides_label: str | None = None) -> Config:
    """The config at `path` with `overrides` (KEY=VALUE) applied, which its errors call
    `overrides_label` (the command line's `--set` by default)."""
    source = load_yaml(path)
    if overrides_label is not None:
        source.overrides_label = overrides_label
    for assignment in overrides:
        apply_override(source, assignment)
    return parse_config(source, default_name=Path(path).stem)


def parse_config(source: Source, default_name: str = "run") -> Config:
    from nncli.data import AUGMENTATIONS, DATASETS
    from nncli.nn.layers import LAYERS
    from nncli.nn.losses import LOSSES
    from nncli.nn.optim import OPTIMIZERS, SCHEDULES

    raw = source.data
    if not isinstance(raw, dict):
        raise source.error((), f"expected a mapping of {', '.join(TOP_LEVEL)}, got {_kind(raw)}")
    _no_unknown_keys(source, (), raw, TOP_LEVEL)
    missing = [f"'{key}'" for key in ("data", "model", "loss", "optimizer") if key not in raw]
    if missing:
        keys = "key" if len(missing) == 1 else "keys"
        raise source.error((), f"missing required {keys} {', '.join(missing)}")

    def value(path: YamlPath, checker, *args):
        try:
            return checker(path[-1], *args)
        except ConfigError as err:
            raise source.error(path, err.message) from None

    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name.isprintable() or not name or "/" in name or name.startswith("."):
        raise source.error(("name",), f"expected a name usable as a folder, got {name!r}")
    seed = value(("seed",), lambda k: validate.seed(k, raw.get("seed", 0)))
    dtype = value(("dtype",), lambda k: validate.one_of(k, raw.get("dtype", "float32"), DTYPES))

    model = raw["model"]
    if not isinstance(model, list) or not model:
        raise source.error(("model",), f"expected a non-empty list of layers, got {_kind(model)}")
    layers = tuple(_component_entry(source, ("model", i), entry, LAYERS) for i, entry in enumerate(model))

    loss = _component(source, ("loss",), raw["loss"], LOSSES)
    optimizer, regularization, notes = _optimizer(source, raw["optimizer"], OPTIMIZERS)
    schedule = _component(source, ("schedule",), raw.get("schedule", "constant"), SCHEDULES)
    data = _data(source, raw["data"], DATASETS, AUGMENTATIONS)
    train = _train(source, raw.get("train", {}))
    return Config(
        name, seed, dtype, data, layers, loss, optimizer, regularization, schedule, train, source, notes
    )


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: f"{value!r}"}.get(type(value), repr(value))


def _no_unknown_keys(source: Source, path: YamlPath, mapping: dict, allowed) -> None:
    for key in mapping:
        if key not in allowed:
            raise source.error(
                (*path, key),
                f"unknown key{did_you_mean(str(key), list(allowed))}; valid keys: {', '.join(allowed)}",
            )


def _freeze(options: dict) -> Mapping[str, Any]:
    return MappingProxyType(dict(options))


def _checked_options(source: Source, path: YamlPath, factory, options: dict, skip=(), also=()) -> None:
    try:
        check_options(factory, options, skip, also)
    except ConfigError as err:
        raise source.error(_join(path, err.key), err.message) from None


def _component(source: Source, path: YamlPath, spec: Any, registry: Registry, also=()) -> Component:
    """`name` or `{type: name, option: value, ...}`; `also`: options taken out of `spec` before,
    named among the valid ones in an error (see `check_options`)."""
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, dict):
        if "type" not in spec:
            raise source.error(path, f"expected a {registry.kind} name or a mapping with 'type'")
        name, options = spec["type"], {k: v for k, v in spec.items() if k != "type"}
        path_of_name = (*path, "type")
    else:
        raise source.error(
            path, f"expected a {registry.kind} name or a mapping with 'type', got {_kind(spec)}"
        )
    try:
        factory = registry.get(name)
    except ConfigError as err:
        raise source.error(path_of_name if isinstance(spec, dict) else path, err.message) from None
    _checked_options(source, path, factory, options, also=also)
    return Component(registry.canonical(name), _freeze(options), path)


def _component_entry(
    source: Source, path: YamlPath, entry: Any, registry: Registry, example: str = "linear: {units: 64}"
) -> Component:
    """A list entry: `relu` or `linear: {units: 512}` (a one-key mapping)."""
    if isinstance(entry, str):
        name, options = entry, {}
        option_path = (*path, name)
    elif isinstance(entry, dict) and len(entry) == 1:
        ((name, options),) = entry.items()
        option_path = (*path, name)
        if options is None:
            options = {}
        if not isinstance(options, dict):
            try:
                registry.get(name)  # an unknown name (Keras' {Activation: relu}) says so first
            except ConfigError as err:
                raise source.error(path, err.message) from None
            raise source.error(option_path, f"expected a mapping of options, got {_kind(options)}")
    else:
        raise source.error(
            path,
            f"expected a {registry.kind} name or a one-key mapping like '{example}',"
            f" got {_kind(entry)}",
        )
    try:
        factory = registry.get(name)
    except ConfigError as err:
        raise source.error(path, err.message) from None
    _checked_options(source, option_path, factory, options)
    return Component(registry.canonical(name), _freeze(options), option_path)


def _optimizer(
    source: Source, spec: Any, registry: Registry
) -> tuple[Component, Regularization, tuple[str, ...]]:
    """The optimizer, its regularization, and a note where it got its default `lr`."""
    spec = {"type": spec} if isinstance(spec, str) else spec
    if not isinstance(spec, dict):
        raise source.error(("optimizer",), f"expected a mapping with 'type', got {_kind(spec)}")
    decoupled = spec.get("type") == "adamw"  # AdamW applies weight decay itself
    kept = {
        k: v for k, v in spec.items() if k not in REGULARIZATION_KEYS or (decoupled and k == "weight_decay")
    }
    notes: tuple[str, ...] = ()
    name = kept.get("type")
    default_lr = getattr(registry.get(name), "default_lr", None) if name in registry else None
    if "lr" not in kept and default_lr is not None:
        # `optimizer: adam`, as Keras takes it: the usual rate, said, and recorded in the
        # options so that the run's config.yaml holds the rate used
        kept["lr"] = default_lr
        notes = (f"note: {source.location(('optimizer',))} optimizer: no lr given; {name} uses its"
                 f" usual default, lr {default_lr:g} (set optimizer.lr to choose)",)
    optimizer = _component(source, ("optimizer",), kept, registry, also=REGULARIZATION_KEYS)
    reg = {k: spec[k] for k in REGULARIZATION_KEYS if k in spec and not (decoupled and k == "weight_decay")}
    from nncli.nn.regularizers import Regularizer

    try:
        built = Regularizer(
            reg.get("weight_decay", 0.0), reg.get("l1", 0.0), reg.get("decay_applies_to", "weights")
        )
    except ConfigError as err:
        raise source.error(("optimizer", err.key), err.message) from None
    weight_decay = spec.get("weight_decay", 0.0) if decoupled else built.l2
    return optimizer, Regularization(weight_decay, built.l1, built.apply_to), notes


def _check_data_keys(source: Source, dataset: str, loader, options: dict) -> None:
    """An unknown key of the data section, in one sentence that names both kinds it takes: the
    section's own (DATA_KEYS) and its dataset's options ("valid options: none", the loader's
    alone, read as if `data:` took nothing, and suggested nothing for `val_sizee`)."""
    own = [name for name in accepted_options(loader)[0] if name not in CONTEXT]
    for key in options:
        if key not in own:
            theirs = ", ".join(own) if own else "no option of its own"
            raise source.error(("data", key), f"unknown option{did_you_mean(str(key), [*DATA_KEYS, *own])};"
                               f" data takes {', '.join(DATA_KEYS)}, and the {dataset} dataset {theirs}")


def _data(source: Source, spec: Any, registry: Registry, augmentations: Registry) -> DataConfig:
    if isinstance(spec, str):
        spec = {"dataset": spec}
    if not isinstance(spec, dict) or "dataset" not in spec:
        raise source.error(("data",), "expected a mapping with 'dataset' (for example {dataset: mnist})")
    try:
        loader = registry.get(spec["dataset"])
    except ConfigError as err:
        raise source.error(("data", "dataset"), err.message) from None
    options = {k: v for k, v in spec.items() if k not in DATA_KEYS}
    _check_data_keys(source, spec["dataset"], loader, options)
    _checked_options(source, ("data",), loader, options, skip=CONTEXT)
    val_size = spec.get("val_size")
    if val_size is not None:
        ok = (isinstance(val_size, int) and not isinstance(val_size, bool) and val_size >= 0) or (
            isinstance(val_size, float) and 0 <= val_size < 1
        )
        if not ok:
            raise source.error(
                ("data", "val_size"), f"expected a count (integer) or a fraction in [0, 1), got {val_size!r}"
            )
    preprocess = spec.get("preprocess", [])
    if not isinstance(preprocess, list):
        raise source.error(("data", "preprocess"), f"expected a list of steps, got {_kind(preprocess)}")
    augment = spec.get("augment")
    if augment is None:
        augment = []
    if not isinstance(augment, list):
        raise source.error(
            ("data", "augment"), f"expected a list of augmentations like [hflip], got {_kind(augment)}"
        )
    steps = tuple(
        _component_entry(source, ("data", "augment", i), entry, augmentations, "random_crop: {padding: 4}")
        for i, entry in enumerate(augment)
    )
    layout = spec.get("layout")
    if layout is not None and layout not in LAYOUTS:
        raise source.error(("data", "layout"), f"expected one of {', '.join(LAYOUTS)}, got {layout!r}"
                           f"{did_you_mean(str(layout), list(LAYOUTS))}")
    return DataConfig(
        registry.canonical(spec["dataset"]), _freeze(options), val_size, tuple(preprocess), steps, layout
    )


TRAIN_KEYS = ("epochs", "batch_size", "eval_batch_size", "monitor", "mode", "early_stopping", "loggers",
              "tensorboard")
LOGGERS = ("csv", "tensorboard")
TENSORBOARD_KEYS = ("histograms",)
EARLY_KEYS = ("monitor", "patience", "min_delta", "mode")
MODES = ("min", "max")


def _train(source: Source, spec: Any) -> TrainConfig:
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise source.error(("train",), f"expected a mapping, got {_kind(spec)}")
    _no_unknown_keys(source, ("train",), spec, TRAIN_KEYS)

    def get(key, checker, default, *args, path=("train",), block=spec):
        if key not in block or block[key] is None:
            return default
        try:
            return checker(key, block[key], *args)
        except ConfigError as err:
            raise source.error((*path, key), err.message) from None

    def metric_name(key, value):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"expected a metric name such as val_loss or val_acc, got {value!r}")
        return value

    early = spec.get("early_stopping")
    stopping = None
    if early is not None and early is not False:
        if not isinstance(early, dict):
            raise source.error(
                ("train", "early_stopping"), f"expected a mapping like {{patience: 3}}, got {_kind(early)}"
            )
        path = ("train", "early_stopping")
        _no_unknown_keys(source, path, early, EARLY_KEYS)
        stopping = EarlyStopping(
            monitor=get("monitor", metric_name, "val_loss", path=path, block=early),
            patience=get("patience", validate.positive_int, 5, path=path, block=early),
            min_delta=get("min_delta", validate.non_negative_float, 0.0, path=path, block=early),
            mode=get("mode", validate.one_of, None, MODES, path=path, block=early),
        )
    if spec.get("mode") is not None and spec.get("monitor") is None:
        raise source.error(("train", "mode"), "mode needs a monitor: say which metric it applies to")
    loggers = _loggers(source, spec.get("loggers"))
    board = spec.get("tensorboard")
    if board is not None:
        if not isinstance(board, dict):
            raise source.error(("train", "tensorboard"), f"expected a mapping like {{histograms: true}},"
                               f" got {_kind(board)}")
        _no_unknown_keys(source, ("train", "tensorboard"), board, TENSORBOARD_KEYS)
        if "tensorboard" not in loggers:
            raise source.error(("train", "tensorboard"), "options for the tensorboard logger, which"
                               " train.loggers does not list: add it (loggers: [csv, tensorboard])")
    return TrainConfig(
        epochs=get("epochs", validate.positive_int, 10),
        batch_size=get("batch_size", validate.positive_int, 128),
        monitor=get("monitor", metric_name, None),
        mode=get("mode", validate.one_of, None, MODES),
        early_stopping=stopping,
        # Evaluation chunks of 256 keep a pass in cache and its arrays small: the MNIST CNN's
        # 10,000 test images in 2.2-2.8 s against 2.3-16 s in chunks of 1,000 (loaded 2-vCPU
        # EPYC), and a run's peak RSS 242 MiB against 415. A config (and so a checkpoint) that
        # says 1000 keeps it, and its figures to the last bit.
        eval_batch_size=get("eval_batch_size", validate.positive_int, 256),
        loggers=loggers,
        histograms=get("histograms", validate.boolean, False, path=("train", "tensorboard"),
                       block=board or {}),
    )


def _loggers(source: Source, spec: Any) -> tuple[str, ...]:
    """train.loggers: `[csv, tensorboard]` or one name; csv is always on (listed or not)."""
    names = ["csv"] if spec is None else [spec] if isinstance(spec, str) else spec
    if not isinstance(names, list):
        raise source.error(("train", "loggers"), f"expected a list like [csv, tensorboard],"
                           f" got {_kind(spec)}")
    for i, name in enumerate(names):
        if name not in LOGGERS:
            hint = did_you_mean(name, list(LOGGERS)) if isinstance(name, str) else ""
            raise source.error(("train", "loggers", *([i] if isinstance(spec, list) else [])),
                               f"unknown logger {_kind(name)}{hint}; valid loggers: {', '.join(LOGGERS)}")
    return tuple(name for name in LOGGERS if name == "csv" or name in names)
