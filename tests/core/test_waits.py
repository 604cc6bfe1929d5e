"""Wait plans on a fake clock: success and failure sets, the deadline, an unknown status said
once, progress said on change, a bounded run of transient failures, the first poll's delay,
backoff, and the one event a wait ends in."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from airflow_portkey._core.retry import RetryPolicy
from airflow_portkey._core.waits import (
    PollLog,
    WaitOutcome,
    WaitSpec,
    classify,
    event_payload,
    terminal_spec,
    wait_for_batch,
)
from airflow_portkey.batches import Batch, BatchStatus

from .script import START, FakeClock, answer, batch, context, drive, error, failure

S = BatchStatus
NO_RETRY = RetryPolicy(max_retries=0)
POLL = "GET /batches/batch_1"


def spec(**overrides: Any) -> WaitSpec:
    options: dict[str, Any] = {
        "success": frozenset({S.COMPLETED}),
        "failure": frozenset({S.FAILED, S.EXPIRED, S.CANCELLED}),
        "deadline": START + 60,
        "poll_interval": 10,
    }
    options.update(overrides)
    return WaitSpec("batch_1", **options)


def wait(script: list[Any], clock: FakeClock | None = None, **overrides: Any) -> Any:
    clock = clock or FakeClock()
    ctx = context(clock, policy=overrides.pop("policy", NO_RETRY))
    return drive(wait_for_batch(ctx, spec(**overrides), clock=clock), script, clock)


def counts(done: int, total: int = 10) -> dict[str, int]:
    return {"total": total, "completed": done, "failed": 0}


def test_a_batch_that_completes_ends_the_wait_in_success() -> None:
    run = wait([batch(status="in_progress"), batch(status="finalizing"), batch(status="completed")])
    outcome: WaitOutcome = run.result
    assert (outcome.status, outcome.batch_id) == ("success", "batch_1")
    assert outcome.batch is not None and outcome.batch.status is S.COMPLETED
    assert run.calls == [POLL] * 3
    assert run.waited == [10, 10]


@pytest.mark.parametrize(
    "word", ["failed", "expired", "cancelled", "Stopped", "file_upload_failed"]
)
def test_a_batch_in_a_failure_status_ends_the_wait_in_failure(word: str) -> None:
    run = wait([batch(status=word)])
    assert run.result.status == "failure"
    assert run.calls == [POLL]


def test_a_terminal_status_listed_nowhere_is_a_failure_not_a_wait_forever() -> None:
    run = wait([batch(status="expired")], failure=frozenset({S.FAILED}))
    assert run.result.status == "failure"


def test_cancelling_is_waited_through() -> None:
    run = wait([batch(status="cancelling"), batch(status="stopping"), batch(status="cancelled")])
    assert run.result.status == "failure"
    assert run.calls == [POLL] * 3


def test_terminal_spec_waits_until_the_batch_has_stopped_whatever_its_end() -> None:
    clock = FakeClock()
    plan = wait_for_batch(
        context(clock), terminal_spec("batch_1", deadline=START + 60, poll_interval=5), clock=clock
    )
    run = drive(plan, [batch(status="cancelling"), batch(status="cancelled")], clock)
    assert run.result.status == "success"
    assert run.result.batch.status is S.CANCELLED


def test_the_deadline_ends_the_wait_with_the_last_state_read() -> None:
    clock = FakeClock()
    run = wait([batch(status="in_progress")] * 4, clock, deadline=START + 25)
    assert run.result.status == "timeout"
    assert run.result.reason.startswith(
        "deadline passed while waiting; batch batch_1 is in_progress"
    )
    # 10 + 10 + the 5 left: the last wait is cut to the deadline, then one last poll.
    assert run.waited == [10, 10, 5]
    assert clock.now == START + 25


def test_a_deadline_already_passed_still_reads_the_batch_once() -> None:
    run = wait([batch(status="in_progress")], deadline=START - 1)
    assert run.result.status == "timeout"
    assert run.calls == [POLL]
    assert run.waits == []


def test_an_unknown_status_is_waited_on_and_said_once() -> None:
    clock = FakeClock()
    run = wait([batch(status="thinking_hard")] * 4, clock, deadline=START + 30)
    assert run.result.status == "timeout"
    assert run.result.batch.raw_status == "thinking_hard"
    assert run.said(logging.WARNING) == [
        "Batch batch_1 reports status 'thinking_hard', which this provider does not know; "
        "waiting on until it changes or the deadline passes"
    ]


def test_each_new_unknown_word_is_said_once() -> None:
    log = PollLog()
    said = [
        note.message
        for word in ["odd", "odd", "stranger", "odd"]
        for note in log.notes(Batch.from_raw({"id": "b", "status": word}), START)
        if note.level == logging.WARNING
    ]
    assert [("'odd'" in m, "'stranger'" in m) for m in said] == [(True, False), (False, True)]


def test_progress_is_said_when_the_counts_or_the_status_change_only() -> None:
    """The wording (elapsed time, estimate, "still waiting") is in test_poll_log.py."""
    run = wait(
        [
            batch(status="in_progress", request_counts=counts(1)),
            batch(status="in_progress", request_counts=counts(1)),
            batch(status="in_progress", request_counts=counts(4)),
            batch(status="completed", request_counts=counts(10)),
        ]
    )
    assert [line.split("; ")[0] for line in run.said(logging.INFO)] == [
        "Batch batch_1 is in_progress: 1/10 requests done (10%): 1 completed, 0 failed",
        "Batch batch_1 progress: 4/10 requests done (40%): 4 completed, 0 failed",
        "Batch batch_1 is now completed (was in_progress): 10/10 requests done (100%): "
        "10 completed, 0 failed",
    ]


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"created_at": -(10**15), "in_progress_at": -5}, id="negative-times"),
        pytest.param({"created_at": 10**30, "in_progress_at": 10**30}, id="huge-times"),
        pytest.param({"created_at": 1e308}, id="huge-float-time"),  # inf: not JSON, refused
        pytest.param({"request_counts": counts(10**400, total=1)}, id="huge-count"),
        pytest.param({"request_counts": counts(-3, total=-5)}, id="negative-counts"),
        pytest.param({"output_file_id": ["x"], "errors": {"data": "zz"}}, id="odd-types"),
    ],
)
def test_absurd_numbers_in_a_batch_are_unknown_and_the_wait_goes_on(fields: Any) -> None:
    run = wait([batch(status="in_progress", **fields), batch(status="completed", **fields)])
    outcome: WaitOutcome = run.result
    assert outcome.status == "success" and outcome.batch is not None
    assert outcome.batch.timestamps == {} or "created_at" not in fields
    assert outcome.batch.output_file_id is None
    assert 0 <= outcome.batch.request_counts.done <= 10
    assert "since" in run.said(logging.INFO)[0]


TRANSIENT = {
    "503": error(503),
    "429": error(429),
    "408": error(408),
    "dropped": failure("dropped", "reset"),
    "timeout": failure("timeout", "read timed out"),
    "malformed": answer(200, b"<html>"),
}


@pytest.mark.parametrize("name", list(TRANSIENT))
def test_a_bounded_run_of_failed_polls_is_tolerated(name: str) -> None:
    run = wait([TRANSIENT[name]] * 2 + [batch(status="completed")], max_transient_failures=2)
    assert run.result.status == "success"
    assert run.calls == [POLL] * 3
    warnings = run.said(logging.WARNING)
    assert len(warnings) == 2
    assert warnings[0].startswith("Poll of batch batch_1 failed (1 of 2 tolerated in a row): ")


@pytest.mark.parametrize("name", list(TRANSIENT))
def test_one_failure_too_many_ends_the_wait_in_error(name: str) -> None:
    run = wait([TRANSIENT[name]] * 3, max_transient_failures=2)
    assert run.result.status == "error"
    assert run.result.reason.startswith("3 polls in a row failed; the last: ")
    assert run.calls == [POLL] * 3


def test_a_good_poll_resets_the_run_of_failures() -> None:
    script = [error(503), batch(), error(503), batch(), error(503), batch(status="completed")]
    run = wait(script, max_transient_failures=1)
    assert run.result.status == "success"


def test_each_poll_has_its_own_retries() -> None:
    run = wait([error(503)] * 2 + [batch(status="completed")], policy=RetryPolicy(max_retries=2))
    assert run.result.status == "success"
    assert run.calls == [POLL] * 3
    assert run.said(logging.WARNING) == []  # retried within one poll: no failed poll to say


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 412, 422])
def test_an_error_a_later_poll_would_see_again_ends_the_wait_at_once(status: int) -> None:
    run = wait([error(status, "no")], max_transient_failures=5)
    assert run.result.status == "error"
    assert run.result.reason.startswith(f"Portkey answered {status} on GET /batches/batch_1: no")
    assert run.calls == [POLL]


def test_the_first_poll_can_wait_for_its_interval() -> None:
    run = wait([batch(status="completed")], first_poll_delay=10)
    assert run.waited == [10]
    assert run.calls == [POLL]


def test_the_first_poll_delay_never_passes_the_deadline() -> None:
    run = wait([batch(status="in_progress")], first_poll_delay=100, deadline=START + 3)
    assert run.waited[0] == 3
    assert run.result.status == "timeout"


def test_backoff_doubles_the_interval_up_to_its_maximum() -> None:
    run = wait(
        [batch()] * 5 + [batch(status="completed")],
        deadline=START + 10_000,
        backoff=True,
        max_poll_interval=50,
    )
    assert run.waited == [10, 20, 40, 50, 50]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"success": frozenset()}, "success_statuses must name"),
        ({"failure": frozenset({S.COMPLETED})}, "overlap on: completed"),
        ({"poll_interval": 0}, "poll_interval must be more than 0"),
        ({"max_transient_failures": -1}, "max_transient_failures"),
    ],
)
def test_a_wait_that_cannot_work_is_refused_when_described(
    options: dict[str, Any], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        spec(**options)


def test_classify_says_none_while_a_batch_can_still_change() -> None:
    success, failure_set = frozenset({S.COMPLETED}), frozenset({S.FAILED})
    for word in ("validating", "in_progress", "finalizing", "cancelling", "mystery"):
        assert classify(Batch.from_raw({"id": "b", "status": word}), success, failure_set) is None


def outcome(status: str, batch_id: str, reason: str) -> WaitOutcome:
    return WaitOutcome(status, batch_id, Batch.from_raw({"id": batch_id, "status": "x"}), reason)  # type: ignore[arg-type]


def test_one_event_carries_the_worst_status_and_every_batch() -> None:
    payload = event_payload(
        [
            outcome("success", "a", "done"),
            outcome("timeout", "b", "late"),
            outcome("failure", "c", "failed"),
            outcome("timeout", "d", "later"),
        ]
    )
    assert payload["status"] == "timeout"
    assert payload["batch_ids"] == ["a", "b", "c", "d"]
    assert payload["batch_id"] == "a"
    assert payload["reason"] == "late; later"
    assert [b["id"] for b in payload["batches"]] == ["a", "b", "c", "d"]
    assert event_payload([outcome("error", "a", "x"), outcome("timeout", "b", "y")])["status"] == (
        "error"
    )
