"""`nncli check`: validate a config and build its model and data without training; the layer
table (output shape, parameters and multiply-accumulates per sample of each layer), the totals
and the memory of one batch's activations. `layer_table` is `nncli.Model.summary()` too."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from nncli.builder import build_experiment
from nncli.config.schema import load_config
from nncli.data.tables import listing
from nncli.errors import NncliError
from nncli.messages import count
from nncli.nn.cost import macs
from nncli.nn.layers import Layer
from nncli.training.callbacks.tensorboard import require


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def describe_layer(layer: Layer) -> str:
    """`linear(units=512, init=he)`: the layer's YAML arguments that differ from their defaults
    (an initializer shown by its type)."""
    config = layer.get_config()
    required = {
        name
        for name, p in inspect.signature(type(layer).__init__).parameters.items()
        if p.default is inspect.Parameter.empty and name != "self"
    }
    try:
        defaults = type(layer)(**{k: v for k, v in config.items() if k in required}).get_config()
    except (TypeError, ValueError, NncliError):
        defaults = {}
    args = []
    for key, value in config.items():
        if key not in required and key in defaults and defaults[key] == value:
            continue
        if isinstance(value, dict) and "type" in value:
            value = value["type"]
        args.append(f"{key}={value}")
    return f"{layer.name}({', '.join(args)})" if args else layer.name


def check(config_path: str, overrides=(), *, data_dir: Path) -> str:
    """Validate and build `config_path` (loading its data, training nothing); the report."""
    config = load_config(config_path, overrides)
    require(config)  # an optional logger the config asks for is installed
    exp = build_experiment(config, data_dir)
    model, splits, info = exp.model, exp.splits, exp.splits.info
    dtype = np.dtype(config.dtype)
    batch = config.train.batch_size

    counts = [
        f"{len(x):,} {what}"
        for what, x in (("training", splits.x_train), ("validation", splits.x_val), ("test", splits.x_test))
        if x is not None
    ]
    task = (
        count(info.num_classes, "class", "classes")
        if info.task == "classification"
        else count(info.num_outputs, "target")
    )
    table = layer_table(model)
    total = model.num_params()
    return "\n".join(
        [
            f"{config_path}: {config.name}, {config.dtype}",
            f"data: {info.name}, {', '.join(counts)} samples; input {info.input_shape}, {task}",
            *_header_line(info),
            *_augment_line(exp),
            *table[:-1],
            f"total parameters: {total:,} ({format_bytes(total * dtype.itemsize)})",
            table[-1],
            f"activations of one batch: {format_bytes(model.activation_bytes(batch, dtype))}"
            f" (batch_size {batch}, {dtype.name})",
            f"loss {exp.loss.name}, optimizer {type(exp.optimizer).registered_name},"
            f" schedule {type(exp.schedule).registered_name}, {count(config.train.epochs, 'epoch')}",
            *exp.notes,
            "config OK",
        ]
    )


def _header_line(info) -> list[str]:
    """For a CSV dataset, how its first line was read: `csv header: a, b, label`, or
    `csv: no header, the first line is data`."""
    if info.name != "csv" or info.columns is None:
        return []
    if info.columns.header is None:
        return ["csv: no header, the first line is data"]
    return [f"csv header: {listing(list(info.columns.header))}"]


def _augment_line(exp) -> list[str]:
    """`augment: random_crop(padding=4), hflip(p=0.5)` when training batches are augmented."""
    if exp.augment is None:
        return []
    steps = [
        f"{name}({', '.join(f'{k}={v}' for k, v in options.items())})"
        for entry in exp.augment.get_config()
        for name, options in entry.items()
    ]
    return [f"augment: {', '.join(steps)} (training batches only)"]


def layer_table(model) -> list[str]:
    """Per layer of a built model its output shape, parameters and multiply-accumulates for one
    sample (`nncli.nn.cost`), then a line with the total MACs."""
    rows = [("#", "layer", "output shape", "parameters", "MACs")]
    total = 0
    for i, _, shape, n in model.summary():
        layer = model.stack[i]
        total += macs(layer)
        rows.append((str(i), describe_layer(layer), str(shape), f"{n:,}", f"{macs(layer):,}"))
    widths = [max(len(row[c]) for row in rows) for c in range(5)]
    lines = [f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}"
             f"  {r[4]:>{widths[4]}}" for r in rows]
    return [*lines, f"multiply-accumulates per sample: {total:,} (forward; FLOPs are about twice that)"]
