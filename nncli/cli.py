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
        click.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="nncli")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Train neural networks written from scratch in numpy, driven by YAML files."""
    ctx.obj = {"debug": debug}


def main() -> None:
    cli(prog_name="nncli")
