"""nncli: neural networks written from scratch in numpy, trained from YAML files.

The Python API (`nncli.train`, `nncli.load`, `nncli.Model`, `nncli.Run`; see nncli/api.py) is
imported on first use, so that `import nncli` and the command line's start stay light.
"""


def _is_the_command(argv: list[str], orig_argv: list[str]) -> bool:
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
    """In the command, and only there, the first thing done: from here until its modules are
    imported a Ctrl-C is only noted (in the list returned; nncli/__main__.py acts on it), so
    that it never surfaces as a traceback from inside an import. Before this runs, there is
    only the interpreter's own start."""
    import sys

    if not _is_the_command(sys.argv, getattr(sys, "orig_argv", [])):
        return None  # a library's import leaves its program's signals alone
    import signal

    noted: list[int] = []
    try:
        signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    except ValueError:  # not the main thread: main() installs it
        return None
    return noted


_noted_interrupts = _note_interrupts()

from nncli import _openblas  # noqa: E402

_openblas.apply()  # before anything imports numpy: see nncli/_openblas.py

from nncli.errors import CheckpointError, ConfigError, DataError, NncliError  # noqa: E402

__version__ = "0.1.0"

_API = ("train", "load", "Model", "Run")
__all__ = [*_API, "NncliError", "ConfigError", "DataError", "CheckpointError"]


def __getattr__(name: str):
    if name in _API:
        from nncli import api

        return getattr(api, name)
    raise AttributeError(f"module 'nncli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
