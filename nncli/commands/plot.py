"""`nncli plot`: the curves of one or more runs, each run's metrics.csv (and steps.csv, where
there is one) labelled by its name, or for the runs of a sweep by the values its trial varied."""

from __future__ import annotations

import csv
from pathlib import Path

from nncli.config.sweep import short_keys
from nncli.errors import NncliError
from nncli.messages import did_you_mean
from nncli.output.curves import Curves, plot_curves
from nncli.output.plotting import check_format
from nncli.training.rundir import read_metrics, read_run_config, read_steps


def plot(runs: list[str], output: str | Path, metrics: list[str] = ()) -> Path:
    """Draw the runs' curves (loss and accuracy, or `metrics`) into `output`; the path written."""
    check_format(output)
    curves = runs_to_plot(list(runs))
    title = f"{curves[0].label}: {runs[0]}" if len(curves) == 1 else ""
    try:
        return plot_curves(curves, Path(output), plot_metrics(list(metrics), curves), title)
    except ValueError as err:  # nothing finite to draw
        raise NncliError(f"cannot plot {', '.join(map(str, runs))}: {err}") from None


def runs_to_plot(paths: list[str]) -> list[Curves]:
    """The curves of each run directory (or metrics.csv file). A run of a sweep is labelled by
    the values its trial varied (and its seed, where the trial has several); another by its
    config's name, runs sharing a name told apart by their folder."""
    found = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise NncliError(f"{path} does not exist")
        table = path / "metrics.csv" if path.is_dir() else path
        if not table.is_file() and (path / "checkpoints" / "last.pkl").is_file():
            raise NncliError(
                f"{path} has no finished epoch to plot yet (it was stopped in its first epoch);"
                f" resume it with: nncli train --resume {path}"
            )
        if not table.is_file():
            raise NncliError(f"{path} has no metrics.csv: is it a run directory?")
        try:
            rows = read_metrics(table)
        except (OSError, UnicodeDecodeError, ValueError, csv.Error) as err:
            raise NncliError(f"cannot read {table}: {err}") from None
        if not rows or "epoch" not in rows[0]:
            raise NncliError(f"{table} has no epochs to plot")
        found.append((_sweep_label(table.parent) or _run_name(table.parent), table.parent, rows))

    def label(name: str, folder: Path) -> str:
        if sum(n == name for n, _, _ in found) == 1:
            return name
        if sum(n == name and f.name == folder.name for n, f, _ in found) == 1:
            return f"{name} ({folder.name})"
        return f"{name} ({folder})"

    return [
        Curves(label(name, folder), rows, read_steps(folder / "steps.csv")) for name, folder, rows in found
    ]


def _sweep_label(folder: Path) -> str | None:
    """"lr=0.03, units=64" (", seed 1" where the trial has several runs) for a run of a sweep,
    read from the sweep's summary.csv beside it; None for a run of no sweep."""
    try:
        with open(folder.parent / "summary.csv", newline="", encoding="utf-8") as f:
            table = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    for row in table:
        members = (row.get("runs") or "").split()
        if folder.name not in members:
            continue
        keys = []
        for key in row:  # the varied keys come first, up to the metric's mean
            if key.endswith("_mean"):
                break
            if len({other.get(key) for other in table}) > 1:  # one value in every trial: left out
                keys.append(key)
        short = short_keys(keys)
        label = ", ".join(f"{short[key]}={row[key]}" for key in keys) or "base"
        if len(members) > 1:
            label += f", seed {_seed(folder)}"
        return label
    return None


def _seed(folder: Path) -> str:
    seed = (read_run_config(folder) or {}).get("seed")
    return str(seed) if isinstance(seed, int) else f"#{folder.name[:6]}"


def _run_name(folder: Path) -> str:
    """The `name` in the run's config.yaml, else the folder's name."""
    name = (read_run_config(folder) or {}).get("name")
    return name if isinstance(name, str) and name else folder.resolve().name


def plot_metrics(names: list[str], runs: list[Curves]) -> list[str] | None:
    """`--metric` values checked against what the runs have: loss, acc (or accuracy) and any
    metrics.csv column but epoch. None (the default panels, loss and accuracy) when empty."""
    if not names:
        return None
    valid = ["loss", "acc", *sorted({key for run in runs for key in run.rows[0] if key != "epoch"})]
    out = []
    for name in names:
        name = {"accuracy": "acc"}.get(name, name)
        if name not in valid:
            raise NncliError(
                f"unknown metric {name!r}{did_you_mean(name, valid)}; valid metrics: {', '.join(valid)}"
            )
        out.append(name)
    return out
