"""Run directories: where a training run leaves everything it produces.

A run directory is resumable (it holds checkpoints/last.pkl) or it is not there: a new run
stopped before its first checkpoint is `discard`ed, whenever the stop comes.

runs/<name>/<YYYYmmdd-HHMMSS>[-N]/
    config.yaml   metrics.csv   curves.png   summary.json   [nan_report.json]
    checkpoints/last.pkl   checkpoints/best.pkl
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from nncli.errors import NncliError


@dataclass(frozen=True)
class RunDir:
    path: Path
    made: bool = False  # whether this process created the folder (not a given empty one)

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def nan_report(self) -> Path:
        return self.path / "nan_report.json"

    @property
    def last(self) -> Path:
        return self.path / "checkpoints" / "last.pkl"

    @property
    def best(self) -> Path:
        return self.path / "checkpoints" / "best.pkl"


def new_run_dir(root: Path, name: str) -> RunDir:
    """A fresh directory under `root/name/`, never one that exists already."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / name
    try:
        base.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            path = base / (stamp if n == 1 else f"{stamp}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            run = RunDir(path, made=True)
            try:
                (path / "checkpoints").mkdir()
            except BaseException:  # Ctrl-C included: never leave a half-made folder
                discard(run)
                raise
            return run
    except OSError as err:
        raise NncliError(f"cannot create a run directory under {base}: {err.strerror}") from None
    raise NncliError(f"cannot find a free run directory name under {base}")


def given_run_dir(path: Path) -> RunDir:
    """`--run-dir`: a new or empty directory (a run never writes over someone's files)."""
    path = Path(path)
    if (path / "checkpoints" / "last.pkl").exists():
        raise NncliError(
            f"{path} already holds a run; resume it with --resume {path}, or pick another directory"
        )
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise NncliError(f"{path} exists and is not empty: a run needs a new or empty directory")
    run = RunDir(path, made=not path.exists())
    try:
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        discard(run)
        raise NncliError(f"cannot create run directory {path}: {err.strerror}") from None
    except BaseException:
        discard(run)
        raise
    return run


def discard(run: RunDir) -> None:
    """Remove what a run that never saved a checkpoint wrote: its folder if it made it, else
    the folder's contents (`given_run_dir` only takes empty folders), so that the folder is as
    it was and can be used again."""
    if run.made:
        shutil.rmtree(run.path, ignore_errors=True)
    elif run.path.is_dir():
        for child in run.path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


# ---- reading a run directory back (nncli runs, nncli sweep, nncli plot) -------------------


def read_metrics(path) -> list[dict]:
    """Rows of a metrics.csv, numbers as floats and empty cells as None."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [{k: (None if v in ("", None) else float(v)) for k, v in row.items()} for row in rows]


def read_summary(path: Path) -> dict | None:
    """A run's summary.json, or None when it has none (or an unreadable one)."""
    try:
        value = json.loads((Path(path) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def run_status(path: Path) -> str:
    """finished, early-stopped (summary written), diverged (nan_report.json), interrupted
    (a checkpoint but no summary: `nncli train --resume` goes on) or new (nothing saved)."""
    path = Path(path)
    summary = read_summary(path)
    if summary is not None:
        return "early-stopped" if summary.get("stopped_early") else "finished"
    if (path / "nan_report.json").is_file():
        return "diverged"
    if (path / "checkpoints" / "last.pkl").is_file():
        return "interrupted"
    return "new"


def best_metric(path: Path, metric: str, mode: str) -> float | None:
    """The best finite value of `metric` over a run's epochs (max or min by `mode`), or None."""
    try:
        rows = read_metrics(Path(path) / "metrics.csv")
    except (OSError, UnicodeDecodeError, ValueError, csv.Error):
        return None
    values = [row.get(metric) for row in rows]
    values = [v for v in values if isinstance(v, float) and math.isfinite(v)]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)
