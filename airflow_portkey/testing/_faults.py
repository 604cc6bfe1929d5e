"""Faults: pick the armed fault for a request and build the misbehaviour it stands for."""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from ._records import Fault
from ._responses import (
    Delay,
    Drop,
    Response,
    Result,
    dumps,
    gateway_failure,
    json_response,
    openai_error,
)

_SERVER_ERROR_MESSAGES = {
    500: "Something went wrong",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
# What an OpenAI-compatible provider says in its own error object (mode "upstream").
_UPSTREAM_SERVER_ERROR_MESSAGES = {
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The server is overloaded or not ready yet.",
    504: "Gateway timeout.",
}
_HTML = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def take(faults: list[Fault], method: str, route: str | None, batch_id: str | None) -> Fault | None:
    """The first armed fault matching the request, counted as used (spent ones are dropped)."""
    for fault in faults:
        if fault.active and fault.matches(method, route, batch_id):
            fault.hits += 1
            if not fault.active:
                faults.remove(fault)
            return fault
    return None


def _headers(fault: Fault, extra: tuple[tuple[str, str], ...] = ()) -> tuple[tuple[str, str], ...]:
    given = fault.params.get("headers") or {}
    return extra + tuple((str(k), str(v)) for k, v in given.items())


def _seconds_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _rate_limit(fault: Fault, provider: str | None) -> Response:
    p = fault.params
    extra: list[tuple[str, str]] = []
    if "retry_after_ms" in p and p["retry_after_ms"] is not None:
        extra.append(("retry-after-ms", _seconds_text(p["retry_after_ms"])))
    if p.get("retry_after_http_date"):
        at = time.time() + float(p.get("retry_after", 1))
        extra.append(("Retry-After", formatdate(at, usegmt=True)))
    elif "retry_after" in p:
        if p["retry_after"] is not None:
            extra.append(("Retry-After", _seconds_text(p["retry_after"])))
    elif "retry_after_ms" not in p:
        extra.append(("Retry-After", "1"))
    message = p.get("message", "Rate limit reached for requests. Please try again later.")
    return openai_error(
        429,
        message,
        provider=provider,
        type="requests",
        code="rate_limit_exceeded",
        headers=_headers(fault, tuple(extra)),
    )


def _status(fault: Fault) -> Response:
    p = fault.params
    status = int(p.get("status", 500))
    body = p.get("body")
    headers = _headers(fault)
    if body is None:
        if status >= 400:
            return json_response(
                status, {"status": "failure", "message": f"Error {status}"}, headers
            )
        return json_response(status, {}, headers)
    if isinstance(body, (bytes, str)):
        raw = body.encode() if isinstance(body, str) else body
        return Response(status, raw, str(p.get("content_type", "application/json")), headers)
    return json_response(status, body, headers)


def fault_result(
    fault: Fault,
    *,
    provider: str | None,
    batch_id: str | None,
    normal: Callable[[], Result],
    upstream: bool = False,
) -> Result:
    """What the request gets under `fault`; `normal()` runs the real handler (side effects).

    `upstream`: the emulator plays an OpenAI-compatible provider behind the gateway, so its own
    server errors are OpenAI's error objects rather than Portkey's failure bodies.
    """
    p = fault.params
    kind = fault.kind
    if kind == "slow":
        return Delay(float(p.get("delay", 1.0)))
    if kind == "raw_cancel_body":
        result = normal()
        if isinstance(result, Response) and result.status == 200:
            return json_response(200, p.get("body", {}), _headers(fault))
        return result
    if p.get("perform"):
        normal()  # the work happens, only the answer is lost or mangled
    if kind == "drop":
        return Drop(reset=bool(p.get("reset", False)))
    if kind == "rate_limit":
        return _rate_limit(fault, provider)
    if kind == "server_error":
        status = int(p.get("status", 500))
        if upstream:
            message = p.get("message", _UPSTREAM_SERVER_ERROR_MESSAGES.get(status, "Server error"))
            return openai_error(
                status, message, provider=None, type="server_error", headers=_headers(fault)
            )
        message = p.get("message", _SERVER_ERROR_MESSAGES.get(status, "Something went wrong"))
        response = gateway_failure(status, message)
        response.headers = _headers(fault)
        return response
    if kind == "malformed_json":
        body = dumps({"id": batch_id or "batch_x", "object": "batch", "status": "in_progress"})
        return Response(200, body[: len(body) // 2], "application/json", _headers(fault))
    if kind == "empty_body":
        return Response(200, b"", "application/json", _headers(fault))
    if kind == "html":
        status = int(p.get("status", 502))
        reason = _SERVER_ERROR_MESSAGES.get(status, "Error") if status != 500 else "Server Error"
        page = _HTML.format(status=status, reason=reason).encode()
        return Response(status, page, "text/html", _headers(fault))
    return _status(fault)
