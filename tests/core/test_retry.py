"""Retries at the sans-IO seam: which answers and failures are retried, how long each wait is
(full jitter, Retry-After in seconds, milliseconds or an HTTP date, capped), the attempt limit
and the time budget, the typed error at the end, and a create repeated only when Portkey cannot
have acted on it. Every rule of ``_core.retry`` and ``_core.plans.send``, with a fake clock.
"""

from __future__ import annotations

import random
import time
from email.utils import formatdate
from typing import Any

import pytest

from airflow_portkey._core import endpoints, plans
from airflow_portkey._core.messages import ApiRequest, ApiResponse, TransportFailure, Upload
from airflow_portkey._core.retry import RetryPolicy, parse_retry_after, retry_delay
from airflow_portkey.batches import BatchStatus
from airflow_portkey.exceptions import (
    PortkeyAPIError,
    PortkeyAuthError,
    PortkeyBudgetExceededError,
    PortkeyConflictError,
    PortkeyNotFoundError,
    PortkeyRateLimitError,
    PortkeyResponseError,
    PortkeyServerError,
    PortkeyTimeoutError,
    PortkeyTransportError,
    PortkeyValidationError,
)

from .script import CONN_ID, FakeClock, answer, batch, context, drive, error, failure

GET = endpoints.get_batch_request("batch_1")
CREATE = endpoints.create_batch_request("file-in", "/v1/chat/completions", "24h", None)
THREE_ATTEMPTS = RetryPolicy(max_retries=2)

# -- the retry decision, one outcome at a time ---------------------------------------------

POLICY = RetryPolicy(max_retries=5, budget=100, backoff_base=0.5, backoff_max=4, retry_after_cap=60)
DROPPED = TransportFailure("dropped", "reset by peer")


def response(status: int, **headers: str) -> ApiResponse:
    return ApiResponse(status, headers, b"")


@pytest.mark.parametrize(("attempt", "bound"), [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 4.0)])
def test_full_jitter_bounds(attempt: int, bound: float) -> None:
    assert retry_delay(POLICY, attempt, DROPPED, 0.0, rng=lambda: 0.0) == 0.0
    assert retry_delay(POLICY, attempt, DROPPED, 0.0, rng=lambda: 0.5) == pytest.approx(bound / 2)
    assert retry_delay(POLICY, attempt, DROPPED, 0.0, rng=lambda: 1.0) == pytest.approx(bound)
    rng = random.Random(attempt).random
    delays = [retry_delay(POLICY, attempt, DROPPED, 0.0, rng=rng) for _ in range(500)]
    assert all(d is not None and 0 <= d <= bound for d in delays)
    assert len({round(d or 0, 6) for d in delays}) > 400  # spread out, not a fixed step


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses_back_off(status: int) -> None:
    assert retry_delay(POLICY, 1, response(status), 0.0, rng=lambda: 0.5) == pytest.approx(0.5)


@pytest.mark.parametrize("status", [300, 304, 400, 401, 403, 404, 409, 412, 422, 501])
def test_other_statuses_are_not_retried(status: int) -> None:
    assert retry_delay(POLICY, 0, response(status), 0.0, rng=lambda: 0.5) is None


@pytest.mark.parametrize("kind", ["connect", "timeout", "dropped"])
def test_transport_failures_are_retried(kind: str) -> None:
    assert retry_delay(POLICY, 0, TransportFailure(kind, "x"), 0.0, rng=lambda: 1.0) == 0.5


def test_refused_certificate_is_not_retried() -> None:
    refused = TransportFailure("tls", "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    assert retry_delay(POLICY, 0, refused, 0.0, rng=lambda: 1.0) is None


def test_unreadable_success_is_retried_like_a_drop() -> None:
    assert retry_delay(POLICY, 0, response(200), 0.0, rng=lambda: 1.0) == 0.5


@pytest.mark.parametrize(
    ("headers", "delay"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "3600"}, 60.0),
        ({"retry-after-ms": "999999"}, 60.0),
        ({"retry-after": "soon"}, 1.0),  # unreadable: back off as usual (rng 1.0, attempt 1)
    ],
)
def test_server_hint_wins_and_is_capped(headers: dict[str, str], delay: float) -> None:
    assert retry_delay(POLICY, 1, response(429, **headers), 0.0, rng=lambda: 1.0) == delay


def test_attempts_stop_at_max_retries() -> None:
    assert retry_delay(POLICY, 4, DROPPED, 0.0, rng=lambda: 0.1) is not None
    assert retry_delay(POLICY, 5, DROPPED, 0.0, rng=lambda: 0.1) is None
    assert retry_delay(RetryPolicy(max_retries=0), 0, DROPPED, 0.0) is None


def test_budget_stops_a_retry_that_would_overrun_it() -> None:
    hinted = response(503, **{"retry-after": "10"})
    assert retry_delay(POLICY, 0, hinted, 90.0) == 10.0  # ends exactly at the budget
    assert retry_delay(POLICY, 0, hinted, 90.5) is None
    assert retry_delay(POLICY, 0, DROPPED, 99.9, rng=lambda: 1.0) is None
    assert retry_delay(RetryPolicy(budget=0), 0, DROPPED, 0.0, rng=lambda: 0.5) is None


def test_retry_policy_refuses_negative_values() -> None:
    for name in ("max_retries", "budget", "backoff_base", "backoff_max", "retry_after_cap"):
        with pytest.raises(ValueError, match=name):
            RetryPolicy(**{name: -1})


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, None),
        ({"retry-after": ""}, None),
        ({"retry-after": "5"}, 5.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "later"}, None),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "-5"}, 0.0),
        ({"retry-after-ms": "x", "retry-after": "2"}, 2.0),
        ({"retry-after-ms": "100", "retry-after": "2"}, 0.1),
    ],
)
def test_parse_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert parse_retry_after(headers) == seconds


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    ahead = {"retry-after": formatdate(now + 30, usegmt=True)}
    assert parse_retry_after(ahead, now=now) == 30.0
    past = {"retry-after": formatdate(now - 30, usegmt=True)}
    assert parse_retry_after(past, now=now) == 0.0
    local = {"retry-after": formatdate(now + 5, localtime=False)}  # "-0000" zone
    assert parse_retry_after(local, now=now) == 5.0


# -- the send plan: what is retried, how often, and what it raises -------------------------

RETRIED: dict[str, Any] = {
    "408": error(408, "Request timed out."),
    "429": error(429, "Rate limit reached."),
    "500": error(500, "Something went wrong"),
    "502": answer(502, b"<html><title>502 Bad Gateway</title></html>"),
    "503": error(503, "Service Unavailable"),
    "504": error(504, "Gateway Timeout"),
    "connect": failure("connect", "connection refused"),
    "timeout": failure("timeout", "read timed out"),
    "dropped": failure("dropped", "connection reset by peer"),
    "malformed-json": answer(200, b"{not json"),
    "empty-body": answer(200, b""),
    "json-nested-too-deep": answer(200, b"[" * 65 + b"]" * 65),
}


@pytest.mark.parametrize("times", [1, 2])
@pytest.mark.parametrize("name", list(RETRIED))
def test_a_passing_burst_is_retried_and_the_answer_read(name: str, times: int) -> None:
    clock = FakeClock()
    ctx = context(clock, policy=THREE_ATTEMPTS)
    run = drive(plans.get_batch(ctx, "batch_1"), [RETRIED[name]] * times + [batch("batch_1")])
    assert (run.result.id, run.result.status) == ("batch_1", BatchStatus.IN_PROGRESS)
    assert run.calls == ["GET /batches/batch_1"] * (times + 1)
    assert len(run.waits) == times


LASTING: dict[str, tuple[Any, type[Exception], str]] = {
    "408": (error(408, "Request timed out."), PortkeyTimeoutError, "Request timed out."),
    "429": (error(429, "Rate limit reached."), PortkeyRateLimitError, "Rate limit reached."),
    "500": (error(500, "Something went wrong"), PortkeyServerError, "Something went wrong"),
    "502-html": (
        answer(502, b"<html><head><title>502 Bad Gateway</title></head></html>"),
        PortkeyServerError,
        "502 Bad Gateway",
    ),
    "503": (error(503, "Service Unavailable"), PortkeyServerError, "Service Unavailable"),
    "504": (error(504, "Gateway Timeout"), PortkeyServerError, "Gateway Timeout"),
    "connect": (failure("connect", "refused"), PortkeyTransportError, "connect error (refused)"),
    "timeout": (failure("timeout", "read"), PortkeyTransportError, "timeout error (read)"),
    "dropped": (failure("dropped", "reset"), PortkeyTransportError, "dropped error (reset)"),
    "malformed-json": (answer(200, b"{not json"), PortkeyResponseError, "not JSON (9 bytes)"),
    "empty-body": (answer(200, b""), PortkeyResponseError, "not JSON (0 bytes)"),
    "json-nested-too-deep": (
        answer(200, b"[" * 65 + b"]" * 65),
        PortkeyResponseError,
        "JSON nested deeper than 64 levels (130 bytes)",
    ),
}


@pytest.mark.parametrize("name", list(LASTING))
def test_a_lasting_fault_raises_a_typed_error_after_every_attempt(name: str) -> None:
    outcome, error_class, words = LASTING[name]
    run = drive(
        plans.get_batch(context(policy=THREE_ATTEMPTS), "batch_1"), [outcome] * 3, raises=True
    )
    assert type(run.error) is error_class
    assert "GET /batches/batch_1" in str(run.error)
    assert words in str(run.error)
    assert run.error.__notes__ == ["gave up after 3 attempts"]
    assert len(run.requests) == 3
    if isinstance(run.error, PortkeyAPIError):
        assert str(run.error).startswith(f"Portkey answered {name[:3]} on GET /batches/batch_1: ")


def test_each_retry_says_what_failed_and_how_long_it_waits() -> None:
    run = drive(
        plans.get_batch(context(policy=THREE_ATTEMPTS), "batch_1"),
        [error(503, **{"retry-after": "0"}), failure("dropped", "reset"), batch("batch_1")],
    )
    assert [wait.reason for wait in run.waits] == [
        "GET /batches/batch_1 got status 503; retry 1 of 2 in 0.00s",
        "GET /batches/batch_1 got dropped error (reset); retry 2 of 2 in 1.00s",
    ]


def test_a_refused_certificate_is_not_retried() -> None:
    refused = failure("tls", "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    run = drive(plans.get_batch(context(), "batch_1"), [refused], raises=True)
    assert type(run.error) is PortkeyTransportError
    assert "CERTIFICATE_VERIFY_FAILED" in str(run.error)
    assert run.waits == [] and not hasattr(run.error, "__notes__")


NOT_RETRIED: dict[int, type[PortkeyAPIError]] = {
    400: PortkeyValidationError,
    401: PortkeyAuthError,
    403: PortkeyAuthError,
    404: PortkeyNotFoundError,
    409: PortkeyConflictError,
    412: PortkeyBudgetExceededError,
    422: PortkeyValidationError,
    501: PortkeyServerError,
}


@pytest.mark.parametrize("shape", ["provider", "gateway"])
@pytest.mark.parametrize("status", list(NOT_RETRIED))
def test_other_error_statuses_fail_at_once_with_a_typed_error(status: int, shape: str) -> None:
    message = f"refused with {status}"
    if shape == "provider":
        body: dict[str, Any] = {
            "error": {"message": message, "type": "invalid_request_error", "code": f"c{status}"},
            "provider": "openai",
        }
    else:
        body = {"status": "failure", "message": message}
    run = drive(plans.get_batch(context(), "batch_1"), [answer(status, body)], raises=True)
    raised = run.error
    assert type(raised) is NOT_RETRIED[status]
    assert (raised.status_code, raised.portkey_message) == (status, message)
    assert (raised.method, raised.path) == ("GET", "/batches/batch_1")
    if shape == "provider":
        assert (raised.provider, raised.code, raised.error_type) == (
            "openai",
            f"c{status}",
            "invalid_request_error",
        )
    if status in (401, 403, 404):
        assert raised.hint is not None and repr(CONN_ID) in raised.hint
        assert repr(CONN_ID) in str(raised)
    assert not hasattr(raised, "__notes__")
    assert len(run.requests) == 1 and run.waits == []


# -- waits: full jitter, the server's hint, the cap ---------------------------------------


def test_waits_grow_as_full_jitter_bounds() -> None:
    """The fake jitter draws its maximum: the waits are the bounds, doubling up to the cap."""
    policy = RetryPolicy(max_retries=6, budget=1000, backoff_base=0.5, backoff_max=4)
    run = drive(
        plans.get_batch(context(policy=policy, rng=1.0), "batch_1"),
        [failure()] * 6 + [batch("batch_1")],
    )
    assert run.waited == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    half = drive(
        plans.get_batch(context(policy=policy, rng=0.5), "batch_1"),
        [failure()] * 3 + [batch("batch_1")],
    )
    assert half.waited == [0.25, 0.5, 1.0]


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "0.3"}, 0.3),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "30"}, 0.25),
        ({"retry-after": "3600"}, 60.0),
        ({"retry-after-ms": "999999"}, 60.0),
    ],
    ids=["seconds", "fraction", "ms", "ms-wins", "capped", "ms-capped"],
)
@pytest.mark.parametrize("status", [429, 503])
def test_the_wait_is_the_servers_retry_after(
    status: int, headers: dict[str, str], seconds: float
) -> None:
    run = drive(
        plans.get_batch(context(rng=0.0), "batch_1"),
        [answer(status, b"{}", **headers), batch("batch_1")],
    )
    assert run.waited == [seconds]


def test_retry_after_as_an_http_date() -> None:
    ahead = formatdate(time.time() + 30, usegmt=True)  # whole seconds: 29 to 30 s from now
    run = drive(
        plans.get_batch(context(rng=0.0), "batch_1"),
        [answer(429, b"{}", retry_after=ahead), batch("batch_1")],
    )
    (waited,) = run.waited
    assert 28.0 <= waited <= 30.0


def test_retry_after_cap_comes_from_the_policy() -> None:
    policy = RetryPolicy(max_retries=1, retry_after_cap=0.25)
    run = drive(
        plans.get_batch(context(policy=policy), "batch_1"),
        [answer(429, b"{}", retry_after="3600"), batch("batch_1")],
    )
    assert run.waited == [0.25]


# -- attempts and budget ----------------------------------------------------------------------


@pytest.mark.parametrize("max_retries", [0, 1, 4])
def test_max_retries_more_attempts_and_no_more(max_retries: int) -> None:
    policy = RetryPolicy(max_retries=max_retries)
    run = drive(
        plans.get_batch(context(policy=policy), "batch_1"),
        [error(503)] * (max_retries + 1),
        raises=True,
    )
    assert isinstance(run.error, PortkeyServerError)
    assert len(run.requests) == max_retries + 1
    if max_retries:
        assert run.error.__notes__ == [f"gave up after {max_retries + 1} attempts"]
    else:
        assert not hasattr(run.error, "__notes__")


def test_the_budget_stops_a_retry_that_would_overrun_it() -> None:
    """Retry-After 40 s within a 100 s budget: two waits fit (40, 80), a third would not."""
    clock = FakeClock()
    policy = RetryPolicy(max_retries=10, budget=100)
    run = drive(
        plans.get_batch(context(clock, policy=policy), "batch_1"),
        [error(429, retry_after="40")] * 3,
        clock,
        raises=True,
    )
    assert isinstance(run.error, PortkeyRateLimitError)
    assert run.waited == [40.0, 40.0]
    assert run.error.__notes__ == ["gave up after 3 attempts"]


def test_a_zero_budget_means_no_wait_at_all() -> None:
    policy = RetryPolicy(budget=0)
    run = drive(
        plans.get_batch(context(policy=policy), "batch_1"),
        [error(429, retry_after="0.5")],
        raises=True,
    )
    assert isinstance(run.error, PortkeyRateLimitError)
    assert run.waits == []


# -- a create is repeated only when Portkey cannot have acted on it ------------------------


@pytest.mark.parametrize(
    "outcome",
    [
        failure("dropped", "reset after the request was sent"),
        failure("timeout", "read timed out"),
        error(500),
        error(502),
        error(503),
        error(504),
        error(408),
        answer(200, b"{not json"),
    ],
    ids=["dropped", "read-timeout", "500", "502", "503", "504", "408", "unreadable-200"],
)
def test_a_create_portkey_may_have_acted_on_is_not_repeated(outcome: Any) -> None:
    run = drive(plans.send(context(), CREATE), [outcome], raises=True)
    assert run.error is not None
    assert run.calls == ["POST /batches"]
    assert run.waits == []


@pytest.mark.parametrize(
    "outcome",
    [failure("connect", "connection refused"), error(429, retry_after="1")],
    ids=["connect-refused", "429"],
)
def test_a_create_portkey_surely_did_not_act_on_is_repeated(outcome: Any) -> None:
    created = answer(200, {"id": "batch_new", "status": "validating"})
    run = drive(plans.send(context(), CREATE), [outcome, created])
    assert run.result["id"] == "batch_new"
    assert run.calls == ["POST /batches", "POST /batches"]


@pytest.mark.parametrize(
    "request_",
    [
        endpoints.cancel_batch_request("batch_1"),
        endpoints.upload_file_request(Upload(b"{}\n", "input.jsonl"), "batch"),
        endpoints.list_batches_request(10, None),
        endpoints.batch_output_request("batch_1"),
    ],
    ids=["cancel", "upload", "list", "download"],
)
def test_idempotent_requests_are_repeated_after_a_drop(request_: ApiRequest) -> None:
    reply = ApiResponse(200, {}, b'{"id": "x", "status": "cancelling"}')
    run = drive(plans.send(context(), request_), [failure("dropped", "reset"), reply])
    assert run.calls == [request_.describe()] * 2


def test_transport_failure_text_never_holds_a_secret() -> None:
    secret = "sk-in-the-detail"
    run = drive(
        plans.get_batch(context(policy=RetryPolicy(max_retries=0), secrets=(secret,)), "b"),
        [failure("connect", f"proxy said no to {secret}")],
        raises=True,
    )
    assert secret not in str(run.error)
    assert "***" in str(run.error)


def test_a_retry_warning_never_holds_a_secret_a_transport_failure_echoes() -> None:
    secret = "sk-proj-SECRET-" + "a1b2c3d4" * 6
    ctx = context(FakeClock(), policy=RetryPolicy(max_retries=1), secrets=(secret,))
    run = drive(
        plans.get_batch(ctx, "batch_1"),
        [failure("malformed", f"bad status line 'HTTP/1.1 2x0 {secret}'"), batch()],
    )
    assert [wait.reason.split("; ")[0] for wait in run.waits] == [
        "GET /batches/batch_1 got malformed error (bad status line 'HTTP/1.1 2x0 ***')"
    ]


def test_a_failure_detail_is_cut_after_its_secrets_are_redacted() -> None:
    # A secret straddling the cut: cut first, its first 40 characters would stay in clear.
    secret = "sk-proj-SECRET-" + "a1b2c3d4" * 6
    detail = "x" * (plans.MAX_DETAIL - 10) + secret + "y" * 1_000_000
    ctx = context(FakeClock(), policy=RetryPolicy(max_retries=0), secrets=(secret,))
    run = drive(plans.get_batch(ctx, "batch_1"), [failure("malformed", detail)], raises=True)
    shown = str(run.error)
    assert secret[:8] not in shown and "x***y" in shown
    assert len(shown) < plans.MAX_DETAIL + 100
