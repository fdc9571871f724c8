"""`nncli gradcheck`: the built model's analytic gradients against central differences, in
float64 (the numerical work is `nncli.nn.gradcheck`; this module picks the model, the weights
and the batch, and formats the table)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nncli.builder import build_experiment, build_regularizer, rebuild
from nncli.config.schema import load_config
from nncli.errors import CheckpointError, NncliError
from nncli.nn.gradcheck import TensorCheck, check_model
from nncli.training import checkpoint


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
