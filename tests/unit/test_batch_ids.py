"""Batch ids through the hook: every call refuses a bad id before any request, and ids as Portkey
hands them out (an encoded Bedrock ARN, an escaped slash) reach the server's path verbatim over
real HTTP. Every id rule is proven in tests/core/test_ids.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_portkey._core.ids import MAX_BATCH_ID_LENGTH
from airflow_portkey.batches import Batch, BatchStatus
from airflow_portkey.exceptions import PortkeyInvalidBatchIdError, PortkeyNotFoundError
from airflow_portkey.hooks.portkey import PortkeyHook
from airflow_portkey.testing import PortkeyEmulator

from .support import run_async

ARN = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Amodel-invocation-job%2Fabc123"

# One id per way of reaching another path; every refusal is proven in tests/core/test_ids.py.
BAD_IDS: list[tuple[Any, str]] = [
    (None, "must be a string, got NoneType"),
    ("a/b", "contains '/'"),
    ("%2e%2e", "path segment"),
]
BAD_ID_PARAMS = [pytest.param(value, words, id=repr(value)[:20]) for value, words in BAD_IDS]


def _calls(hook: PortkeyHook, tmp_path: Path) -> dict[str, Callable[[Any], object]]:
    return {
        "get": hook.get_batch,
        "cancel": hook.cancel_batch,
        "aget": lambda bid: run_async(hook, lambda: hook.aget_batch(bid)),
        "acancel": lambda bid: run_async(hook, lambda: hook.acancel_batch(bid)),
        "acancel_many": lambda bid: run_async(hook, lambda: hook.acancel_batches(["ok_1", bid])),
        "output": lambda bid: hook.download_batch_output(bid, tmp_path / "out.jsonl"),
        "file": lambda bid: hook.download_file(bid, tmp_path / "file.jsonl"),
    }


CALLS = ["get", "cancel", "aget", "acancel", "acancel_many", "output", "file"]


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize(("batch_id", "words"), BAD_ID_PARAMS)
def test_bad_id_is_refused_before_any_request(
    emulator: PortkeyEmulator,
    hook: PortkeyHook,
    tmp_path: Path,
    call: str,
    batch_id: Any,
    words: str,
) -> None:
    with pytest.raises(PortkeyInvalidBatchIdError, match="batch_id") as raised:
        _calls(hook, tmp_path)[call](batch_id)
    assert words in str(raised.value)
    assert emulator.requests == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_bedrock_arn_reaches_the_emulator_verbatim(
    emulator: PortkeyEmulator, hook: PortkeyHook, mode: str
) -> None:
    emulator.add_batch(id=ARN, status="in_progress", flavour="bedrock")
    if mode == "sync":
        read = hook.get_batch(ARN)
        cancelled = hook.cancel_batch(ARN)
    else:
        read = run_async(hook, lambda: hook.aget_batch(ARN))
        cancelled = run_async(hook, lambda: hook.acancel_batch(ARN))
    assert (read.id, read.status) == (ARN, BatchStatus.IN_PROGRESS)
    assert (cancelled.id, cancelled.status, cancelled.raw_status) == (
        ARN,
        BatchStatus.CANCELLING,
        "stopping",
    )
    # Bedrock's cancel answers {"status": "success"}: the batch is read again, by the same id.
    assert [(r.method, r.path) for r in emulator.requests] == [
        ("GET", f"/v1/batches/{ARN}"),
        ("POST", f"/v1/batches/{ARN}/cancel"),
        ("GET", f"/v1/batches/{ARN}"),
    ]
    assert {r.batch_id for r in emulator.requests} == {ARN}


@pytest.mark.parametrize(
    "batch_id",
    [
        "batch_abc123",
        "3fa85f64-5717-4562-b3fc-2c963f66afa6",  # Cohere
        "1234567890123456789",  # Vertex
        "a%2Fb",  # an escaped slash is one path segment
        "x" * MAX_BATCH_ID_LENGTH,
    ],
    ids=["openai", "cohere", "vertex", "escaped-slash", "512-chars"],
)
def test_good_ids_reach_the_path_unchanged(
    emulator: PortkeyEmulator, hook: PortkeyHook, batch_id: str
) -> None:
    with pytest.raises(PortkeyNotFoundError):
        hook.get_batch(batch_id)
    (request,) = emulator.requests
    assert request.path == f"/v1/batches/{batch_id}"
    assert request.batch_id == batch_id


def test_ids_from_a_listing_round_trip(emulator: PortkeyEmulator, hook: PortkeyHook) -> None:
    """Whatever id Portkey hands out (ARN, uuid, number) is accepted back as it is."""
    for flavour in ("bedrock", "cohere", "vertex", "openai"):
        emulator.add_batch(status="in_progress", flavour=flavour)
    listed: list[Batch] = list(hook.list_batches())
    assert len(listed) == 4
    for batch in listed:
        assert hook.get_batch(batch.id).id == batch.id
    got = [r.path for r in emulator.requests_to("batches.get")]
    assert got == [f"/v1/batches/{batch.id}" for batch in listed]
