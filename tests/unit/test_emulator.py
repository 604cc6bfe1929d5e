"""The Portkey emulator, exercised over real HTTP on loopback (requests, httpx, raw sockets)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from airflow_portkey.testing import Fault, PortkeyEmulator, RecordedRequest
from airflow_portkey.testing.pytest_plugin import (  # noqa: F401 - fixtures used below
    portkey_connection,
    portkey_emulator,
)

HOSTED = {"x-portkey-api-key": "pk-test", "x-portkey-provider": "@openai"}
ARN = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Amodel-invocation-job%2Fabc123"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def emu() -> Iterator[PortkeyEmulator]:
    # Long durations and a manual clock make every step deterministic on a slow machine.
    with PortkeyEmulator(
        validating_s=10, in_progress_s=100, finalizing_s=10, cancel_delay_s=5
    ) as e:
        yield e


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.headers.update(HOSTED)
        yield s


def _get(http: requests.Session, emu: PortkeyEmulator, batch_id: str) -> dict[str, Any]:
    r = http.get(f"{emu.base_url}/batches/{batch_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _cancel(http: requests.Session, emu: PortkeyEmulator, batch_id: str) -> requests.Response:
    return http.post(f"{emu.base_url}/batches/{batch_id}/cancel")


def _openai_error(message: str, code: str | None = None, **extra: Any) -> dict[str, Any]:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return {"error": error, **extra}


# -- lifecycle ----------------------------------------------------------------------------


def test_lifecycle_follows_the_clock(emu: PortkeyEmulator, http: requests.Session) -> None:
    b = emu.add_batch(status="validating", hold=False, total=10)
    assert b["id"].startswith("batch_") and b["object"] == "batch"
    assert b["status"] == "validating" and b["in_progress_at"] is None
    emu.advance(10.5)
    b = _get(http, emu, b["id"])
    assert b["status"] == "in_progress" and b["in_progress_at"] is not None
    assert b["request_counts"]["completed"] == 0
    emu.advance(50)
    b = _get(http, emu, b["id"])
    assert b["request_counts"] == {"total": 10, "completed": 5, "failed": 0}
    assert b["output_file_id"] is None
    emu.advance(50)
    b = _get(http, emu, b["id"])
    assert b["status"] == "finalizing" and b["request_counts"]["completed"] == 10
    emu.advance(10)
    b = _get(http, emu, b["id"])
    assert b["status"] == "completed"
    assert b["output_file_id"].startswith("file-")
    assert b["created_at"] < b["in_progress_at"] < b["finalizing_at"] < b["completed_at"]
    assert b["expires_at"] == b["created_at"] + 86400
    assert abs(b["completed_at"] - emu.now()) < 2  # seconds for OpenAI
    assert set(b) >= {"endpoint", "errors", "input_file_id", "completion_window", "metadata"}


def test_held_batch_stays_and_outcomes(emu: PortkeyEmulator, http: requests.Session) -> None:
    held = emu.add_batch(status="in_progress")
    failing = emu.add_batch(status="validating", hold=False, outcome="failed")
    expiring = emu.add_batch(status="in_progress", hold=False, outcome="expired")
    emu.advance(1000)
    assert _get(http, emu, held["id"])["status"] == "in_progress"
    failed = _get(http, emu, failing["id"])
    assert failed["status"] == "failed" and failed["failed_at"] is not None
    assert failed["errors"]["data"][0]["code"] == "invalid_request"
    expired = _get(http, emu, expiring["id"])
    assert expired["status"] == "expired" and expired["expired_at"] is not None
    assert 0 < expired["request_counts"]["completed"] < 10
    assert expired["output_file_id"] is not None  # the finished part is still downloadable


def test_a_held_batch_never_shows_every_request_done(
    emu: PortkeyEmulator, http: requests.Session
) -> None:
    # All done means finalizing next: a batch held in progress keeps its last request open.
    held = emu.add_batch(status="in_progress", total=10)
    emu.advance(1000)
    got = _get(http, emu, held["id"])
    assert got["status"] == "in_progress"
    assert got["request_counts"] == {"total": 10, "completed": 9, "failed": 0}


def test_a_cancelled_batch_keeps_the_counts_it_had_when_cancelled(
    emu: PortkeyEmulator, http: requests.Session
) -> None:
    running = emu.add_batch(status="in_progress", hold=False, total=10)
    emu.advance(55)  # 55 of in_progress's 100 s
    assert _cancel(http, emu, running["id"]).status_code == 200
    emu.advance(1000)
    got = _get(http, emu, running["id"])
    assert got["status"] == "cancelled"
    assert got["request_counts"] == {"total": 10, "completed": 5, "failed": 0}


def test_set_status_and_raw_status(emu: PortkeyEmulator, http: requests.Session) -> None:
    b = emu.add_batch(status="in_progress", raw_status="InProgress")
    assert _get(http, emu, b["id"])["status"] == "InProgress"
    emu.set_status(b["id"], "completed", raw_status="some_new_word")
    assert _get(http, emu, b["id"])["status"] == "some_new_word"
    emu.set_status(b["id"], "finalizing", request_counts={"completed": 7})
    got = _get(http, emu, b["id"])
    assert got["status"] == "finalizing"
    assert got["request_counts"] == {"total": 10, "completed": 7, "failed": 0}
    assert emu.get_batch(b["id"]) == got
    with pytest.raises(KeyError):
        emu.get_batch("batch_missing")


def test_speed_scales_the_clock() -> None:
    with PortkeyEmulator(speed=100, validating_s=1, in_progress_s=5, finalizing_s=1) as emu:
        b = emu.add_batch(status="validating", hold=False)
        t0 = emu.now()
        time.sleep(0.1)  # 10 emulated seconds
        assert emu.now() - t0 >= 9
        assert emu.get_batch(b["id"])["status"] == "completed"


def test_provider_header_picks_the_flavour_of_created_batches() -> None:
    with PortkeyEmulator() as emu, requests.Session() as http:
        http.headers.update({"x-portkey-api-key": "k", "Authorization": "Bearer aws"})
        http.headers["x-portkey-provider"] = "bedrock"
        f = http.post(
            f"{emu.base_url}/files",
            files={"file": ("a.jsonl", _jsonl(1))},
            data={"purpose": "batch"},
        ).json()
        body = {"input_file_id": f["id"], "endpoint": "/v1/chat/completions"}
        b = http.post(f"{emu.base_url}/batches", json={**body, "completion_window": "24h"}).json()
        assert b["id"].startswith("arn%3Aaws%3Abedrock") and b["status"] == "submitted"
        assert http.get(f"{emu.base_url}/batches/{b['id']}").json()["id"] == b["id"]


# -- cancel -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["validating", "in_progress", "finalizing"])
def test_cancel_cancellable(emu: PortkeyEmulator, http: requests.Session, status: str) -> None:
    b = emu.add_batch(status=status, hold=False)
    r = _cancel(http, emu, b["id"])
    assert r.status_code == 200
    assert r.json()["status"] == "cancelling" and r.json()["cancelling_at"] is not None
    emu.advance(4)
    assert _get(http, emu, b["id"])["status"] == "cancelling"  # not terminal yet
    emu.advance(2)
    done = _get(http, emu, b["id"])
    assert done["status"] == "cancelled" and done["cancelled_at"] >= done["cancelling_at"]


def test_cancel_while_cancelling_is_unchanged(emu: PortkeyEmulator, http: requests.Session) -> None:
    b = emu.add_batch(status="cancelling")
    r = _cancel(http, emu, b["id"])
    assert r.status_code == 200 and r.json() == _get(http, emu, b["id"])
    assert r.json()["status"] == "cancelling"


@pytest.mark.parametrize("status", ["completed", "failed", "expired", "cancelled"])
def test_cancel_terminal_is_409(emu: PortkeyEmulator, http: requests.Session, status: str) -> None:
    b = emu.add_batch(status=status)
    r = _cancel(http, emu, b["id"])
    assert r.status_code == 409
    message = f"openai error: Cannot cancel a batch with status '{status}'."
    assert r.json() == _openai_error(message, provider="openai")
    assert _get(http, emu, b["id"])["status"] == status


def test_cancel_terminal_upstream_body_is_openais() -> None:
    with PortkeyEmulator(mode="upstream") as emu:
        b = emu.add_batch(status="completed")
        r = requests.post(
            f"{emu.base_url}/batches/{b['id']}/cancel", headers={"Authorization": "Bearer sk"}
        )
        assert r.status_code == 409
        assert r.text == (
            '{"error":{"message":"Cannot cancel a batch with status \'completed\'.",'
            '"type":"invalid_request_error","param":null,"code":null}}'
        )


def test_unknown_batch_and_route(emu: PortkeyEmulator, http: requests.Session) -> None:
    r = http.get(f"{emu.base_url}/batches/batch_nope")
    assert r.status_code == 404
    message = "openai error: No batch found with id 'batch_nope'."
    assert r.json() == _openai_error(message, provider="openai")
    r = http.get(f"{emu.root_url}/v1/nothing/here")
    assert r.status_code == 404 and r.json() == {"message": "Not Found", "ok": False}
    assert http.delete(f"{emu.base_url}/batches/batch_nope").status_code == 404


# -- flavours -----------------------------------------------------------------------------


def test_bedrock_words_ids_and_cancel(emu: PortkeyEmulator, http: requests.Session) -> None:
    b = emu.add_batch(status="validating", hold=False, flavour="bedrock")
    assert b["id"].startswith("arn%3Aaws%3Abedrock") and b["status"] == "submitted"
    assert b["created_at"] > 10**12  # milliseconds
    emu.advance(6)
    assert _get(http, emu, b["id"])["status"] == "scheduled"
    emu.advance(5)
    assert _get(http, emu, b["id"])["status"] == "in_progress"
    listed = http.get(f"{emu.base_url}/batches").json()["data"]
    assert listed[0]["status"] == "InProgress"  # PascalCase in list results
    r = _cancel(http, emu, b["id"])
    assert r.status_code == 200
    assert r.json() == {"status": "success", "object": "batch", "id": b["id"]}
    assert _get(http, emu, b["id"])["status"] == "stopping"
    emu.advance(5)
    assert _get(http, emu, b["id"])["status"] == "stopped"
    partial = emu.add_batch(
        status="completed", flavour="bedrock", request_counts={"completed": 8, "failed": 2}
    )
    assert partial["status"] == "partially_completed"


def test_cohere_and_vertex(emu: PortkeyEmulator, http: requests.Session) -> None:
    c = emu.add_batch(status="in_progress", flavour="cohere")
    assert c["status"] == "processing" and c["created_at"] > 10**12
    assert emu.add_batch(status="completed", flavour="cohere")["status"] == "complete"
    r = _cancel(http, emu, c["id"])
    assert r.json() == {"status": "success", "object": "batch", "id": c["id"]}
    v = emu.add_batch(status="in_progress", flavour="vertex")
    assert v["status"] == "in_progress" and v["created_at"] > 10**12
    r = _cancel(http, emu, v["id"])
    assert r.status_code == 200 and r.json() == {}
    assert _get(http, emu, v["id"])["status"] == "cancelling"


def test_arn_ids_are_matched_verbatim(emu: PortkeyEmulator, http: requests.Session) -> None:
    emu.add_batch(id=ARN, flavour="bedrock")
    assert _get(http, emu, ARN)["id"] == ARN
    with httpx.Client(headers=HOSTED) as client:
        assert client.get(f"{emu.base_url}/batches/{ARN}").status_code == 200
    decoded = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc123"
    assert http.get(f"{emu.base_url}/batches/{decoded}").status_code == 404
    seen = emu.requests_to(route="batches.get", batch_id=ARN)
    assert len(seen) == 2 and seen[0].path == f"/v1/batches/{ARN}"


# -- headers ------------------------------------------------------------------------------

_FAIL = "failure"


@pytest.mark.parametrize(
    ("headers", "status", "body"),
    [
        ({}, 401, {"status": _FAIL, "message": "Portkey API Key Not Found"}),
        ({"x-portkey-api-key": "wrong", "x-portkey-provider": "@openai"}, 401, None),
        (
            {"x-portkey-api-key": "pk-right"},
            400,
            {
                "status": _FAIL,
                "message": "Either x-portkey-config or x-portkey-provider header is required",
            },
        ),
        (
            {"x-portkey-api-key": "pk-right", "x-portkey-config": "{not json"},
            400,
            {"status": _FAIL, "message": "Invalid config passed"},
        ),
        ({"x-portkey-api-key": "pk-right", "x-portkey-config": "pc-abc"}, 200, None),
        ({"x-portkey-api-key": "pk-right", "x-portkey-config": '{"provider":"x"}'}, 200, None),
        ({"x-portkey-api-key": "pk-right", "x-portkey-virtual-key": "vk"}, 200, None),
        ({"x-portkey-api-key": "pk-right", "x-portkey-provider": "@prod-openai"}, 200, None),
        ({"x-portkey-api-key": "pk-right", "x-portkey-provider": "openai"}, 401, None),
        (
            {
                "x-portkey-api-key": "pk-right",
                "x-portkey-provider": "openai",
                "Authorization": "Bearer sk-wrong",
            },
            401,
            _openai_error(
                "openai error: Incorrect API key provided", "invalid_api_key", provider="openai"
            ),
        ),
        (
            {
                "x-portkey-api-key": "pk-right",
                "x-portkey-provider": "openai",
                "Authorization": "Bearer sk-right",
            },
            200,
            None,
        ),
    ],
)
def test_hosted_header_checks(headers: dict[str, str], status: int, body: Any) -> None:
    with PortkeyEmulator(api_key="pk-right", provider_api_key="sk-right") as emu:
        b = emu.add_batch()
        r = requests.get(f"{emu.base_url}/batches/{b['id']}", headers=headers)
        assert r.status_code == status, r.text
        if body is not None:
            assert r.json() == body
        if status == 401 and headers.get("x-portkey-api-key") == "wrong":
            assert r.json() == {"status": _FAIL, "message": "Invalid API Key"}
        if headers.get("x-portkey-provider") == "openai" and "Authorization" not in headers:
            assert r.json()["provider"] == "openai"
            assert r.json()["error"]["message"].startswith("openai error: You didn't provide")


def test_upstream_header_checks() -> None:
    with PortkeyEmulator(mode="upstream", provider_api_key="sk-up") as emu:
        url = f"{emu.base_url}/batches/{emu.add_batch()['id']}"
        missing = requests.get(url)
        assert missing.status_code == 401 and "provider" not in missing.json()
        wrong = requests.get(url, headers={"Authorization": "Bearer sk-other"})
        assert wrong.status_code == 401
        assert wrong.json() == _openai_error("Incorrect API key provided", "invalid_api_key")
        ok = requests.get(url, headers={"Authorization": "Bearer sk-up"})
        assert ok.status_code == 200 and ok.json()["status"] == "in_progress"


# -- faults -------------------------------------------------------------------------------


def test_status_fault_matching_and_order(emu: PortkeyEmulator, http: requests.Session) -> None:
    a = emu.add_batch()["id"]
    b = emu.add_batch()["id"]
    fault = emu.add_fault("status", times=2, batch_id=a, status=418, body={"x": 1})
    emu.add_fault("status", route="batches.get", status=503, headers={"X-Test": "yes"})
    r = http.get(f"{emu.base_url}/batches/{b}")
    assert r.status_code == 503 and r.headers["X-Test"] == "yes"
    assert http.post(f"{emu.base_url}/batches/{a}/cancel").status_code == 418
    r = http.get(f"{emu.base_url}/batches/{a}")
    assert r.status_code == 418 and r.json() == {"x": 1}
    assert isinstance(fault, Fault) and fault.hits == 2 and not fault.active
    assert http.get(f"{emu.base_url}/batches/{a}").status_code == 200
    forever = emu.add_fault("status", times=None, method="post", status=500)
    for _ in range(3):
        assert http.post(f"{emu.base_url}/batches/{b}/cancel").status_code == 500
    assert http.get(f"{emu.base_url}/batches/{b}").status_code == 200
    assert forever.hits == 3
    emu.clear_faults()
    assert http.post(f"{emu.base_url}/batches/{b}/cancel").status_code == 200


def test_rate_limit_fault_headers(emu: PortkeyEmulator, http: requests.Session) -> None:
    b = emu.add_batch()["id"]
    url = f"{emu.base_url}/batches/{b}"
    emu.add_fault("rate_limit", retry_after=2)
    emu.add_fault("rate_limit", retry_after=3, retry_after_http_date=True)
    emu.add_fault("rate_limit", retry_after_ms=250)
    r = http.get(url)
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert r.json()["provider"] == "openai"
    r = http.get(url)
    when = email.utils.parsedate_to_datetime(r.headers["Retry-After"]).timestamp()
    assert 0 < when - time.time() <= 4
    r = http.get(url)
    assert r.headers["retry-after-ms"] == "250" and "Retry-After" not in r.headers


def test_server_error_html_malformed_empty(emu: PortkeyEmulator, http: requests.Session) -> None:
    url = f"{emu.base_url}/batches/{emu.add_batch()['id']}"
    emu.add_fault("server_error", status=502)
    emu.add_fault("html")
    emu.add_fault("malformed_json")
    emu.add_fault("empty_body")
    r = http.get(url)
    assert r.status_code == 502 and r.json() == {"status": "failure", "message": "Bad Gateway"}
    r = http.get(url)
    assert r.status_code == 502 and r.headers["Content-Type"] == "text/html"
    assert r.text.startswith("<html>")
    r = http.get(url)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        json.loads(r.text)
    r = http.get(url)
    assert r.status_code == 200 and r.content == b"" and r.headers["Content-Length"] == "0"
    assert http.get(url).json()["status"] == "in_progress"


def test_upstream_server_errors_are_openai_error_objects() -> None:
    """Behind the gateway the emulator is the provider: its 5xx bodies are OpenAI's, which the
    gateway then prefixes ("openai error: ...") like any provider error."""
    with PortkeyEmulator(mode="upstream", provider_api_key="sk-up") as emu:
        url = f"{emu.base_url}/batches/{emu.add_batch()['id']}"
        auth = {"Authorization": "Bearer sk-up"}
        emu.add_fault("server_error", status=503, headers={"Retry-After": "2"})
        emu.add_fault("server_error")
        emu.add_fault("server_error", status=502, message="upstream down")
        r = requests.get(url, headers=auth)
        assert r.status_code == 503 and r.headers["Retry-After"] == "2"
        assert r.json() == {
            "error": {
                "message": "The server is overloaded or not ready yet.",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
        r = requests.get(url, headers=auth)
        assert r.status_code == 500 and "provider" not in r.json()
        assert r.json()["error"]["message"].startswith("The server had an error")
        r = requests.get(url, headers=auth)
        assert r.status_code == 502 and r.json()["error"]["message"] == "upstream down"
        assert requests.get(url, headers=auth).status_code == 200


def test_drop_fault(emu: PortkeyEmulator, http: requests.Session) -> None:
    b = emu.add_batch()["id"]
    emu.add_fault("drop")
    with pytest.raises(requests.ConnectionError):
        http.get(f"{emu.base_url}/batches/{b}")
    assert _get(http, emu, b)["status"] == "in_progress"
    emu.add_fault("drop", route="batches.cancel", perform=True)  # the answer is lost, not the work
    with pytest.raises(requests.ConnectionError):
        _cancel(http, emu, b)
    assert _get(http, emu, b)["status"] == "cancelling"


def test_slow_fault_does_not_block_others(emu: PortkeyEmulator) -> None:
    slow_id = emu.add_batch()["id"]
    fast_id = emu.add_batch()["id"]
    # 2 s: room for the fast request to be answered first even on a loaded machine.
    emu.add_fault("slow", batch_id=slow_id, delay=2.0)
    result: dict[str, Any] = {}

    def slow_call() -> None:
        t0 = time.monotonic()
        r = requests.get(f"{emu.base_url}/batches/{slow_id}", headers=HOSTED)
        result.update(status=r.status_code, elapsed=time.monotonic() - t0)

    thread = threading.Thread(target=slow_call)
    thread.start()
    time.sleep(0.1)
    r = requests.get(f"{emu.base_url}/batches/{fast_id}", headers=HOSTED)
    # The fast answer came while the slow one was still being held back.
    assert r.status_code == 200 and thread.is_alive()
    thread.join(5)
    assert result["status"] == 200 and result["elapsed"] >= 1.9
    assert emu.counts["batches.get"] == 2  # a delayed request is counted once


def test_raw_cancel_body_still_cancels(emu: PortkeyEmulator, http: requests.Session) -> None:
    b = emu.add_batch()["id"]
    emu.add_fault("raw_cancel_body", body={"status": "success"})
    r = _cancel(http, emu, b)
    assert r.status_code == 200 and r.json() == {"status": "success"}
    assert _get(http, emu, b)["status"] == "cancelling"
    with pytest.raises(ValueError):
        emu.add_fault("no_such_kind")
    with pytest.raises(ValueError):
        emu.add_fault("status", route="batches.nope")


# -- files, create, output ----------------------------------------------------------------


def _jsonl(n: int) -> bytes:
    lines = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{i}"}]},
        }
        for i in range(n)
    ]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def test_files_create_and_output(emu: PortkeyEmulator, http: requests.Session) -> None:
    data = _jsonl(3)
    r = http.post(
        f"{emu.base_url}/files",
        files={"file": ("in.jsonl", data, "application/jsonl")},
        data={"purpose": "batch"},
    )
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["id"].startswith("file-") and f["object"] == "file" and f["bytes"] == len(data)
    assert f["filename"] == "in.jsonl" and f["purpose"] == "batch" and f["status"] == "processed"
    assert http.get(f"{emu.base_url}/files/{f['id']}").json() == f
    assert http.get(f"{emu.base_url}/files/{f['id']}/content").content == data
    body = {"input_file_id": f["id"], "endpoint": "/v1/chat/completions"}
    r = http.post(f"{emu.base_url}/batches", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "completion_window"
    body["completion_window"] = "24h"
    r = http.post(f"{emu.base_url}/batches", json={**body, "input_file_id": "file-nope"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input_file_id"
    r = http.post(f"{emu.base_url}/batches", json={**body, "metadata": {"dag": "d1"}})
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["status"] == "validating" and b["metadata"] == {"dag": "d1"}
    assert b["request_counts"]["total"] == 3 and b["input_file_id"] == f["id"]
    out = http.get(f"{emu.base_url}/batches/{b['id']}/output")
    assert out.status_code == 400 and "error" in out.json()
    emu.advance(200)
    b = _get(http, emu, b["id"])
    assert b["status"] == "completed"
    out = http.get(f"{emu.base_url}/batches/{b['id']}/output")
    lines = [json.loads(line) for line in out.text.splitlines()]
    assert [line["custom_id"] for line in lines] == ["req-0", "req-1", "req-2"]
    answer = lines[1]["response"]
    assert answer["status_code"] == 200 and lines[1]["error"] is None
    assert answer["body"]["choices"][0]["message"]["content"] == "echo: q1"
    via_file = http.get(f"{emu.base_url}/files/{b['output_file_id']}/content")
    assert via_file.content == out.content
    assert http.get(f"{emu.base_url}/files/{b['output_file_id']}").json()["bytes"] == len(
        out.content
    )


def test_an_output_is_the_same_bytes_on_every_download(
    emu: PortkeyEmulator, http: requests.Session
) -> None:
    """As a stored file is: its answers are stamped with when the batch finished, not with
    the download's time (two downloads a second apart differed)."""
    b = emu.add_batch(status="completed", total=3)
    first = http.get(f"{emu.base_url}/batches/{b['id']}/output")
    emu.advance(3600)
    again = http.get(f"{emu.base_url}/files/{b['output_file_id']}/content")
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    stamps = {json.loads(line)["response"]["body"]["created"] for line in first.text.splitlines()}
    assert stamps == {_get(http, emu, b["id"])["completed_at"]}


def test_output_lines_and_chunked_upload(emu: PortkeyEmulator) -> None:
    b = emu.add_batch(status="in_progress", output_lines=[{"custom_id": "x"}, '{"custom_id":"y"}'])
    with httpx.Client(headers=HOSTED) as client:
        out = client.get(f"{emu.base_url}/batches/{b['id']}/output")
        assert out.text == '{"custom_id":"x"}\n{"custom_id":"y"}\n'
        boundary = "bnd"
        parts = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"'
                f"\r\n\r\n"
            ).encode()
            + _jsonl(2)
            + f"\r\n--{boundary}--\r\n".encode()
        )
        r = client.post(
            f"{emu.base_url}/files",
            content=iter([parts[:50], parts[50:]]),  # an iterator body is sent chunked
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert r.status_code == 200 and r.json()["bytes"] == len(_jsonl(2))
        assert emu.requests_to(route="files.create")[0].headers["transfer-encoding"] == "chunked"


def test_list_pagination(emu: PortkeyEmulator, http: requests.Session) -> None:
    ids = [emu.add_batch()["id"] for _ in range(5)]
    page = http.get(f"{emu.base_url}/batches", params={"limit": 2}).json()
    assert page["object"] == "list" and page["has_more"] is True
    assert [b["id"] for b in page["data"]] == [ids[4], ids[3]]
    assert page["first_id"] == ids[4] and page["last_id"] == ids[3]
    seen = [b["id"] for b in page["data"]]
    while page["has_more"]:
        page = http.get(
            f"{emu.base_url}/batches", params={"limit": 2, "after": page["last_id"]}
        ).json()
        seen += [b["id"] for b in page["data"]]
    assert seen == ids[::-1]
    assert len(http.get(f"{emu.base_url}/batches").json()["data"]) == 5
    assert http.get(f"{emu.base_url}/batches", params={"limit": 101}).status_code == 400


# -- control API, recording, CLI ----------------------------------------------------------


def test_control_api_over_http(emu: PortkeyEmulator, http: requests.Session) -> None:
    ctl = f"{emu.root_url}/_emulator"
    many = requests.post(f"{ctl}/batches", json={"count": 3, "status": "validating"}).json()
    assert len(many["data"]) == 3
    one = requests.post(f"{ctl}/batches", json={"id": "batch_ctl", "hold": False}).json()
    assert one["id"] == "batch_ctl" and one["status"] == "in_progress"
    r = requests.post(f"{ctl}/status", json={"batch_id": "batch_ctl", "status": "completed"})
    assert r.json()["status"] == "completed"
    assert (
        requests.post(f"{ctl}/status", json={"batch_id": "nope", "status": "x"}).status_code == 404
    )
    assert requests.post(f"{ctl}/batches", json={"bogus": 1}).status_code == 400
    fault = requests.post(f"{ctl}/faults", json={"kind": "status", "status": 503}).json()
    assert fault["kind"] == "status" and fault["params"] == {"status": 503}
    assert http.get(f"{emu.base_url}/batches/batch_ctl").status_code == 503
    requests.post(f"{ctl}/faults", json={"kind": "status", "status": 503})
    assert requests.delete(f"{ctl}/faults").json() == {"ok": True}
    before = emu.now()
    assert requests.post(f"{ctl}/advance", json={"seconds": 100}).json()["now"] >= before + 100
    assert requests.get(f"{ctl}/counts").json() == {"batches.get": 1}
    recorded = requests.get(f"{ctl}/requests").json()["data"]
    assert [r["path"] for r in recorded] == ["/v1/batches/batch_ctl"]  # control not recorded
    assert requests.post(f"{ctl}/reset").json() == {"ok": True}
    assert http.get(f"{emu.base_url}/batches/batch_ctl").status_code == 404
    assert emu.counts == {"batches.get": 1}


def test_recording(http: requests.Session) -> None:
    with PortkeyEmulator() as emu:
        b = emu.add_batch()["id"]
        http.get(f"{emu.base_url}/batches", params={"limit": "3"}, headers={"X-Trace": "T"})
        http.post(f"{emu.base_url}/batches", json={"input_file_id": "f"})
        http.get(f"{emu.base_url}/batches/{b}")
        first, second, third = emu.requests
        assert isinstance(first, RecordedRequest)
        assert first.path == "/v1/batches" and first.query == {"limit": "3"}
        assert first.route == "batches.list" and first.headers["x-trace"] == "T"
        assert second.method == "POST" and second.json() == {"input_file_id": "f"}
        assert third.batch_id == b and third.route == "batches.get"
        assert emu.requests_to(method="post") == [second]
        emu.clear_requests()
        assert emu.requests == [] and emu.counts == {}
    with PortkeyEmulator(record=False) as emu:
        http.get(f"{emu.base_url}/batches")
        http.get(f"{emu.root_url}/elsewhere")
        assert emu.requests == [] and emu.counts == {"batches.list": 1, "unknown": 1}


def test_raw_socket_pipelining_and_continue(emu: PortkeyEmulator) -> None:
    b = emu.add_batch()["id"]
    head = f"GET /v1/batches/{b} HTTP/1.1\r\nHost: x\r\nx-portkey-api-key: k\r\n"
    head += "x-portkey-provider: @openai\r\n"
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        sock.sendall((head + "\r\n" + head + "Connection: close\r\n\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2 and b"Connection: close" in data
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"hello")
        assert sock.recv(100).startswith(b"HTTP/1.1 401")  # no API key


def test_cli_starts_prints_the_connection_to_use_and_stops_on_sigterm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(
        [sys.executable, "-m", "airflow_portkey.testing", "--port", "0", "--api-key", "pk-x"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line.startswith("Portkey emulator listening on http://127.0.0.1:")
            base = line.rsplit(" ", 1)[1]
            assert base.endswith("/v1")
            assert requests.get(base[: -len("/v1")] + "/_emulator/health").json()["ok"] is True
            # The printed line works as it is: the shell reads the connection it sets.
            export = proc.stdout.readline().strip()
            assert export.startswith("export AIRFLOW_CONN_PORTKEY_DEFAULT='{")
            shell = subprocess.run(
                ["bash", "-c", f'{export}; printf %s "$AIRFLOW_CONN_PORTKEY_DEFAULT"'],
                capture_output=True,
                text=True,
                check=True,
            )
            conn = json.loads(shell.stdout)
            assert (conn["conn_type"], conn["host"], conn["password"]) == ("portkey", base, "pk-x")
            monkeypatch.setenv("AIRFLOW_CONN_PORTKEY_DEFAULT", shell.stdout)
            from airflow_portkey.hooks.portkey import PortkeyHook

            assert list(PortkeyHook().list_batches()) == []  # the key and host are accepted
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


# -- scale, packaging ---------------------------------------------------------------------


def test_500_concurrent_keepalive_pollers() -> None:
    # One client per poller, as triggers do; a shared SSL context keeps client setup cheap.
    ctx = ssl.create_default_context()
    with PortkeyEmulator(record=False) as emu:
        ids = [emu.add_batch()["id"] for _ in range(500)]

        async def poll(batch_id: str) -> int:
            async with httpx.AsyncClient(
                headers=HOSTED, timeout=10, verify=ctx, trust_env=False
            ) as client:
                ok = 0
                for _ in range(2):  # the second poll reuses the kept-alive connection
                    r = await client.get(f"{emu.base_url}/batches/{batch_id}")
                    ok += r.status_code == 200 and r.json()["id"] == batch_id
                return ok

        async def main() -> list[int]:
            return await asyncio.gather(*(poll(i) for i in ids))

        # How fast is for bench/; here every poll must simply be answered right.
        results = asyncio.run(main())
        assert sum(results) == 1000
        assert emu.counts == {"batches.get": 1000}


def test_import_is_light_and_independent() -> None:
    # Only what importing the emulator adds counts: the parent package is someone else's.
    code = (
        "import sys, airflow_portkey\n"
        "before = set(sys.modules)\n"
        "import airflow_portkey.testing as t\n"
        "light = 'asyncio' not in set(sys.modules) - before\n"
        "t.PortkeyEmulator, t.RecordedRequest, t.Fault\n"
        "new = set(sys.modules) - before\n"
        "bad = [m for m in new if m.split('.')[0] == 'airflow'\n"
        "       or (m.startswith('airflow_portkey.') and '.testing' not in m)]\n"
        "print(light, sorted(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.strip() == "True []"


def test_pytest_fixtures(portkey_connection: PortkeyEmulator) -> None:  # noqa: F811
    conn = json.loads(os.environ["AIRFLOW_CONN_PORTKEY_DEFAULT"])
    assert conn["conn_type"] == "portkey" and conn["host"] == portkey_connection.base_url
    assert conn["password"] == "pk-test" and conn["extra"]["provider"] == "openai"
    r = requests.get(
        f"{conn['host']}/batches",
        headers={
            "x-portkey-api-key": conn["password"],
            "x-portkey-provider": conn["extra"]["provider"],
            "Authorization": f"Bearer {conn['extra']['provider_api_key']}",
        },
    )
    assert r.status_code == 200 and r.json()["data"] == []
    own = json.loads(portkey_connection.airflow_conn_json(virtual_key="vk"))
    assert own["extra"] == {"virtual_key": "vk"}
    uri = portkey_connection.airflow_conn_uri(config="pc-x")
    assert uri.startswith("portkey://:pk-test@http%3A%2F%2F127.0.0.1%3A")


def test_set_durations_applies_to_batches_created_afterwards(emulator) -> None:
    before = emulator.set_durations(in_progress=3600)
    try:
        held = emulator.add_batch(status="in_progress", hold=False)["id"]
        emulator.advance(600)
        assert emulator.get_batch(held)["status"] == "in_progress"
    finally:
        emulator.set_durations(**before)
    quick = emulator.add_batch(status="in_progress", hold=False)["id"]
    emulator.advance(600)
    assert emulator.get_batch(quick)["status"] == "completed"
    with pytest.raises(ValueError, match="durations keys"):
        emulator.set_durations(running=1)
