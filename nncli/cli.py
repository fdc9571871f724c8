"""The `nncli` command line. The only module that imports click.

Every command runs inside `_user_errors`, which turns an `NncliError` into one sentence on stderr
and the error's exit code; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path

import click

from nncli import __version__
from nncli.errors import NncliError
from nncli.messages import count

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# Ctrl-C noted while the command's modules were imported (see nncli/__main__.py), or None
_noted_interrupts: list[int] | None = None


def _interrupts_from_now_on() -> None:
    """Restore Python's Ctrl-C handling once the imports are done, and act on one that came
    during them."""
    global _noted_interrupts
    if _noted_interrupts is None:
        return
    noted, _noted_interrupts = _noted_interrupts, None
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if noted:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _user_errors(debug: bool):
    try:
        _interrupts_from_now_on()
        yield
    except NncliError as err:
        if debug:
            raise
        prefix = "" if err.exit_code >= 128 else "error: "
        click.echo(f"{prefix}{err}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        if debug:
            raise
        click.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as err:  # a file that cannot be written or read: a full disk, a folder in the way
        if debug:
            raise
        where = f": {err.filename}" if err.filename else ""
        click.echo(f"error: {err.strerror or err}{where}", err=True)
        sys.exit(1)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="nncli")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Train neural networks written from scratch in numpy, driven by YAML files."""
    ctx.obj = {"debug": debug}


def main(noted_interrupts: list[int] | None = None) -> None:
    """Run the command line. `noted_interrupts` is the list a SIGINT handler that only takes
    note appends to while the modules load; the first command to run takes Ctrl-C back."""
    global _noted_interrupts
    _noted_interrupts = noted_interrupts
    cli(prog_name="nncli")


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


@cli.command(context_settings=CONTEXT)
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value (dotted path, list indices, YAML value); repeatable.",
)
@click.option(
    "--run-dir", type=click.Path(file_okay=False), help="Write the run here instead of runs/<name>/<time>."
)
@click.option("--resume", type=click.Path(file_okay=False), help="Continue the run in this directory.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="Where datasets live (else $NNCLI_DATA_DIR, else a user cache).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the final summary.")
@click.option(
    "--allow-data-change",
    is_flag=True,
    help="Resume even though the data changed since the checkpoint was written.",
)
@click.pass_obj
def train(obj, config, overrides, run_dir, resume, data_dir, quiet, allow_data_change):
    """Train the model described by CONFIG (a YAML file) and write a run directory."""
    from nncli.commands.train import train as run_training
    from nncli.data import resolve_data_dir
    from nncli.errors import ConfigError

    with _user_errors(obj["debug"]):
        if resume and config:
            raise ConfigError(
                "give CONFIG or --resume, not both"
                " (a resumed run uses its own config; change train.* with --set)"
            )
        if not resume and not config:
            raise ConfigError("missing CONFIG: the YAML file to train (or --resume RUN_DIR)")
        if resume and run_dir:
            raise ConfigError(
                "--run-dir and --resume cannot be combined: a resumed run stays in its directory"
            )
        result = run_training(
            config,
            overrides,
            data_dir=resolve_data_dir(data_dir),
            run_dir=run_dir,
            resume=resume,
            verbose=not quiet,
            bars=not quiet and _stderr_is_terminal(),
            allow_data_change=allow_data_change,
        )
        _print_summary(result)


def _print_summary(result) -> None:
    state, summary = result.state, result.summary or {}
    line = f"run {result.run.path}: {count(state.epoch, 'epoch')}"
    if state.best_epoch is not None:
        line += f", best {summary.get('monitor')} {state.best_value:.4f} at epoch {state.best_epoch}"
    test = summary.get("test")
    if test:
        line += f"; test loss {test['loss']:.4f}"
        if test.get("accuracy") is not None:
            line += f", test accuracy {test['accuracy'] * 100:.2f}%"
    click.echo(line)


DATA_DIR_OPTION = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="Where datasets live (else $NNCLI_DATA_DIR, else a user cache).",
)


@cli.command(name="eval", context_settings=CONTEXT)
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path())
@click.option(
    "--split",
    type=click.Choice(["test", "val", "train"]),
    default="test",
    show_default=True,
    help="Which part of the checkpoint's data to evaluate on.",
)
@DATA_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout and nothing else.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    help="Write the confusion matrix (regression: predictions against targets) to this .png/.svg/.pdf.",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), help="Samples per forward pass [train.eval_batch_size]."
)
@click.option(
    "--allow-data-change",
    is_flag=True,
    help="Evaluate the validation split even though the data changed since training.",
)
@click.pass_obj
def eval_command(obj, checkpoint_path, split, data_dir, as_json, plot_path, batch_size, allow_data_change):
    """Evaluate a saved model on a split of its data.

    CHECKPOINT is a checkpoint file or a run directory (its best checkpoint is used). The model,
    the data and the preprocessing statistics all come from the checkpoint.
    """
    import json

    from nncli.commands import eval as evaluation
    from nncli.data import resolve_data_dir
    from nncli.output.plotting import check_format

    with _user_errors(obj["debug"]):
        if plot_path:
            check_format(plot_path)  # before the work, not after it
        result = evaluation.evaluate_checkpoint(
            checkpoint_path, split, resolve_data_dir(data_dir), batch_size, allow_data_change
        )
        for warning in result.warnings:
            click.echo(warning, err=True)
        if plot_path:
            evaluation.plot(result, plot_path)
        click.echo(json.dumps(result.report) if as_json else evaluation.format_report(result.report))
        if plot_path:
            click.echo(f"wrote {plot_path}", err=as_json)


@cli.command(name="predict", context_settings=CONTEXT)
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path())
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the predictions here [stdout].")
@click.option("--top-k", type=click.IntRange(min=1), default=1, show_default=True,
              help="Also give the next best classes, with their probabilities.")
@click.option(
    "--batch-size", type=click.IntRange(min=1), help="Samples per forward pass [train.eval_batch_size]."
)
@click.option(
    "--invert/--no-invert", default=None,
    help="Invert images, or not [decided by each picture's background against the training images']."
)
@click.option("--labels", is_flag=True,
              help="Read the labels too (a CSV's target column, an .npz's y) and report accuracy or MSE.")
@click.option("--json", "as_json", is_flag=True, help="Write JSON instead of CSV.")
@click.pass_obj
def predict_command(obj, checkpoint_path, inputs, output, top_k, batch_size, invert, labels, as_json):
    """Apply a trained model to new inputs and print one row per sample: its name, the predicted
    class and its probability (regression: the predicted values).

    CHECKPOINT is a checkpoint file, a run directory (its best checkpoint) or an `nncli export`
    file. INPUT is a CSV with the training file's feature columns, an .npz with an array x,
    image files or folders of them. Only the checkpoint is needed, never the training data.
    """
    from nncli.commands import predict
    from nncli.fileio import atomic_write_text

    with _user_errors(obj["debug"]):
        result = predict.predict(
            checkpoint_path, list(inputs), top_k=top_k, batch_size=batch_size, invert=invert, labels=labels
        )
        for note in result.notes:
            click.echo(note, err=True)
        text = result.to_json() + "\n" if as_json else result.to_csv()
        if output:
            atomic_write_text(Path(output), text)
            click.echo(f"wrote {count(len(result.rows), 'prediction')} to {output}", err=True)
        else:
            click.echo(text, nl=False)
        if result.metrics is not None:
            click.echo(predict.format_metrics(result.metrics), err=True)


@cli.command(name="export", context_settings=CONTEXT)
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path())
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False),
    help="The file to write: model.npz (plain arrays) or model.onnx (an ONNX graph).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["npz", "onnx"], case_sensitive=False), default=None,
    help="The format to write, where the output's suffix does not say.",
)
@click.pass_obj
def export_command(obj, checkpoint_path, output, fmt):
    """Write a checkpoint's model (CHECKPOINT: a checkpoint file or a run directory) as

    \b
    .npz   plain arrays (no pickle): the parameters and buffers by name (layers.0.W, ...), with
           the config and the preprocessing as JSON inside; predict, eval and nncli.load take it
           as a checkpoint.
    .onnx  an ONNX graph (opset 17, IR 8, float32) that takes raw samples as predict reads them
           from an .npz's x, preprocesses them and returns what predict returns; the class names
           are in its metadata. Needs the onnx extra: pip install 'nncli[onnx]'.
    """
    from nncli.commands.export import export_checkpoint

    with _user_errors(obj["debug"]):
        written = export_checkpoint(checkpoint_path, output, fmt)
        if written["format"] == "onnx":
            what = (f"an ONNX graph of {count(written['nodes'], 'node')} and"
                    f" {count(written['constants'], 'constant')}")
        else:
            what = count(written["arrays"], "array")
        click.echo(f"wrote {written['output']}: {what} of {written['checkpoint']} (epoch {written['epoch']})")


def _parse_samples(value: str) -> int | None:
    """`--samples`: a count of entries per tensor, or 0 / `all` for every entry (None)."""
    from nncli.errors import NncliError

    if value.strip().lower() == "all":
        return None
    try:
        count = int(value)
    except ValueError:
        raise NncliError(f"--samples expects a number of entries or 'all', got {value!r}") from None
    if count < 0:
        raise NncliError(f"--samples expects a number of entries (0 or all for every one), got {count}")
    return count or None


@cli.command(context_settings=CONTEXT)
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--checkpoint", "checkpoint_path", type=click.Path(), help="Check with this checkpoint's weights."
)
@click.option(
    "--batch", type=click.IntRange(min=1), default=8, show_default=True, help="Training samples used."
)
@click.option(
    "--samples",
    default="20",
    show_default=True,
    help="Entries checked per tensor, drawn at random; 0 or 'all' checks every entry.",
)
@click.option(
    "--tol",
    type=click.FloatRange(min=0, min_open=True),
    default=1e-6,
    show_default=True,
    help="Largest relative error accepted.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Picks the batch, the entries, the random biases at initialization and the input noise.",
)
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value; repeatable."
)
@DATA_DIR_OPTION
@click.option(
    "--allow-data-change",
    is_flag=True,
    help="Check a checkpoint on its data even though the data changed since it was written.",
)
@click.option(
    "--allow-unchecked",
    is_flag=True,
    help="Warn, instead of exiting 4, when every entry sampled of a tensor is at a kink.",
)
@click.pass_obj
def gradcheck(
    obj,
    config,
    checkpoint_path,
    batch,
    samples,
    tol,
    seed,
    overrides,
    data_dir,
    allow_data_change,
    allow_unchecked,
):
    """Compare the analytic gradients of CONFIG's model and loss with numerical ones.

    In float64, on a small batch of the configured training data, with dropout masks frozen:
    every parameter tensor, the regularization term and the input. At initialization, tensors
    initialized to zeros (biases) get small random values first. Exits 0 when every compared
    entry's relative error is below --tol or within the rounding noise, 1 when one is not, 4
    when a tensor had no entry compared (each at a kink) unless --allow-unchecked; Ctrl-C prints
    the tensors checked so far and exits 130. Without CONFIG, the checkpoint's own config is used.
    """
    from nncli.commands.gradcheck import (
        GradcheckInterrupted,
        UncheckedTensors,
        failure_message,
        format_gradcheck,
        unchecked_message,
    )
    from nncli.commands.gradcheck import gradcheck as run_gradcheck
    from nncli.data import resolve_data_dir
    from nncli.errors import NncliError

    with _user_errors(obj["debug"]):
        if config is None and overrides:
            raise NncliError("--set needs a CONFIG (a checkpoint's config is checked as it was saved)")
        try:
            result = run_gradcheck(
                config,
                overrides,
                data_dir=resolve_data_dir(data_dir),
                checkpoint_path=checkpoint_path,
                batch=batch,
                samples=_parse_samples(samples),
                tol=tol,
                seed=seed,
                progress=_stderr_is_terminal(),
                allow_data_change=allow_data_change,
            )
        except GradcheckInterrupted as stop:
            click.echo(format_gradcheck(stop.result))  # the rows finished; then exit 130
            raise
        click.echo(format_gradcheck(result))
        if result.unchecked:
            if not (allow_unchecked or result.failed):
                raise UncheckedTensors(unchecked_message(result))
            # a failed gradient decides the exit code; the unchecked tensors are still told
            click.echo(f"warning: {unchecked_message(result, allowed=allow_unchecked)}", err=True)
        if result.failed:
            raise NncliError(failure_message(result))


@cli.command(context_settings=CONTEXT)
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default="curves.png",
    show_default=True,
    help="The image to write: .png, .svg or .pdf.",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="NAME",
    help="Plot this metric instead of loss and accuracy (loss, acc, or a metrics.csv column); repeatable.",
)
@click.pass_obj
def plot(obj, runs, output, metrics):
    """Draw the training curves of one or more runs (RUN is a run directory or its metrics.csv).

    Train curves are solid, validation dashed; several runs are overlaid, one colour each, with
    their names in the legend.
    """
    from nncli.commands.plot import plot as draw

    with _user_errors(obj["debug"]):
        click.echo(f"wrote {draw(list(runs), output, list(metrics))}")


@cli.command(name="check", context_settings=CONTEXT)
@click.argument("config", type=click.Path(dir_okay=False))
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value; repeatable."
)
@DATA_DIR_OPTION
@click.pass_obj
def check_command(obj, config, overrides, data_dir):
    """Validate CONFIG and build its model and data without training.

    Prints each layer's output shape and parameter count, the total, and the memory of one
    batch's activations. A config that does not fit fails with the layer and the YAML line.
    """
    from nncli.commands.check import check
    from nncli.data import resolve_data_dir

    with _user_errors(obj["debug"]):
        click.echo(check(config, overrides, data_dir=resolve_data_dir(data_dir)))


@cli.command(name="time", context_settings=CONTEXT)
@click.argument("config", type=click.Path(dir_okay=False))
@click.option(
    "--batch", type=click.IntRange(min=1), help="Training samples in the timed batch [train.batch_size]."
)
@click.option(
    "--iters", type=click.IntRange(min=1), default=20, show_default=True, help="Timed training steps."
)
@click.option(
    "--warmup", type=click.IntRange(min=0), default=3, show_default=True, help="Untimed steps first."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout and nothing else.")
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value; repeatable."
)
@DATA_DIR_OPTION
@click.pass_obj
def time_command(obj, config, batch, iters, warmup, as_json, overrides, data_dir):
    """Time CONFIG's training step layer by layer, like `caffe time`.

    Runs --warmup untimed and --iters timed training steps on one batch of training samples, in
    training mode, and prints each layer's forward and backward milliseconds (medians), the
    loss's, the regularizer's and the optimizer step's, and each one's share of the step. Nothing
    is written.
    """
    import json

    from nncli.commands.time import format_timings, time_layers
    from nncli.data import resolve_data_dir

    with _user_errors(obj["debug"]):
        result = time_layers(
            config, overrides, data_dir=resolve_data_dir(data_dir), batch=batch, iters=iters, warmup=warmup
        )
        click.echo(json.dumps(result.to_dict()) if as_json else format_timings(result))


@cli.command(name="runs", context_settings=CONTEXT)
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
@click.pass_obj
def runs_command(obj, folder, sort, group_seeds, as_csv, as_json):
    """List the runs under FOLDER (default runs/): name, start, epochs, status, the best
    validation metric, the test metric of the best checkpoint and the seed."""
    from nncli.commands import runs

    with _user_errors(obj["debug"]):
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


@cli.command(name="sweep", context_settings=CONTEXT)
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
@click.pass_obj
def sweep_command(obj, sweep_file, jobs, out, dry_run, wait, scheduler, max_trials, data_dir):
    """Run every trial of SWEEP (a sweep file) once per seed, each an ordinary run directory,
    skipping those done before and resuming interrupted ones; then write summary.csv and
    summary.md, best trial first. Exits 1 if a run failed or did not finish, and if another
    sweep is running in --out (unless --wait)."""
    from nncli.commands import sweep
    from nncli.data import resolve_data_dir

    with _user_errors(obj["debug"]):
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
                progress=_stderr_is_terminal(),
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
