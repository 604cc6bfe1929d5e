"""What a wait logs while a batch runs (PollLog), on a fake clock: status changes, progress
with counts, percentage, elapsed time and an estimated finish, and "still waiting" lines."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from airflow_portkey._core.batches import Batch, BatchStatus
from airflow_portkey._core.messages import ApiRequest, ApiResponse, Note, Wait
from airflow_portkey._core.plans import CallContext
from airflow_portkey._core.waits import PollLog, WaitSpec, span, wait_for_batch

COMPLETED = frozenset({BatchStatus.COMPLETED})
T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC; the fake clock starts here


def batch(status: str, done: int = 0, total: int = 0, **raw: Any) -> Batch:
    counts = {"total": total, "completed": done, "failed": 0} if total else None
    return Batch.from_raw({"id": "batch_1", "status": status, "request_counts": counts, **raw})


def said(log: PollLog, reads: list[tuple[float, Batch]]) -> list[str]:
    """The INFO lines the reads produce, each prefixed by the minute it was read at."""
    lines = []
    for at, read in reads:
        for note in log.notes(read, T0 + at):
            lines.append(f"+{(at / 60):g}m {note.message}")
    return lines


def test_every_status_change_is_logged_even_with_unchanged_counts() -> None:
    log = PollLog()
    lines = said(
        log,
        [
            (0, batch("validating", 0, 4)),
            (30, batch("validating", 0, 4)),
            (60, batch("in_progress", 0, 4)),
            (90, batch("finalizing", 0, 4)),
            (120, batch("completed", 4, 4)),
        ],
    )
    assert [line.split(":")[0] for line in lines] == [
        "+0m Batch batch_1 is validating",
        "+1m Batch batch_1 is now in_progress (was validating)",
        "+1.5m Batch batch_1 is now finalizing (was in_progress)",
        "+2m Batch batch_1 is now completed (was finalizing)",
    ]
    assert lines[-1].endswith(
        "4/4 requests done (100%): 4 completed, 0 failed; 2 minutes since this wait began"
    )


def test_progress_has_counts_percentage_elapsed_and_an_estimate_from_the_batch_start() -> None:
    created = T0 - 600  # the batch was created 10 minutes before the wait's first read
    log = PollLog()
    (line,) = [n.message for n in log.notes(batch("in_progress", 25, 100, created_at=created), T0)]
    # 25 done in 10 minutes: 75 more take 30 minutes, so about 08:30 UTC.
    assert line == (
        "Batch batch_1 is in_progress: 25/100 requests done (25%): 25 completed, 0 failed; "
        "10 minutes since it was created; about 30 minutes left (around 2027-01-15 08:30 UTC)"
    )
    (line,) = [
        n.message for n in log.notes(batch("in_progress", 50, 100, created_at=created), T0 + 600)
    ]
    assert line == (
        "Batch batch_1 progress: 50/100 requests done (50%): 50 completed, 0 failed; "
        "20 minutes since it was created; about 20 minutes left (around 2027-01-15 08:30 UTC)"
    )


def test_estimate_waits_for_a_rate_when_the_batch_has_no_timestamps() -> None:
    lines = said(
        PollLog(),
        [(0, batch("in_progress", 10, 100)), (60, batch("in_progress", 20, 100))],
    )
    assert "left" not in lines[0], "one read without a start time gives no rate"
    # 10 requests a minute from the first read: 80 more take 8 minutes.
    assert lines[1].endswith(
        "1 minute since this wait began; about 8 minutes left (around 2027-01-15 08:09 UTC)"
    )


def test_a_silent_batch_gets_a_still_waiting_line_at_the_configured_rhythm() -> None:
    """A provider that reports no counts is polled every minute for 25 minutes."""
    log = PollLog(still_waiting_every=600)
    lines = said(log, [(minute * 60, batch("in_progress")) for minute in range(26)])
    assert lines == [
        "+0m Batch batch_1 is in_progress: no request counts reported yet; "
        "0 seconds since this wait began",
        "+10m Batch batch_1 still in_progress, no change for 10 minutes: "
        "no request counts reported yet; 10 minutes since this wait began",
        "+20m Batch batch_1 still in_progress, no change for 20 minutes: "
        "no request counts reported yet; 20 minutes since this wait began",
    ]


def test_a_change_restarts_the_still_waiting_rhythm() -> None:
    log = PollLog(still_waiting_every=300)
    reads = [(0, batch("in_progress", 1, 10))]
    reads += [(240, batch("in_progress", 2, 10))]  # progress at 4 minutes
    reads += [(minute * 60, batch("in_progress", 2, 10)) for minute in range(5, 11)]
    lines = [line.split(":")[0] for line in said(log, reads)]
    assert lines == [
        "+0m Batch batch_1 is in_progress",
        "+4m Batch batch_1 progress",
        "+9m Batch batch_1 still in_progress, no change for 5 minutes",
    ]


def test_unknown_status_is_warned_once_and_still_reported_as_a_status() -> None:
    log = PollLog()
    notes = [*log.notes(batch("thinking_hard"), T0), *log.notes(batch("thinking_hard"), T0 + 1)]
    assert [(n.level, n.message.split(":")[0]) for n in notes] == [
        (
            logging.WARNING,
            "Batch batch_1 reports status 'thinking_hard', which this provider does not know; "
            "waiting on until it changes or the deadline passes",
        ),
        (logging.INFO, "Batch batch_1 is unknown (provider said 'thinking_hard')"),
    ]


def test_still_waiting_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="still_waiting_every must be more than 0"):
        PollLog(still_waiting_every=0)
    with pytest.raises(ValueError, match="still_waiting_every must be more than 0"):
        WaitSpec(
            "batch_1",
            success=COMPLETED,
            failure=frozenset(),
            deadline=T0,
            poll_interval=1,
            still_waiting_every=-1,
        )


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0, "0 seconds"),
        (59.6, "1 minute"),
        (3599, "59 minutes 59 seconds"),
        (5470, "1 hour 31 minutes"),
    ],
)
def test_durations_read_as_words(seconds: float, words: str) -> None:
    assert span(seconds) == words


def test_wait_plan_logs_status_changes_and_the_final_status_through_the_poll_log() -> None:
    """The plan the sensor, operators and trigger all drive, on scripted answers."""
    answers = iter(
        [
            {"status": "validating"},
            {"status": "in_progress", "request_counts": {"total": 2, "completed": 0}},
            {"status": "in_progress", "request_counts": {"total": 2, "completed": 0}},
            {"status": "in_progress", "request_counts": {"total": 2, "completed": 1}},
            {"status": "completed", "request_counts": {"total": 2, "completed": 2}},
        ]
    )
    now = [T0]
    spec = WaitSpec(
        "batch_1",
        success=COMPLETED,
        failure=frozenset(),
        deadline=T0 + 3600,
        poll_interval=60,
    )
    plan = wait_for_batch(CallContext("portkey_default"), spec, clock=lambda: now[0])
    notes: list[str] = []
    reply = None
    try:
        while True:
            action = plan.send(reply)
            reply = None
            if isinstance(action, Note):
                notes.append(action.message.split(":")[0])
            elif isinstance(action, Wait):
                now[0] += action.seconds
            else:
                assert isinstance(action, ApiRequest)
                body = json.dumps({"id": "batch_1", "object": "batch", **next(answers)})
                reply = ApiResponse(200, {"content-type": "application/json"}, body.encode())
    except StopIteration as stop:
        outcome = stop.value
    assert outcome.status == "success"
    assert notes == [
        "Batch batch_1 is validating",
        "Batch batch_1 is now in_progress (was validating)",
        "Batch batch_1 progress",
        "Batch batch_1 is now completed (was in_progress)",
    ]
