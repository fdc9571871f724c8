"""The commands that take a trained model (a checkpoint, a run directory or an export): eval,
predict and export."""

from __future__ import annotations

from pathlib import Path

import click

from nncli.cli.base import (
    BATCH_SIZE_OPTION,
    DATA_DIR_OPTION,
    JSON_OPTION,
    allow_data_change_option,
    command,
)
from nncli.errors import NncliError
from nncli.messages import count


@command(name="eval")
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path())
@click.option(
    "--split",
    type=click.Choice(["test", "val", "train"]),
    default="test",
    show_default=True,
    help="Which part of the checkpoint's data to evaluate on.",
)
@DATA_DIR_OPTION
@JSON_OPTION
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    help="Write the confusion matrix (regression: predictions against targets) to this .png/.svg/.pdf.",
)
@BATCH_SIZE_OPTION
@allow_data_change_option("Evaluate the validation split")
def eval_command(checkpoint_path, split, data_dir, as_json, plot_path, batch_size, allow_data_change):
    """Evaluate a saved model on a split of its data.

    CHECKPOINT is a checkpoint file or a run directory (its best checkpoint is used). The model,
    the data and the preprocessing statistics all come from the checkpoint.
    """
    import json

    from nncli.commands import eval as evaluation
    from nncli.data import resolve_data_dir

    if plot_path:
        from nncli.output.plotting import check_format

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


@command(name="predict")
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path())
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the predictions here [stdout].")
@click.option("--top-k", type=click.IntRange(min=1), default=1, show_default=True,
              help="Also give the next best classes, with their probabilities.")
@BATCH_SIZE_OPTION
@click.option(
    "--invert/--no-invert", default=None,
    help="Invert images, or not [decided by each picture's polarity against the training images']."
)
@click.option("--labels", is_flag=True,
              help="Read the labels too (a CSV's target column, an .npz's y) and report accuracy or MSE.")
@click.option("--json", "as_json", is_flag=True, help="Write JSON instead of CSV.")
def predict_command(checkpoint_path, inputs, output, top_k, batch_size, invert, labels, as_json):
    """Apply a trained model to new inputs and print one row per sample: its name, the predicted
    class and its probability (regression: the predicted values).

    CHECKPOINT is a checkpoint file, a run directory (its best checkpoint) or an `nncli export`
    file. INPUT is a CSV with the training file's feature columns, an .npz with an array x,
    image files or folders of them. Only the checkpoint is needed, never the training data. An
    image file that cannot be read is named on stderr and skipped, the others are predicted,
    and the exit code is 1.
    """
    from nncli.commands import predict
    from nncli.fileio import atomic_write_text

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
    if result.skipped:  # the readable files are predicted; a script still learns of the others
        for reason in result.skipped:
            click.echo(f"skipped: {reason}", err=True)
        raise NncliError(
            f"{count(len(result.skipped), 'input file')} could not be read and"
            f" {'was' if len(result.skipped) == 1 else 'were'} skipped;"
            f" {count(len(result.rows), 'prediction')} written"
        )


@command(name="export")
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path())
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False),
    help="The file to write: model.npz (plain arrays) or model.onnx (an ONNX graph).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["npz", "onnx"], case_sensitive=False), default=None,
    help="The format to write, where the output's suffix does not say.",
)
def export_command(checkpoint_path, output, fmt):
    """Write a checkpoint's model (CHECKPOINT: a checkpoint file, a run directory or an .npz
    export) as

    \b
    .npz   plain arrays (no pickle): the parameters and buffers by name (layers.0.W, ...), with
           the config and the preprocessing as JSON inside; predict, eval and nncli.load take it
           as a checkpoint.
    .onnx  an ONNX graph (opset 17, IR 8, float32) that takes raw samples as predict reads them
           from an .npz's x, preprocesses them and returns what predict returns; the class names
           are in its metadata. Needs the onnx extra: pip install 'nncli[onnx]'.
    """
    from nncli.commands.export import export_checkpoint

    written = export_checkpoint(checkpoint_path, output, fmt)
    if written["format"] == "onnx":
        what = (f"an ONNX graph of {count(written['nodes'], 'node')} and"
                f" {count(written['constants'], 'constant')}")
    else:
        what = count(written["arrays"], "array")
    click.echo(f"wrote {written['output']}: {what} of {written['checkpoint']} (epoch {written['epoch']})")
