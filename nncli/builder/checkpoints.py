"""From a checkpoint back to what it was trained with: its config, its model with the weights
loaded, its data with the fitted preprocessing; and the record of that data a checkpoint keeps,
so that data changed since can be told."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nncli.builder.experiment import build_loss, build_model, build_regularizer, check_fit, configured_data
from nncli.builder.paths import resolve_data_paths
from nncli.config.schema import Config, parse_config
from nncli.config.yamlsource import CLI_OVERRIDES, Source, apply_override
from nncli.data.pipeline import Splits
from nncli.data.preprocess import Preprocessor
from nncli.errors import CheckpointError, DataError
from nncli.nn.losses import Loss
from nncli.nn.model import Sequential
from nncli.nn.regularizers import Regularizer


@dataclass
class Rebuilt:
    """A checkpoint's model (its weights loaded), loss, regularizer and data, rebuilt from the
    checkpoint alone: its saved config and its fitted preprocessing statistics."""

    config: Config
    model: Sequential
    loss: Loss
    regularizer: Regularizer
    splits: Splits
    checkpoint: dict


def data_record(config: Config, splits: Splits) -> dict:
    """What a checkpoint keeps of its data: the dataset, a fingerprint of it, its task, the
    shape of a sample as loaded (`raw_shape`) and as the model takes it (`input_shape`, after
    preprocessing), the pixel maximum of images and what they look like (`image_profile`),
    the outputs, the class names, and for a
    table which columns were the features and the targets: what it takes to read new inputs
    the way the training ones were read, with no access to the training data. `layout` is how
    raw images were laid out (None: channels first), `inputs` what the raw training inputs look
    like (`nncli.data.contract.describe`), against which new inputs are checked."""
    info = splits.info
    return {
        "dataset": config.data.dataset,
        "fingerprint": splits.fingerprint,
        "task": info.task,
        "raw_shape": list(splits.raw_shape),
        "input_shape": list(info.input_shape),
        "pixel_max": info.pixel_max,
        "num_outputs": info.num_outputs,
        "class_names": list(info.class_names) if info.class_names else None,
        "columns": info.columns.to_dict() if info.columns else None,
        "layout": splits.layout,
        "inputs": splits.profiles.get("train"),
        "images": splits.image_profile,
    }


def data_change(saved: dict, splits: Splits) -> str | None:
    """None when `saved` was trained on the data `splits` holds now (or cannot tell: a
    checkpoint written before fingerprints); else one sentence saying so."""
    record = saved.get("data")
    recorded = record.get("fingerprint") if isinstance(record, dict) else None
    if not recorded or recorded == splits.fingerprint:
        return None
    return (
        f"the data has changed since {saved['path']} was trained ({splits.info.name}: fingerprint"
        f" {recorded[:12]} then, {splits.fingerprint[:12]} now)"
    )


def refuse_changed_data(saved: dict, splits: Splits, allow: bool) -> str | None:
    """Raise `DataError` when the data changed since training, unless `allow`; then the
    sentence to warn with (None when nothing changed)."""
    change = data_change(saved, splits)
    if change and not allow:
        raise DataError(
            f"{change}: the validation split would no longer be the one training used, and could"
            " hold training rows; pass --allow-data-change to go on anyway"
        )
    return change


def checkpoint_config(
    saved: dict, overrides=(), label: str | None = None, overrides_label: str = CLI_OVERRIDES
) -> Config:
    """The config saved in a checkpoint (resolved YAML data) with `overrides` (`--set KEY=VALUE`)
    applied, parsed and validated; errors name `label` (default: the checkpoint) and the path,
    and call the overrides `overrides_label`."""
    if not isinstance(saved["config"], dict):
        raise CheckpointError(f"{saved['path']} holds no config mapping")
    source = Source(copy.deepcopy(saved["config"]), label or f"{saved['path']} (its config)")
    source.overrides_label = overrides_label
    for assignment in overrides:
        apply_override(source, assignment)
    return parse_config(source)


def saved_model(saved: dict, config: Config, input_shape, loss: Loss) -> Sequential:
    """The model of checkpoint `saved` built for `input_shape`, its weights loaded.

    The weights are the file's, so a config asking for more numbers than they hold (a crafted
    one, to exhaust memory) is refused before its layers draw or pack their arrays."""
    source = saved.get("path", "the checkpoint")
    held = _saved_size(saved["model"], source)
    rng = _Budget(np.random.default_rng(config.seed), held)  # the draws are overwritten anyway
    try:
        model = build_model(config, input_shape, rng, loss, max_params=held)
    except (ValueError, MemoryError) as err:
        reason = str(err) if isinstance(err, ValueError) else "out of memory"
        raise CheckpointError(
            f"{source}: its config asks for a model larger than the weights it holds ({reason})"
        ) from None
    try:
        model.load_state_dict(saved["model"])
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"{source} does not match its own config: {err}") from None
    return model


def rebuild(saved: dict, data_dir: Path) -> Rebuilt:
    """Rebuild what `saved` (from `nncli.training.checkpoint.load`) was trained on.

    The data is drawn from a fresh generator seeded as training's was, so the validation
    split is the same one, and preprocessed with the saved statistics rather than refitted.
    """
    config = resolve_data_paths(checkpoint_config(saved), data_dir)
    if "preprocessor" not in saved:
        raise CheckpointError(f"{saved['path']} has no preprocessing state to rebuild its data with")
    preprocessor = Preprocessor.from_state(saved["preprocessor"])
    rng = np.random.default_rng(config.seed)
    loss = build_loss(config)
    try:
        splits = configured_data(config, data_dir, rng, loss, preprocessor=preprocessor)
    except ValueError as err:  # statistics that do not broadcast against the data
        raise CheckpointError(
            f"{saved['path']}: the saved preprocessing does not fit {config.data.dataset} ({err})"
        ) from None
    model = saved_model(saved, config, splits.info.input_shape, loss)
    check_fit(config, model, loss, splits)
    return Rebuilt(config, model, loss, build_regularizer(config), splits, saved)


def _saved_size(model_state, source: str) -> int:
    """How many numbers a checkpoint's parameters hold."""
    try:
        return sum(int(np.asarray(v).size) for v in model_state["params"].values())
    except (KeyError, TypeError, AttributeError, ValueError):
        raise CheckpointError(f"{source}: its model state is not a mapping of arrays") from None


class _Budget:
    """A generator that draws at most `budget` numbers in all, and raises `ValueError` before a
    draw that would exceed it: the initializers of a model rebuilt only to be overwritten."""

    def __init__(self, rng: np.random.Generator, budget: int):
        self._rng, self._budget, self._left = rng, budget, budget

    def __getattr__(self, name: str):
        method = getattr(self._rng, name)
        if not callable(method):
            return method

        def draw(*args, **kwargs):
            size = kwargs.get("size")
            count = int(np.prod(size)) if size is not None else 1
            if count > self._left:
                raise ValueError(f"a layer draws {count:,} numbers; the file holds {self._budget:,} in all")
            self._left -= count
            return method(*args, **kwargs)

        return draw
