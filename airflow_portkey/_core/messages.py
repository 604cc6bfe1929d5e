"""The messages a plan and a transport exchange.

A *plan* is a generator: it yields an :class:`ApiRequest` when it needs one sent, or a
:class:`Wait` when it needs to pause, and receives what the transport got back.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Upload:
    """A file to send as multipart ``file``; a path is reopened on every attempt."""

    content: bytes | Path
    filename: str
    content_type: str = "application/jsonl"

    def read(self) -> bytes:
        return self.content.read_bytes() if isinstance(self.content, Path) else self.content


class ApiRequest(NamedTuple):
    """A request a plan needs sent. Immutable, as every message; a named tuple, not a frozen
    dataclass, since one is built for every request and a tuple costs a fifth as much."""

    method: str
    path: str
    params: Mapping[str, str] | None = None
    json_body: Any = None
    form: Mapping[str, str] | None = None
    upload: Upload | None = None
    stream: bool = False
    """When true, a successful body is written to the caller's sink, not kept in memory."""
    idempotent: bool = True
    """False for a request that must not be repeated once the server may have acted on it."""
    share_for: float = 0.0
    """Seconds an answer to the same read, made for another wait on the same connection and
    loop, may stand in for this one (0: never shared). Only reads set it."""
    deadline: float | None = None
    """Unix time after which the request is not worth sending: the connection's rate budget
    may hold it back until then, not beyond (the driver answers :class:`HeldBack`)."""
    fresh_connection: bool = False
    """Send on a new connection: a kept-alive one gave an answer to another request."""

    def describe(self) -> str:
        return f"{self.method} {self.path}"


class ApiResponse(NamedTuple):
    """An HTTP answer (a named tuple, as :class:`ApiRequest`: one per request)."""

    status_code: int
    headers: Mapping[str, str]
    """Lower-case names."""
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class TransportFailure:
    """No usable HTTP answer: ``kind`` is connect, timeout (including the request's total time
    limit), dropped, malformed (an answer that breaks HTTP's framing, cannot be decoded or is
    larger than the cap), or tls (the TLS handshake or the server's certificate was refused:
    no retry can change that)."""

    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float
    reason: str


@dataclass(frozen=True, slots=True)
class Note:
    """Something the driver should log (a ``logging`` level and the message)."""

    level: int
    message: str


@dataclass(frozen=True, slots=True)
class HeldBack:
    """Nothing was sent: the connection's rate budget would have held the request past its
    deadline, and the driver has waited until that deadline instead."""

    seconds: float
    """How long the budget would still have held it."""


Outcome = ApiResponse | TransportFailure
Reply = Outcome | HeldBack
Plan = Generator[ApiRequest | Wait | Note, Reply | None, T]
