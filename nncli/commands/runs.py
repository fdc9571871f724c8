"""`nncli runs`: the runs under a folder, one row each, from the files every run writes.

A run directory is a folder with a `config.yaml` and a `checkpoints/` folder (what `nncli
train` makes). For each one the table gives its name, when it started, the epochs done and
configured, its status, the best validation metric over its epochs, the test metric of its
best checkpoint, and its seed. Nothing is trained or loaded but small text files, unless a
finished run's metrics.csv disagrees with its summary (cut or emptied): then it is rewritten
from the history in checkpoints/last.pkl, the record, and the row's note says so; where
last.pkl cannot give it back, the run is `damaged` and its epochs are left out.

  status        finished      summary.json written, all epochs done
                early-stopped summary.json written, stopped by early stopping
                diverged      nan_report.json written: the loss stopped being finite
                pruned        stopped by its sweep's pruner (pruned.json), with the rung and
                              epoch of the decision: `pruned (rung 1, epoch 3)`
                interrupted   no summary: stopped (Ctrl-C, a full disk) or still running;
                              `nncli train --resume` continues it
                damaged       finished, but its epochs' metrics are lost (metrics.csv and
                              last.pkl); the test metric, from summary.json, is kept

With `group_seeds`, runs whose resolved configs differ only in their seed make one row with
the mean and standard deviation of each metric over the seeds (those that have the metric).
Each seed counts once: two runs of one config and one seed are the same experiment run twice,
not two samples of the seed's spread, so a repeated seed's runs are averaged first, and the
row says so in its `note`.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nncli.errors import NncliError
from nncli.messages import did_you_mean
from nncli.training.rundir import (
    DamagedRun,
    best_of,
    pruned_label,
    read_metrics,
    read_pruned,
    read_run_config,
    read_summary,
    repair_metrics,
    run_status,
)

SORT_KEYS = ("date", "name", "status", "epochs", "best_val", "test")


@dataclass
class RunRow:
    path: str
    name: str
    started: str  # YYYY-mm-dd HH:MM:SS, from the folder's name or its config's time
    epochs: int
    planned: int | None
    status: str
    val_metric: str | None  # val_acc for classification, val_loss for regression
    best_val: float | None
    test_metric: str | None  # test_acc or test_loss
    test: float | None
    seed: int | None
    seeds: list[int] = field(default_factory=list)  # grouped rows: the seeds folded in, once each
    best_val_std: float | None = None
    test_std: float | None = None
    runs: int = 1  # grouped rows: the run directories folded in
    seed_runs: list[int] = field(default_factory=list)  # grouped rows: the runs of each of `seeds`
    note: str = ""  # a damaged metrics.csv repaired; grouped rows: how repeated seeds were counted
    group: str = ""  # the resolved config without its seed, for grouping


def find_runs(root: str | Path) -> list[RunRow]:
    """Every run directory under `root` (or `root` itself), read; sorted by start time."""
    root = Path(root)
    if not root.exists():
        raise NncliError(f"{root} does not exist")
    if not root.is_dir():
        raise NncliError(f"{root} is not a folder of runs")
    found = sorted({p.parent for p in root.rglob("config.yaml") if (p.parent / "checkpoints").is_dir()})
    rows = [row for row in (_read_run(folder) for folder in found) if row is not None]
    return sorted(rows, key=lambda r: (r.started, r.path))


def _read_run(folder: Path) -> RunRow | None:
    unreadable = ""
    config = read_run_config(folder)
    if config is None:
        # still listed, never left out without a word: its folder holds checkpoints
        unreadable = (f"{folder / 'config.yaml'} cannot be read as a config: its name, seed and plan"
                      " are unknown")
        config = {"name": folder.name, "_unreadable": str(folder)}
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    planned = train.get("epochs") if isinstance(train.get("epochs"), int) else None
    seed = config.get("seed") if isinstance(config.get("seed"), int) else None
    status = run_status(folder)
    if status == "new":  # a config and no checkpoint: a run still starting
        status = "interrupted"
    elif status == "pruned":
        status = pruned_label(read_pruned(folder))
    try:
        rows, note = repair_metrics(folder) if status in ("finished", "early-stopped") else (None, "")
    except DamagedRun as err:
        rows, note, status = [], f"{err}: its epochs are left out", "damaged"
    if rows is None:
        rows = _metrics(folder / "metrics.csv")
    summary = read_summary(folder)
    final = (summary or {}).get("final")  # what a damaged run's task is known by
    known = rows or ([final] if isinstance(final, dict) else [])
    classification = any(row.get("val_acc") is not None or row.get("train_acc") is not None for row in known)
    val_metric = "val_acc" if classification else "val_loss"
    best_val = best_of(rows, val_metric, "max" if classification else "min")
    test = (summary or {}).get("test") or {}
    test_metric = "test_acc" if classification else "test_loss"
    test_value = test.get("accuracy" if classification else "loss")
    without_seed = {k: v for k, v in config.items() if k != "seed"}
    return RunRow(
        path=str(folder),
        name=str(config.get("name", folder.name)),
        started=_started(folder),
        epochs=len(rows),
        planned=planned,
        status=status,
        val_metric=val_metric if rows else None,
        best_val=best_val,
        test_metric=test_metric if test_value is not None else None,
        test=float(test_value) if isinstance(test_value, int | float) else None,
        seed=seed,
        seeds=[seed] if seed is not None else [],
        seed_runs=[1] if seed is not None else [],
        note="; ".join(n for n in (unreadable, note) if n),
        group=json.dumps(without_seed, sort_keys=True, default=str),
    )


def _metrics(path: Path) -> list[dict]:
    try:
        return read_metrics(path)
    except (OSError, UnicodeDecodeError, ValueError, csv.Error):
        return []


def _started(folder: Path) -> str:
    """The time in a run folder's name (YYYYmmdd-HHMMSS[-N]), else its config file's time."""
    stamp = folder.name.split("-")
    if len(stamp) >= 2 and len(stamp[0]) == 8 and len(stamp[1]) == 6 and (stamp[0] + stamp[1]).isdigit():
        d, t = stamp[0], stamp[1]
        return f"{d[:4]}-{d[4:6]}-{d[6:]} {t[:2]}:{t[2:4]}:{t[4:]}"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((folder / "config.yaml").stat().st_mtime))


def group_seeds(rows: list[RunRow]) -> list[RunRow]:
    """Runs whose configs differ only by seed, folded into one row each: the mean and standard
    deviation over the seeds, each seed counted once (a repeated seed's runs averaged first)."""
    groups: dict[str, list[RunRow]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    folded = []
    for members in groups.values():
        first = members[0]
        if len(members) == 1:
            folded.append(first)
            continue
        by_seed: dict[int | None, list[RunRow]] = {}
        for member in members:
            by_seed.setdefault(member.seed, []).append(member)
        best, best_std = _mean_std([_mean([m.best_val for m in runs]) for runs in by_seed.values()])
        test, test_std = _mean_std([_mean([m.test for m in runs]) for runs in by_seed.values()])
        statuses = sorted({m.status for m in members})
        repeated = {seed: runs for seed, runs in by_seed.items() if len(runs) > 1}
        folded.append(
            RunRow(
                path=f"{first.path} and {len(members) - 1} more",
                name=first.name,
                started=min(m.started for m in members),
                epochs=min(m.epochs for m in members),
                planned=first.planned,
                status=statuses[0] if len(statuses) == 1 else "mixed: " + ", ".join(statuses),
                val_metric=first.val_metric,
                best_val=best,
                test_metric=first.test_metric,
                test=test,
                seed=None,
                seeds=sorted(seed for seed in by_seed if seed is not None),
                best_val_std=best_std,
                test_std=test_std,
                runs=len(members),
                seed_runs=[len(by_seed[seed]) for seed in sorted(s for s in by_seed if s is not None)],
                note="; ".join(note for note in (*(m.note for m in members),
                                                 _repeats_note(first.name, repeated)) if note),
                group=first.group,
            )
        )
    return sorted(folded, key=lambda r: (r.started, r.path))


def _repeats_note(name: str, repeated: dict[int | None, list[RunRow]]) -> str:
    if not repeated:
        return ""
    said = "; ".join(f"seed {seed} ran {len(runs)} times ({', '.join(r.path for r in runs)})"
                     for seed, runs in sorted(repeated.items(), key=lambda item: str(item[0])))
    return f"{name}: {said}: each seed counts once in the mean and std, its runs averaged"


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    return statistics.fmean(present), (statistics.stdev(present) if len(present) > 1 else 0.0)


def sort_rows(rows: list[RunRow], key: str) -> list[RunRow]:
    """By `key` (one of SORT_KEYS); metrics best first (accuracy high, loss low), runs without
    the metric last."""
    if key not in SORT_KEYS:
        raise NncliError(f"cannot sort by {key!r}{did_you_mean(key, list(SORT_KEYS))}; use one of"
                         f" {', '.join(SORT_KEYS)}")
    if key in ("best_val", "test"):
        def order(row: RunRow):
            value = getattr(row, key)
            metric = row.val_metric if key == "best_val" else row.test_metric
            if value is None:
                return (1, 0.0)
            return (0, -value if metric and metric.endswith("acc") else value)
        return sorted(rows, key=order)
    field_of = {"date": "started"}.get(key, key)
    return sorted(rows, key=lambda row: getattr(row, field_of))


def _number(value: float | None, std: float | None, metric: str | None) -> str:
    if value is None:
        return "-"
    percent = metric is not None and metric.endswith("acc")
    text = f"{value * 100:.2f}%" if percent else f"{value:.4f}"
    if std is not None:
        text += f" ± {std * 100:.2f}" if percent else f" ± {std:.4f}"
    return text


def format_table(rows: list[RunRow]) -> str:
    if not rows:
        return "no runs"
    header = ("run", "name", "started", "epochs", "status", "best val", "test", "seed")
    lines = [header]
    for r in rows:
        epochs = f"{r.epochs}/{r.planned}" if r.planned is not None else str(r.epochs)
        seed = "" if r.seed is None and not r.seeds else (
            str(r.seed) if r.seed is not None else ",".join(
                f"{s} (x{n})" if n > 1 else str(s) for s, n in zip(r.seeds, r.seed_runs, strict=True)))
        lines.append((
            r.path,
            r.name,
            r.started,
            epochs,
            r.status,
            (f"{r.val_metric} " if r.val_metric else "") + _number(r.best_val, r.best_val_std, r.val_metric),
            (f"{r.test_metric} " if r.test_metric else "") + _number(r.test, r.test_std, r.test_metric),
            seed,
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def to_csv(rows: list[RunRow]) -> str:
    out = io.StringIO()
    columns = [k for k in asdict(rows[0]) if k != "group"] if rows else []
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        record = asdict(row)
        record["seeds"] = " ".join(map(str, row.seeds))
        record["seed_runs"] = " ".join(map(str, row.seed_runs))
        writer.writerow({k: "" if record[k] is None else record[k] for k in columns})
    return out.getvalue()


def to_json(rows: list[RunRow]) -> str:
    return json.dumps([{k: v for k, v in asdict(r).items() if k != "group"} for r in rows])


def runs(root: str | Path = "runs", *, sort: str = "date", seeds_grouped: bool = False) -> list[RunRow]:
    """The rows of `nncli runs`: every run under `root`, grouped by seed if asked, sorted."""
    rows = find_runs(root)
    if seeds_grouped:
        rows = group_seeds(rows)
    return sort_rows(rows, sort)
