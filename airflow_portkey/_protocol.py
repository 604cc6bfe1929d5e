"""Portkey's batch API as a protocol without I/O (sans-IO, in the style of h11).

A *plan* is a generator: it yields an :class:`ApiRequest` when it needs one sent, or a
:class:`Wait` when it needs to pause, and receives what the transport got back. The sync
(requests) and async (httpx) transports are thin drivers of the same plans, so the request
building, response reading, error mapping, retry decision and the idempotent-cancel rule
each exist once.
"""

from __future__ import annotations

import email.utils
import json
import random
import re
import ssl
import time
import unicodedata
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

from airflow_portkey.batches import Batch, BatchStatus
from airflow_portkey.exceptions import (
    PortkeyAPIError,
    PortkeyAuthError,
    PortkeyBudgetExceededError,
    PortkeyConflictError,
    PortkeyInvalidBatchIdError,
    PortkeyNotFoundError,
    PortkeyRateLimitError,
    PortkeyResponseError,
    PortkeyServerError,
    PortkeyTimeoutError,
    PortkeyTransportError,
    PortkeyValidationError,
)

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# Messages between plans and transports


@dataclass(frozen=True, slots=True)
class Upload:
    """A file to send as multipart ``file``; a path is reopened on every attempt."""

    content: bytes | Path
    filename: str
    content_type: str = "application/jsonl"

    def read(self) -> bytes:
        return self.content.read_bytes() if isinstance(self.content, Path) else self.content


@dataclass(frozen=True, slots=True)
class ApiRequest:
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

    def describe(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True, slots=True)
class ApiResponse:
    status_code: int
    headers: Mapping[str, str]
    """Lower-case names."""
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class TransportFailure:
    """No HTTP answer: ``kind`` is connect, timeout, dropped, or tls (the TLS handshake or the
    server's certificate was refused: no retry can change that)."""

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


Outcome = ApiResponse | TransportFailure
Plan = Generator[ApiRequest | Wait | Note, Outcome | None, T]

# ---------------------------------------------------------------------------------------------
# Batch ids

MAX_BATCH_ID_LENGTH = 512
_UNSAFE_IN_ID = frozenset("/?#\\")
_PERCENT_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# An id made only of these passes every check below (no '%', space, control or path
# character): one match instead of a loop over its characters, for thousands of ids.
_PLAIN_ID = re.compile(r"[A-Za-z0-9_.~:@!$&'()*+,;=-]+")


def check_batch_id(batch_id: object) -> str:
    """Return the id unchanged, or refuse one that is empty or could reach another path.

    Ids go into the path verbatim: a Bedrock job id is an already URL-encoded ARN that the
    gateway forwards as it is, so encoding it again would break it.
    """
    if (
        type(batch_id) is str
        and len(batch_id) <= MAX_BATCH_ID_LENGTH
        and _PLAIN_ID.fullmatch(batch_id)
        and batch_id not in (".", "..")
    ):
        return batch_id
    if not isinstance(batch_id, str):
        raise PortkeyInvalidBatchIdError(
            f"batch_id must be a string, got {type(batch_id).__name__} {batch_id!r:.80}"
        )
    shown = f"{batch_id!r:.80}"
    if not batch_id.strip():
        raise PortkeyInvalidBatchIdError(f"batch_id is empty or only whitespace: {shown}")
    if len(batch_id) > MAX_BATCH_ID_LENGTH:
        raise PortkeyInvalidBatchIdError(
            f"batch_id is {len(batch_id)} characters long; at most {MAX_BATCH_ID_LENGTH} allowed"
        )
    for char in batch_id:
        if char in _UNSAFE_IN_ID or char.isspace() or unicodedata.category(char)[0] == "C":
            raise PortkeyInvalidBatchIdError(
                f"batch_id {shown} contains {char!r}, which could reach another API path"
            )
    if _PERCENT_ESCAPE.search(batch_id):
        raise PortkeyInvalidBatchIdError(f"batch_id {shown} contains a '%' that is not an escape")
    if unquote(batch_id) in {".", ".."}:
        raise PortkeyInvalidBatchIdError(f"batch_id {shown} is a path segment ('.' or '..')")
    return batch_id


# ---------------------------------------------------------------------------------------------
# Requests


def get_batch_request(batch_id: str) -> ApiRequest:
    return ApiRequest("GET", f"/batches/{check_batch_id(batch_id)}")


def cancel_batch_request(batch_id: str) -> ApiRequest:
    return ApiRequest("POST", f"/batches/{check_batch_id(batch_id)}/cancel")


def batch_output_request(batch_id: str) -> ApiRequest:
    return ApiRequest("GET", f"/batches/{check_batch_id(batch_id)}/output", stream=True)


def file_content_request(file_id: str) -> ApiRequest:
    return ApiRequest("GET", f"/files/{check_batch_id(file_id)}/content", stream=True)


def list_batches_request(limit: int, after: str | None) -> ApiRequest:
    if not 1 <= limit <= 100:
        raise ValueError(f"limit must be between 1 and 100, got {limit}")
    params = {"limit": str(limit)}
    if after:
        params["after"] = after
    return ApiRequest("GET", "/batches", params=params)


def create_batch_request(
    input_file_id: str, endpoint: str, completion_window: str, metadata: Mapping[str, str] | None
) -> ApiRequest:
    for name, value in (
        ("input_file_id", input_file_id),
        ("endpoint", endpoint),
        ("completion_window", completion_window),
    ):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    body: dict[str, Any] = {
        "input_file_id": input_file_id,
        "endpoint": endpoint,
        "completion_window": completion_window,
    }
    if metadata:
        body["metadata"] = dict(metadata)
    # Portkey has no idempotency key for batches: a repeated create may make a second batch.
    return ApiRequest("POST", "/batches", json_body=body, idempotent=False)


def upload_file_request(upload: Upload, purpose: str) -> ApiRequest:
    return ApiRequest("POST", "/files", form={"purpose": purpose}, upload=upload)


# ---------------------------------------------------------------------------------------------
# Responses and errors

_STATUS_ERRORS: dict[int, type[PortkeyAPIError]] = {
    400: PortkeyValidationError,
    401: PortkeyAuthError,
    403: PortkeyAuthError,
    404: PortkeyNotFoundError,
    408: PortkeyTimeoutError,
    409: PortkeyConflictError,
    412: PortkeyBudgetExceededError,
    422: PortkeyValidationError,
    429: PortkeyRateLimitError,
}

_HINTS: dict[int, str] = {
    401: "check the API key, virtual key and provider key in Airflow connection {conn}",
    403: "the key in Airflow connection {conn} is not allowed to do this; check its permissions",
    404: "check the batch id and the base URL (host) of Airflow connection {conn}",
    412: "a Portkey budget or rate limit for this key is exhausted; raise it or wait",
    422: "Portkey refused the request's content; check the task's arguments",
}

_TITLE = re.compile(rb"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Replace every secret in ``text``; the longest first, so a key inside another goes too."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def _error_fields(body: bytes) -> tuple[str, str | None, str | None, str | None]:
    """Message, type, code and provider from any of Portkey's three error body shapes."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        provider = data.get("provider") if isinstance(data.get("provider"), str) else None
        if isinstance(error, dict):
            code = error.get("code")
            return (
                str(error.get("message") or "no message"),
                error.get("type") if isinstance(error.get("type"), str) else None,
                str(code) if code is not None else None,
                provider,
            )
        if isinstance(error, str):
            return error, None, None, provider
        if "message" in data:
            return str(data["message"]), None, None, provider
        wrapped = data.get("html-message")
        if isinstance(wrapped, str):
            # The gateway wraps an upstream's non-JSON answer (an HTML page, a fetch error).
            body = wrapped.encode()
    title = _TITLE.search(body)
    text = (title.group(1) if title else body).decode("utf-8", "replace")
    text = " ".join(_TAGS.sub(" ", text).split())
    return (text[:200] or "empty body"), None, None, None


def api_error(
    response: ApiResponse, request: ApiRequest, *, conn_id: str, secrets: tuple[str, ...]
) -> PortkeyAPIError:
    """The typed error for an error status, carrying Portkey's message (secrets redacted)."""
    status = response.status_code
    message, error_type, code, provider = _error_fields(response.body)
    error_class = _STATUS_ERRORS.get(status) or (
        PortkeyServerError if status >= 500 else PortkeyAPIError
    )
    hint = _HINTS.get(status)
    return error_class(
        redact(message, secrets),
        status_code=status,
        method=request.method,
        path=request.path,
        error_type=error_type,
        code=code,
        provider=provider,
        hint=hint.format(conn=repr(conn_id)) if hint else None,
    )


def parse_json(response: ApiResponse, request: ApiRequest) -> Any:
    try:
        return json.loads(response.body)
    except ValueError:
        raise PortkeyResponseError(
            f"Portkey answered {response.status_code} on {request.describe()} with a body that "
            f"is not JSON ({len(response.body)} bytes)"
        ) from None


def is_batch_object(body: object) -> bool:
    """A real batch, as opposed to the ``{}`` or ``{"status": "success"}`` some cancels return."""
    return (
        isinstance(body, dict)
        and isinstance(body.get("id"), str)
        and "status" in body
        and any(key in body for key in ("created_at", "input_file_id", "endpoint"))
    )


def read_batch(body: object, request: ApiRequest) -> Batch:
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise PortkeyResponseError(f"Portkey's answer to {request.describe()} is not a batch")
    return Batch.from_raw(body)


# ---------------------------------------------------------------------------------------------
# Retries

RETRYABLE_STATUS_CODES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one call tries: ``max_retries`` more attempts within ``budget`` seconds."""

    max_retries: int = 5
    budget: float = 120.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_cap: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {self.max_retries}")
        for name in ("budget", "backoff_base", "backoff_max", "retry_after_cap"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, then ``Retry-After``."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


# Answers that say the server did not act on the request, so even a create may be repeated.
NOT_ACTED_ON_STATUS_CODES = frozenset({429})


def surely_not_acted_on(outcome: Outcome) -> bool:
    if isinstance(outcome, TransportFailure):
        return outcome.kind == "connect"
    return outcome.status_code in NOT_ACTED_ON_STATUS_CODES


def retry_delay(
    policy: RetryPolicy,
    attempt: int,
    outcome: Outcome,
    elapsed: float,
    rng: Callable[[], float] = random.random,
    *,
    idempotent: bool = True,
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or None when the call must not retry.

    Full jitter (a uniform wait up to the exponential bound) keeps many tasks that failed
    together from coming back together; a server's Retry-After wins, capped. A request that
    is not idempotent is repeated only when the server surely did not act on it.
    """
    if attempt >= policy.max_retries:
        return None
    if isinstance(outcome, TransportFailure) and outcome.kind == "tls":
        return None
    if not idempotent and not surely_not_acted_on(outcome):
        return None
    hinted = None
    if isinstance(outcome, ApiResponse):
        if outcome.status_code < 300:
            hinted = None  # an unreadable success body: retry like a dropped connection
        elif outcome.status_code not in RETRYABLE_STATUS_CODES:
            return None
        else:
            hinted = parse_retry_after(outcome.headers)
    if hinted is not None:
        delay = min(hinted, policy.retry_after_cap)
    else:
        delay = rng() * min(policy.backoff_max, policy.backoff_base * 2**attempt)
    if elapsed + delay > policy.budget:
        return None
    return delay


# ---------------------------------------------------------------------------------------------
# Plans


@dataclass(frozen=True, slots=True)
class CallContext:
    """What every plan of one hook shares."""

    conn_id: str
    secrets: tuple[str, ...] = ()
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    clock: Callable[[], float] = time.monotonic
    rng: Callable[[], float] = random.random


def failure_detail(error: BaseException) -> str:
    """What a transport says of an exception in a TransportFailure: its first line, bounded."""
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def ssl_error_in(error: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a library's connection error, if that is what it was.

    requests and httpx wrap it (in urllib3 and httpcore errors); the wrapped text names the
    certificate problem, which the outer text may bury behind a long URL.
    """
    seen: set[int] = set()
    queue: list[object] = [error]
    while queue:
        item = queue.pop(0)
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLError):
            return item
        queue += [*item.args, getattr(item, "reason", None), item.__cause__, item.__context__]
    return None


def _outcome_text(outcome: Outcome) -> str:
    if isinstance(outcome, TransportFailure):
        return f"{outcome.kind} error ({outcome.detail})"
    if outcome.status_code < 300:
        return f"unreadable {outcome.status_code} answer"
    return f"status {outcome.status_code}"


def send(ctx: CallContext, request: ApiRequest) -> Plan[Any]:
    """Send ``request`` until it gives a usable answer; return its JSON (None when streamed)."""
    started = ctx.clock()
    attempt = 0
    while True:
        outcome = yield request
        assert outcome is not None, "a transport must answer every request"
        try:
            return _read(ctx, request, outcome)
        except (PortkeyTransportError, PortkeyAPIError) as error:
            delay = retry_delay(
                ctx.policy,
                attempt,
                outcome,
                ctx.clock() - started,
                ctx.rng,
                idempotent=request.idempotent,
            )
            if delay is None:
                if attempt:
                    error.add_note(f"gave up after {attempt + 1} attempts")
                raise
            attempt += 1
            reason = (
                f"{request.describe()} got {_outcome_text(outcome)}; "
                f"retry {attempt} of {ctx.policy.max_retries} in {delay:.2f}s"
            )
            yield Wait(delay, reason)


def _read(ctx: CallContext, request: ApiRequest, outcome: Outcome) -> Any:
    if isinstance(outcome, TransportFailure):
        raise PortkeyTransportError(
            redact(f"{request.describe()} failed: {_outcome_text(outcome)}", ctx.secrets)
        )
    if outcome.status_code >= 300:
        raise api_error(outcome, request, conn_id=ctx.conn_id, secrets=ctx.secrets)
    if request.stream:
        return None
    return parse_json(outcome, request)


def get_batch(ctx: CallContext, batch_id: str) -> Plan[Batch]:
    request = get_batch_request(batch_id)
    body = yield from send(ctx, request)
    return read_batch(body, request)


def cancel_batch(ctx: CallContext, batch_id: str) -> Plan[Batch]:
    """Cancel, idempotently: a batch already cancelling or finished is success, not an error."""
    request = cancel_batch_request(batch_id)
    try:
        body = yield from send(ctx, request)
    except PortkeyConflictError as conflict:
        # 409 "Cannot cancel a batch with status 'completed'": what matters is where it is now.
        batch = yield from get_batch(ctx, batch_id)
        if batch.is_terminal or batch.status is BatchStatus.CANCELLING:
            return batch
        raise conflict
    if is_batch_object(body):
        return read_batch(body, request)
    # Bedrock and Cohere answer {"status": "success"}, Vertex {}: read the real status.
    return (yield from get_batch(ctx, batch_id))


@dataclass(frozen=True, slots=True)
class Page:
    batches: tuple[Batch, ...]
    next_after: str | None


def list_page(ctx: CallContext, limit: int, after: str | None) -> Plan[Page]:
    request = list_batches_request(limit, after)
    body = yield from send(ctx, request)
    items = body.get("data") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise PortkeyResponseError(f"Portkey's answer to {request.describe()} is not a list")
    batches = tuple(read_batch(item, request) for item in items)
    more = bool(body.get("has_more")) and batches
    last_id = body.get("last_id") or (batches[-1].id if batches else None)
    return Page(batches, str(last_id) if more and last_id else None)
