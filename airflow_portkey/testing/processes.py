"""The Portkey emulator as a process of its own: ``python -m airflow_portkey.testing``.

For tests and benchmarks that need the emulator outside their own interpreter (Airflow's own
processes talking to it, a CPU figure of the server alone, a demo). The process leads a new
session, so it and anything it starts stop as one process group; its output goes to a log
file, where it announces its URL (and, over TLS, its CA file). Its standard input is a pipe
this process holds (``--stop-on-stdin-eof``): if this process dies without calling
:meth:`EmulatorProcess.stop` (killed by a timeout, SIGKILL), the pipe closes and the emulator
exits, instead of living on as an orphan. Standard library only, like
the rest of the emulator: nothing here imports the client side.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

_LISTENING = "Portkey emulator listening on "
_CA_FILE = "Portkey emulator CA certificate: "


class EmulatorProcess:
    """``python -m airflow_portkey.testing --port 0 ARGS...``, started and stopped by pid.

    :param args: more command-line options (``--api-key K``, ``--tls``, ``--no-record``...).
    :param env: the process's environment (default: this one's).
    :param log_path: where its output goes (default: a file in a temporary folder, removed
        on :meth:`stop`).
    :param cwd: its working directory (default: the log file's folder).
    :param python: the interpreter to run it with.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with EmulatorProcess("--api-key", "pk-test") as emu:
            requests.get(emu.base_url + "/batches", headers={"x-portkey-api-key": "pk-test"})
    """

    def __init__(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.args = tuple(args)
        self.env = dict(os.environ if env is None else env)
        self._own_dir = None if log_path else tempfile.mkdtemp(prefix="portkey-emulator-")
        self.log_path = Path(log_path) if log_path else Path(self._own_dir or ".") / "emulator.log"
        self.cwd = Path(cwd) if cwd else self.log_path.parent
        self.python = python
        self.popen: subprocess.Popen[bytes] | None = None
        self.base_url = ""
        """``http(s)://127.0.0.1:PORT/v1``: what a Portkey connection uses as its host."""
        self.ca_file: str | None = None
        """Over TLS, the PEM file to verify the emulator with; None over plain HTTP."""

    def command(self) -> list[str]:
        return [
            self.python,
            "-m",
            "airflow_portkey.testing",
            "--port",
            "0",
            "--stop-on-stdin-eof",
            *self.args,
        ]

    def start(self, timeout: float = 30.0) -> EmulatorProcess:
        """Start the process and wait until it listens (and, over TLS, names its CA file)."""
        if self.popen is not None:
            raise RuntimeError("this emulator process was already started")
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.command(),
                env=self.env,
                cwd=self.cwd,
                # Held open until stop(); closed by the kernel if this process dies first.
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as one
            )
        deadline = time.monotonic() + timeout
        while not self._announced():
            if self.popen.poll() is not None:
                code, output = self.popen.returncode, self.log_text()
                self.stop()
                raise RuntimeError(f"the emulator exited with {code}:\n{output}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the emulator did not listen within {timeout:.0f}s")
            time.sleep(0.02)
        return self

    def _announced(self) -> bool:
        for line in self.log_text().splitlines():
            if line.startswith(_LISTENING):
                self.base_url = line[len(_LISTENING) :].strip()
            elif line.startswith(_CA_FILE):
                self.ca_file = line[len(_CA_FILE) :].strip()
        return bool(self.base_url) and (self.ca_file is not None or self.scheme == "http")

    @property
    def scheme(self) -> str:
        return self.base_url.split("://", 1)[0]

    @property
    def root_url(self) -> str:
        """The server's root: the control API is at ``root_url + "/_emulator/"``."""
        return self.base_url.removesuffix("/v1")

    @property
    def host(self) -> str:
        return self.root_url.split("//", 1)[1].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.root_url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise RuntimeError("the emulator process has not been started")
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM its process group (SIGKILL if it lingers); return the exit code."""
        popen, self.popen = self.popen, None
        code = None
        if popen is not None:
            code = stop_process_group(popen, timeout)
            if popen.stdin is not None:
                with contextlib.suppress(OSError):
                    popen.stdin.close()
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
        return code

    def __enter__(self) -> EmulatorProcess:
        return self.start() if self.popen is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def stop_process_group(popen: subprocess.Popen[Any], timeout: float = 10.0) -> int | None:
    """SIGTERM a process started in its own group (SIGKILL if it lingers); its exit code."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGTERM)
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(timeout)
    return popen.returncode
