"""Test helpers: PortkeyEmulator, a local Portkey-compatible batch API.

The names load on first use, so importing this package costs next to nothing. Launchers of
separate processes live in submodules: :mod:`.processes` (the emulator as a process of its own)
and :mod:`.gateway` (the real npm Portkey gateway on loopback).
"""

from __future__ import annotations

# Not typing.TYPE_CHECKING: importing typing alone takes ~20 ms on a slow machine.
# Type checkers treat any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._records import Fault, RecordedRequest
    from .emulator import PortkeyEmulator

__all__ = ["Fault", "PortkeyEmulator", "RecordedRequest"]


def __getattr__(name: str) -> Any:
    # asyncio alone takes tens of milliseconds to import; pay for it only when it is used.
    if name == "PortkeyEmulator":
        from .emulator import PortkeyEmulator

        return PortkeyEmulator
    if name in ("Fault", "RecordedRequest"):
        from . import _records

        return getattr(_records, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
