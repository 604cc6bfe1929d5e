"""``python -m airflow_portkey.testing``: run the Portkey emulator until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit code."""
    args = _parser().parse_args(argv)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
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
    )
    emu.start()
    print(f"Portkey emulator listening on {emu.base_url}", flush=True)
    try:
        while not stop.wait(0.5):  # a timed wait lets the signal handler run promptly
            pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
