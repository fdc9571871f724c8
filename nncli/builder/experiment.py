"""Building a run from its config: the data, the model, the loss, the optimizer and schedule,
checked against each other before anything is trained.

    config --build_experiment--> Experiment(rng, splits, model, loss, optimizer, schedule, ...)

One seeded generator per run feeds, in this order, the dataset (synthetic sets, the validation
split), the model's initialization, and then training (shuffling, augmentation, dropout
masks). Rebuilding from the same config therefore reproduces the split exactly, which is what
lets a resumed run load its checkpoint into an identical setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nncli.builder.advice import data_notes, input_notes, output_notes, split_notes
from nncli.builder.paths import resolve_data_paths
from nncli.config.schema import Component, Config
from nncli.data.augment import AUGMENTATIONS, Augmenter
from nncli.data.pipeline import Splits, load_data
from nncli.data.preprocess import Preprocessor
from nncli.messages import count, did_you_mean
from nncli.nn.layers import LAYERS
from nncli.nn.losses import LOSSES, Loss
from nncli.nn.model import Sequential
from nncli.nn.optim import OPTIMIZERS, SCHEDULES, Optimizer, Schedule
from nncli.nn.parallel import apply_setting, thread_setting
from nncli.nn.regularizers import Regularizer


@dataclass
class Experiment:
    config: Config
    rng: np.random.Generator
    splits: Splits
    model: Sequential
    loss: Loss
    optimizer: Optimizer
    schedule: Schedule
    regularizer: Regularizer
    # one line each, located at the config's file and line: "note: ..." for what the builder
    # did on the user's behalf, "warning: ..." for what is legal but probably not meant
    notes: list[str] = field(default_factory=list)
    # applied by the trainer to each training batch, `augment(xb, rng)`; None without data.augment
    augment: Augmenter | None = None
    # the folder its datasets were read from (--data-dir, $NNCLI_DATA_DIR or the cache)
    data_dir: Path | None = None

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.config.dtype)

    def resolved_config(self) -> dict:
        """The config with every default filled in, from the built objects themselves."""
        out = self.config.to_dict()
        out["model"] = self.model.get_config()
        out["loss"] = {"type": self.loss.name, **self.loss.get_config()}
        optimizer = {"type": type(self.optimizer).registered_name, **self.optimizer.get_config()}
        optimizer.update({k: v for k, v in out["optimizer"].items() if k not in optimizer})
        out["optimizer"] = optimizer
        out["schedule"] = {"type": type(self.schedule).registered_name, **self.schedule.get_config()}
        out["data"]["augment"] = self.augment.get_config() if self.augment is not None else []
        return out


def create(config: Config, component: Component, registry):
    with config.located(component.path):
        return registry.create(component.type, dict(component.options))


# A final activation that the loss applies itself, on logits, in a fused and stable form.
FUSED_OUTPUTS = {"sigmoid": "binary_cross_entropy", "softmax": "softmax_cross_entropy"}


def build_model(
    config: Config, input_shape, rng: np.random.Generator, loss: Loss, max_params: int | None = None
) -> Sequential:
    """The configured layers, built for `input_shape` (`max_params`: see `Sequential.build`).
    A final sigmoid before binary_cross_entropy (softmax before softmax_cross_entropy) becomes
    the model's `output`: training and the loss see the logits, `predict` returns
    probabilities. Batches run as $NNCLI_THREADS says (nncli.nn.parallel.thread_setting):
    unset, as shards fixed by the CPUs, the model and the batch size, in threads measured."""
    layers = [create(config, spec, LAYERS) for spec in config.model]
    output = None
    if len(layers) > 1 and FUSED_OUTPUTS.get(layers[-1].name) == loss.name:
        output = layers.pop()
    model = Sequential(layers, output)
    with config.located(("model",)):
        model.build(input_shape, rng, np.dtype(config.dtype), max_params)
    apply_setting(model, thread_setting())
    return model


def build_loss(config: Config) -> Loss:
    return create(config, config.loss, LOSSES)


def configured_data(
    config: Config,
    data_dir: Path,
    rng: np.random.Generator,
    loss: Loss,
    *,
    preprocess: list | None = None,
    preprocessor: Preprocessor | None = None,
    progress: bool = True,
    arrays: dict[str, np.ndarray] | None = None,
) -> Splits:
    """`load_data` for the config's dataset, options, validation split and dtype, with the
    loss's task for loaders that decide theirs; `preprocess` in place of the config's steps, or
    a fitted `preprocessor` (a checkpoint's) applied as it is; `arrays` for the arrays dataset."""
    with config.located(("data",)):
        return load_data(
            config.data.dataset,
            dict(config.data.options),
            val_size=config.data.val_size,
            preprocess=list(config.data.preprocess) if preprocess is None else preprocess,
            data_dir=data_dir,
            rng=rng,
            dtype=np.dtype(config.dtype),
            progress=progress,
            preprocessor=preprocessor,
            loss_task=loss.task,
            layout=config.data.layout,
            arrays=arrays,
        )


def load_splits(
    config: Config, data_dir: Path, rng: np.random.Generator, loss: Loss, progress: bool = True,
    arrays: dict[str, np.ndarray] | None = None,
) -> Splits:
    """The configured data; a regression loss on class labels gets them one-hot encoded."""
    splits = configured_data(config, data_dir, rng, loss, progress=progress, arrays=arrays)
    if loss.task == "regression" and splits.info.task == "classification" and splits.y_train.ndim == 1:
        # Whether labels are classes is known only once loaded. Loading again from a fresh
        # generator consumes it exactly as `rng` was, so the split is the same.
        one_hot = [*config.data.preprocess, "one_hot"]
        generator = np.random.default_rng(config.seed)
        splits = configured_data(config, data_dir, generator, loss, preprocess=one_hot,
                                 progress=progress, arrays=arrays)
    return splits


def build_augment(config: Config, splits: Splits) -> Augmenter | None:
    """The configured augmentations, checked against the inputs as the model sees them (after
    preprocessing): every one needs images (N, C, H, W). None without data.augment."""
    if not config.data.augment:
        return None
    shape = splits.info.input_shape
    augmentations = []
    for spec in config.data.augment:
        augmentation = create(config, spec, AUGMENTATIONS)
        if len(shape) != 3:
            raise config.source.error(spec.path, f"needs images (N, C, H, W); {_not_images(config, shape)}")
        with config.located(spec.path):
            augmentation.check_input(shape)
        augmentations.append(augmentation)
    return Augmenter(augmentations)


def _not_images(config: Config, shape: tuple[int, ...]) -> str:
    """What the inputs are instead of images, and how to make them images."""
    if len(shape) != 1:
        fix = " (give each image a channel axis: (1, H, W))" if len(shape) == 2 else ""
        return f"the inputs have shape {shape} per sample{fix}"
    steps = [entry if isinstance(entry, str) else next(iter(entry), None) for entry in config.data.preprocess]
    if "flatten" in steps:
        fix = " (leave flatten out of data.preprocess and put a flatten layer in the model)"
    elif config.data.dataset == "csv":
        fix = " (give data.shape, the (C, H, W) of each row: [1, 28, 28] for MNIST)"
    else:
        fix = ""
    return f"the inputs are flat vectors of {shape[0]} values{fix}"


def check_fit(config: Config, model: Sequential, loss: Loss, splits: Splits) -> None:
    """The model's output must suit the loss and the data; say where it does not."""
    info = splits.info
    out = model.output_shape
    last = ("model", len(config.model) - 1)
    if len(out) != 1:
        raise config.source.error(last, f"the model's output has shape {out}; a loss needs (outputs,)")
    width = out[0]
    if loss.task == "classification" and info.task != "classification":
        raise config.source.error(
            ("loss",), f"{loss.name} is a classification loss but {info.name} is a regression dataset"
        )
    expected = info.num_outputs
    if loss.name == "binary_cross_entropy" and splits.y_train.ndim == 1:
        if info.num_classes != 2:
            raise config.source.error(
                ("loss",),
                f"binary_cross_entropy needs two classes (labels 0 and 1) but {info.name} has"
                f" {info.num_classes}: use softmax_cross_entropy, or one_hot labels for one output each",
            )
        expected = 1
    if width != expected:
        what = (
            count(info.num_classes, "class", "classes")
            if info.task == "classification"
            else count(info.num_outputs, "target")
        )
        why = f" ({'; '.join(info.notes)})" if info.notes else ""
        raise config.source.error(
            last,
            f"the last layer gives {width} outputs but {info.name} has {what} (expected {expected}){why}",
        )
    with config.located(("loss",)):
        loss.check_outputs(width)


def steps_per_epoch(config: Config, splits: Splits) -> int:
    """Optimizer steps in one epoch: the training set in batches, the last one possibly short
    (the data pipeline never leaves the training set empty)."""
    return -(-len(splits.x_train) // config.train.batch_size)


def full_batch(config: Config, splits: Splits) -> int:
    """The rows of a whole training batch: the batch size, or the training set where smaller."""
    return min(config.train.batch_size, len(splits.x_train))


def monitor_of(config: Config, splits: Splits) -> tuple[str, str]:
    """The metric that picks the best checkpoint, and whether lower or higher is better."""
    has_val = splits.x_val is not None and len(splits.x_val) > 0
    monitor = config.train.monitor or ("val_loss" if has_val else "train_loss")
    mode = config.train.mode or ("max" if monitor.endswith("acc") else "min")
    return monitor, mode


def build_experiment(
    config: Config, data_dir: Path, progress: bool = True, arrays: dict[str, np.ndarray] | None = None
) -> Experiment:
    """Everything a run needs; `progress` allows download progress bars; `arrays` are the
    arrays dataset's, given from Python."""
    config = resolve_data_paths(config, data_dir)
    rng = np.random.default_rng(config.seed)
    loss = build_loss(config)
    splits = load_splits(config, data_dir, rng, loss, progress, arrays)
    augment = build_augment(config, splits)
    model = build_model(config, splits.info.input_shape, rng, loss)
    check_fit(config, model, loss, splits)
    notes = [
        *config.notes,
        *data_notes(config, splits),
        *input_notes(config, splits),
        *split_notes(config, splits),
        *output_notes(config, model, loss, splits),
    ]

    optimizer = create(config, config.optimizer, OPTIMIZERS)
    regularizer = build_regularizer(config)
    if config.optimizer.type == "adamw":
        optimizer.decayed = set(regularizer.names(model))
    schedule = create(config, config.schedule, SCHEDULES)
    with config.located(config.schedule.path):
        schedule.setup(optimizer.base_lr, config.train.epochs, steps_per_epoch(config, splits))
    _check_monitors(config, splits, loss, schedule)
    return Experiment(config, rng, splits, model, loss, optimizer, schedule, regularizer, notes, augment,
                      Path(data_dir))


METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")  # what a run can watch


def _check_monitors(config: Config, splits: Splits, loss: Loss, schedule: Schedule) -> None:
    """Every metric the config watches must be one the run produces."""
    has_val = splits.x_val is not None and len(splits.x_val) > 0
    accuracy = loss.task == "classification"
    available = ["train_loss"] + (["train_acc"] if accuracy else [])
    if has_val:
        available += ["val_loss"] + (["val_acc"] if accuracy else [])
    checks = [(("train", "monitor"), config.train.monitor)]
    if config.train.early_stopping is not None:
        checks.append((("train", "early_stopping", "monitor"), config.train.early_stopping.monitor))
    if getattr(schedule, "monitor", None) is not None:
        checks.append(((*config.schedule.path, "monitor"), schedule.monitor))
    for path, metric in checks:
        if metric is not None and metric not in available:
            typo = "" if metric in METRICS else did_you_mean(metric, list(METRICS))
            no_val = metric.startswith("val") and not has_val
            hint = " (set data.val_size to have a validation split)" if no_val else ""
            raise config.source.error(
                path, f"cannot monitor {metric!r}{typo}: available metrics are {', '.join(available)}{hint}"
            )


def build_regularizer(config: Config) -> Regularizer:
    """The penalty added to the data loss (AdamW's decoupled weight decay is not part of it)."""
    reg = config.regularization
    l2 = 0.0 if config.optimizer.type == "adamw" else reg.weight_decay
    return Regularizer(l2, reg.l1, reg.decay_applies_to)
