"""The rest of the hook's API over HTTP: listing, files, creating, downloading, test_connection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_portkey.batches import BatchStatus
from airflow_portkey.exceptions import (
    PortkeyConfigError,
    PortkeyError,
    PortkeyServerError,
    PortkeyValidationError,
)
from airflow_portkey.hooks.portkey import PortkeyHook
from airflow_portkey.testing import PortkeyEmulator

from .support import API_KEY

LINES = [
    {
        "custom_id": f"req-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{i}"}]},
    }
    for i in range(3)
]
JSONL = "".join(json.dumps(line) + "\n" for line in LINES).encode()


# -- listing ---------------------------------------------------------------------------------


def test_list_batches_walks_every_page(emulator: PortkeyEmulator, hook: PortkeyHook) -> None:
    seeded = [emulator.add_batch(status="completed")["id"] for _ in range(250)]
    listed = list(hook.list_batches())
    assert [batch.id for batch in listed] == seeded[::-1]  # newest first
    assert all(batch.status is BatchStatus.COMPLETED for batch in listed)
    pages = emulator.requests_to("batches.list")
    assert [(r.method, r.path) for r in pages] == [("GET", "/v1/batches")] * 3
    assert [r.query for r in pages] == [
        {"limit": "100"},
        {"limit": "100", "after": seeded[150]},
        {"limit": "100", "after": seeded[50]},
    ]


def test_list_batches_page_size(emulator: PortkeyEmulator, hook: PortkeyHook) -> None:
    seeded = [emulator.add_batch()["id"] for _ in range(5)]
    assert [b.id for b in hook.list_batches(page_size=2)] == seeded[::-1]
    assert [r.query for r in emulator.requests] == [
        {"limit": "2"},
        {"limit": "2", "after": seeded[3]},
        {"limit": "2", "after": seeded[1]},
    ]


def test_list_batches_is_lazy(emulator: PortkeyEmulator, hook: PortkeyHook) -> None:
    seeded = [emulator.add_batch()["id"] for _ in range(150)]
    first = next(iter(hook.list_batches()))
    assert first.id == seeded[-1]
    assert len(emulator.requests) == 1


def test_list_batches_when_there_are_none(emulator: PortkeyEmulator, hook: PortkeyHook) -> None:
    assert list(hook.list_batches()) == []
    assert [r.query for r in emulator.requests] == [{"limit": "100"}]


def test_list_batches_ends_when_the_servers_cursor_does_not_move(
    emulator: PortkeyEmulator, hook: PortkeyHook, logs: pytest.LogCaptureFixture
) -> None:
    page = {"data": [{"id": "b1", "status": "completed"}], "has_more": True, "last_id": "b1"}
    emulator.add_fault(
        "status", status=200, body=json.dumps(page).encode(), times=None, route="batches.list"
    )
    assert [batch.id for batch in hook.list_batches()] == ["b1", "b1"]
    assert [r.query for r in emulator.requests] == [
        {"limit": "100"},
        {"limit": "100", "after": "b1"},
    ]
    assert "says the next page starts after 'b1', a page already read" in logs.text


@pytest.mark.parametrize("page_size", [0, 101, -1])
def test_list_batches_refuses_bad_page_size(
    emulator: PortkeyEmulator, hook: PortkeyHook, page_size: int
) -> None:
    with pytest.raises(ValueError, match="limit must be between 1 and 100"):
        list(hook.list_batches(page_size=page_size))
    assert emulator.requests == []


def test_list_batches_retries_a_page(emulator: PortkeyEmulator, hook: PortkeyHook) -> None:
    seeded = [emulator.add_batch()["id"] for _ in range(3)]
    emulator.add_fault("server_error", route="batches.list", status=502)
    assert [b.id for b in hook.list_batches()] == seeded[::-1]
    assert len(emulator.requests) == 2


# -- files and batches -----------------------------------------------------------------------


def test_upload_bytes_create_and_download(
    emulator: PortkeyEmulator, hook: PortkeyHook, tmp_path: Path
) -> None:
    uploaded = hook.upload_file(JSONL)
    assert uploaded["object"] == "file" and uploaded["purpose"] == "batch"
    assert uploaded["bytes"] == len(JSONL)
    assert uploaded["filename"] == "batch_input.jsonl"

    batch = hook.create_batch(uploaded["id"], metadata={"dag": "nightly"})
    assert batch.status is BatchStatus.VALIDATING
    assert batch.request_counts.total == 3
    assert batch.raw["input_file_id"] == uploaded["id"]

    upload_request, create_request = emulator.requests
    assert (upload_request.method, upload_request.path) == ("POST", "/v1/files")
    assert upload_request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'name="purpose"\r\n\r\nbatch\r\n' in upload_request.body
    assert b'filename="batch_input.jsonl"' in upload_request.body
    assert JSONL in upload_request.body
    assert (create_request.method, create_request.path) == ("POST", "/v1/batches")
    assert create_request.json() == {
        "input_file_id": uploaded["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "metadata": {"dag": "nightly"},
    }
    assert create_request.headers["x-portkey-api-key"] == API_KEY

    emulator.advance(1000)  # past validating, in progress and finalizing
    done = hook.get_batch(batch.id)
    assert done.status is BatchStatus.COMPLETED
    assert done.output_file_id is not None

    output = tmp_path / "out" / "results.jsonl"
    size = hook.download_batch_output(batch.id, output)
    assert size == output.stat().st_size > 0
    results = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["custom_id"] for r in results] == ["req-0", "req-1", "req-2"]
    assert results[1]["response"]["body"]["choices"][0]["message"]["content"] == "echo: q1"
    download = emulator.requests[-1]
    assert (download.method, download.path) in {
        ("GET", f"/v1/batches/{batch.id}/output"),
        ("GET", f"/v1/files/{done.output_file_id}/content"),
    }

    copy = tmp_path / "copy.jsonl"
    assert hook.download_file(done.output_file_id, copy) == size
    assert copy.read_bytes() == output.read_bytes()
    assert emulator.requests[-1].path == f"/v1/files/{done.output_file_id}/content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.jsonl", "out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["results.jsonl"]


def test_upload_from_a_path(emulator: PortkeyEmulator, hook: PortkeyHook, tmp_path: Path) -> None:
    source = tmp_path / "requests.jsonl"
    source.write_bytes(JSONL)
    uploaded = hook.upload_file(source)
    assert uploaded["filename"] == "requests.jsonl"
    assert uploaded["bytes"] == len(JSONL)
    uploaded_str = hook.upload_file(str(source), filename="renamed.jsonl", purpose="batch")
    assert uploaded_str["filename"] == "renamed.jsonl"
    first, second = emulator.requests
    assert JSONL in first.body and b'filename="requests.jsonl"' in first.body
    assert b'filename="renamed.jsonl"' in second.body


def test_upload_is_retried_with_the_whole_file(
    emulator: PortkeyEmulator, hook: PortkeyHook, tmp_path: Path
) -> None:
    source = tmp_path / "requests.jsonl"
    source.write_bytes(JSONL)
    emulator.add_fault("server_error", route="files.create", status=503)
    uploaded = hook.upload_file(source)
    assert uploaded["bytes"] == len(JSONL)
    first, second = emulator.requests
    assert JSONL in first.body and JSONL in second.body


def test_upload_of_a_missing_path_is_refused(
    emulator: PortkeyEmulator, hook: PortkeyHook, tmp_path: Path
) -> None:
    with pytest.raises(PortkeyConfigError, match="does not exist"):
        hook.upload_file(tmp_path / "missing.jsonl")
    assert emulator.requests == []


@pytest.mark.parametrize("field", ["input_file_id", "endpoint", "completion_window"])
def test_create_batch_refuses_empty_arguments(
    emulator: PortkeyEmulator, hook: PortkeyHook, field: str
) -> None:
    arguments = {
        "input_file_id": "file-1",
        "endpoint": "/v1/embeddings",
        "completion_window": "24h",
    }
    arguments[field] = " "
    with pytest.raises(ValueError, match=field):
        hook.create_batch(
            arguments["input_file_id"],
            endpoint=arguments["endpoint"],
            completion_window=arguments["completion_window"],
        )
    assert emulator.requests == []


def test_create_batch_with_an_unknown_file_is_a_validation_error(
    emulator: PortkeyEmulator, hook: PortkeyHook
) -> None:
    with pytest.raises(PortkeyValidationError) as raised:
        hook.create_batch("file-nope")
    assert raised.value.status_code == 400
    assert "no file with id 'file-nope'" in raised.value.portkey_message
    assert len(emulator.requests) == 1


def test_download_of_an_unfinished_batch_leaves_no_file(
    emulator: PortkeyEmulator, hook: PortkeyHook, tmp_path: Path
) -> None:
    batch_id = emulator.add_batch(status="in_progress")["id"]
    destination = tmp_path / "out.jsonl"
    with pytest.raises(PortkeyValidationError, match="has no output yet"):
        hook.download_batch_output(batch_id, destination)
    assert list(tmp_path.iterdir()) == []


def test_failed_download_keeps_the_previous_file(
    emulator: PortkeyEmulator, hook: PortkeyHook, tmp_path: Path
) -> None:
    batch_id = emulator.add_batch(status="completed", output_lines=[{"n": 1}])["id"]
    destination = tmp_path / "out.jsonl"
    destination.write_text("previous\n")
    for route in ("batches.output", "files.content"):
        emulator.add_fault("server_error", route=route, times=None, status=500)
    with pytest.raises(PortkeyServerError):
        hook.download_batch_output(batch_id, destination)
    assert destination.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_download_is_retried_after_a_drop(
    emulator: PortkeyEmulator, hook: PortkeyHook, tmp_path: Path
) -> None:
    lines = [{"custom_id": f"r{i}", "n": i} for i in range(50)]
    batch_id = emulator.add_batch(status="completed", output_lines=lines)["id"]
    emulator.add_fault("drop", route="batches.output")
    emulator.add_fault("drop", route="files.content")
    destination = tmp_path / "out.jsonl"
    hook.download_batch_output(batch_id, destination)
    assert [json.loads(line) for line in destination.read_text().splitlines()] == lines
    downloads = [r for r in emulator.requests if r.route in ("batches.output", "files.content")]
    assert len(downloads) == 2
    assert downloads[0].path == downloads[1].path


def test_async_path_refuses_streams_and_uploads(
    emulator: PortkeyEmulator, hook: PortkeyHook
) -> None:
    """The async transport has no file support: it says so rather than buffering a stream."""
    import asyncio

    from airflow_portkey._core import endpoints, plans

    async def go() -> None:
        try:
            ctx = await hook.acall_context()
            await hook.arun(plans.send(ctx, endpoints.batch_output_request("batch_1")))
        finally:
            await hook.aclose()

    with pytest.raises(PortkeyError, match="only available on the sync path"):
        asyncio.run(go())
    assert emulator.requests == []


def test_upload_a_list_of_requests(emulator: PortkeyEmulator, hook: PortkeyHook) -> None:
    uploaded = hook.upload_file(LINES)
    (request,) = emulator.requests
    compact = b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in LINES)
    assert compact in request.body
    assert uploaded["bytes"] == len(compact)
    batch = hook.create_batch(uploaded["id"])
    assert batch.request_counts.total == len(LINES)


@pytest.mark.parametrize(
    ("requests", "words"),
    [
        ([], "empty"),
        ([{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}], "lacks body"),
        ([LINES[0], LINES[0]], "custom_id 'req-0' appears twice"),
        (["not a dict"], "request 1 is not a dict"),
    ],
    ids=["empty", "missing-field", "duplicate-id", "not-a-dict"],
)
def test_bad_request_list_is_refused_before_upload(
    emulator: PortkeyEmulator, hook: PortkeyHook, requests: list[object], words: str
) -> None:
    with pytest.raises(PortkeyConfigError, match=words):
        hook.upload_file(requests)  # type: ignore[arg-type]
    assert emulator.requests == []


def _uploaded(hook: PortkeyHook) -> str:
    line = b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{}}\n'
    return str(hook.upload_file(line)["id"])


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "server_error", "status": 502},
        {"kind": "drop"},
        {"kind": "malformed_json"},
    ],
    ids=["502", "dropped", "malformed"],
)
def test_a_create_that_portkey_may_have_acted_on_is_not_repeated(
    emulator: PortkeyEmulator, hook: PortkeyHook, fault: dict[str, Any]
) -> None:
    file_id = _uploaded(hook)
    options = dict(fault)
    emulator.add_fault(options.pop("kind"), route="batches.create", times=1, **options)
    with pytest.raises(PortkeyError):
        hook.create_batch(file_id)
    # A second POST could start a second, billed batch: one attempt only.
    assert len(emulator.requests_to(route="batches.create")) == 1


def test_a_create_refused_with_429_is_repeated(
    emulator: PortkeyEmulator, hook: PortkeyHook
) -> None:
    file_id = _uploaded(hook)
    emulator.add_fault("rate_limit", route="batches.create", times=1, retry_after="0.05")
    batch = hook.create_batch(file_id)
    assert batch.id
    assert len(emulator.requests_to(route="batches.create")) == 2


def test_find_batches_by_stamp_across_pages(emulator: PortkeyEmulator, hook: PortkeyHook) -> None:
    from airflow_portkey._core.ownership import Stamp

    mine = Stamp("etl", "run_1", "submit", 2)
    other = Stamp("etl", "run_1", "submit", 3)
    first = emulator.add_batch(metadata=mine.metadata())["id"]
    for _ in range(150):
        emulator.add_batch(metadata=other.metadata())
    second = emulator.add_batch(metadata=mine.metadata())["id"]
    found = hook.find_batches(mine.owns, not_before=emulator.now() - 3600)
    assert [b.id for b in found] == [second, first]  # newest first, over two pages
    assert len(emulator.requests_to("batches.list")) == 2


def test_find_batches_stops_at_the_age_bound(emulator: PortkeyEmulator, hook: PortkeyHook) -> None:
    from airflow_portkey._core.ownership import Stamp

    mine = Stamp("etl", "run_1", "submit")
    emulator.add_batch(metadata=mine.metadata())
    emulator.advance(7200)
    for _ in range(150):
        emulator.add_batch()
    assert hook.find_batches(mine.owns, not_before=emulator.now() - 3600) == []
    assert len(emulator.requests_to("batches.list")) == 2  # the second page ends it


def test_async_requests_in_flight_never_exceed_max_connections(
    emulator: PortkeyEmulator, make_hook: Any
) -> None:
    import asyncio

    ids = [emulator.add_batch(status="in_progress")["id"] for _ in range(6)]
    emulator.add_fault("slow", route="batches.get", times=None, delay=0.2)
    hook = make_hook(hook_kwargs={"max_connections": 2})

    async def go() -> list[str]:
        try:
            return [b.id for b in await asyncio.gather(*(hook.aget_batch(i) for i in ids))]
        finally:
            await hook.aclose()

    assert asyncio.run(go()) == ids
    received = sorted(r.received_at for r in emulator.requests_to(route="batches.get"))
    assert len(received) == 6
    # With two slots, a third request leaves only once one of the first two is answered (the
    # emulator holds each answer 0.2 s after the request arrives), and so on.
    assert all(b - a >= 0.19 for a, b in zip(received, received[2:], strict=False))
