"""Run directories: where a training run leaves everything it produces.

A run directory is resumable (it holds checkpoints/last.pkl) or it is not there: a new run
stopped before its first checkpoint is `discard`ed, whenever the stop comes.

runs/<name>/<YYYYmmdd-HHMMSS>[-N]/
    config.yaml   metrics.csv   steps.csv   curves.png   summary.json   [nan_report.json]
    checkpoints/last.pkl   checkpoints/best.pkl
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from nncli.config.yamlsource import load_yaml
from nncli.errors import ConfigError, NncliError

PRUNED = "pruned.json"  # written by a sweep into a run it pruned


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
    def steps(self) -> Path:
        return self.path / "steps.csv"

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


def read_run_config(folder: Path) -> dict | None:
    """The config.yaml a run directory holds, as a dict; None where it is missing, not a regular
    file (a fifo would block), or not a config file `load_yaml` reads (larger than any config
    may be, not YAML, nested too deep: its bounds hold here too), or not a mapping. For the
    commands that only describe runs (`nncli runs`, `nncli plot`)."""
    path = folder / "config.yaml"
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return None
        config = load_yaml(path).data
    except (OSError, ConfigError):
        return None
    return config if isinstance(config, dict) else None


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
    """Rows of a metrics.csv (a path, or a text stream), numbers as floats and empty cells as
    None."""
    if isinstance(path, io.StringIO):
        rows = list(csv.DictReader(path))
    else:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    return [{k: (None if v in ("", None) else float(v)) for k, v in row.items()} for row in rows]


STEP_COLUMNS = ("step", "epoch", "loss", "lr")


def steps_csv(rows: list[tuple[int, float, float, float]]) -> str:
    """steps.csv's text: one row per training batch (step, fractional epoch, loss, lr)."""
    return ",".join(STEP_COLUMNS) + "\n" + "".join(step_line(*row) for row in rows)


def step_line(step: int, epoch: float, loss: float, lr: float) -> str:
    """One batch's line of steps.csv, its newline included (the loss and lr as repr: read back
    exactly)."""
    return f"{step},{epoch:.6g},{loss!r},{lr!r}\n"


def read_steps(path: Path) -> list[tuple[int, float, float, float]]:
    """The rows of a run's steps.csv, or [] when it has none or it cannot be read (it only
    draws a picture: an unreadable one is left out, never an error)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            if tuple(next(reader, ())) != STEP_COLUMNS:
                return []
            rows = []
            for row in reader:
                if len(row) != 4:
                    break  # a row cut short: what came before it stands
                rows.append((int(row[0]), float(row[1]), float(row[2]), float(row[3])))
            return rows
    except (OSError, UnicodeDecodeError, ValueError, csv.Error):
        return []


def read_summary(path: Path) -> dict | None:
    """A run's summary.json, or None when it has none, or one that is not what training writes
    (cut, emptied, nested past reason, or of other types): such a run reads as unfinished, and
    `nncli train --resume` (or a sweep's rerun) writes its summary again from its checkpoint."""
    try:
        value = json.loads((Path(path) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if _is_summary(value) else None


def _is_summary(value) -> bool:
    """Whether `value` has the shape of what training writes to summary.json."""
    if not isinstance(value, dict):
        return False
    epochs, best, final = value.get("epochs_completed"), value.get("best_epoch"), value.get("final")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
        return False
    if best is not None and (not isinstance(best, int) or isinstance(best, bool) or not 0 < best <= epochs):
        return False
    if final is not None and (not isinstance(final, dict) or final.get("epoch") != epochs):
        return False
    if final is None and epochs:
        return False
    test = value.get("test")
    return test is None or (isinstance(test, dict) and all(
        v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in test.values()))


def run_status(path: Path) -> str:
    """finished, early-stopped (summary written), pruned (pruned.json: a sweep stopped it, see
    `read_pruned`), diverged (nan_report.json), interrupted (a checkpoint but no summary:
    `nncli train --resume` goes on) or new (nothing saved)."""
    path = Path(path)
    summary = read_summary(path)
    if summary is not None:
        return "early-stopped" if summary.get("stopped_early") else "finished"
    if (path / PRUNED).is_file():
        return "pruned"
    if (path / "nan_report.json").is_file():
        return "diverged"
    if (path / "checkpoints" / "last.pkl").is_file():
        return "interrupted"
    return "new"


def read_pruned(path: Path) -> dict:
    """What a pruned run's pruned.json says (the sweep's decision: epoch, rung, value, cut-off),
    or {} when it cannot be read."""
    try:
        value = json.loads((Path(path) / PRUNED).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def pruned_label(decision: dict) -> str:
    """`pruned (rung 1, epoch 3)`, or `pruned (epoch 3)` for a rule without rungs."""
    epoch, rung = decision.get("epoch"), decision.get("rung")
    where = [f"rung {rung}"] if isinstance(rung, int) else []
    where += [f"epoch {epoch}"] if isinstance(epoch, int) and epoch > 0 else ["not started"]
    return f"pruned ({', '.join(where)})"


def best_metric(path: Path, metric: str, mode: str) -> float | None:
    """The best finite value of `metric` over a run's epochs (max or min by `mode`), or None."""
    try:
        rows = read_metrics(Path(path) / "metrics.csv")
    except (OSError, UnicodeDecodeError, ValueError, csv.Error):
        return None
    return best_of(rows, metric, mode)


def best_of(rows: list[dict], metric: str, mode: str) -> float | None:
    """The best finite value of `metric` in metrics rows (max or min by `mode`), or None."""
    values = [row.get(metric) for row in rows]
    values = [v for v in values if isinstance(v, float) and math.isfinite(v)]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def metrics_csv(history: list[dict]) -> str:
    """metrics.csv's text for a run's history (its rows, in `trainer.COLUMNS`)."""
    from nncli.training.trainer import COLUMNS  # the trainer and its engine: only when writing

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row[k] is None else repr(row[k])) for k in COLUMNS})
    return out.getvalue()


# ---- a finished run's files checked against its checkpoint (nncli runs, nncli sweep) -------


class DamagedRun(NncliError):
    """A finished run whose metrics.csv disagrees with its summary, and whose last.pkl cannot
    give the history back: the run has to be trained again."""


def metrics_complete(path: Path, summary: dict) -> bool:
    """Whether a finished run's metrics.csv is whole, read cheaply (no checkpoint): it ends
    with a newline, has one full row of numbers per epoch of the summary, epochs 1..N in order,
    and its last row is the summary's final row. A byte changed inside a number in an earlier
    row is not seen: this is a check against cut and emptied files, not a checksum."""
    epochs = summary.get("epochs_completed")
    if not isinstance(epochs, int) or epochs < 0:
        return False
    try:
        text = (Path(path) / "metrics.csv").read_text(encoding="utf-8")
    except FileNotFoundError:
        return epochs == 0  # written at the end of each epoch: none for a run of no epochs
    except (OSError, UnicodeDecodeError):
        return False
    try:
        header, *rows = list(csv.reader(io.StringIO(text))) or [[]]
        table = [{k: None if v == "" else float(v) for k, v in zip(header, row, strict=True)}
                 for row in rows]
    except (csv.Error, ValueError):  # a short row (zip's strict) or a cell that is no number
        return False
    if not text.endswith("\n") or "epoch" not in header or len(table) != epochs:
        return False
    if [row["epoch"] for row in table] != list(range(1, epochs + 1)):
        return False
    final = summary.get("final")
    if not table or not isinstance(final, dict):
        return True
    return all(_same(table[-1][key], value) for key, value in final.items() if key in table[-1])


def _same(read: float | None, written) -> bool:
    if written is None or read is None:
        return read is None and written is None
    if not isinstance(written, int | float):
        return False
    return read == written or (math.isnan(read) and math.isnan(float(written)))


def repair_metrics(path: Path) -> tuple[list[dict] | None, str]:
    """A finished run's metrics rows, checked: (None, "") when metrics.csv agrees with the
    summary (`metrics_complete`); else the history in checkpoints/last.pkl, the record, with
    metrics.csv rewritten from it and a note saying so. Raises DamagedRun when last.pkl cannot
    give it (missing, unreadable, or a history of another length)."""
    path = Path(path)
    summary = read_summary(path)
    if summary is None or metrics_complete(path, summary):
        return None, ""
    from nncli.fileio import atomic_write_text
    from nncli.training import checkpoint

    last = path / "checkpoints" / "last.pkl"
    try:
        history = checkpoint.load(last)["training"]["history"]
        text = metrics_csv(history)
    except (NncliError, KeyError, TypeError, ValueError) as err:
        reason = str(err) if isinstance(err, NncliError) else "it holds no training history"
        raise DamagedRun(f"{path / 'metrics.csv'} is damaged and {last} cannot restore it"
                         f" ({reason})") from None
    if len(history) != summary.get("epochs_completed"):
        raise DamagedRun(f"{path / 'metrics.csv'} is damaged and {last} cannot restore it (it"
                         f" holds {len(history)} epochs, the summary"
                         f" {summary.get('epochs_completed')})")
    rows = read_metrics(io.StringIO(text))
    try:
        atomic_write_text(path / "metrics.csv", text)
    except NncliError as err:
        return rows, f"{path / 'metrics.csv'} is damaged; read from {last} instead ({err})"
    return rows, f"{path / 'metrics.csv'} was damaged (cut or emptied): rewritten from {last}"
