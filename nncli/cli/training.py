"""The commands that take a config: train, check, time, gradcheck and lr-find."""

from __future__ import annotations

import click

from nncli.cli import base
from nncli.cli.base import (
    DATA_DIR_OPTION,
    JSON_OPTION,
    SET_OPTION,
    allow_data_change_option,
    command,
)


@command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@SET_OPTION
@click.option(
    "--run-dir", type=click.Path(file_okay=False), help="Write the run here instead of runs/<name>/<time>."
)
@click.option("--resume", type=click.Path(file_okay=False), help="Continue the run in this directory.")
@DATA_DIR_OPTION
@click.option("-q", "--quiet", is_flag=True, help="Print only the final summary.")
@allow_data_change_option("Resume")
def train(config, overrides, run_dir, resume, data_dir, quiet, allow_data_change):
    """Train the model described by CONFIG (a YAML file) and write a run directory."""
    from nncli.commands import train as training
    from nncli.data import resolve_data_dir

    training.train(
        config,
        overrides,
        data_dir=resolve_data_dir(data_dir),
        run_dir=run_dir,
        resume=resume,
        verbose=not quiet,
        bars=not quiet and base.stderr_is_terminal(),
        allow_data_change=allow_data_change,
        say=lambda line: click.echo(line, err=True),
        report=lambda result: click.echo(training.format_result(result)),
    )


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


@command()
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
@SET_OPTION
@DATA_DIR_OPTION
@allow_data_change_option("Check a checkpoint on its data")
@click.option(
    "--allow-unchecked",
    is_flag=True,
    help="Warn, instead of exiting 4, when every entry sampled of a tensor is at a kink.",
)
def gradcheck(
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
            progress=base.stderr_is_terminal(),
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


@command(name="check")
@click.argument("config", type=click.Path(dir_okay=False))
@SET_OPTION
@DATA_DIR_OPTION
def check_command(config, overrides, data_dir):
    """Validate CONFIG and build its model and data without training.

    Prints each layer's output shape, parameter count and multiply-accumulates per sample, the
    totals, and the memory of one batch's activations. A config that does not fit fails with
    the layer and the YAML line.
    """
    from nncli.commands.check import check
    from nncli.data import resolve_data_dir

    click.echo(check(config, overrides, data_dir=resolve_data_dir(data_dir)))


@command(name="time")
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
@JSON_OPTION
@SET_OPTION
@DATA_DIR_OPTION
def time_command(config, batch, iters, warmup, as_json, overrides, data_dir):
    """Time CONFIG's training step layer by layer, like `caffe time`.

    Runs --warmup untimed and --iters timed training steps on one batch of training samples, in
    training mode, and prints each layer's forward and backward milliseconds (medians), the
    loss's, the regularizer's and the optimizer step's, and each one's share of the step. Nothing
    is written.
    """
    import json

    from nncli.commands.time import format_timings, time_layers
    from nncli.data import resolve_data_dir

    result = time_layers(
        config, overrides, data_dir=resolve_data_dir(data_dir), batch=batch, iters=iters, warmup=warmup
    )
    click.echo(json.dumps(result.to_dict()) if as_json else format_timings(result))


@command(name="lr-find")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--start", type=float, default=1e-7, show_default=True, help="The first learning rate.")
@click.option("--end", type=float, default=10.0, show_default=True, help="The last learning rate.")
@click.option("--steps", type=int, default=100, show_default=True, help="Batches, one learning rate each.")
@click.option(
    "--out", type=click.Path(file_okay=False), help="Write the files here [runs/<name>/lr-find-<time>]."
)
@SET_OPTION
@DATA_DIR_OPTION
def lr_find_command(config, start, end, steps, out, overrides, data_dir):
    """The learning-rate range test: train CONFIG's model from scratch for --steps batches (its
    optimizer and batch size; its schedule ignored) with the learning rate rising exponentially
    from --start to --end, stopping once the smoothed loss passes 4x its lowest or is not finite.

    Prints three suggestions read from the smoothed loss against log10(lr): valley (fastai's
    default), steepest and the minimum; writes lr_find.csv, lr_find.png (the curve, the
    suggestions marked), lr_find.json and the config tested into a new folder. Nothing of
    CONFIG's runs is touched.
    """
    from nncli.commands.lr_find import format_result, lr_find
    from nncli.data import resolve_data_dir

    result = lr_find(
        config, overrides, data_dir=resolve_data_dir(data_dir), start=start, end=end, steps=steps, out=out
    )
    for note in result.notes:
        if note.startswith("warning"):
            click.echo(note, err=True)
    click.echo(format_result(result))
