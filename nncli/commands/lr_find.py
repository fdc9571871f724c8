"""`nncli lr-find`: the learning-rate range test of a config (nncli.training.lrfind).

The experiment is built as `train` builds it, from the same config and seed, so the test runs
on the model training would start from; it is thrown away afterwards. Nothing is written until
the test has run; then one new folder gets

    lr_find.csv    step, lr, loss, smoothed_loss (the average the stop rule watched), read_loss
                   (the curve the suggestions were read from: the same average without the
                   isolated spikes), one row per step taken
    lr_find.png    the smoothed loss against the learning rate (log axis), the raw losses
                   faintly behind it, the suggestions marked
    lr_find.json   the settings, why the test stopped, and the suggestions
    config.yaml    the resolved config tested (there is no checkpoints/ folder: `nncli runs`
                   does not take it for a run)

The folder is runs/<name>/lr-find-<date>-<time>/, or `out` (new, empty, or an earlier
lr-find's folder, whose files are replaced).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path

from nncli.builder import build_experiment
from nncli.commands.train import RUNS_ROOT, dump_config
from nncli.config.schema import Config, load_config
from nncli.errors import NncliError
from nncli.fileio import atomic_write_json, atomic_write_text
from nncli.messages import count
from nncli.output.lrfind import plot_lr_find
from nncli.training.lrfind import RangeTest, Suggestions, range_test, suggest

FILES = ("lr_find.csv", "lr_find.png", "lr_find.json", "config.yaml")
MIN_STEPS = 10
MAX_STEPS = 100_000


@dataclass
class LrFindResult:
    """The range test (`test`), what it suggests (`suggestions`), the folder it was written to
    (None when nothing was written) and the notes of the config's build."""

    config: str
    name: str
    optimizer: str
    batch_size: int
    test: RangeTest
    suggestions: Suggestions
    folder: Path | None
    notes: list[str]

    def to_dict(self) -> dict:
        s = self.suggestions
        return {
            "config": self.config,
            "name": self.name,
            "optimizer": self.optimizer,
            "batch_size": self.batch_size,
            "start": self.test.start,
            "end": self.test.end,
            "steps": self.test.planned,
            "steps_taken": self.test.steps,
            "stop": self.test.stop,
            "suggestions": {"valley": s.valley, "steepest": s.steepest, "minimum": s.minimum,
                            "minimum_loss": s.minimum_loss,
                            "valley_span": None if s.valley_span is None else list(s.valley_span)},
            "window": list(s.window),
            "notes": list(s.notes),
        }


def check_range(start: float, end: float, steps: int) -> None:
    """One sentence for a range that cannot be tested."""
    if not (start > 0 and end > 0 and math.isfinite(end)):
        raise NncliError(f"--start and --end must be positive learning rates, got {start:g} and {end:g}")
    if start >= end:
        raise NncliError(f"--start ({start:g}) must be below --end ({end:g}): the rate rises")
    if not MIN_STEPS <= steps <= MAX_STEPS:
        raise NncliError(f"--steps must be from {MIN_STEPS} to {MAX_STEPS:,}, got {steps}")


def lr_find(
    config_path: str | Config,
    overrides=(),
    *,
    data_dir: Path,
    start: float = 1e-7,
    end: float = 10.0,
    steps: int = 100,
    out: str | Path | None = None,
    write: bool = True,
    arrays=None,
    progress: bool = True,
) -> LrFindResult:
    """Run the range test of `config_path` (a YAML file, or a parsed `Config`) and write its
    folder (unless not `write`); `arrays` are the arrays dataset's (the Python API), `progress`
    allows download progress bars."""
    check_range(start, end, steps)
    folder = _check_out(Path(out)) if out is not None else None
    config = config_path if isinstance(config_path, Config) else load_config(config_path, overrides)
    exp = build_experiment(config, data_dir, progress=progress, arrays=arrays)
    test = range_test(exp, start, end, steps)
    if test.stop == "nonfinite" and test.steps == 1:
        raise NncliError(
            f"the loss was {test.losses[0]} at the first step, at a learning rate of {start:g}, before"
            " the rate could matter: check the data for extreme values, or the model's output for the loss"
        )
    result = LrFindResult(
        config=config.name if isinstance(config_path, Config) else str(config_path),
        name=config.name,
        optimizer=type(exp.optimizer).registered_name,
        batch_size=config.train.batch_size,
        test=test,
        suggestions=suggest(test),
        folder=None,
        notes=list(exp.notes),
    )
    if write:
        made = folder is None or not folder.exists()
        result.folder = folder if folder is not None else _new_folder(config.name)
        try:
            _write(result, exp.resolved_config())
        except BaseException:  # a full disk, Ctrl-C: no folder half-written
            _discard(result.folder, made)
            raise
    return result


def _discard(folder: Path, made: bool) -> None:
    """Remove what lr-find wrote in `folder`, and the folder where it made it."""
    for name in FILES:
        (folder / name).unlink(missing_ok=True)
    if made:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _check_out(folder: Path) -> Path:
    """`out`: a new or empty folder, or one holding only an earlier lr-find's files."""
    if folder.exists() and not folder.is_dir():
        raise NncliError(f"--out {folder} is a file; give a folder")
    if folder.is_dir():
        others = sorted(p.name for p in folder.iterdir() if p.name not in FILES)
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise NncliError(
                f"--out {folder} holds other files ({shown}); lr-find writes to a new or empty"
                " folder, or over an earlier lr-find's"
            )
    return folder


def _new_folder(name: str) -> Path:
    """runs/<name>/lr-find-<date>-<time>, never one that exists already."""
    base = RUNS_ROOT / name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        base.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            path = base / (f"lr-find-{stamp}" if n == 1 else f"lr-find-{stamp}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return path
    except OSError as err:
        raise NncliError(f"cannot create a folder under {base}: {err.strerror}") from None
    raise NncliError(f"cannot find a free folder name under {base}")


def _write(result: LrFindResult, resolved: dict) -> None:
    folder, test = result.folder, result.test
    folder.mkdir(parents=True, exist_ok=True)
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["step", "lr", "loss", "smoothed_loss", "read_loss"])
    read = result.suggestions.curve
    for i in range(test.steps):
        cell = f"{read[i]:.6g}" if i < len(read) else ""
        numbers = (test.lrs[i], test.losses[i], test.smoothed[i])
        writer.writerow([i + 1, *(f"{v:.6g}" for v in numbers), cell])
    atomic_write_text(folder / "lr_find.csv", table.getvalue())
    atomic_write_json(folder / "lr_find.json", result.to_dict())
    atomic_write_text(folder / "config.yaml", dump_config(resolved))
    plot_lr_find(test, result.suggestions, folder / "lr_find.png", title=_title(result))


def _title(result: LrFindResult) -> str:
    return f"{result.name}: {result.optimizer}, batch {result.batch_size}"


def format_result(result: LrFindResult) -> str:
    """What `nncli lr-find` prints: how the test went, the suggestions, where the files are."""
    test, s = result.test, result.suggestions
    why = {
        "end": "every step ran",
        "diverged": f"stopped at step {test.steps}: the smoothed loss passed 4x its lowest",
        "nonfinite": f"stopped at step {test.steps}: the loss was {test.losses[-1]}",
    }[test.stop]
    lines = [
        f"{result.config}: {count(test.planned, 'step')} of {result.batch_size} samples with"
        f" {result.optimizer}, the learning rate from {test.lrs[0]:.3g} to {test.end:.3g}; {why}"
        f" (learning rate {test.lrs[-1]:.3g})",
    ]
    if s.valley is not None:
        span = f", valley from {s.valley_span[0]:.2g} to {s.valley_span[1]:.2g}" if s.valley_span else ""
        lines += [
            f"  valley    {s.valley:.2e}   the middle of the longest descent (fastai's default{span})",
            f"  steepest  {_lr(s.steepest)}   where the smoothed loss falls fastest per decade",
            f"  minimum   {s.minimum:.2e}   the smoothed loss's lowest point, {s.minimum_loss:.4g}"
            f" (too high to train at: a tenth of it is {s.minimum / 10:.2e})",
        ]
    lines += [f"note: {note}" for note in s.notes]
    if result.folder is not None:
        lines.append(f"wrote {result.folder}/ ({', '.join(FILES[:2])}, {', '.join(FILES[2:])})")
    return "\n".join(lines)


def _lr(value: float | None) -> str:
    return "       -" if value is None else f"{value:.2e}"
