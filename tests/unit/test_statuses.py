"""Provider status words as the hook reads them from the emulator's flavours (Bedrock, Cohere,
Vertex, OpenAI), in a listing, with millisecond timestamps; and an unknown status logged once.
Every word, spelling and case is proven in tests/core/test_statuses.py."""

from __future__ import annotations

import time

import pytest

from airflow_portkey._core.waits import WaitSpec, wait_for_batch
from airflow_portkey.batches import TERMINAL_STATUSES, BatchStatus
from airflow_portkey.hooks.portkey import PortkeyHook
from airflow_portkey.testing import PortkeyEmulator

S = BatchStatus


@pytest.mark.parametrize(
    ("flavour", "seeded", "raw", "status"),
    [
        ("bedrock", "cancelling", "stopping", S.CANCELLING),
        ("cohere", "completed", "complete", S.COMPLETED),
        ("vertex", "cancelling", "cancelling", S.CANCELLING),
        ("openai", "finalizing", "finalizing", S.FINALIZING),
    ],
)
def test_flavour_words_through_the_hook(
    emulator: PortkeyEmulator,
    hook: PortkeyHook,
    flavour: str,
    seeded: str,
    raw: str,
    status: BatchStatus,
) -> None:
    seeded_batch = emulator.add_batch(status=seeded, flavour=flavour)
    batch = hook.get_batch(seeded_batch["id"])
    assert batch.id == seeded_batch["id"]
    assert batch.raw_status == raw
    assert batch.status is status
    assert batch.is_terminal is (status in TERMINAL_STATUSES)


def test_bedrock_validating_words(emulator: PortkeyEmulator, hook: PortkeyHook) -> None:
    """Bedrock says submitted, then scheduled, before it runs: both mean the batch is going."""
    seeded = emulator.add_batch(status="validating", flavour="bedrock")
    batch = hook.get_batch(seeded["id"])
    assert batch.raw_status in {"submitted", "scheduled"}
    assert batch.status is S.IN_PROGRESS


def test_bedrock_partially_completed_through_the_hook(
    emulator: PortkeyEmulator, hook: PortkeyHook
) -> None:
    seeded = emulator.add_batch(
        status="completed",
        flavour="bedrock",
        request_counts={"total": 10, "completed": 7, "failed": 3},
    )
    batch = hook.get_batch(seeded["id"])
    assert (batch.raw_status, batch.status, batch.partial) == (
        "partially_completed",
        S.COMPLETED,
        True,
    )
    assert (batch.request_counts.completed, batch.request_counts.failed) == (7, 3)


@pytest.mark.parametrize(
    ("seeded", "raw", "status"),
    [
        ("in_progress", "JOB_STATE_RUNNING", S.IN_PROGRESS),
        ("in_progress", "mystery_state", S.UNKNOWN),
    ],
)
def test_raw_status_through_the_hook(
    emulator: PortkeyEmulator, hook: PortkeyHook, seeded: str, raw: str, status: BatchStatus
) -> None:
    seeded_batch = emulator.add_batch(status=seeded, raw_status=raw)
    batch = hook.get_batch(seeded_batch["id"])
    assert (batch.raw_status, batch.status) == (raw, status)
    assert batch.raw["status"] == raw


def test_bedrock_list_words_in_pascal_case(emulator: PortkeyEmulator, hook: PortkeyHook) -> None:
    emulator.add_batch(status="in_progress", flavour="bedrock")
    emulator.add_batch(status="cancelling", flavour="bedrock")
    emulator.add_batch(status="cancelled", flavour="bedrock")
    listed = list(hook.list_batches())
    assert [(b.raw_status, b.status) for b in listed] == [
        ("Stopped", S.CANCELLED),
        ("Stopping", S.CANCELLING),
        ("InProgress", S.IN_PROGRESS),
    ]


@pytest.mark.parametrize("flavour", ["bedrock"])
def test_millisecond_timestamps_through_the_hook(
    emulator: PortkeyEmulator, hook: PortkeyHook, flavour: str
) -> None:
    seeded = emulator.add_batch(status="in_progress", flavour=flavour)
    assert seeded["created_at"] > 10**12  # the emulator answers in milliseconds
    batch = hook.get_batch(seeded["id"])
    now = emulator.now()
    assert now - 600 < batch.timestamps["created_at"] <= now
    assert batch.timestamps["created_at"] == pytest.approx(seeded["created_at"] / 1000)
    assert batch.timestamps["expires_at"] - batch.timestamps["created_at"] == pytest.approx(
        86400, abs=1
    )


def test_openai_timestamps_stay_in_seconds(emulator: PortkeyEmulator, hook: PortkeyHook) -> None:
    seeded = emulator.add_batch(status="in_progress")
    batch = hook.get_batch(seeded["id"])
    assert batch.timestamps["created_at"] == float(seeded["created_at"])


def test_unknown_status_is_waited_on_and_logged_once(
    emulator: PortkeyEmulator, hook: PortkeyHook, logs: pytest.LogCaptureFixture
) -> None:
    """An unknown word is not an error: the wait goes on to its deadline, logging it once."""
    seeded = emulator.add_batch(status="in_progress", raw_status="thinking_hard")
    spec = WaitSpec(
        seeded["id"],
        success=frozenset({S.COMPLETED}),
        failure=frozenset({S.FAILED}),
        deadline=time.time() + 1.0,  # room for several polls on a busy machine
        poll_interval=0.05,
    )
    outcome = hook.run(wait_for_batch(hook.call_context, spec))
    assert outcome.status == "timeout"
    assert outcome.batch is not None and outcome.batch.raw_status == "thinking_hard"
    polls = emulator.requests_to("batches.get")
    assert len(polls) >= 3
    warnings = [r.getMessage() for r in logs.records if r.levelname == "WARNING"]
    assert warnings == [
        f"Batch {seeded['id']} reports status 'thinking_hard', which this provider does not "
        "know; waiting on until it changes or the deadline passes"
    ]


def test_poking_sensor_logs_an_unknown_status_once_and_progress_on_change(
    emulator: PortkeyEmulator, hook: PortkeyHook, logs: pytest.LogCaptureFixture
) -> None:
    """The sensor's poke says what the wait plan says, by the same rule (PollLog)."""
    from airflow_portkey.sensors.batch import PortkeyBatchSensor

    seeded = emulator.add_batch(status="in_progress", raw_status="thinking_hard")
    sensor = PortkeyBatchSensor(
        task_id="wait", batch_id=seeded["id"], portkey_conn_id=hook.portkey_conn_id
    )
    assert [sensor.poke({}) for _ in range(3)] == [False, False, False]
    messages = [(r.levelname, r.getMessage()) for r in logs.records]
    unknown = [m for level, m in messages if level == "WARNING" and "thinking_hard" in m]
    assert unknown == [
        f"Batch {seeded['id']} reports status 'thinking_hard', which this provider does not "
        "know; waiting on until it changes or the deadline passes"
    ]
    progress = [m for level, m in messages if level == "INFO" and m.startswith("Batch ")]
    assert len(progress) == 1  # neither the status nor the counts changed between pokes
