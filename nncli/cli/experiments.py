"""The commands about runs and sweeps: plot (curves, and a run's filters and feature maps), runs
and sweep."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from nncli.cli import base
from nncli.cli.base import DATA_DIR_OPTION, command
from nncli.errors import NncliError


@command()
@click.argument("runs", nargs=-1, type=click.Path(), metavar="RUN...")  # none: `plot` says why
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="The image to write: .png, .svg or .pdf [curves.png, filters.png or activations.png].",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="NAME",
    help="Plot this metric instead of loss and accuracy (loss, acc, or a metrics.csv column); repeatable.",
)
@click.option(
    "--filters", is_flag=True, help="Draw the first layer's weights (conv filters; linear units as images)."
)
@click.option(
    "--activations",
    metavar="IMAGE",
    is_flag=False,
    flag_value="",
    help="Draw the feature maps of each conv and pool layer for IMAGE (or, alone, for --index N).",
)
@click.option("--index", type=click.IntRange(min=0), metavar="N", help="With --activations: test sample N.")
@DATA_DIR_OPTION
def plot(runs, output, metrics, filters, activations, index, data_dir):
    """Draw the training curves of one or more runs (RUN is a run directory or its metrics.csv).

    Train curves are solid, validation dashed; several runs are overlaid, one colour each, with
    their names in the legend. With --filters or --activations, draw what one run's model
    learned instead: its first layer's weights, or one input's feature maps after each
    convolution and pooling layer (IMAGE read as predict reads it, or --index N of the test set).
    """
    if not runs:
        if activations and Path(activations).is_dir():  # `--activations RUN`: the run taken for IMAGE
            raise NncliError(f"--activations took {activations} for its IMAGE, and no run is left: give"
                             f" the run first, nncli plot {activations} --activations [IMAGE | --index N]")
        raise NncliError("give the run to plot: nncli plot RUN [RUN...] (a run directory or its metrics.csv)")
    if filters or activations is not None or index is not None:
        _plot_pictures(runs, output, metrics, filters, activations, index, data_dir)
        return
    from nncli.commands.plot import plot as draw

    click.echo(f"wrote {draw(list(runs), output or 'curves.png', list(metrics))}")


def _plot_pictures(runs, output, metrics, filters, activations, index, data_dir) -> None:
    from nncli.commands import pictures
    from nncli.data import resolve_data_dir
    from nncli.messages import count

    if filters and activations is not None:
        raise NncliError("give --filters or --activations, not both: each draws one picture")
    if activations is None:
        if not filters:
            raise NncliError("--index N goes with --activations: nncli plot RUN --activations --index N")
        if index is not None:
            raise NncliError("--index N goes with --activations, not --filters")
    if metrics:
        raise NncliError("--metric chooses the curves to draw; --filters and --activations draw no curves")
    if len(runs) != 1:
        raise NncliError(f"--filters and --activations draw one run's model; got {count(len(runs), 'run')}")
    if filters:
        drawn = pictures.filters(runs[0], output or "filters.png")
    else:
        drawn = pictures.activations(
            runs[0],
            output or "activations.png",
            image=activations or None,
            index=index,
            data_dir=resolve_data_dir(data_dir) if index is not None else None,
        )
    for note in drawn.notes:
        click.echo(note, err=True)
    click.echo(f"wrote {drawn.path}")


@command(name="runs")
@click.argument("folder", required=False, default="runs", type=click.Path(file_okay=False))
@click.option(
    "--sort",
    default="date",
    show_default=True,
    help="date, name, status, epochs, best_val or test (metrics: best first).",
)
@click.option(
    "--group-seeds", is_flag=True, help="Fold runs that differ only by seed into one row (each seed once)."
)
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV instead of a table.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array instead of a table.")
def runs_command(folder, sort, group_seeds, as_csv, as_json):
    """List the runs under FOLDER (default runs/): name, start, epochs, status, the best
    validation metric, the test metric of the best checkpoint and the seed."""
    from nncli.commands import runs

    if as_csv and as_json:
        raise NncliError("give --csv or --json, not both")
    rows = runs.runs(folder, sort=sort, seeds_grouped=group_seeds)
    if as_json:
        click.echo(runs.to_json(rows))
    elif as_csv:
        click.echo(runs.to_csv(rows), nl=False)
    else:
        click.echo(runs.format_table(rows))
    for row in rows:
        if row.note:
            click.echo(f"note: {row.note}", err=True)


@command(name="sweep")
@click.argument("sweep_file", metavar="SWEEP", type=click.Path(dir_okay=False))
@click.option("--jobs", type=click.IntRange(min=1), help="Runs at a time [the number of cores].")
@click.option(
    "--out", type=click.Path(file_okay=False), help="Where the runs go [runs/sweeps/<sweep name>]."
)
@click.option("--dry-run", is_flag=True, help="Print the trials and run nothing.")
@click.option(
    "--wait", is_flag=True, help="If another sweep is running in --out, wait for it to end."
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="Run on a Dask cluster: tcp://HOST:PORT, or local:N for N local worker processes.",
)
@click.option(
    "--max-trials",
    type=click.IntRange(min=1, max=1_000_000),
    metavar="N",
    help="Allow up to N trials [1,000]; a sweep of more is refused before any runs.",
)
@DATA_DIR_OPTION
def sweep_command(sweep_file, jobs, out, dry_run, wait, scheduler, max_trials, data_dir):
    """Run every trial of SWEEP (a sweep file) once per seed, each an ordinary run directory,
    skipping those done before and resuming interrupted ones; then write summary.csv and
    summary.md, best trial first. With prune: in SWEEP, the trials that are behind are stopped
    as they train (every decision in prune.jsonl). Exits 1 if a run failed or did not finish,
    and if another sweep is running in --out (unless --wait)."""
    from nncli.commands import sweep
    from nncli.data import resolve_data_dir

    if dry_run:
        click.echo(sweep.dry_run(sweep_file, max_trials))
        return
    try:
        result = sweep.sweep(
            sweep_file,
            jobs=jobs,
            out=out,
            data_dir=resolve_data_dir(data_dir) if data_dir else None,
            scheduler=scheduler,
            max_trials=max_trials,
            progress=base.stderr_is_terminal(),
            wait=wait,
            say=lambda line: click.echo(line, err=True),
        )
    except sweep.Stopped as stop:  # SIGTERM, SIGHUP: one line, and 128 + the signal
        name = signal.Signals(stop.signum).name
        click.echo(f"stopped by {name}: the runs saved their state: run the same sweep again"
                   " to finish it", err=True)
        sys.exit(128 + stop.signum)
    except KeyboardInterrupt:
        click.echo("the runs saved their state: run the same sweep again to finish it", err=True)
        raise
    click.echo(sweep.format_summary(result))
    sweep.raise_if_failed(result)
