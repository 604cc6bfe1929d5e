"""Idempotent cancel at the sans-IO seam: a batch already cancelling or finished is success,
a 409 is answered by reading the batch, a cancel answer that is not a batch is followed by a
read, and ``cancelling`` is not terminal."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_portkey._core import plans
from airflow_portkey._core.retry import RetryPolicy
from airflow_portkey.batches import BatchStatus
from airflow_portkey.exceptions import (
    PortkeyConflictError,
    PortkeyNotFoundError,
    PortkeyServerError,
)

from .script import answer, batch, context, drive, error, failure

S = BatchStatus
CANCEL = "POST /batches/batch_1/cancel"
READ = "GET /batches/batch_1"


@pytest.mark.parametrize("word", ["cancelling", "canceling", "stopping", "JOB_STATE_CANCELLING"])
def test_a_running_batch_answered_cancelling_takes_one_request(word: str) -> None:
    run = drive(plans.cancel_batch(context(), "batch_1"), [batch("batch_1", word)])
    assert run.calls == [CANCEL]
    assert (run.result.id, run.result.status, run.result.raw_status) == (
        "batch_1",
        S.CANCELLING,
        word,
    )


def test_cancelling_is_not_terminal() -> None:
    run = drive(plans.cancel_batch(context(), "batch_1"), [batch("batch_1", "cancelling")])
    assert run.result.is_terminal is False


def test_the_cancel_request_has_no_body_and_is_idempotent() -> None:
    run = drive(plans.cancel_batch(context(), "batch_1"), [batch("batch_1", "cancelling")])
    (request,) = run.requests
    assert (request.method, request.json_body, request.form, request.upload) == (
        "POST",
        None,
        None,
        None,
    )
    assert request.idempotent is True


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("completed", S.COMPLETED),
        ("failed", S.FAILED),
        ("expired", S.EXPIRED),
        ("cancelled", S.CANCELLED),
        ("stopped", S.CANCELLED),
        ("cancelling", S.CANCELLING),
        ("stopping", S.CANCELLING),
    ],
)
def test_a_409_is_answered_by_reading_the_batch(word: str, status: BatchStatus) -> None:
    conflict = error(409, f"Cannot cancel a batch with status '{word}'.")
    run = drive(plans.cancel_batch(context(), "batch_1"), [conflict, batch("batch_1", word)])
    assert run.calls == [CANCEL, READ]
    assert (run.result.id, run.result.status) == ("batch_1", status)
    assert run.waits == []


@pytest.mark.parametrize("word", ["in_progress", "validating", "finalizing", "mystery"])
def test_a_409_on_a_batch_still_running_is_raised(word: str) -> None:
    """Read again, the batch is neither finished nor cancelling: a real conflict."""
    conflict = error(409, "Batch is locked.")
    run = drive(
        plans.cancel_batch(context(), "batch_1"), [conflict, batch("batch_1", word)], raises=True
    )
    assert type(run.error) is PortkeyConflictError
    assert run.error.portkey_message == "Batch is locked."
    assert run.calls == [CANCEL, READ]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"status": "success"},
        {"status": "success", "object": "batch", "id": "batch_1"},
        {"id": "batch_1", "status": "cancelling"},
    ],
    ids=["vertex-empty", "bedrock-cohere-success", "success-with-id", "no-batch-fields"],
)
def test_a_cancel_answer_that_is_not_a_batch_is_followed_by_a_read(body: dict[str, Any]) -> None:
    run = drive(
        plans.cancel_batch(context(), "batch_1"), [answer(200, body), batch("batch_1", "stopping")]
    )
    assert run.calls == [CANCEL, READ]
    # The batch comes from the read, not from the cancel's answer.
    assert (run.result.raw_status, run.result.status) == ("stopping", S.CANCELLING)
    assert run.result.raw["object"] == "batch"


def test_an_unknown_batch_is_not_found_and_not_read_again() -> None:
    missing = error(404, "No batch found with id 'batch_1'.")
    run = drive(plans.cancel_batch(context(), "batch_1"), [missing], raises=True)
    assert type(run.error) is PortkeyNotFoundError
    assert str(run.error).startswith(
        "Portkey answered 404 on POST /batches/batch_1/cancel: No batch found"
    )
    assert run.calls == [CANCEL]


def test_a_cancel_whose_answer_was_lost_is_sent_again() -> None:
    """A cancel is idempotent: repeating it after a drop or a 503 is safe."""
    run = drive(
        plans.cancel_batch(context(), "batch_1"),
        [failure("dropped", "reset"), error(503), batch("batch_1", "cancelling")],
    )
    assert run.calls == [CANCEL] * 3
    assert run.result.status is S.CANCELLING


def test_the_read_after_a_409_is_retried_like_any_read() -> None:
    run = drive(
        plans.cancel_batch(context(), "batch_1"),
        [error(409), error(502), batch("batch_1", "completed")],
    )
    assert run.calls == [CANCEL, READ, READ]
    assert run.result.status is S.COMPLETED


def test_a_lasting_outage_on_cancel_raises_after_every_attempt() -> None:
    run = drive(
        plans.cancel_batch(context(policy=RetryPolicy(max_retries=2)), "batch_1"),
        [error(503)] * 3,
        raises=True,
    )
    assert type(run.error) is PortkeyServerError
    assert run.error.__notes__ == ["gave up after 3 attempts"]
