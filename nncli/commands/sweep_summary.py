"""What a sweep's runs came to, and the summary made of them.

Each run of a sweep (`Run`: a trial, a seed, a run directory) ends with a status; the
`SweepResult` holds them all. The summary (summary.csv, summary.md, in `--out`): one row per
trial with its varied values, the sweep metric's mean and standard deviation over the seeds
(each run's best over its epochs), the test metric's mean, the best epoch, the training time
and the status; best first. A trial whose runs were all pruned shows their metric (their best
over the epochs they ran) and comes after the trials with a complete run. `draw` makes
sweep.png. `format_summary` is that table for the terminal, `raise_if_failed`
the one line when runs failed or did not finish.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from nncli.commands.sweep_dask import NAMED
from nncli.config.sweep import Sweep, Trial, trial_names
from nncli.errors import NncliError
from nncli.fileio import atomic_write_text
from nncli.messages import count
from nncli.training.rundir import best_metric, read_metrics, read_summary

FAILURES = "failures.json"
COMPLETE = ("finished", "early-stopped", "diverged")  # statuses whose metrics count
UNFINISHED = ("failed", "killed", "interrupted", "pending")  # a sweep with one exits non-zero


@dataclass
class Run:
    trial: Trial
    seed: int
    path: Path
    status: str = "pending"  # pending, skipped (done before), finished, early-stopped, diverged,
    # pruned, interrupted, killed (by a signal not from the sweep), failed
    error: str = ""
    pruned_at: str = ""  # a pruned run: `pruned (rung 1, epoch 3)`


@dataclass
class SweepResult:
    sweep: Sweep
    out: Path
    runs: list[Run]
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # damaged files repaired, runs retrained

    @property
    def failed(self) -> list[Run]:
        return [run for run in self.runs if run.status == "failed"]

    @property
    def unfinished(self) -> list[Run]:
        """Runs that stopped before their end (killed, interrupted) or never ran."""
        return [run for run in self.runs if run.status in UNFINISHED and run.status != "failed"]


def summary_rows(spec: Sweep, runs: list[Run]) -> list[dict]:
    """One row per trial (see the module docstring), best first; trials without the metric last."""
    rows = []
    for trial in spec.trials:
        members = [run for run in runs if run.trial.index == trial.index]
        complete = [run for run in members if run.status in COMPLETE]  # no partial metrics
        pruned = [run for run in members if run.status == "pruned"]
        measured = complete or pruned  # a trial pruned whole: its runs' metric at the cut
        metrics = [best_metric(run.path, spec.metric, spec.mode) for run in measured]
        metrics = [m for m in metrics if m is not None]
        summaries = [read_summary(run.path) or {} for run in complete]
        tests = [s["test"].get("accuracy") if spec.metric.endswith("acc") else s["test"].get("loss")
                 for s in summaries if isinstance(s.get("test"), dict)]
        tests = [t for t in tests if isinstance(t, int | float)]
        epochs = [s.get("best_epoch") for s in summaries if isinstance(s.get("best_epoch"), int)]
        statuses = sorted({run.pruned_at or run.status for run in members})
        rows.append({
            **{key: trial.values.get(key) for key in spec.varied},
            f"{spec.metric}_mean": statistics.fmean(metrics) if metrics else None,
            f"{spec.metric}_std": _std(metrics),
            "test_mean": statistics.fmean(tests) if tests else None,
            "best_epoch": statistics.median(epochs) if epochs else None,
            "time_s": sum(float(s.get("train_time_s", 0.0)) for s in summaries),
            "seeds": len(metrics),
            "status": statuses[0] if len(statuses) == 1 else "/".join(statuses),
            "runs": " ".join(run.path.name for run in members),
        })
    key = f"{spec.metric}_mean"
    sign = -1 if spec.mode == "max" else 1
    return sorted(rows, key=lambda r: (r[key] is None, r["status"].startswith("pruned"),
                                       sign * (r[key] or 0.0)))


def _std(values: list[float]) -> float | None:
    """The sample standard deviation over seeds; 0 for one seed, None for none."""
    if not values:
        return None
    return statistics.stdev(values) if len(values) > 1 else 0.0


def draw(result: SweepResult, best: int = 3) -> Path | None:
    """sweep.png: the metric against each varied key, and the curves of the `best` trials' runs,
    each named by its trial's varied values (and its seed, where there are several); and for a
    pruned sweep prune.png."""
    from nncli.output.sweeps import SweepCurve, plot_sweep  # matplotlib only once the runs are done

    spec = result.sweep
    if spec.prune is not None:
        _draw_pruning(result)
    measured = [(run, best_metric(run.path, spec.metric, spec.mode)) for run in result.runs
                if run.status != "pruned"]  # a pruned run's best is of its first epochs
    measured = [(run, value) for run, value in measured if value is not None]
    varied = {key: [(run.trial.values[key], value) for run, value in measured] for key in spec.varied}
    varied = {key: points for key, points in varied.items() if len({str(x) for x, _ in points}) > 1}
    ranked = [set(row["runs"].split()) for row in result.rows[:best]]
    trial_name = trial_names(spec)
    curves = []
    for rank, names in enumerate(ranked):
        for run in (run for run in result.runs if run.path.name in names):
            try:
                rows = read_metrics(run.path / "metrics.csv")
            except (OSError, ValueError, csv.Error):
                continue
            label = trial_name[run.trial.index] + (f", seed {run.seed}" if len(spec.seeds) > 1 else "")
            curves.append(SweepCurve(label, rank, spec.seeds.index(run.seed), rows))
    if not varied and not curves:
        return None
    title = f"{spec.name}: {spec.metric} ({spec.mode})"
    return plot_sweep(varied, curves, spec.metric, result.out / "sweep.png", title)


def _draw_pruning(result: SweepResult) -> Path | None:
    """prune.png: every run's metric over its epochs, the pruned ones in grey."""
    from nncli.output.pruning import plot_pruning

    spec, runs = result.sweep, []
    for run in result.runs:
        try:
            rows = read_metrics(run.path / "metrics.csv")
        except (OSError, ValueError, csv.Error):
            continue
        runs.append((run.trial.label(), rows, run.status == "pruned"))
    if not runs:
        return None
    rungs = list(spec.prune.rungs()) if spec.prune.rule == "asha" else []
    title = f"{spec.name}: {spec.metric} per epoch; {pruned_count(result.runs)} ({spec.prune.rule})"
    return plot_pruning(runs, rungs, spec.metric, result.out / "prune.png", title)


def pruned_count(runs: list[Run]) -> str:
    """`22 of 27 runs pruned, 15 of them before they started`."""
    pruned = [run for run in runs if run.status == "pruned"]
    unstarted = sum(not (run.path / "metrics.csv").is_file() for run in pruned)
    return (f"{len(pruned)} of {len(runs)} runs pruned"
            + (f", {unstarted} of them before they started" if unstarted else ""))


def summary_csv(spec: Sweep, rows: list[dict]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: "" if v is None else (repr(v) if isinstance(v, float) else v) for k, v in row.items()}
            )
    return out.getvalue()


def summary_markdown(spec: Sweep, rows: list[dict], notes: list[str] = ()) -> str:
    columns = [k for k in (rows[0] if rows else {}) if k != "runs"]

    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    title = (f"# {spec.name}: {count(len(spec.trials), 'trial')} x {count(len(spec.seeds), 'seed')},"
             f" {spec.metric} ({spec.mode})")
    lines = [title, ""]
    if spec.prune is not None:
        lines += [f"Pruned by {spec.prune.describe()}; every decision is in prune.jsonl.", ""]
    lines += ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    if notes:
        lines += ["", *(f"note: {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def format_summary(result: SweepResult) -> str:
    """The summary table for the terminal, and the failures with their error lines."""
    text = summary_markdown(result.sweep, result.rows)
    for run in result.failed + result.unfinished:
        text += (f"{run.status}: trial {run.trial.index} ({run.trial.label()}), seed {run.seed}:"
                 f" {run.error or 'not run'}\n")
    return text.rstrip()


def raise_if_failed(result: SweepResult) -> None:
    """One line when a run failed, was killed or did not finish; exit code 1."""
    total = len(result.runs)
    said = []
    if result.failed:
        said.append(f"{len(result.failed)} of {total} runs failed; their errors are in"
                    f" {result.out / FAILURES}")
    if result.unfinished:
        stopped = result.unfinished
        names = ", ".join(f"{run.path.name} seed {run.seed} {run.error or 'not run'}"
                          for run in stopped[:NAMED])
        more = f", and {len(stopped) - NAMED} more" if len(stopped) > NAMED else ""
        said.append(f"{len(stopped)} of {total} runs did not finish ({names}{more}); run the"
                    " sweep again to finish them")
    if said:
        raise NncliError("; ".join(said))


def read_failures(out: Path) -> dict:
    try:
        failures = json.loads((out / FAILURES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return failures if isinstance(failures, dict) else {}


def write_failures(out: Path, failures: dict, runs: list[Run]) -> None:
    for run in runs:  # a failure recorded by an earlier invocation, not retried this time
        if run.status in ("pending", "skipped") and run.path.name in failures:
            run.status, run.error = "failed", failures[run.path.name]
    if failures:
        atomic_write_text(out / FAILURES, json.dumps(failures, indent=2) + "\n")
    else:
        (out / FAILURES).unlink(missing_ok=True)
