"""Provider misbehaviour as the gateway relays it, and what the hook makes of it."""

from __future__ import annotations

import pytest
import requests

from airflow_portkey.batches import BatchStatus
from airflow_portkey.exceptions import (
    PortkeyNotFoundError,
    PortkeyRateLimitError,
    PortkeyServerError,
)
from airflow_portkey.hooks.portkey import PortkeyHook
from airflow_portkey.testing import PortkeyEmulator

SOMETHING_WENT_WRONG = {"status": "failure", "message": "Something went wrong"}


def test_unknown_batch_is_not_found_with_the_gateways_message(
    hook: PortkeyHook, emulator: PortkeyEmulator
) -> None:
    with pytest.raises(PortkeyNotFoundError) as raised:
        hook.get_batch("batch_missing")
    error = raised.value
    assert error.status_code == 404
    assert error.portkey_message == "openai error: No batch found with id 'batch_missing'."
    assert error.provider == "openai"
    assert error.error_type == "invalid_request_error"
    assert len(emulator.requests) == 1  # a 404 is not retried


def test_rate_limit_when_retries_are_off_reads_the_gateways_body(
    make_conn, emulator: PortkeyEmulator
) -> None:
    seeded = emulator.add_batch()
    emulator.add_fault("rate_limit", route="batches.get", retry_after=30)
    hook = PortkeyHook(make_conn("portkey_no_retries", max_retries=0))
    try:
        with pytest.raises(PortkeyRateLimitError) as raised:
            hook.get_batch(seeded["id"])
    finally:
        hook.close()
    error = raised.value
    assert error.status_code == 429
    assert error.portkey_message == (
        "openai error: Rate limit reached for requests. Please try again later."
    )
    assert (error.provider, error.code, error.error_type) == (
        "openai",
        "rate_limit_exceeded",
        "requests",
    )
    assert len(emulator.requests) == 1


@pytest.mark.parametrize(
    ("fault", "params", "status", "body"),
    [
        (
            "server_error",
            {"status": 503},
            503,
            {
                "error": {
                    "message": "openai error: The server is overloaded or not ready yet.",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                },
                "provider": "openai",
            },
        ),
        # An unreadable success body becomes the gateway's own 500.
        ("malformed_json", {}, 500, SOMETHING_WENT_WRONG),
        ("empty_body", {}, 500, SOMETHING_WENT_WRONG),
        # A dropped upstream connection is a 500 whose body holds fetch's error.
        (
            "drop",
            {},
            500,
            {"html-message": "Message: fetch failed Cause: SocketError: other side closed"},
        ),
        # A provider's HTML error page is wrapped as JSON, status kept.
        ("html", {"status": 502}, 502, {"html-message": "<html>\r\n<head><title>502 Bad Gateway"}),
    ],
    ids=["503", "malformed_json", "empty_body", "drop", "html_502"],
)
def test_transient_upstream_failures_are_retried(
    hook: PortkeyHook,
    raw: requests.Session,
    gateway,
    emulator: PortkeyEmulator,
    fault: str,
    params: dict,
    status: int,
    body: dict,
) -> None:
    seeded = emulator.add_batch(status="in_progress")
    emulator.add_fault(fault, route="batches.get", **params)
    r = raw.get(f"{gateway.base_url}/batches/{seeded['id']}")
    assert r.status_code == status
    got = r.json()
    if "html-message" in body:
        assert got["html-message"].startswith(body["html-message"])
    else:
        assert got == body
    emulator.clear_requests()

    emulator.add_fault(fault, route="batches.get", **params)
    assert hook.get_batch(seeded["id"]).status is BatchStatus.IN_PROGRESS
    assert len(emulator.requests) == 2  # the failed read, then the retry


def test_server_error_that_persists_carries_the_gateways_message(
    make_conn, emulator: PortkeyEmulator
) -> None:
    seeded = emulator.add_batch()
    emulator.add_fault("drop", route="batches.get")
    hook = PortkeyHook(make_conn("portkey_no_retries", max_retries=0))
    try:
        with pytest.raises(PortkeyServerError) as raised:
            hook.get_batch(seeded["id"])
    finally:
        hook.close()
    assert raised.value.status_code == 500
    assert "fetch failed" in raised.value.portkey_message


def test_html_message_body_is_read_as_the_message(make_conn, emulator: PortkeyEmulator) -> None:
    seeded = emulator.add_batch()
    emulator.add_fault("drop", route="batches.get")
    hook = PortkeyHook(make_conn("portkey_no_retries", max_retries=0))
    try:
        with pytest.raises(PortkeyServerError) as raised:
            hook.get_batch(seeded["id"])
    finally:
        hook.close()
    assert raised.value.portkey_message.startswith("Message: fetch failed Cause:")


@pytest.mark.parametrize("answer", [{"status": "success"}, {}], ids=["bedrock_cohere", "vertex"])
def test_cancel_answered_without_a_batch_reads_it_again(
    hook: PortkeyHook, emulator: PortkeyEmulator, answer: dict
) -> None:
    seeded = emulator.add_batch(status="in_progress")
    emulator.add_fault("raw_cancel_body", batch_id=seeded["id"], body=answer)
    batch = hook.cancel_batch(seeded["id"])
    assert batch.id == seeded["id"] and batch.status is BatchStatus.CANCELLING
    assert [(r.method, r.route) for r in emulator.requests] == [
        ("POST", "batches.cancel"),
        ("GET", "batches.get"),
    ]
