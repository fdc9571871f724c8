"""Signals at the edges of a run: in the first milliseconds after `nncli train` makes its run
directory, after its last batch, twice, and while `python -m nncli` imports the package. A run
directory is resumable (and resuming it gives the uninterrupted run's results) or not there."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# ---- python -m nncli: the package's own import -------------------------------------------

# A SIGINT that arrives while the package imports nncli.errors (a finder that sends it when
# that module is looked for), in a process that runs as `python -m nncli --version`.
DURING_IMPORT = """
import os, runpy, signal, sys

class SignalOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == "nncli.errors":
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, SignalOnImport())
sys.argv = ["-m", "--version"]  # as python -m sets them while it imports the package
sys.orig_argv = [sys.executable, "-m", "nncli", "--version"]
runpy.run_module("nncli", run_name="__main__", alter_sys=True)
"""


def test_a_ctrl_c_while_python_m_imports_the_package_is_one_line():
    done = subprocess.run([sys.executable, "-c", DURING_IMPORT], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (130, "interrupted\n")


def test_only_the_command_takes_ctrl_c_over_while_importing():
    from nncli import _is_the_command

    python = sys.executable
    assert _is_the_command(["-m"], [python, "-m", "nncli", "train"])
    assert _is_the_command(["-m"], [python, "-X", "importtime", "-mnncli"])
    assert _is_the_command(["/venv/bin/nncli", "train"], [python, "/venv/bin/nncli", "train"])
    assert not _is_the_command(["-m"], [python, "-m", "pytest", "nncli"])
    assert not _is_the_command(["-m"], [python, "-m", "nncli.something"])
    assert not _is_the_command(["script.py"], [python, "script.py"])
    assert not _is_the_command([], [])
    code = "import signal, nncli; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == "True\n"
