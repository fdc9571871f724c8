"""The `nncli` command line: the only package that imports click.

`base` holds the group, the error handling every command runs inside and the options several
commands share; the commands are grouped by what they take: a config (`training`), a trained
model (`models`), runs and sweeps (`experiments`). Each parses its arguments, calls its
`nncli.commands` function and prints what that returns.
"""

from nncli.cli import experiments, models, training  # noqa: F401  (they register the commands)
from nncli.cli.base import cli, main

__all__ = ["cli", "main"]
