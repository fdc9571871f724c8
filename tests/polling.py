"""Waiting for an event of another process by polling: the fault tests' one way to wait, so no
sleep stands in for an event. Imported by the test files beside it (pytest puts this folder on
sys.path)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

LIMIT = 60.0  # seconds any awaited state may take on a loaded machine; never reached when it works


def wait_for(condition, what: str, limit: float = LIMIT, every: float = 0.05):
    """The first true value `condition()` returns, polled every `every` seconds; the test fails,
    naming `what`, if none comes within `limit` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"not within {limit:.0f} s: {what}")


def epochs_done(run: Path) -> int:
    """The epochs a run directory's metrics.csv has rows for (0 where it has none yet): a
    condition to wait for a run to be under way."""
    try:
        return max(0, len((run / "metrics.csv").read_text().splitlines()) - 1)
    except OSError:
        return 0


def ended(pid: int) -> bool:
    """Whether the process `pid`, not this one's child, has exited: gone, or a zombie its new
    parent has not yet reaped (Linux: read from /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True
