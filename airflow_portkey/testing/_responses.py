"""What a handler can answer (a response, a delay, a dropped connection) and the error bodies."""

from __future__ import annotations

import json
from typing import Any


class Request:
    """A parsed HTTP request; `path` is raw (percent-escapes kept) and without the query."""

    __slots__ = ("body", "headers", "keep_alive", "method", "path", "query_string")

    def __init__(
        self,
        method: str,
        path: str,
        query_string: str,
        headers: dict[str, str],
        body: bytes,
        keep_alive: bool = True,
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


class Response:
    """A complete answer."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


class Delay:
    """Answer the same request again, without faults, after `seconds`."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class Drop:
    """Close the connection without answering (`reset`: abort instead of a clean close)."""

    __slots__ = ("reset",)

    def __init__(self, reset: bool = False) -> None:
        self.reset = reset


Result = Response | Delay | Drop


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(obj, separators=(",", ":")).encode()


def json_response(status: int, obj: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """A JSON response."""
    return Response(status, dumps(obj), "application/json", headers)


def gateway_failure(status: int, message: str) -> Response:
    """Portkey's own error body."""
    return json_response(status, {"status": "failure", "message": message})


def route_not_found() -> Response:
    """The gateway's answer to a path it does not serve."""
    return json_response(404, {"message": "Not Found", "ok": False})


def openai_error(
    status: int,
    message: str,
    *,
    provider: str | None,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> Response:
    """A provider error; passed through Portkey (provider given) it gets the gateway's prefix."""
    if provider is not None:
        message = f"{provider} error: {message}"
    body: dict[str, Any] = {
        "error": {"message": message, "type": type, "param": param, "code": code}
    }
    if provider is not None:
        body["provider"] = provider
    return json_response(status, body, headers)
