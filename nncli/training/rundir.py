"""Run directories: where a training run leaves everything it produces.

A run directory is resumable (it holds checkpoints/last.pkl) or it is not there: a new run
stopped before its first checkpoint is `discard`ed, whenever the stop comes.

runs/<name>/<YYYYmmdd-HHMMSS>[-N]/
    config.yaml   metrics.csv   curves.png   summary.json   [nan_report.json]
    checkpoints/last.pkl   checkpoints/best.pkl
"""

from __future__ import annotations

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
