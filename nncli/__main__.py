"""The `nncli` command and `python -m nncli`.

The command line's own imports (click, numpy) take a fifth of a second; a Ctrl-C in that time
is answered as one anywhere else is, with "interrupted" and exit code 130, not a traceback.
"""

import sys


def main() -> None:
    try:
        from nncli.cli import main as run
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    run()


if __name__ == "__main__":
    main()
