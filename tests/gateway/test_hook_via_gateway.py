"""PortkeyHook through the real gateway: what the upstream received and what the hook returned."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import requests

from airflow_portkey.batches import BatchStatus
from airflow_portkey.hooks.portkey import PortkeyHook
from airflow_portkey.testing import PortkeyEmulator, RecordedRequest

from .conftest import PROVIDER_API_KEY

BEARER = f"Bearer {PROVIDER_API_KEY}"
ARN_ID = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Amodel-invocation-job%2Fabc123"


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


def _only(emu: PortkeyEmulator) -> RecordedRequest:
    (request,) = emu.requests
    return request


def _no_portkey_headers(request: RecordedRequest) -> None:
    # The gateway consumes every x-portkey-* header; none may reach the provider.
    assert not [name for name in request.headers if name.startswith("x-portkey-")]


def test_get_batch(hook: PortkeyHook, emulator: PortkeyEmulator) -> None:
    seeded = emulator.add_batch(status="in_progress", request_counts={"total": 10, "completed": 4})
    batch = hook.get_batch(seeded["id"])
    assert batch.id == seeded["id"]
    assert batch.status is BatchStatus.IN_PROGRESS
    assert (batch.request_counts.total, batch.request_counts.completed) == (10, 4)
    upstream = _only(emulator)
    assert (upstream.method, upstream.path) == ("GET", f"/v1/batches/{seeded['id']}")
    assert upstream.headers["authorization"] == BEARER
    assert upstream.body == b""
    _no_portkey_headers(upstream)


def test_cancel_running_batch(hook: PortkeyHook, emulator: PortkeyEmulator) -> None:
    seeded = emulator.add_batch(status="in_progress")
    batch = hook.cancel_batch(seeded["id"])
    assert batch.id == seeded["id"]
    assert batch.status is BatchStatus.CANCELLING
    upstream = _only(emulator)  # a batch came back: no second read
    assert (upstream.method, upstream.path) == ("POST", f"/v1/batches/{seeded['id']}/cancel")
    assert upstream.headers["authorization"] == BEARER
    # The hook sends no body; the gateway forwards an empty one labelled JSON.
    assert upstream.body == b""
    assert upstream.headers["content-length"] == "0"
    _no_portkey_headers(upstream)
    assert emulator.get_batch(seeded["id"])["status"] in {"cancelling", "cancelled"}


def test_async_cancel_and_get(emulator: PortkeyEmulator) -> None:
    """The async transport (what triggers use) through the gateway."""
    seeded = emulator.add_batch(status="validating")
    hook = PortkeyHook()

    async def go() -> tuple[str, str]:
        try:
            cancelled = await hook.acancel_batch(seeded["id"])
            again = await hook.aget_batch(seeded["id"])
            return cancelled.status.value, again.status.value
        finally:
            await hook.aclose()

    cancelled, again = asyncio.run(go())
    assert cancelled == "cancelling"
    assert again in {"cancelling", "cancelled"}
    cancel, get = emulator.requests
    assert (cancel.method, cancel.path) == ("POST", f"/v1/batches/{seeded['id']}/cancel")
    assert (get.method, get.path) == ("GET", f"/v1/batches/{seeded['id']}")
    assert cancel.body == b""
    assert {cancel.headers["authorization"], get.headers["authorization"]} == {BEARER}


def test_list_batches_pages_through_the_gateway(
    hook: PortkeyHook, emulator: PortkeyEmulator
) -> None:
    # The second oldest is a Bedrock-style id: as a cursor it holds '%', which the hook
    # percent-encodes in the query and the gateway must pass on without decoding.
    ids = [emulator.add_batch(status="completed")["id"]]
    ids.append(emulator.add_batch(id=ARN_ID, status="completed")["id"])
    ids += [emulator.add_batch(status="in_progress")["id"] for _ in range(3)]
    listed = [batch.id for batch in hook.list_batches(page_size=2)]
    assert listed == ids[::-1]
    pages = emulator.requests_to(route="batches.list")
    assert [r.method for r in pages] == ["GET"] * 3
    assert {r.path for r in pages} == {"/v1/batches"}
    assert [r.query for r in pages] == [
        {"limit": "2"},
        {"limit": "2", "after": ids[3]},
        {"limit": "2", "after": ids[1]},
    ]
    assert {r.headers["authorization"] for r in pages} == {BEARER}


def test_upload_create_and_download_output(
    hook: PortkeyHook, emulator: PortkeyEmulator, tmp_path: Path
) -> None:
    data = _jsonl(3)
    uploaded = hook.upload_file(data, filename="in.jsonl")
    assert uploaded["object"] == "file" and uploaded["bytes"] == len(data)
    upload = emulator.requests_to(route="files.create")[0]
    assert (upload.method, upload.path) == ("POST", "/v1/files")
    assert upload.headers["authorization"] == BEARER
    assert upload.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'name="purpose"\r\n\r\nbatch\r\n' in upload.body
    assert b'filename="in.jsonl"' in upload.body and data in upload.body

    created = hook.create_batch(
        uploaded["id"], metadata={"dag_id": "gw", "note": "tier 3"}, completion_window="24h"
    )
    assert created.status is BatchStatus.VALIDATING
    assert created.raw["input_file_id"] == uploaded["id"]
    create = emulator.requests_to(route="batches.create")[0]
    assert (create.method, create.path) == ("POST", "/v1/batches")
    assert create.headers["content-type"] == "application/json"
    assert create.json() == {
        "input_file_id": uploaded["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "metadata": {"dag_id": "gw", "note": "tier 3"},
    }

    emulator.advance(60)
    done = hook.get_batch(created.id)
    assert done.status is BatchStatus.COMPLETED and done.output_file_id
    size = hook.download_file(done.output_file_id, tmp_path / "out.jsonl")
    content = (tmp_path / "out.jsonl").read_bytes()
    assert size == len(content) > 0
    lines = [json.loads(line) for line in content.splitlines()]
    assert [line["custom_id"] for line in lines] == ["req-0", "req-1", "req-2"]
    direct = requests.get(
        f"{emulator.base_url}/files/{done.output_file_id}/content",
        headers={"Authorization": BEARER},
        timeout=10,
    )
    assert content == direct.content, "the gateway must pass file content through verbatim"
    fetch = emulator.requests_to(route="files.content")[0]
    assert (fetch.method, fetch.path) == ("GET", f"/v1/files/{done.output_file_id}/content")
    assert fetch.headers["authorization"] == BEARER
    assert not emulator.requests_to(route="batches.output")


def test_file_content_passes_through_as_octet_stream(
    raw: requests.Session, gateway, emulator: PortkeyEmulator
) -> None:
    seeded = emulator.add_batch(status="completed", output_lines=[{"custom_id": "a"}, "x\x00y"])
    r = raw.get(f"{gateway.base_url}/files/{seeded['output_file_id']}/content")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.content == b'{"custom_id":"a"}\nx\x00y\n'
    assert r.headers["x-portkey-provider"] == "openai"


def test_bedrock_arn_id_reaches_the_upstream_verbatim(
    hook: PortkeyHook, emulator: PortkeyEmulator
) -> None:
    emulator.add_batch(id=ARN_ID, status="in_progress")
    assert hook.get_batch(ARN_ID).id == ARN_ID
    cancelled = hook.cancel_batch(ARN_ID)
    assert cancelled.id == ARN_ID and cancelled.status is BatchStatus.CANCELLING
    get, cancel = emulator.requests
    # Neither decoded nor encoded again, by the hook or by the gateway.
    assert (get.method, get.path) == ("GET", f"/v1/batches/{ARN_ID}")
    assert (cancel.method, cancel.path) == ("POST", f"/v1/batches/{ARN_ID}/cancel")
    assert get.batch_id == cancel.batch_id == ARN_ID


def test_rate_limit_passes_through_and_the_hook_retries(
    hook: PortkeyHook, raw: requests.Session, gateway, emulator: PortkeyEmulator
) -> None:
    seeded = emulator.add_batch(status="in_progress")
    url = f"{gateway.base_url}/batches/{seeded['id']}"
    emulator.add_fault("rate_limit", route="batches.get", retry_after=1)
    r = raw.get(url)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    assert r.json() == {
        "error": {
            "message": "openai error: Rate limit reached for requests. Please try again later.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        },
        "provider": "openai",
    }
    assert len(emulator.requests) == 1, "the gateway retries nothing by default"
    emulator.clear_requests()

    emulator.add_fault("rate_limit", route="batches.get", retry_after=1)
    batch = hook.get_batch(seeded["id"])
    assert batch.status is BatchStatus.IN_PROGRESS
    first, second = emulator.requests
    assert first.path == second.path == f"/v1/batches/{seeded['id']}"
    waited = second.received_at - first.received_at
    assert 0.9 <= waited < 5, f"Retry-After: 1 should set the wait, waited {waited:.2f}s"


def test_connection_test_through_the_gateway(hook: PortkeyHook, emulator: PortkeyEmulator) -> None:
    ok, message = hook.test_connection()
    assert ok, message
    (listing,) = emulator.requests
    assert (listing.method, listing.path, listing.query) == ("GET", "/v1/batches", {"limit": "1"})


def test_inline_config_routing(make_conn) -> None:
    """A connection routed by an inline config alone; the config's api_key wins."""
    with PortkeyEmulator(mode="upstream", provider_api_key="sk-from-config") as upstream_emu:
        seeded = upstream_emu.add_batch(status="finalizing")
        config = {
            "provider": "openai",
            "api_key": "sk-from-config",
            "custom_host": upstream_emu.base_url,
        }
        # provider_api_key stays: the gateway prefers the config's key over Authorization.
        conn_id = make_conn("portkey_config", provider=None, custom_host=None, config=config)
        hook = PortkeyHook(conn_id)
        try:
            batch = hook.get_batch(seeded["id"])
        finally:
            hook.close()
        assert batch.status is BatchStatus.FINALIZING
        (upstream,) = upstream_emu.requests
        assert upstream.path == f"/v1/batches/{seeded['id']}"
        assert upstream.headers["authorization"] == "Bearer sk-from-config"
        _no_portkey_headers(upstream)


@pytest.mark.parametrize("with_trace", [True, False])
def test_trace_id_is_echoed_not_forwarded(
    raw: requests.Session, gateway, emulator: PortkeyEmulator, with_trace: bool
) -> None:
    seeded = emulator.add_batch()
    headers = {"x-portkey-trace-id": "airflow/dag/run/task/try1"} if with_trace else {}
    headers["x-portkey-metadata"] = json.dumps({"dag_id": "dag"})
    r = raw.get(f"{gateway.base_url}/batches/{seeded['id']}", headers=headers)
    assert r.status_code == 200, r.text
    # Echoed back (empty when none was sent, none is generated); never sent upstream.
    assert r.headers["x-portkey-trace-id"] == ("airflow/dag/run/task/try1" if with_trace else "")
    assert "x-portkey-metadata" not in r.headers
    _no_portkey_headers(_only(emulator))


def test_hook_trace_headers_reach_the_gateway(emulator: PortkeyEmulator, gateway) -> None:
    """The trace id the hook sends is the one the gateway logs (it echoes what it got)."""
    seeded = emulator.add_batch()
    hook = PortkeyHook(trace_id="airflow/d/r/t/try1", metadata={"team": "ml"})
    try:
        assert hook.get_batch(seeded["id"]).id == seeded["id"]
        session = hook.get_conn()  # the very session, and headers, the hook's calls use
        r = session.get(f"{gateway.base_url}/batches/{seeded['id']}", timeout=10)
    finally:
        hook.close()
    assert r.headers["x-portkey-trace-id"] == "airflow/d/r/t/try1"
    assert json.loads(session.headers["x-portkey-metadata"]) == {"team": "ml"}
    for upstream in emulator.requests:
        _no_portkey_headers(upstream)
