"""The first thing `import nncli` does: in the `nncli` command (the installed script, or
`python -m nncli`), and only there, a Ctrl-C from here until the command starts is only noted,
in `noted_interrupts`; nncli/__main__.py answers it with "interrupted" and exit 130 once its
modules are imported, so that it never surfaces as a traceback from inside an import. Before
this runs there is only the interpreter's own start. A program that imports nncli keeps its
own signal handling (`noted_interrupts` is None).

This module imports nothing but what the interpreter has loaded already (sys, signal's enum).
"""

from __future__ import annotations

import sys


def is_the_command(argv: list[str], orig_argv: list[str]) -> bool:
    """Whether this process is the `nncli` command (the installed script, or `python -m nncli`)
    rather than a program that imports nncli."""
    if argv[:1] == ["-m"]:  # python -m: the package is imported while its __main__ is looked for
        for i, arg in enumerate(orig_argv[1:], 1):
            if arg.startswith("-m"):
                return (arg[2:] or "".join(orig_argv[i + 1 : i + 2])) == "nncli"
        return False
    name = argv[0].replace("\\", "/").rsplit("/", 1)[-1] if argv else ""
    return name in ("nncli", "nncli.exe")


def _note_interrupts() -> list[int] | None:
    if not is_the_command(sys.argv, getattr(sys, "orig_argv", [])):
        return None  # a library's import leaves its program's signals alone
    import signal

    noted: list[int] = []
    try:
        signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    except ValueError:  # not the main thread: __main__.main() installs it
        return None
    return noted


noted_interrupts = _note_interrupts()
