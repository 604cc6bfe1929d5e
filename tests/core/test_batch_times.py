"""A batch's own timestamps as aware UTC datetimes, whatever unit the provider used."""

from __future__ import annotations

import datetime as dt

import pendulum

from airflow_portkey._core.batches import Batch


def test_timestamps_in_seconds_and_milliseconds_become_the_same_aware_utc_datetimes() -> None:
    batch = Batch.from_raw(
        {
            "id": "batch_1",
            "status": "completed",
            "created_at": 1_800_000_000,  # seconds (OpenAI)
            "completed_at": 1_800_000_090_500,  # milliseconds (Bedrock, Vertex)
            "expires_at": None,
        }
    )
    assert batch.created_at == pendulum.datetime(2027, 1, 15, 8, 0, 0)
    assert batch.datetimes == {
        "created_at": pendulum.datetime(2027, 1, 15, 8, 0, 0),
        "completed_at": pendulum.datetime(2027, 1, 15, 8, 1, 30, 500_000),
    }
    for moment in batch.datetimes.values():
        assert moment.utcoffset() == dt.timedelta(0)
    took = batch.datetimes["completed_at"] - batch.created_at
    assert took.in_words(locale="en") == "1 minute 30 seconds"


def test_a_batch_without_timestamps_has_no_datetimes() -> None:
    batch = Batch.from_raw({"id": "batch_1", "status": "validating"})
    assert (batch.datetimes, batch.created_at) == ({}, None)
