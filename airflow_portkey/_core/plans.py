"""Plans: the batch API's calls as generators that yield requests and waits (sans-IO, in the
style of h11). Transports only drive them, so each rule here exists once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, TypeVar

from airflow_portkey._core.answers import (
    api_error,
    is_batch_object,
    parse_json,
    read_batch,
    redact,
    redact_json,
)
from airflow_portkey._core.batches import Batch, BatchStatus
from airflow_portkey._core.endpoints import (
    cancel_batch_request,
    get_batch_request,
    list_batches_request,
)
from airflow_portkey._core.errors import (
    PortkeyAPIError,
    PortkeyConflictError,
    PortkeyHeldBackError,
    PortkeyProtocolError,
    PortkeyResponseError,
    PortkeyTransportError,
)
from airflow_portkey._core.ids import same_id
from airflow_portkey._core.messages import (
    ApiRequest,
    HeldBack,
    Note,
    Outcome,
    Plan,
    TransportFailure,
    Wait,
)
from airflow_portkey._core.retry import RetryPolicy, retry_delay

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CallContext:
    """What every plan of one hook shares."""

    conn_id: str
    secrets: tuple[str, ...] = ()
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    clock: Callable[[], float] = time.monotonic
    rng: Callable[[], float] = random.random


# A transport failure's detail is shown up to this many characters, cut after its secrets are
# redacted: cut first, a secret straddling the cut would leave its first characters in clear.
MAX_DETAIL = 300


def _outcome_text(outcome: Outcome, secrets: tuple[str, ...]) -> str:
    """What an outcome was, as a log line or an error says it: the one place a transport's
    detail (library text that may quote what the server sent) becomes shown text."""
    if isinstance(outcome, TransportFailure):
        return f"{outcome.kind} error ({redact(outcome.detail, secrets)[:MAX_DETAIL]})"
    if outcome.status_code < 300:
        return f"unreadable {outcome.status_code} answer"
    return f"status {outcome.status_code}"


def send(ctx: CallContext, request: ApiRequest, about: str | None = None) -> Plan[Any]:
    """Send ``request`` until it gives a usable answer; return its JSON, any secret it echoes
    redacted (None when streamed).

    ``about``: the batch id asked for. An answer that is another batch is a protocol error,
    retried on a fresh connection.
    """
    started = ctx.clock()
    attempt = 0
    while True:
        outcome = yield request
        assert outcome is not None, "a transport must answer every request"
        if isinstance(outcome, HeldBack):
            raise PortkeyHeldBackError(
                f"{request.describe()} was not sent: connection {ctx.conn_id!r}'s rate budget "
                f"held it back until its deadline ({outcome.seconds:.1f}s more were needed)"
            )
        try:
            return _read(ctx, request, outcome, about)
        except (PortkeyTransportError, PortkeyAPIError) as error:
            if isinstance(error, PortkeyProtocolError):
                request = request._replace(fresh_connection=True)
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
                f"{request.describe()} got {_outcome_text(outcome, ctx.secrets)}; "
                f"retry {attempt} of {ctx.policy.max_retries} in {delay:.2f}s"
            )
            yield Wait(delay, reason)


def _read(ctx: CallContext, request: ApiRequest, outcome: Outcome, about: str | None) -> Any:
    if isinstance(outcome, TransportFailure):
        raise PortkeyTransportError(
            f"{request.describe()} failed: {_outcome_text(outcome, ctx.secrets)}",
            kind=outcome.kind,
        )
    if outcome.status_code >= 300:
        raise api_error(outcome, request, conn_id=ctx.conn_id, secrets=ctx.secrets)
    if request.stream:
        return None
    body, text = parse_json(outcome, request)
    # A batch in the answer must be the one asked for (some cancels answer {"id": ...} alone).
    if about is not None and is_batch_object(body):
        answered = body["id"]
        if answered != about and not same_id(answered, about):
            raise PortkeyProtocolError(
                redact(
                    # The id redacted before repr escapes it (an escaped key matches no
                    # redaction).
                    f"Portkey's answer to {request.describe()} is about "
                    f"{redact(answered, ctx.secrets)!r}, "
                    f"not {about!r} (a connection out of step)",
                    ctx.secrets,
                )
            )
    return redact_json(body, text, ctx.secrets)


def get_batch(
    ctx: CallContext, batch_id: str, *, share_for: float = 0.0, deadline: float | None = None
) -> Plan[Batch]:
    """Read a batch; a wait may take another wait's read up to ``share_for`` seconds old, and
    the rate budget may hold it back until ``deadline`` (Unix time), not beyond."""
    request = get_batch_request(batch_id, share_for=share_for, deadline=deadline)
    body = yield from send(ctx, request, about=batch_id)
    return read_batch(body, request)


def cancel_batch(ctx: CallContext, batch_id: str) -> Plan[Batch]:
    """Cancel, idempotently: a batch already cancelling or finished is success, not an error."""
    request = cancel_batch_request(batch_id)
    try:
        body = yield from send(ctx, request, about=batch_id)
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


def list_page(
    ctx: CallContext, limit: int, after: str | None, visited: AbstractSet[str] = frozenset()
) -> Plan[Page]:
    """One page of the listing, starting after ``after``; ``visited``: the cursors of the
    pages already read. A next cursor among them (a server whose cursor does not move, or
    goes back) ends the listing, said as a warning, instead of reading the same pages for ever.
    """
    request = list_batches_request(limit, after)
    body = yield from send(ctx, request)
    items = body.get("data") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise PortkeyResponseError(f"Portkey's answer to {request.describe()} is not a list")
    batches = tuple(read_batch(item, request) for item in items)
    more = bool(body.get("has_more")) and batches
    last_id = body.get("last_id") or (batches[-1].id if batches else None)
    next_after = str(last_id) if more and last_id else None
    if next_after is not None and (next_after == after or next_after in visited):
        yield Note(
            logging.WARNING,
            f"Portkey's answer to {request.describe()} says the next page starts after "
            f"{next_after!r}, a page already read; the listing stops here",
        )
        next_after = None
    return Page(batches, next_after)
