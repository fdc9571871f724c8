"""`nncli gradcheck`: the built model's analytic gradients against central differences, in
float64 (the numerical work is `nncli.nn.gradcheck`; this module picks the model, the weights
and the batch, and formats the table)."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nncli.builder import build_experiment, build_regularizer, rebuild, refuse_changed_data
from nncli.config.schema import load_config
from nncli.errors import CheckpointError, NncliError
from nncli.messages import count
from nncli.nn.gradcheck import (
    CheckInterrupted,
    TensorCheck,
    iter_check_model,
    planned_tensors,
    randomize_zero_params,
)
from nncli.training import checkpoint

# the input is checked at the batch plus uniform noise of 1% of its standard deviation, so that
# no max-pooling window over a blank region holds a tie (see `nncli.nn.gradcheck`)
INPUT_NOISE = 0.01


@dataclass
class GradcheckResult:
    checks: list[TensorCheck]
    tol: float
    batch: int
    source: str  # what was checked, for the table's last line
    planned: int = 0  # the tensors to check; more than len(checks) when interrupted
    interrupted: bool = False
    # interrupted in the middle of a tensor: its row for the entries done, and its entries in all
    unfinished: TensorCheck | None = None
    unfinished_total: int = 0
    # the tensors initialized to zeros that were given small random values for the check
    randomized: list[str] = field(default_factory=list)

    @property
    def rows(self) -> list[TensorCheck]:
        return self.checks + ([self.unfinished] if self.unfinished else [])

    @property
    def failed(self) -> list[TensorCheck]:
        """The tensors with a compared entry off by the tolerance or more."""
        return [c for c in self.rows if not c.unchecked and not c.passed(self.tol)]

    @property
    def unchecked(self) -> list[TensorCheck]:
        """The tensors with no entry compared: every one checked was excused at a kink."""
        return [c for c in self.rows if c.unchecked]


class UncheckedTensors(NncliError):
    """Some tensor had no entry compared (exit code 4: the check says nothing about it)."""

    exit_code = 4


class GradcheckInterrupted(KeyboardInterrupt):
    """Ctrl-C during the check; `result` holds the tensors finished before it."""

    def __init__(self, result: GradcheckResult):
        super().__init__()
        self.result = result


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
    progress: bool = False,
    allow_data_change: bool = False,
) -> GradcheckResult:
    """Check the configured model (with a checkpoint's weights when given) on `batch` training
    samples drawn with `seed`, `samples` entries per tensor (None: all), in float64.

    A model at initialization (no checkpoint) has its tensors initialized to zeros (biases,
    batch norm's beta) given small random values from the same generator first, so that ReLU
    inputs over blank pixels are off their kinks (`nncli.nn.gradcheck.randomize_zero_params`);
    `GradcheckResult.randomized` names them. The input is checked at the batch plus noise of
    `INPUT_NOISE` times its standard deviation, so that blank pixels tie no max pool.

    Without `config_path` the checkpoint's own config, data and preprocessing are used, and data
    that changed since the checkpoint was written is refused unless `allow_data_change`.
    `progress` shows a bar of the entries checked on stderr. Ctrl-C raises
    `GradcheckInterrupted`, which carries the tensors finished so far.
    """
    if config_path is None and checkpoint_path is None:
        raise NncliError("give a CONFIG to check, or --checkpoint CKPT")
    saved = checkpoint.load(checkpoint_path) if checkpoint_path else None
    if config_path is None:
        built = rebuild(saved, data_dir)
        refuse_changed_data(saved, built.splits, allow_data_change)
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
    randomized = []
    if saved is None:
        randomized = randomize_zero_params(model, rng)
        source += " at initialization"
        if randomized:
            source += f", {count(len(randomized), 'zero tensor')} made small and random"
    regularizer = regularizer or None
    planned = len(planned_tensors(model, regularizer))
    result = GradcheckResult(
        [], tol, n, f"{source}: {n} training samples of {splits.info.name}", planned, randomized=randomized
    )
    bar = _ProgressBar(planned) if progress else None
    try:
        with (
            np.errstate(over="ignore", invalid="ignore", divide="ignore"),
            contextlib.closing(
                iter_check_model(
                    model,
                    loss,
                    x,
                    y,
                    regularizer=regularizer,
                    samples=samples,
                    rng=rng,
                    input_noise=INPUT_NOISE,
                    progress=bar,
                )
            ) as checks,
        ):
            for check in checks:
                result.checks.append(check)
    except KeyboardInterrupt as stop:
        result.interrupted = True
        if isinstance(stop, CheckInterrupted):
            result.unfinished, result.unfinished_total = stop.partial, stop.total
        raise GradcheckInterrupted(result) from None
    finally:
        if bar is not None:
            bar.close()
    return result


class _ProgressBar:
    """A tqdm bar on stderr for the tensor being checked: its entries done, the rate, the time
    left. It appears only when a tensor takes more than half a second."""

    DELAY = 0.5  # seconds before a tensor's bar appears

    def __init__(self, planned: int):
        self.planned = planned
        self.started = 0
        self.name: str | None = None
        self.bar: tqdm | None = None

    def __call__(self, name: str, done: int, total: int) -> None:
        if name != self.name:
            self.close()
            self.name, self.started = name, self.started + 1
            self.bar = tqdm(
                total=total,
                desc=f"{name} ({self.started}/{self.planned})",
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
                mininterval=0.2,
                delay=self.DELAY,
                unit="entry",
            )
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_gradcheck(result: GradcheckResult) -> str:
    """One row per tensor: the entries sampled, compared and excused at kinks, the largest
    relative error above the noise and that entry's noise floor (the relative error rounding
    alone can produce there; see `nncli.nn.gradcheck`), and ok, FAIL or UNCHECKED (no entry
    compared); then a line with the verdict and the entries compared and excused in all."""
    rows = [("tensor", "shape", "sampled", "compared", "at kinks", "max rel error", "noise floor", "")]
    for c in result.rows:
        sampled = f"{c.checked:,}"
        if c is result.unfinished:
            sampled += f"/{result.unfinished_total:,}"
        if c.unchecked:  # no error to report (not 0 with an infinite floor)
            error, floor, verdict = "-", "-", "UNCHECKED"
        else:
            error, floor = f"{c.max_rel_error:.2e}", f"{c.noise_floor:.2e}"
            verdict = "ok" if c.passed(result.tol) else "FAIL"
        rows.append((c.name, str(c.shape), sampled, f"{c.compared:,}", f"{c.kinks:,}", error, floor, verdict))
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    align = ["<", "<", ">", ">", ">", ">", ">", "<"]
    lines = [
        "  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(row, align, widths, strict=True)).rstrip()
        for row in rows
    ]
    failed, unchecked, tol = result.failed, result.unchecked, f"{result.tol:g}"
    below = _below(result)
    if result.interrupted:
        verdict = f"interrupted after {len(result.checks)} of {result.planned} tensors"
        part = result.unfinished
        if part is not None:
            verdict += f" and {part.checked:,} of the {result.unfinished_total:,} entries of {part.name}"
        if not result.rows:
            verdict += ": none checked"
        elif failed:
            verdict += f": {len(failed)} at or above tolerance {tol}"
        elif unchecked:
            verdict += f": {len(result.rows) - len(unchecked)} {below}"
        else:
            verdict += f": all {below}"
    elif failed:
        verdict = f"{len(failed)} of {len(result.checks)} tensors at or above tolerance {tol}"
    elif unchecked:
        verdict = f"{len(result.checks) - len(unchecked)} of {len(result.checks)} tensors {below}"
    else:
        verdict = f"all {len(result.checks)} tensors {below}"
    if unchecked:
        verdict += f", {len(unchecked)} with no entry compared"
    if result.rows:
        compared = sum(c.compared for c in result.rows)
        kinks = sum(c.kinks for c in result.rows)
        verdict += f"; {count(compared, 'entry', 'entries')} compared, {kinks:,} excused at kinks"
    return "\n".join([*lines, f"{verdict} ({result.source}, float64)"])


def _below(result: GradcheckResult) -> str:
    """How the tensors that pass do: 'below tolerance 1e-06', or where some pass only by their
    noise floor, 'below tolerance 1e-06 or, 1 of them (layers.0.W), within its noise floor'
    (a verdict of "all below tolerance" under a row of 2.19e-06 said what was not so)."""
    tol = result.tol
    floored = [c.name for c in result.rows
               if not c.unchecked and c.passed(tol) and not c.max_rel_error < tol]
    words = f"below tolerance {tol:g}"
    if floored:
        its = "its" if len(floored) == 1 else "their"
        words += f" or, {len(floored)} of them ({', '.join(floored)}), within {its} noise floor"
    return words


def failure_message(result: GradcheckResult) -> str:
    def where(c: TensorCheck) -> str:
        at = f" at {c.worst_index}" if c.worst_index is not None else ""
        return f"{c.name} (relative error {c.max_rel_error:.2e}{at})"

    return f"gradient check failed for {', '.join(where(c) for c in result.failed)}: tolerance {result.tol:g}"


def unchecked_message(result: GradcheckResult, allowed: bool = False) -> str:
    """One sentence naming the tensors with no entry compared."""
    names = ", ".join(f"{c.name} ({c.kinks:,} of {c.checked:,} at kinks)" for c in result.unchecked)
    hint = "try --samples all or another --seed" + ("" if allowed else ", or pass --allow-unchecked")
    return f"no entry of {names} could be compared: each one sampled straddles a kink of the model ({hint})"
