"""Looking at a config or at runs without training: `nncli check`, `nncli gradcheck` and the
runs that `nncli plot` draws.

    check      validate and build; the layer table, the parameter count, the activation memory
    gradcheck  the built model's analytic gradients against central differences, in float64
    plot       each run's metrics.csv, labelled by the run's name
"""

from __future__ import annotations

import csv
import inspect as pyinspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from nncli import checkpoint
from nncli.builder import build_experiment, build_regularizer, rebuild
from nncli.callbacks.files import read_metrics
from nncli.config.schema import load_config
from nncli.errors import CheckpointError, NncliError
from nncli.gradcheck import TensorCheck, check_model
from nncli.layers import Layer
from nncli.registry import did_you_mean


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
        for name, p in pyinspect.signature(type(layer).__init__).parameters.items()
        if p.default is pyinspect.Parameter.empty and name != "self"
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
    exp = build_experiment(config, data_dir)
    model, splits, info = exp.model, exp.splits, exp.splits.info
    dtype = np.dtype(config.dtype)
    batch = config.train.batch_size

    counts = [
        f"{len(x):,} {what}"
        for what, x in (("training", splits.x_train), ("validation", splits.x_val), ("test", splits.x_test))
        if x is not None
    ]
    task = f"{info.num_classes} classes" if info.task == "classification" else f"{info.num_outputs} targets"
    rows = [("#", "layer", "output shape", "parameters")]
    rows += [(str(i), describe_layer(layer), str(shape), f"{n:,}") for i, layer, shape, n in _summary(model)]
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    table = [
        f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}" for r in rows
    ]
    total = model.num_params()
    return "\n".join(
        [
            f"{config_path}: {config.name}, {config.dtype}",
            f"data: {info.name}, {', '.join(counts)} samples; input {info.input_shape}, {task}",
            *table,
            f"total parameters: {total:,} ({format_bytes(total * dtype.itemsize)})",
            f"activations of one batch: {format_bytes(model.activation_bytes(batch, dtype))}"
            f" (batch_size {batch}, {dtype.name})",
            f"loss {exp.loss.name}, optimizer {type(exp.optimizer).registered_name},"
            f" schedule {type(exp.schedule).registered_name}, {config.train.epochs} epochs",
            "config OK",
        ]
    )


def _summary(model):
    for i, _, shape, n in model.summary():
        yield i, model.layers[i], shape, n


@dataclass
class GradcheckResult:
    checks: list[TensorCheck]
    tol: float
    batch: int
    source: str  # what was checked, for the table's last line

    @property
    def failed(self) -> list[TensorCheck]:
        return [c for c in self.checks if not c.passed(self.tol)]


def gradcheck(
    config_path: str | None,
    overrides=(),
    *,
    data_dir: Path,
    checkpoint_path: str | None = None,
    batch: int = 8,
    samples: int | None = 20,
    tol: float = 1e-6,
    seed: int = 0,
) -> GradcheckResult:
    """Check the configured model (with a checkpoint's weights when given) on `batch` training
    samples drawn with `seed`, `samples` entries per tensor (None: all), in float64.

    Without `config_path` the checkpoint's own config, data and preprocessing are used.
    """
    if config_path is None and checkpoint_path is None:
        raise NncliError("give a CONFIG to check, or --checkpoint CKPT")
    saved = checkpoint.load(checkpoint_path) if checkpoint_path else None
    if config_path is None:
        built = rebuild(saved, data_dir)
        model, loss, regularizer, splits = built.model, built.loss, built.regularizer, built.splits
        source = saved["path"]
    else:
        config = load_config(config_path, overrides)
        exp = build_experiment(config, data_dir)
        model, loss, splits = exp.model, exp.loss, exp.splits
        regularizer = build_regularizer(config)
        source = config_path
        if saved is not None:
            try:
                model.load_state_dict(saved["model"])
            except (KeyError, ValueError, TypeError) as err:
                raise CheckpointError(f"{saved['path']} does not fit {config_path}: {err}") from None
            source += f" with the weights of {saved['path']}"
    model.astype(np.float64)

    rng = np.random.default_rng(seed)
    n = min(batch, len(splits.x_train))
    rows = np.sort(rng.choice(len(splits.x_train), n, replace=False))
    x = splits.x_train[rows].astype(np.float64)
    y = splits.y_train[rows]
    if y.dtype.kind == "f":
        y = y.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        checks = check_model(
            model, loss, x, y, regularizer=regularizer or None, tol=tol, samples=samples, rng=rng
        )
    return GradcheckResult(checks, tol, n, f"{source}: {n} training samples of {splits.info.name}")


def format_gradcheck(result: GradcheckResult) -> str:
    rows = [("tensor", "shape", "checked", "max rel error", "at kinks", "")]
    for c in result.checks:
        rows.append(
            (
                c.name,
                str(c.shape),
                f"{c.checked:,}",
                f"{c.max_rel_error:.2e}",
                f"{c.kinks:,}",
                "ok" if c.passed(result.tol) else "FAIL",
            )
        )
    widths = [max(len(row[col]) for row in rows) for col in range(6)]
    align = ["<", "<", ">", ">", ">", "<"]
    lines = [
        "  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(row, align, widths, strict=True)).rstrip()
        for row in rows
    ]
    failed = result.failed
    if failed:
        verdict = f"{len(failed)} of {len(result.checks)} tensors at or above tolerance {result.tol:g}"
    else:
        verdict = f"all {len(result.checks)} tensors below tolerance {result.tol:g}"
    return "\n".join([*lines, f"{verdict} ({result.source}, float64)"])


def failure_message(result: GradcheckResult) -> str:
    def where(c: TensorCheck) -> str:
        at = f" at {c.worst_index}" if c.worst_index is not None else ""
        return f"{c.name} (relative error {c.max_rel_error:.2e}{at})"

    return f"gradient check failed for {', '.join(where(c) for c in result.failed)}: tolerance {result.tol:g}"


# ---- nncli plot -------------------------------------------------------------------------


def runs_to_plot(paths: list[str]) -> list[tuple[str, list[dict]]]:
    """(label, metrics rows) per run directory (or metrics.csv file). A run is labelled by its
    config's name; runs sharing a name are told apart by their folder."""
    found = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise NncliError(f"{path} does not exist")
        table = path / "metrics.csv" if path.is_dir() else path
        if not table.is_file():
            raise NncliError(f"{path} has no metrics.csv: is it a run directory?")
        try:
            rows = read_metrics(table)
        except (OSError, UnicodeDecodeError, ValueError, csv.Error) as err:
            raise NncliError(f"cannot read {table}: {err}") from None
        if not rows or "epoch" not in rows[0]:
            raise NncliError(f"{table} has no epochs to plot")
        found.append((_run_name(table.parent), table.parent, rows))

    def label(name: str, folder: Path) -> str:
        if sum(n == name for n, _, _ in found) == 1:
            return name
        if sum(n == name and f.name == folder.name for n, f, _ in found) == 1:
            return f"{name} ({folder.name})"
        return f"{name} ({folder})"

    return [(label(name, folder), rows) for name, folder, rows in found]


def _run_name(folder: Path) -> str:
    """The `name` in the run's config.yaml, else the folder's name."""
    try:
        config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
        name = config.get("name") if isinstance(config, dict) else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        name = None
    return name if isinstance(name, str) and name else folder.resolve().name


def plot_metrics(names: list[str], runs: list[tuple[str, list[dict]]]) -> list[str] | None:
    """`--metric` values checked against what the runs have: loss, acc (or accuracy) and any
    metrics.csv column but epoch. None (the default panels, loss and accuracy) when empty."""
    if not names:
        return None
    valid = ["loss", "acc", *sorted({key for _, rows in runs for key in rows[0] if key != "epoch"})]
    out = []
    for name in names:
        name = {"accuracy": "acc"}.get(name, name)
        if name not in valid:
            raise NncliError(
                f"unknown metric {name!r}{did_you_mean(name, valid)}; valid metrics: {', '.join(valid)}"
            )
        out.append(name)
    return out
