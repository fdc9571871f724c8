"""The `nncli` command line. The only module that imports click.

Every command runs inside `_user_errors`, which turns an `NncliError` into one sentence on stderr
and the error's exit code; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import sys

import click

from nncli import __version__
from nncli.errors import NncliError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@contextlib.contextmanager
def _user_errors(debug: bool):
    try:
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


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="nncli")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Train neural networks written from scratch in numpy, driven by YAML files."""
    ctx.obj = {"debug": debug}


def main() -> None:
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
@click.pass_obj
def train(obj, config, overrides, run_dir, resume, data_dir, quiet):
    """Train the model described by CONFIG (a YAML file) and write a run directory."""
    from nncli.data import resolve_data_dir
    from nncli.errors import ConfigError
    from nncli.run import train as run_training

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
        )
        _print_summary(result)


def _print_summary(result) -> None:
    state, summary = result.state, result.summary or {}
    line = f"run {result.run.path}: {state.epoch} epochs"
    if state.best_epoch is not None:
        line += f", best {summary.get('monitor')} {state.best_value:.4f} at epoch {state.best_epoch}"
    test = summary.get("test")
    if test:
        line += f"; test loss {test['loss']:.4f}"
        if test.get("accuracy") is not None:
            line += f", test accuracy {test['accuracy'] * 100:.2f}%"
    click.echo(line)
