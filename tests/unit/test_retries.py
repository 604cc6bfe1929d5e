"""Retries over real HTTP: each fault kind of the emulator, met by both transports, is retried or
raised as the core decides; the hook sleeps the waits the plan asks for and takes its limits
from the connection. Which statuses and failures are retried, the jitter bounds, Retry-After
in every form, the budget and the typed error of each status are proven once in
tests/core/test_retry.py; here one case stands for each and shows the wiring."""

from __future__ import annotations

import itertools
import re
import socket
from typing import Any

import pytest

from airflow_portkey._core.retry import RetryPolicy
from airflow_portkey.batches import Batch, BatchStatus
from airflow_portkey.exceptions import (
    PortkeyAPIError,
    PortkeyAuthError,
    PortkeyBudgetExceededError,
    PortkeyConflictError,
    PortkeyNotFoundError,
    PortkeyRateLimitError,
    PortkeyResponseError,
    PortkeyServerError,
    PortkeyTransportError,
    PortkeyValidationError,
)
from airflow_portkey.hooks.portkey import PortkeyHook
from airflow_portkey.testing import PortkeyEmulator

from .support import CONN_ID, MakeHook, run_async

MODES = ["sync", "async"]


def get(hook: PortkeyHook, batch_id: str, mode: str) -> Batch:
    if mode == "sync":
        return hook.get_batch(batch_id)
    return run_async(hook, lambda: hook.aget_batch(batch_id))


def gaps(emulator: PortkeyEmulator) -> list[float]:
    """Seconds between the arrivals of consecutive requests at the emulator."""
    arrivals = [r.received_at for r in emulator.requests]
    return [later - earlier for earlier, later in itertools.pairwise(arrivals)]


def openai_body(message: str, code: str | None = None) -> dict[str, Any]:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return {"error": error, "provider": "openai"}


# Faults that are retried: (kind, fault params, connection extras).
TRANSIENT: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "429": ("rate_limit", {"retry_after": None}, {}),
    "503": ("server_error", {"status": 503}, {}),
    "drop": ("drop", {}, {}),
    "reset": ("drop", {"reset": True}, {}),
    "slow": ("slow", {"delay": 0.8}, {"request_timeout": 0.25}),
    "malformed-json": ("malformed_json", {}, {}),
    "empty-body": ("empty_body", {}, {}),
    "html-502": ("html", {"status": 502}, {}),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(TRANSIENT))
def test_passing_burst_is_retried(
    emulator: PortkeyEmulator, make_hook: MakeHook, name: str, mode: str
) -> None:
    times = 2
    kind, params, extras = TRANSIENT[name]
    batch_id = emulator.add_batch(status="in_progress")["id"]
    emulator.add_fault(kind, times=times, **params)
    hook = make_hook(**extras)  # 2 retries, milliseconds apart
    batch = get(hook, batch_id, mode)
    assert (batch.id, batch.status) == (batch_id, BatchStatus.IN_PROGRESS)
    assert [(r.method, r.path) for r in emulator.requests] == [
        ("GET", f"/v1/batches/{batch_id}")
    ] * (times + 1)


# Lasting outages: (kind, params, extras, exception class, status code, Portkey's message).
LASTING: dict[str, tuple[str, dict[str, Any], dict[str, Any], type[PortkeyAPIError], int, str]] = {
    "429": (
        "rate_limit",
        {"retry_after": None, "message": "Rate limit reached for gpt-4o."},
        {},
        PortkeyRateLimitError,
        429,
        "openai error: Rate limit reached for gpt-4o.",
    ),
    "503": ("server_error", {"status": 503}, {}, PortkeyServerError, 503, "Service Unavailable"),
    "html-502": ("html", {"status": 502}, {}, PortkeyServerError, 502, "502 Bad Gateway"),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(LASTING))
def test_lasting_error_status_raises_typed_error_after_all_retries(
    emulator: PortkeyEmulator, make_hook: MakeHook, name: str, mode: str
) -> None:
    kind, params, extras, error_class, status, message = LASTING[name]
    batch_id = emulator.add_batch()["id"]
    emulator.add_fault(kind, times=None, **params)
    with pytest.raises(error_class) as raised:
        get(make_hook(**extras), batch_id, mode)
    error = raised.value
    assert error.status_code == status
    assert error.portkey_message == message
    assert (error.method, error.path) == ("GET", f"/batches/{batch_id}")
    assert str(error).startswith(f"Portkey answered {status} on GET /batches/{batch_id}: {message}")
    assert error.__notes__ == ["gave up after 3 attempts"]
    assert len(emulator.requests) == 3


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("kind", "params", "extras", "error_class", "words"),
    [
        ("drop", {}, {}, PortkeyTransportError, ["failed:", "error"]),
        ("drop", {"reset": True}, {}, PortkeyTransportError, ["failed:", "error"]),
        ("slow", {"delay": 0.8}, {"request_timeout": 0.25}, PortkeyTransportError, ["timeout"]),
        ("malformed_json", {}, {}, PortkeyResponseError, ["200", "not JSON"]),
        ("empty_body", {}, {}, PortkeyResponseError, ["200", "not JSON", "(0 bytes)"]),
    ],
    ids=["drop", "reset", "read-timeout", "malformed-json", "empty-body"],
)
def test_lasting_transport_failure_raises_after_all_retries(
    emulator: PortkeyEmulator,
    make_hook: MakeHook,
    mode: str,
    kind: str,
    params: dict[str, Any],
    extras: dict[str, Any],
    error_class: type[Exception],
    words: list[str],
) -> None:
    batch_id = emulator.add_batch()["id"]
    emulator.add_fault(kind, times=None, **params)
    with pytest.raises(error_class) as raised:
        get(make_hook(**extras), batch_id, mode)
    assert type(raised.value) is error_class
    message = str(raised.value)
    assert f"GET /batches/{batch_id}" in message
    for word in words:
        assert word in message
    assert raised.value.__notes__ == ["gave up after 3 attempts"]
    assert len(emulator.requests) == 3


@pytest.mark.parametrize("mode", MODES)
def test_connection_refused_raises_transport_error(make_hook: MakeHook, mode: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port any more.
    hook = make_hook(host=f"http://127.0.0.1:{port}/v1", connect_timeout=1)
    with pytest.raises(PortkeyTransportError) as raised:
        get(hook, "batch_abc", mode)
    assert type(raised.value) is PortkeyTransportError
    assert "GET /batches/batch_abc failed: connect error" in str(raised.value)
    assert raised.value.__notes__ == ["gave up after 3 attempts"]


def test_retries_are_logged(
    emulator: PortkeyEmulator, hook: PortkeyHook, logs: pytest.LogCaptureFixture
) -> None:
    batch_id = emulator.add_batch()["id"]
    emulator.add_fault("server_error", status=503, headers={"Retry-After": "0"})
    emulator.add_fault("drop", times=1)
    hook.get_batch(batch_id)
    warnings = [r.getMessage() for r in logs.records if r.levelname == "WARNING"]
    assert len(warnings) == 2
    assert warnings[0] == f"GET /batches/{batch_id} got status 503; retry 1 of 2 in 0.00s"
    assert re.fullmatch(
        rf"GET /batches/{batch_id} got (connect|dropped) error \(.+\); retry 2 of 2 in 0\.0\ds",
        warnings[1],
    )


# -- Retry-After ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_retry_after_seconds_is_honoured(
    emulator: PortkeyEmulator, make_hook: MakeHook, mode: str
) -> None:
    batch_id = emulator.add_batch()["id"]
    emulator.add_fault("rate_limit", retry_after=0.4)
    get(make_hook(), batch_id, mode)
    (gap,) = gaps(emulator)
    assert gap >= 0.4  # the test hooks' own backoff is 0.01-0.02 s: only Retry-After waits this


# -- budget and the connection's retry settings ----------------------------------------------


def test_retry_budget_stops_retrying(emulator: PortkeyEmulator, make_hook: MakeHook) -> None:
    """Retry-After 1 s within a 1.6 s budget: one retry fits (if the first answer comes within
    0.6 s, even on a loaded machine), a second never would."""
    batch_id = emulator.add_batch()["id"]
    emulator.add_fault("rate_limit", times=None, retry_after=1.0)
    hook = make_hook(retry_policy=RetryPolicy(max_retries=10, budget=1.6))
    with pytest.raises(PortkeyRateLimitError) as raised:
        hook.get_batch(batch_id)
    assert raised.value.status_code == 429
    assert raised.value.__notes__ == ["gave up after 2 attempts"]
    assert len(emulator.requests) == 2


def test_connection_max_retries_is_used(emulator: PortkeyEmulator, make_hook: MakeHook) -> None:
    batch_id = emulator.add_batch()["id"]
    emulator.add_fault("server_error", times=None, headers={"Retry-After": "0"})
    with pytest.raises(PortkeyServerError):
        make_hook(retry_policy=None, max_retries=1).get_batch(batch_id)
    assert len(emulator.requests) == 2


def test_connection_max_retries_zero_means_one_attempt(
    emulator: PortkeyEmulator, make_hook: MakeHook
) -> None:
    batch_id = emulator.add_batch()["id"]
    emulator.add_fault("server_error", times=None, headers={"Retry-After": "0"})
    with pytest.raises(PortkeyServerError) as raised:
        make_hook(retry_policy=None, max_retries=0).get_batch(batch_id)
    assert not hasattr(raised.value, "__notes__")
    assert len(emulator.requests) == 1


def test_connection_retry_budget_zero_means_no_wait(
    emulator: PortkeyEmulator, make_hook: MakeHook
) -> None:
    batch_id = emulator.add_batch()["id"]
    emulator.add_fault("rate_limit", times=None, retry_after=0.5)
    with pytest.raises(PortkeyRateLimitError):
        make_hook(retry_policy=None, retry_budget=0).get_batch(batch_id)
    assert len(emulator.requests) == 1


def test_cancel_is_retried_and_stays_idempotent(
    emulator: PortkeyEmulator, hook: PortkeyHook
) -> None:
    """A cancel whose answer was lost is sent again; the second finds the batch cancelling."""
    batch_id = emulator.add_batch(status="in_progress")["id"]
    emulator.add_fault("drop", route="batches.cancel", perform=True)
    emulator.add_fault("server_error", route="batches.cancel", status=503)
    batch = hook.cancel_batch(batch_id)
    assert batch.status is BatchStatus.CANCELLING
    assert [r.route for r in emulator.requests] == ["batches.cancel"] * 3


# -- not retried -----------------------------------------------------------------------------

NOT_RETRIED: dict[int, type[PortkeyAPIError]] = {
    400: PortkeyValidationError,
    401: PortkeyAuthError,
    403: PortkeyAuthError,
    404: PortkeyNotFoundError,
    409: PortkeyConflictError,
    412: PortkeyBudgetExceededError,
    422: PortkeyValidationError,
}


@pytest.mark.parametrize(
    ("status", "shape", "mode"),
    [(404, "provider", "sync"), (404, "provider", "async"), (422, "gateway", "sync")],
)
def test_other_4xx_fail_at_once_with_typed_error(
    emulator: PortkeyEmulator, make_hook: MakeHook, status: int, shape: str, mode: str
) -> None:
    batch_id = emulator.add_batch()["id"]
    message = f"refused with {status}"
    if shape == "provider":
        body: dict[str, Any] = openai_body(message, code=f"code_{status}")
    else:
        body = {"status": "failure", "message": message}
    emulator.add_fault("status", times=None, status=status, body=body)
    with pytest.raises(NOT_RETRIED[status]) as raised:
        get(make_hook(), batch_id, mode)
    error = raised.value
    assert type(error) is NOT_RETRIED[status]
    assert (error.status_code, error.portkey_message) == (status, message)
    if shape == "provider":
        assert (error.provider, error.code, error.error_type) == (
            "openai",
            f"code_{status}",
            "invalid_request_error",
        )
    if status in (401, 403, 404):
        assert error.hint is not None and repr(CONN_ID) in error.hint
        assert repr(CONN_ID) in str(error)
    assert not hasattr(error, "__notes__")
    assert len(emulator.requests) == 1


@pytest.mark.parametrize("mode", MODES)
def test_wrong_api_key_is_a_401_naming_the_connection(
    emulator: PortkeyEmulator, make_hook: MakeHook, mode: str
) -> None:
    with pytest.raises(PortkeyAuthError) as raised:
        get(make_hook(password="pk-wrong-key"), "batch_abc", mode)
    assert raised.value.status_code == 401
    assert raised.value.portkey_message == "Invalid API Key"
    assert str(raised.value) == (
        "Portkey answered 401 on GET /batches/batch_abc: Invalid API Key (check the API key, "
        f"virtual key and provider key in Airflow connection {CONN_ID!r})"
    )
    assert len(emulator.requests) == 1


def test_wrong_provider_key_is_a_401(emulator: PortkeyEmulator, make_hook: MakeHook) -> None:
    hook = make_hook(provider="openai", provider_api_key="sk-not-the-right-one")
    with pytest.raises(PortkeyAuthError) as raised:
        hook.get_batch("batch_abc")
    assert raised.value.portkey_message == "openai error: Incorrect API key provided"
    assert raised.value.code == "invalid_api_key"
    assert "sk-not-the-right-one" not in str(raised.value)
    assert len(emulator.requests) == 1
