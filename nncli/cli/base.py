"""The `nncli` group, the error handling every command runs inside, and the shared options.

Every command is declared with `command`, which runs its body inside `user_errors`: an
`NncliError` becomes one sentence on stderr and the error's exit code; `--debug` shows the
traceback instead. Options that several commands take are declared here, once.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys

import click

from nncli import __version__
from nncli.errors import NncliError

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
def user_errors(debug: bool):
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


def stderr_is_terminal() -> bool:
    """Whether progress bars are wanted: only on a terminal."""
    return sys.stderr.isatty()


def command(name: str | None = None):
    """Declare a command of the `nncli` group whose body runs inside `user_errors`; the body
    takes its arguments and options only (not click's context)."""

    def declare(body):
        @functools.wraps(body)
        @click.pass_obj
        def run(obj, **kwargs):
            with user_errors(obj["debug"]):
                return body(**kwargs)

        return cli.command(name=name, context_settings=CONTEXT)(run)

    return declare


# The options several commands share, declared once.

SET_OPTION = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value (dotted path, list indices, YAML value); repeatable.",
)

DATA_DIR_OPTION = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="Where datasets live (else $NNCLI_DATA_DIR, else a user cache).",
)

JSON_OPTION = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object on stdout and nothing else."
)

BATCH_SIZE_OPTION = click.option(
    "--batch-size", type=click.IntRange(min=1), help="Samples per forward pass [train.eval_batch_size]."
)


def allow_data_change_option(what: str):
    """`--allow-data-change`: go on with data that changed since the checkpoint was written;
    `what` says what the command then does ("Resume", "Evaluate the validation split", ...)."""
    return click.option(
        "--allow-data-change",
        is_flag=True,
        help=f"{what} even though the data changed since the checkpoint was written.",
    )
