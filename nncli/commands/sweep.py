"""`nncli sweep`: every trial of a sweep file, once per seed, each an ordinary run directory.

Each run is `nncli train` in a worker process of its own, named by a short hash of its resolved
config under `--out` (default runs/sweeps/<sweep name>/), so that no run is done twice:

  finished runs (summary.json)           are skipped
  interrupted runs (last.pkl, no summary) are resumed with `nncli train --resume`, exactly
  runs that failed before (a config or data error) are tried again

Up to `jobs` workers run at once, each with its BLAS limited to cores // jobs threads (set in
the worker's environment before numpy loads), so that workers x threads never exceeds the
cores. Ctrl-C (or SIGTERM) passes the signal to every worker, each saves its state and stops;
running the sweep again finishes it. A diverged run (the loss stopped being finite) is marked
diverged, a failing one failed with its error line, and the others go on.

With a Dask scheduler (`tcp://HOST:PORT`, or `local:N` for a LocalCluster of N processes) each
run goes to a worker instead, keyed by its hash and retried twice if a worker is lost; the
worker trains in a temporary folder of its own from the base config's text (and an
interrupted run's files, to resume it) and sends the run directory's files back, so no shared
file system is needed. Data files must be where the workers can read them. Ctrl-C stops the
workers' runs and raises `SweepInterrupted`, one line naming the runs not finished.

The summary (summary.csv, summary.md, in `--out`): one row per trial with its varied values,
the sweep metric's mean and standard deviation over the seeds (each run's best over its
epochs), the test metric's mean, the best epoch, the training time and the status; best first.
sweep.png draws the metric against each varied key (runs as points, means as a line) and the
curves of the best three trials' runs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from nncli.commands.sweep_dask import _dask_client, _execute_on_dask
from nncli.config.schema import load_config
from nncli.config.sweep import Sweep, Trial, load_sweep
from nncli.errors import NncliError
from nncli.fileio import atomic_write_text
from nncli.training.rundir import best_metric, read_metrics, read_summary, run_status

FAILURES = "failures.json"


@dataclass
class Run:
    trial: Trial
    seed: int
    path: Path
    status: str = "pending"  # pending, skipped (done before), finished, early-stopped, diverged,
    # interrupted, failed
    error: str = ""


@dataclass
class SweepResult:
    sweep: Sweep
    out: Path
    runs: list[Run]
    rows: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> list[Run]:
        return [run for run in self.runs if run.status == "failed"]


def run_name(base: Path, trial: Trial, seed: int) -> str:
    """A short hash of the run's resolved config: the same trial and seed, the same folder."""
    config = load_config(base, [*trial.overrides(), f"seed={seed}"]).to_dict()
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def plan(sweep: Sweep, out: Path) -> list[Run]:
    return [
        Run(trial, seed, out / run_name(sweep.base, trial, seed))
        for trial in sweep.trials
        for seed in sweep.seeds
    ]


def dry_run(path: str | Path, max_trials: int | None = None) -> str:
    """What `nncli sweep --dry-run` prints: the trials, their varied values, the counts."""
    sweep = load_sweep(path, max_trials)
    lines = [f"{sweep.path}: {len(sweep.trials)} trials x {len(sweep.seeds)} seeds"
             f" = {len(sweep.trials) * len(sweep.seeds)} runs of {sweep.base}"]
    lines += [f"  {trial.index:>3}  {trial.label()}" for trial in sweep.trials]
    lines.append(f"seeds {', '.join(map(str, sweep.seeds))}; metric {sweep.metric} ({sweep.mode})")
    return "\n".join(lines)


def sweep(
    path: str | Path,
    *,
    jobs: int | None = None,
    out: str | Path | None = None,
    data_dir: Path | None = None,
    scheduler: str | None = None,
    progress: bool = False,
    say=print,
    max_trials: int | None = None,
) -> SweepResult:
    """Run the sweep file at `path` (see the module docstring); `say` hears one line at the start
    and end. Raises KeyboardInterrupt after the workers have saved and stopped."""
    spec = load_sweep(path, max_trials, say)  # more than 1,000 trials need max_trials
    out = Path(out) if out else Path("runs") / "sweeps" / spec.name
    runs = plan(spec, out)
    failures = _read_failures(out)
    for run in runs:
        state = run_status(run.path)
        run.status = "skipped" if state in ("finished", "early-stopped", "diverged") else "pending"
    todo = [run for run in runs if run.status == "pending"]
    done_before = len(runs) - len(todo)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo) or 1))
    client = _dask_client(scheduler) if todo and scheduler else None  # its errors before any run
    if not todo:
        say(f"{len(runs)} runs in {out}, all done before: nothing to run")
    else:
        note = f" ({done_before} done before)" if done_before else ""
        where = f"on the Dask cluster {scheduler}" if client else f"{jobs} at a time"
        say(f"{len(todo)} of {len(runs)} runs to do{note}, {where}, in {out}")
    out.mkdir(parents=True, exist_ok=True)
    lost = None  # the error of a lost Dask scheduler, raised once the summary is written
    if client is not None:
        lost = _execute_on_dask(todo, spec, client, data_dir, _bar(len(todo), progress), failures,
                                _finish)
    elif todo:
        _execute(todo, spec, jobs, data_dir, progress, failures)
    for run in runs:
        if run.status == "skipped":
            run.status = run_status(run.path)
    _write_failures(out, failures, runs)
    result = SweepResult(spec, out, runs)
    result.rows = summary_rows(spec, runs)
    atomic_write_text(out / "summary.csv", summary_csv(spec, result.rows))
    atomic_write_text(out / "summary.md", summary_markdown(spec, result.rows))
    draw(result)
    if lost is not None:
        raise lost
    return result


def draw(result: SweepResult, best: int = 3) -> Path | None:
    """sweep.png: the metric against each varied key, and the curves of the `best` trials' runs."""
    from nncli.plotting import plot_sweep  # matplotlib only once the runs are done

    spec = result.sweep
    measured = [(run, best_metric(run.path, spec.metric, spec.mode)) for run in result.runs]
    measured = [(run, value) for run, value in measured if value is not None]
    varied = {key: [(run.trial.values[key], value) for run, value in measured] for key in spec.varied}
    varied = {key: points for key, points in varied.items() if len({str(x) for x, _ in points}) > 1}
    ranked = [row["runs"].split() for row in result.rows[:best]]
    curves = []
    for rank, names in enumerate(ranked, 1):
        for name in names:
            try:
                rows = read_metrics(result.out / name / "metrics.csv")
            except (OSError, ValueError, csv.Error):
                continue
            curves.append((f"#{rank} {name[:6]}", rows))
    if not varied and not curves:
        return None
    title = f"{spec.name}: {spec.metric} ({spec.mode})"
    return plot_sweep(varied, curves, spec.metric, result.out / "sweep.png", title)


def _environment(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    return env


def _command(run: Run, spec: Sweep, data_dir: Path | None) -> list[str]:
    command = [sys.executable, "-m", "nncli", "train"]
    if run_status(run.path) == "interrupted":
        command += ["--resume", str(run.path)]
    else:
        command += [str(spec.base), "--run-dir", str(run.path)]
        command += [a for value in (*run.trial.overrides(), f"seed={run.seed}") for a in ("--set", value)]
    command.append("--quiet")
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    return command


def _execute(todo: list[Run], spec: Sweep, jobs: int, data_dir, progress: bool, failures: dict) -> None:
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = _environment(threads)
    queue = list(todo)
    active: dict[subprocess.Popen, tuple[Run, object]] = {}
    bar = _bar(len(todo), progress)
    best = None
    try:
        while queue or active:
            while queue and len(active) < jobs:
                run = queue.pop(0)
                if run.path.exists() and run_status(run.path) == "new":
                    _clear(run.path)  # what a failed attempt left: `--run-dir` needs it empty
                log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (closed in _finish)
                process = subprocess.Popen(
                    _command(run, spec, data_dir), stdout=subprocess.DEVNULL, stderr=log, env=env
                )
                active[process] = (run, log)
            time.sleep(0.05)
            for process in [p for p in active if p.poll() is not None]:
                run, log = active.pop(process)
                _finish(run, process.returncode, log, failures)
                best = _best(spec, run, best)
                if bar is not None:
                    bar.set_postfix_str(f"best {spec.metric} {best:.4g}" if best is not None else "")
                    bar.update()
    except KeyboardInterrupt:
        for process in active:  # each saves its state and exits (a second signal stops at once)
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process, (run, log) in active.items():
            process.wait()
            _finish(run, process.returncode, log, failures)
        raise
    finally:
        if bar is not None:
            bar.close()


def _clear(path: Path) -> None:
    for child in sorted(path.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()


def _finish(run: Run, code: int, log, failures: dict) -> None:
    log.seek(0)
    lines = [line.strip() for line in log.read().splitlines() if line.strip()]
    log.close()
    errors = [line for line in lines if line.startswith("error")]
    key = run.path.name
    if code == 0:
        run.status = run_status(run.path)
        failures.pop(key, None)
    elif code == 3:
        run.status = "diverged"
        failures.pop(key, None)
    elif code in (130, 143) or code < 0:
        run.status = "interrupted"
    else:
        run.status = "failed"
        run.error = errors[-1] if errors else (lines[-1] if lines else f"exit code {code}")
        failures[key] = run.error


def _best(spec: Sweep, run: Run, best: float | None) -> float | None:
    value = best_metric(run.path, spec.metric, spec.mode)
    if value is None:
        return best
    if best is None:
        return value
    return max(best, value) if spec.mode == "max" else min(best, value)


def _bar(total: int, progress: bool):
    if not progress or not total:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="sweep", unit="run", file=sys.stderr, dynamic_ncols=True)


def _read_failures(out: Path) -> dict:
    try:
        failures = json.loads((out / FAILURES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return failures if isinstance(failures, dict) else {}


def _write_failures(out: Path, failures: dict, runs: list[Run]) -> None:
    for run in runs:  # a failure recorded by an earlier invocation, not retried this time
        if run.status in ("pending", "skipped") and run.path.name in failures:
            run.status, run.error = "failed", failures[run.path.name]
    if failures:
        atomic_write_text(out / FAILURES, json.dumps(failures, indent=2) + "\n")
    else:
        (out / FAILURES).unlink(missing_ok=True)


def summary_rows(spec: Sweep, runs: list[Run]) -> list[dict]:
    """One row per trial (see the module docstring), best first; trials without the metric last."""
    rows = []
    for trial in spec.trials:
        members = [run for run in runs if run.trial.index == trial.index]
        metrics = [best_metric(run.path, spec.metric, spec.mode) for run in members]
        metrics = [m for m in metrics if m is not None]
        summaries = [read_summary(run.path) or {} for run in members]
        tests = [s["test"].get("accuracy") if spec.metric.endswith("acc") else s["test"].get("loss")
                 for s in summaries if isinstance(s.get("test"), dict)]
        tests = [t for t in tests if isinstance(t, int | float)]
        epochs = [s.get("best_epoch") for s in summaries if isinstance(s.get("best_epoch"), int)]
        statuses = sorted({run.status for run in members})
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
    return sorted(rows, key=lambda r: (r[key] is None, sign * (r[key] or 0.0)))


def _std(values: list[float]) -> float | None:
    """The sample standard deviation over seeds; 0 for one seed, None for none."""
    if not values:
        return None
    return statistics.stdev(values) if len(values) > 1 else 0.0


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


def summary_markdown(spec: Sweep, rows: list[dict]) -> str:
    columns = [k for k in (rows[0] if rows else {}) if k != "runs"]

    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    title = f"# {spec.name}: {len(spec.trials)} trials x {len(spec.seeds)} seeds, {spec.metric} ({spec.mode})"
    lines = [title, "", "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def format_summary(result: SweepResult) -> str:
    """The summary table for the terminal, and the failures with their error lines."""
    text = summary_markdown(result.sweep, result.rows)
    for run in result.failed:
        text += f"failed: trial {run.trial.index} ({run.trial.label()}), seed {run.seed}: {run.error}\n"
    return text.rstrip()


def raise_if_failed(result: SweepResult) -> None:
    if result.failed:
        failed, total = len(result.failed), len(result.runs)
        raise NncliError(f"{failed} of {total} runs failed; their errors are in {result.out / FAILURES}")
