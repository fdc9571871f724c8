"""The first thing `import nncli` does: in the `nncli` command (the installed script, or
`python -m nncli`), and only there, a Ctrl-C from here until the command starts is only noted,
in `noted_interrupts`; nncli/__main__.py answers it with "interrupted" and exit 130 once its
modules are imported, so that it never surfaces as a traceback from inside an import. Before
this runs there is only the interpreter's own start. A program that imports nncli keeps its
own signal handling (`noted_interrupts` is None). And where a sweep started the command, it
dies with the sweep (`die_with_parent`, which nncli/__main__.py calls first).

This module imports nothing but what the interpreter has loaded already (sys, signal's enum),
and `die_with_parent` only ctypes, only in a process a sweep started.
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


#: the environment variable a sweep sets for the `nncli train` processes it starts: its own pid
#: (or its Dask worker's), for `die_with_parent`
PARENT = "NNCLI_PARENT"


def die_with_parent(environ) -> None:
    """In a process a sweep started, `environ[PARENT]` naming the process that started it: have
    Linux send this one SIGTERM when that one dies, `kill -9` included (prctl PR_SET_PDEATHSIG),
    and exit at once where it has died already. `nncli train` answers SIGTERM as it answers
    Ctrl-C: it saves its state and stops, so no run goes on training for nobody (a Dask worker
    killed for its memory left its run training on, to the end). Asked for here, by the child,
    and not between fork and exec (a `preexec_fn`, which Python's documentation calls unsafe
    in a process with threads, as a Dask worker is). The signal comes when the thread that
    started this process ends: a sweep's main thread, a Dask worker's thread that runs the
    task and waits for it. The variable is taken out of `environ`. Elsewhere than on Linux,
    or where libc has no prctl, nothing."""
    value = environ.pop(PARENT, None)
    if value is None or not sys.platform.startswith("linux") or not (value.isascii() and value.isdigit()):
        return
    import ctypes
    import os
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    pr_set_pdeathsig = 1
    prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != int(value):  # it died before prctl: there is nobody to train for
        print(f"stopped: the process that started this one ({PARENT}={value}) has ended", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
