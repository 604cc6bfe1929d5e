"""Status normalisation: every provider word, case, unknown words, timestamps in milliseconds,
the batch model and its XCom form. Pure: the rules of ``airflow_portkey._core.batches``."""

from __future__ import annotations

import dataclasses
import json

import pytest

from airflow_portkey._core import batches
from airflow_portkey.batches import (
    TERMINAL_STATUSES,
    Batch,
    BatchStatus,
    RequestCounts,
    is_terminal,
    normalize_status,
    normalize_timestamp,
    parse_status_set,
)

S = BatchStatus


@pytest.mark.parametrize(("word", "status"), sorted(batches._ALIASES.items()))
def test_every_alias_word(word: str, status: BatchStatus) -> None:
    assert normalize_status(word) is status
    assert normalize_status(word.upper()) is status
    pascal = "".join(part.capitalize() for part in word.split("_"))
    assert normalize_status(pascal) is status


@pytest.mark.parametrize(
    ("word", "status"),
    [
        # Bedrock, as retrieved and (PascalCase) as listed
        ("submitted", S.IN_PROGRESS),
        ("scheduled", S.IN_PROGRESS),
        ("stopping", S.CANCELLING),
        ("stopped", S.CANCELLED),
        ("partially_completed", S.COMPLETED),
        ("InProgress", S.IN_PROGRESS),
        ("Submitted", S.IN_PROGRESS),
        ("Scheduled", S.IN_PROGRESS),
        ("Validating", S.VALIDATING),
        ("Stopping", S.CANCELLING),
        ("Stopped", S.CANCELLED),
        ("PartiallyCompleted", S.COMPLETED),
        ("Completed", S.COMPLETED),
        ("Failed", S.FAILED),
        ("Expired", S.EXPIRED),
        # Cohere
        ("processing", S.IN_PROGRESS),
        ("complete", S.COMPLETED),
        # Portkey-managed batching
        ("file_upload_failed", S.FAILED),
        ("batch_start_failed", S.FAILED),
        # Vertex job states
        ("JOB_STATE_RUNNING", S.IN_PROGRESS),
        ("JOB_STATE_PENDING", S.VALIDATING),
        ("JOB_STATE_QUEUED", S.VALIDATING),
        ("JOB_STATE_SUCCEEDED", S.COMPLETED),
        ("JOB_STATE_PARTIALLY_SUCCEEDED", S.COMPLETED),
        ("JOB_STATE_FAILED", S.FAILED),
        ("JOB_STATE_CANCELLING", S.CANCELLING),
        ("JOB_STATE_CANCELLED", S.CANCELLED),
        ("JOB_STATE_EXPIRED", S.EXPIRED),
        # OpenAI's documented words, and American spellings
        ("validating", S.VALIDATING),
        ("in_progress", S.IN_PROGRESS),
        ("finalizing", S.FINALIZING),
        ("completed", S.COMPLETED),
        ("failed", S.FAILED),
        ("expired", S.EXPIRED),
        ("cancelling", S.CANCELLING),
        ("canceling", S.CANCELLING),
        ("cancelled", S.CANCELLED),
        ("canceled", S.CANCELLED),
    ],
)
def test_provider_words(word: str, status: BatchStatus) -> None:
    assert normalize_status(word) is status


@pytest.mark.parametrize(
    "word", ["COMPLETED", "Completed", " completed ", "completed\n", "Complete", "COMPLETE"]
)
def test_case_and_spacing_do_not_matter(word: str) -> None:
    assert normalize_status(word) is S.COMPLETED


@pytest.mark.parametrize(
    "word", ["IN_PROGRESS", "In_Progress", "in-progress", "In Progress", "inProgress"]
)
def test_in_progress_spellings(word: str) -> None:
    assert normalize_status(word) is S.IN_PROGRESS


@pytest.mark.parametrize("word", ["paused", "weird_state", "", "   ", "JOB_STATE_PAUSED"])
def test_unknown_words_are_unknown_with_raw_kept(word: str) -> None:
    assert normalize_status(word) is S.UNKNOWN
    batch = Batch.from_raw({"id": "batch_1", "status": word})
    assert batch.status is S.UNKNOWN
    assert batch.raw_status == word
    assert batch.is_terminal is False
    assert batch.to_xcom()["raw_status"] == word


@pytest.mark.parametrize("raw", [None, 3, True, ["completed"], {"status": "completed"}])
def test_non_text_status_is_unknown(raw: object) -> None:
    assert normalize_status(raw) is S.UNKNOWN
    batch = Batch.from_raw({"id": "batch_1", "status": raw})
    assert batch.status is S.UNKNOWN
    assert batch.raw_status is None


def test_terminal_set_and_cancelling_is_not_terminal() -> None:
    assert {S.COMPLETED, S.FAILED, S.EXPIRED, S.CANCELLED} == TERMINAL_STATUSES
    assert is_terminal(S.CANCELLING) is False
    assert Batch.from_raw({"id": "b", "status": "stopping"}).is_terminal is False
    assert Batch.from_raw({"id": "b", "status": "cancelling"}).is_terminal is False
    for word in ("stopped", "file_upload_failed", "batch_start_failed", "complete", "expired"):
        assert Batch.from_raw({"id": "b", "status": word}).is_terminal is True


@pytest.mark.parametrize("word", ["partially_completed", "PartiallyCompleted"])
def test_partially_completed_is_completed_and_flagged(word: str) -> None:
    batch = Batch.from_raw(
        {
            "id": "b",
            "status": word,
            "request_counts": {"total": 10, "completed": 8, "failed": 2},
        }
    )
    assert batch.status is S.COMPLETED
    assert batch.partial is True
    assert "only partly" in batch.describe()
    assert batch.to_xcom()["partial"] is True
    assert Batch.from_raw({"id": "b", "status": "completed"}).partial is False


def test_describe_names_the_provider_word() -> None:
    batch = Batch.from_raw(
        {"id": "b1", "status": "stopping", "request_counts": {"total": 4, "completed": 1}}
    )
    assert batch.describe() == (
        "batch b1 is cancelling (provider said 'stopping'); "
        "1/4 requests done (25%): 1 completed, 0 failed"
    )


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1_700_000_000, 1_700_000_000.0),
        (1_700_000_000_000, 1_700_000_000.0),
        (1_700_000_000_500, 1_700_000_000.5),
        (1_700_000_000.25, 1_700_000_000.25),
        (0, 0.0),
        (None, None),
        ("1700000000", None),
        (True, None),
        (-(10**15), None),
        (-5, None),
        (10**30, None),
        pytest.param(10**400, None, id="10**400"),
        (float("inf"), None),
        (float("nan"), None),
    ],
)
def test_timestamps_in_seconds_or_milliseconds(value: object, seconds: float | None) -> None:
    assert normalize_timestamp(value) == seconds
    assert Batch.from_raw({"id": "b", "created_at": value}).timestamps.get("created_at") == seconds


def test_a_batch_from_raw_is_the_batch_built_field_by_field() -> None:
    raw = {
        "id": "batch_1",
        "status": "Stopping",
        "request_counts": {"total": 10, "completed": 7, "failed": True},
        "output_file_id": "file-out",
        "error_file_id": "",
        "errors": {"data": [{"message": "bad line", "line": 3}]},
        "created_at": 1_700_000_000,
        "completed_at": 1_700_000_000_500,
    }
    expected = Batch(
        id="batch_1",
        status=S.CANCELLING,
        raw_status="Stopping",
        request_counts=RequestCounts(total=10, completed=7, failed=0),
        partial=False,
        output_file_id="file-out",
        error_file_id=None,
        errors=("line 3: bad line",),
        timestamps={"created_at": 1_700_000_000.0, "completed_at": 1_700_000_000.5},
        raw=raw,
    )
    batch = Batch.from_raw(raw)
    assert batch == expected
    assert dataclasses.replace(batch, status=S.FAILED).status is S.FAILED
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.status = S.FAILED  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.request_counts.total = 0  # type: ignore[misc]

    class Tagged(Batch):
        """A subclass gets itself back, through its own constructor."""

    tagged = Tagged.from_raw(raw)
    assert type(tagged) is Tagged
    assert dataclasses.astuple(tagged) == dataclasses.astuple(expected)


def test_batch_timestamps_from_milliseconds() -> None:
    batch = Batch.from_raw(
        {
            "id": "b",
            "status": "completed",
            "created_at": 1_700_000_000_000,
            "completed_at": 1_700_000_100,
            "failed_at": None,
        }
    )
    assert batch.timestamps == {"created_at": 1_700_000_000.0, "completed_at": 1_700_000_100.0}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ("completed", {S.COMPLETED}),
        (["complete", "Stopped"], {S.COMPLETED, S.CANCELLED}),
        ([S.FAILED, "expired"], {S.FAILED, S.EXPIRED}),
    ],
)
def test_status_sets_accept_provider_words(values: object, expected: set[BatchStatus]) -> None:
    assert parse_status_set(values, name="success_statuses") == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("bogus", "success_statuses: unknown batch status 'bogus'"),
        ("cancelling", "success_statuses: 'cancelling' is not a terminal batch status"),
        ("stopping", "success_statuses: 'stopping' is not a terminal batch status"),
        ("in_progress", "not a terminal batch status"),
    ],
)
def test_status_sets_refuse_unknown_and_non_terminal_words(value: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_status_set([value], name="success_statuses")


def test_batch_survives_an_xcom_round_trip() -> None:
    raw = {
        "id": "b1",
        "object": "batch",
        "status": "PartiallyCompleted",
        "created_at": 1_700_000_000_000,
        "output_file_id": "file-out",
        "request_counts": {"total": 3, "completed": 2, "failed": 1},
        "errors": {"data": [{"code": "bad", "message": "bad line", "line": 2}]},
    }
    batch = Batch.from_raw(raw)
    again = Batch.from_xcom(json.loads(json.dumps(batch.to_xcom())))
    assert again == batch
    assert again.errors == ("line 2: bad line",)
    assert again.timestamps == {"created_at": 1_700_000_000.0}
