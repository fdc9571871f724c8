"""The `nncli` command and `python -m nncli`.

A command's modules (click, numpy, the engine) take a good part of a second to import. A Ctrl-C
in that time must not surface as an exception inside the import machinery (Python prints those
as "Exception ignored ... Traceback" and carries on): until the command starts, SIGINT is only
noted, and then answered as it is anywhere else, with "interrupted" and exit code 130. The
package installs that noting handler first thing when it is imported as the command (see
nncli/_startup.py); `main()` installs it where it was not.
"""

import os
import signal
import sys

from nncli import _startup


def main() -> None:
    _startup.die_with_parent(os.environ)
    noted = _startup.noted_interrupts
    if noted is None:  # main() called by a program that imported nncli itself
        noted = []
        signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    from nncli.cli import main as run

    if noted:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    run(noted)


if __name__ == "__main__":
    main()
