"""Idempotent cancel through the hook, on both paths, against the emulator's own answers
(OpenAI's 409 on a finished batch, Bedrock's {"status": "success"}, Vertex's {}). Every case of
the rule is proven at the sans-IO seam in tests/core/test_cancel.py."""

from __future__ import annotations

import logging

import pytest

from airflow_portkey.batches import Batch, BatchStatus
from airflow_portkey.exceptions import PortkeyConflictError, PortkeyNotFoundError
from airflow_portkey.hooks.portkey import PortkeyHook
from airflow_portkey.testing import PortkeyEmulator

from .support import CONN_ID, run_async

S = BatchStatus
MODES = ["sync", "async"]


def cancel(hook: PortkeyHook, batch_id: str, mode: str) -> Batch:
    if mode == "sync":
        return hook.cancel_batch(batch_id)
    return run_async(hook, lambda: hook.acancel_batch(batch_id))


def calls(emulator: PortkeyEmulator) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.requests]


@pytest.mark.parametrize(("mode", "seeded"), [("sync", "validating"), ("async", "in_progress")])
def test_running_batch_becomes_cancelling_in_one_request(
    emulator: PortkeyEmulator, hook: PortkeyHook, mode: str, seeded: str
) -> None:
    batch_id = emulator.add_batch(status=seeded)["id"]
    batch = cancel(hook, batch_id, mode)
    assert (batch.id, batch.status, batch.raw_status) == (batch_id, S.CANCELLING, "cancelling")
    assert batch.is_terminal is False
    assert calls(emulator) == [("POST", f"/v1/batches/{batch_id}/cancel")]
    assert emulator.requests[0].body == b""
    assert emulator.get_batch(batch_id)["status"] == "cancelling"


@pytest.mark.parametrize("mode", MODES)
def test_already_cancelling_is_returned_without_error(
    emulator: PortkeyEmulator, hook: PortkeyHook, mode: str
) -> None:
    batch_id = emulator.add_batch(status="cancelling")["id"]
    batch = cancel(hook, batch_id, mode)
    assert batch.status is S.CANCELLING
    assert calls(emulator) == [("POST", f"/v1/batches/{batch_id}/cancel")]


@pytest.mark.parametrize(
    ("mode", "seeded", "status"),
    [("sync", "completed", S.COMPLETED), ("async", "cancelled", S.CANCELLED)],
)
def test_finished_batch_409_is_answered_by_reading_it(
    emulator: PortkeyEmulator, hook: PortkeyHook, mode: str, seeded: str, status: BatchStatus
) -> None:
    batch_id = emulator.add_batch(status=seeded)["id"]
    batch = cancel(hook, batch_id, mode)
    assert (batch.id, batch.status) == (batch_id, status)
    assert batch.is_terminal
    assert calls(emulator) == [
        ("POST", f"/v1/batches/{batch_id}/cancel"),
        ("GET", f"/v1/batches/{batch_id}"),
    ]


@pytest.mark.parametrize(("seeded", "raw"), [("completed", "completed"), ("cancelled", "stopped")])
def test_finished_bedrock_batch_409_is_answered_by_reading_it(
    emulator: PortkeyEmulator, hook: PortkeyHook, seeded: str, raw: str
) -> None:
    batch_id = emulator.add_batch(status=seeded, flavour="bedrock")["id"]
    batch = hook.cancel_batch(batch_id)
    assert batch.raw_status == raw
    assert batch.is_terminal
    assert [r.route for r in emulator.requests] == ["batches.cancel", "batches.get"]


@pytest.mark.parametrize(
    ("mode", "flavour", "raw", "status"),
    [
        # Bedrock and Cohere answer a cancel with {"status": "success", ...}, Vertex with {}.
        ("sync", "bedrock", "stopping", S.CANCELLING),
        ("async", "bedrock", "stopping", S.CANCELLING),
        ("async", "vertex", "cancelling", S.CANCELLING),
    ],
)
def test_non_batch_cancel_answer_is_followed_by_a_read(
    emulator: PortkeyEmulator,
    hook: PortkeyHook,
    mode: str,
    flavour: str,
    raw: str,
    status: BatchStatus,
) -> None:
    batch_id = emulator.add_batch(status="in_progress", flavour=flavour)["id"]
    batch = cancel(hook, batch_id, mode)
    assert (batch.id, batch.raw_status, batch.status) == (batch_id, raw, status)
    # The read that followed the cancel is where the batch came from, not the cancel answer.
    assert batch.raw["object"] == "batch" and "created_at" in batch.raw
    assert calls(emulator) == [
        ("POST", f"/v1/batches/{batch_id}/cancel"),
        ("GET", f"/v1/batches/{batch_id}"),
    ]


@pytest.mark.parametrize(
    "body",
    [{"status": "success", "object": "batch", "id": "x"}],
    ids=["success-with-id"],
)
def test_openai_batch_with_non_batch_cancel_answer_is_read_again(
    emulator: PortkeyEmulator, hook: PortkeyHook, body: dict[str, str]
) -> None:
    batch_id = emulator.add_batch(status="in_progress")["id"]
    emulator.add_fault("raw_cancel_body", body=body)
    batch = hook.cancel_batch(batch_id)
    assert (batch.id, batch.status) == (batch_id, S.CANCELLING)
    assert [r.route for r in emulator.requests] == ["batches.cancel", "batches.get"]


@pytest.mark.parametrize("mode", MODES)
def test_unknown_batch_is_not_found(
    emulator: PortkeyEmulator, hook: PortkeyHook, mode: str
) -> None:
    with pytest.raises(PortkeyNotFoundError) as raised:
        cancel(hook, "batch_missing", mode)
    error = raised.value
    assert error.status_code == 404
    assert error.portkey_message == "openai error: No batch found with id 'batch_missing'."
    assert error.provider == "openai"
    assert error.hint is not None and repr(CONN_ID) in error.hint
    assert str(error).startswith(
        "Portkey answered 404 on POST /batches/batch_missing/cancel: "
        "openai error: No batch found with id 'batch_missing'."
    )
    assert calls(emulator) == [("POST", "/v1/batches/batch_missing/cancel")]


@pytest.mark.parametrize("mode", MODES)
def test_409_on_a_batch_still_running_is_raised(
    emulator: PortkeyEmulator, hook: PortkeyHook, mode: str
) -> None:
    """A 409 for a batch that, read again, is neither finished nor cancelling is a real conflict."""
    batch_id = emulator.add_batch(status="in_progress")["id"]
    emulator.add_fault(
        "status",
        route="batches.cancel",
        status=409,
        body={"error": {"message": "Batch is locked.", "type": "invalid_request_error"}},
    )
    with pytest.raises(PortkeyConflictError) as raised:
        cancel(hook, batch_id, mode)
    assert raised.value.status_code == 409
    assert raised.value.portkey_message == "Batch is locked."
    assert [r.route for r in emulator.requests] == ["batches.cancel", "batches.get"]
    assert emulator.get_batch(batch_id)["status"] == "in_progress"


def test_async_get_batch(emulator: PortkeyEmulator, hook: PortkeyHook) -> None:
    batch_id = emulator.add_batch(status="finalizing")["id"]
    batch = run_async(hook, lambda: hook.aget_batch(batch_id))
    assert (batch.id, batch.status) == (batch_id, S.FINALIZING)
    assert calls(emulator) == [("GET", f"/v1/batches/{batch_id}")]


def test_async_cancel_many_gives_each_result_in_place(
    emulator: PortkeyEmulator, hook: PortkeyHook
) -> None:
    running = emulator.add_batch(status="in_progress")["id"]
    done = emulator.add_batch(status="completed")["id"]
    vertex = emulator.add_batch(status="in_progress", flavour="vertex")["id"]
    results = run_async(
        hook, lambda: hook.acancel_batches([running, "batch_missing", done, vertex])
    )
    first, missing, second, third = results
    assert not isinstance(first, BaseException) and first.status is S.CANCELLING
    assert isinstance(missing, PortkeyNotFoundError) and missing.status_code == 404
    assert not isinstance(second, BaseException) and second.status is S.COMPLETED
    assert not isinstance(third, BaseException) and third.status is S.CANCELLING
    assert len(emulator.requests_to("batches.cancel")) == 4
    assert sorted(r.batch_id or "" for r in emulator.requests_to("batches.get")) == sorted(
        [done, vertex]
    )


def test_cancel_logs_the_batch_it_left(
    emulator: PortkeyEmulator, hook: PortkeyHook, logs: pytest.LogCaptureFixture
) -> None:
    batch_id = emulator.add_batch(status="in_progress", total=4)["id"]
    batch = hook.cancel_batch(batch_id)
    assert f"Cancel requested: {batch.describe()}" in logs.messages
    assert f"batch {batch_id} is cancelling" in batch.describe()


@pytest.mark.parametrize("mode", MODES)
def test_cancel_of_a_finished_batch_logs_one_line_saying_it_was_left_alone(
    emulator: PortkeyEmulator, hook: PortkeyHook, logs: pytest.LogCaptureFixture, mode: str
) -> None:
    batch_id = emulator.add_batch(status="completed")["id"]
    if mode == "sync":
        cancel(hook, batch_id, mode)
    else:
        run_async(hook, lambda: hook.acancel_batches([batch_id]))
    about_it = [
        r.getMessage()
        for r in logs.records
        if r.levelno >= logging.INFO and batch_id in r.getMessage()
    ]
    assert about_it == [f"Batch {batch_id} was already completed; left alone"]


def test_cancelling_many_logs_one_summary_line(
    emulator: PortkeyEmulator, hook: PortkeyHook, logs: pytest.LogCaptureFixture
) -> None:
    """Beyond 20 batches one line counts what the cancels did (each batch is in the result)."""
    running = [emulator.add_batch(status="in_progress")["id"] for _ in range(23)]
    done = emulator.add_batch(status="completed")["id"]
    ids = [*running[:10], done, "batch_missing", *running[10:]]
    results = run_async(hook, lambda: hook.acancel_batches(ids))
    assert [getattr(r, "id", None) for r in results] == [*running[:10], done, None, *running[10:]]
    assert isinstance(results[11], PortkeyNotFoundError)
    assert sorted(r.batch_id or "" for r in emulator.requests_to("batches.cancel")) == sorted(ids)
    cancel_lines = [m for m in logs.messages if m.startswith("Cancel requested")]
    assert cancel_lines == ["Cancel requested for 25 batches: 23 cancelling, 1 completed; 1 failed"]
