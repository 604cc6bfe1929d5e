"""What the emulator hands back to tests: the requests it saw and the faults it was told to play."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ROUTE_NAMES = frozenset(
    {
        "files.create",
        "files.get",
        "files.content",
        "batches.create",
        "batches.list",
        "batches.get",
        "batches.cancel",
        "batches.output",
    }
)

FAULT_KINDS = frozenset(
    {
        "status",
        "rate_limit",
        "server_error",
        "slow",
        "drop",
        "malformed_json",
        "empty_body",
        "html",
        "raw_cancel_body",
    }
)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it reached the emulator (path and batch id are raw, not percent-decoded)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    route: str | None
    batch_id: str | None
    received_at: float = 0.0  # time.monotonic(), to measure client backoff between requests

    def json(self) -> Any:
        """The body decoded as JSON (None when empty)."""
        return json.loads(self.body) if self.body else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, body as text."""
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body.decode("utf-8", "replace"),
            "route": self.route,
            "batch_id": self.batch_id,
            "received_at": self.received_at,
        }


@dataclass(eq=False)
class Fault:
    """A misbehaviour armed for the next `times` matching requests (None = until cleared)."""

    kind: str
    times: int | None = 1
    batch_id: str | None = None
    route: str | None = None
    method: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    hits: int = 0

    @property
    def active(self) -> bool:
        """Whether the fault still applies to further requests."""
        return self.times is None or self.hits < self.times

    def matches(self, method: str, route: str | None, batch_id: str | None) -> bool:
        """Whether a request with these coordinates is one this fault targets."""
        return (
            (self.method is None or self.method == method)
            and (self.route is None or self.route == route)
            and (self.batch_id is None or self.batch_id == batch_id)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "kind": self.kind,
            "times": self.times,
            "batch_id": self.batch_id,
            "route": self.route,
            "method": self.method,
            "params": self.params,
            "hits": self.hits,
        }
