"""``python -m airflow_portkey.testing``: run the Portkey emulator until SIGINT or SIGTERM.

The first line printed is ``Portkey emulator listening on <base URL>``; with ``--tls`` the
second is ``Portkey emulator CA certificate: <path>``, the PEM file a client verifies the
server against. The last is the shell line that points Airflow's connection at it:
``export AIRFLOW_CONN_PORTKEY_DEFAULT='{...}'`` (``--conn-id`` names another connection).

With ``--stop-on-stdin-eof`` it also stops when its standard input closes: a launcher that
holds the other end of a pipe (``EmulatorProcess`` does) takes the emulator down with it
however it ends, even killed by SIGKILL, on every platform.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .emulator import PortkeyEmulator


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m airflow_portkey.testing",
        description="Serve a local Portkey-compatible batch API.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--mode", choices=("hosted", "upstream"), default="hosted")
    p.add_argument("--api-key", default=None, help="required x-portkey-api-key (hosted)")
    p.add_argument("--provider-api-key", default=None, help="required Authorization bearer")
    p.add_argument("--speed", type=float, default=1.0, help="emulator seconds per real second")
    p.add_argument("--validating-s", type=float, default=0.05)
    p.add_argument("--in-progress-s", type=float, default=0.2)
    p.add_argument("--finalizing-s", type=float, default=0.05)
    p.add_argument("--cancel-delay-s", type=float, default=0.1)
    p.add_argument("--no-record", action="store_true", help="keep counters only (benchmarks)")
    p.add_argument(
        "--conn-id",
        default="portkey_default",
        help="the Airflow connection id the printed AIRFLOW_CONN_... line sets",
    )
    p.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="N",
        help="answer 429 with Retry-After beyond N requests a second per key, as OpenAI does",
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a throw-away certificate; prints the CA file to verify it with",
    )
    p.add_argument(
        "--ca-file",
        default=None,
        metavar="PATH",
        help="with --tls, also write the CA certificate (PEM) to PATH",
    )
    p.add_argument(
        "--stop-on-stdin-eof",
        action="store_true",
        help="also stop when standard input closes (the launcher holds a pipe to it)",
    )
    return p


def _stop_on_stdin_eof(stop: threading.Event) -> None:
    """Set `stop` once standard input reaches its end (the launcher closed or died)."""

    def _read_until_eof() -> None:
        # os.read on the descriptor, not sys.stdin: a daemon thread blocked inside a buffered
        # reader holds its lock, and the interpreter aborts on that lock at exit.
        with contextlib.suppress(OSError):
            while os.read(0, 4096):
                pass
        stop.set()

    threading.Thread(target=_read_until_eof, name="stdin-eof", daemon=True).start()


def connection_line(emu: PortkeyEmulator, conn_id: str, ca_file: str | None) -> str:
    """The shell line that points an Airflow connection at the emulator."""
    extra = {"verify": ca_file} if ca_file is not None else {}
    variable = "AIRFLOW_CONN_" + conn_id.upper()
    return f"export {variable}={shlex.quote(emu.airflow_conn_json(**extra))}"


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.ca_file and not args.tls:
        parser.error("--ca-file needs --tls")
    if args.rate_limit is not None and not args.rate_limit > 0:
        parser.error("--rate-limit must be more than 0")
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if args.stop_on_stdin_eof:
        _stop_on_stdin_eof(stop)
    emu = PortkeyEmulator(
        args.host,
        args.port,
        mode=args.mode,
        api_key=args.api_key,
        provider_api_key=args.provider_api_key,
        validating_s=args.validating_s,
        in_progress_s=args.in_progress_s,
        finalizing_s=args.finalizing_s,
        cancel_delay_s=args.cancel_delay_s,
        speed=args.speed,
        record=not args.no_record,
        tls=args.tls,
        rate_limit=args.rate_limit,
    )
    ca_file = emu.ca_file
    if ca_file is not None and args.ca_file:
        shutil.copyfile(ca_file, args.ca_file)
        ca_file = args.ca_file
    emu.start()
    print(f"Portkey emulator listening on {emu.base_url}", flush=True)
    if ca_file is not None:
        print(f"Portkey emulator CA certificate: {ca_file}", flush=True)
    print(connection_line(emu, args.conn_id, ca_file), flush=True)
    try:
        while not stop.wait(0.5):  # a timed wait lets the signal handler run promptly
            pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
