"""A launcher that dies without cleaning up, shared by the tests of the emulator's and the
gateway's launchers: whatever it started must not outlive it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def killed_launcher(script: str, cwd: Path) -> Iterator[str]:
    """A Python process running ``script``, which starts something and prints one line about
    it; yields that line, then SIGKILLs the launcher, as a timeout kills a test run: no
    ``finally``, no ``atexit`` runs in it."""
    launcher = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=cwd
    )
    try:
        assert launcher.stdout is not None
        yield launcher.stdout.readline()
    finally:
        launcher.kill()
        launcher.wait()


def group_running(pgid: int) -> bool:
    """Whether a process of the process group is still running (an exited one waiting to be
    reaped counts as gone)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def gone_within(seconds: float, still_there: Callable[[], bool]) -> bool:
    """Wait up to ``seconds`` for ``still_there()`` to turn false; whether it did."""
    deadline = time.monotonic() + seconds
    while still_there():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
