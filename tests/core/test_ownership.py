"""The ownership rules at the sans-IO seam: the stamp, the search for stamped batches through
scripted pages of ``GET /batches``, and what a retry does with an earlier try's batch."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from airflow_portkey._core.batches import Batch, BatchStatus
from airflow_portkey._core.messages import ApiRequest, ApiResponse, Note
from airflow_portkey._core.ownership import (
    RunScope,
    Stamp,
    find_stamped,
    pick_own,
    resume_choice,
)
from airflow_portkey._core.plans import CallContext

NOW = 1_750_000_000.0
SUCCESS = frozenset({BatchStatus.COMPLETED})
FAILURE = frozenset({BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED})
MINE = Stamp("etl", "run_1", "submit", -1)


def raw(batch_id: str, *, age: float = 0, status: str = "in_progress", **meta: str) -> dict:
    return {
        "id": batch_id,
        "object": "batch",
        "status": status,
        "created_at": int(NOW - age),
        "metadata": meta or None,
    }


def stamped(batch_id: str, stamp: Stamp = MINE, **kwargs: Any) -> dict:
    return raw(batch_id, **kwargs, **stamp.metadata())


def page(items: list[dict], has_more: bool) -> ApiResponse:
    body = {"object": "list", "data": items, "has_more": has_more}
    body["last_id"] = items[-1]["id"] if items else None
    return ApiResponse(200, {"content-type": "application/json"}, json.dumps(body).encode())


def drive(plan, pages: list[ApiResponse]) -> tuple[Any, list[ApiRequest], list[Note]]:
    """Answer each request with the next scripted page; return the result, requests, notes."""
    requests, notes = [], []
    reply = None
    script = iter(pages)
    while True:
        try:
            action = plan.send(reply)
        except StopIteration as done:
            return done.value, requests, notes
        if isinstance(action, Note):
            notes.append(action)
            reply = None
        elif isinstance(action, ApiRequest):
            requests.append(action)
            reply = next(script)
        else:
            reply = None


def batch(item: dict) -> Batch:
    return Batch.from_raw(item)


# -- the stamp -------------------------------------------------------------------------------


def test_stamp_metadata_names_dag_run_task_and_map_index():
    assert Stamp("etl", "run_1", "submit", 3).metadata() == {
        "airflow_dag_id": "etl",
        "airflow_run_id": "run_1",
        "airflow_task_id": "submit",
        "airflow_map_index": "3",
    }


def test_stamp_owns_only_its_own_task_instance():
    assert MINE.owns(batch(stamped("b1")))
    assert not MINE.owns(batch(stamped("b2", Stamp("etl", "run_1", "submit", 0))))
    assert not MINE.owns(batch(stamped("b3", Stamp("etl", "run_2", "submit"))))
    assert not MINE.owns(batch(stamped("b4", Stamp("etl", "run_1", "other"))))
    assert not MINE.owns(batch(raw("b5")))  # no metadata at all


def test_a_batch_stamped_before_the_map_index_counts_as_unmapped():
    old = {k: v for k, v in MINE.metadata().items() if k != "airflow_map_index"}
    assert MINE.owns(batch(raw("b1", **old)))
    assert not Stamp("etl", "run_1", "submit", 0).owns(batch(raw("b1", **old)))


def test_run_scope_holds_every_task_and_map_index_of_the_run_and_nothing_else():
    scope = RunScope("etl", "run_1")
    assert scope.holds(batch(stamped("b1")))
    assert scope.holds(batch(stamped("b2", Stamp("etl", "run_1", "other", 4))))
    assert not scope.holds(batch(stamped("b3", Stamp("etl", "run_2", "submit"))))
    assert not scope.holds(batch(stamped("b4", Stamp("other", "run_1", "submit"))))


# -- the search --------------------------------------------------------------------------------


def test_search_pages_until_a_batch_older_than_the_bound():
    pages = [
        page([raw("x1"), stamped("b1", age=10)], has_more=True),
        page([stamped("b2", age=20), raw("x2", age=5000), stamped("b3", age=6000)], True),
        page([stamped("never", age=7000)], has_more=False),
    ]
    plan = find_stamped(CallContext("c"), MINE.owns, not_before=NOW - 1000)
    found, requests, notes = drive(plan, pages)
    assert [b.id for b in found] == ["b1", "b2"]
    assert [r.params for r in requests] == [{"limit": "100"}, {"limit": "100", "after": "b1"}]
    assert notes == []


def test_search_stops_at_the_last_page():
    plan = find_stamped(CallContext("c"), MINE.owns, not_before=0)
    found, requests, _ = drive(plan, [page([stamped("b1")], has_more=False)])
    assert [b.id for b in found] == ["b1"]
    assert len(requests) == 1


def test_search_reads_at_most_max_pages_and_says_it_stopped():
    pages = [page([raw(f"x{n}")], has_more=True) for n in range(5)]
    plan = find_stamped(CallContext("c"), MINE.owns, not_before=0, max_pages=3)
    found, requests, notes = drive(plan, pages)
    assert found == []
    assert len(requests) == 3
    assert [n.level for n in notes] == [logging.WARNING]
    assert "after 3 pages" in notes[0].message


def test_search_refuses_zero_pages_before_any_request():
    plan = find_stamped(CallContext("c"), MINE.owns, not_before=0, max_pages=0)
    with pytest.raises(ValueError, match="max_pages"):
        drive(plan, [])


def test_search_keeps_batches_without_created_at():
    item = stamped("b1")
    del item["created_at"]
    plan = find_stamped(CallContext("c"), MINE.owns, not_before=NOW)
    found, _, _ = drive(plan, [page([item], has_more=False)])
    assert [b.id for b in found] == ["b1"]


def test_search_reads_millisecond_timestamps_as_seconds():
    item = stamped("b1")
    item["created_at"] = int((NOW - 10) * 1000)  # Bedrock, Vertex and Cohere
    plan = find_stamped(CallContext("c"), MINE.owns, not_before=NOW - 100)
    found, _, _ = drive(plan, [page([item], has_more=False)])
    assert [b.id for b in found] == ["b1"]


# -- what a retry does -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "choice"),
    [
        ("validating", "reattach"),
        ("in_progress", "reattach"),
        ("finalizing", "reattach"),
        ("completed", "done"),
        ("failed", "resubmit"),
        ("expired", "resubmit"),
        ("cancelled", "resubmit"),
        ("cancelling", "resubmit"),  # an earlier try was killed: it will not finish
    ],
)
def test_resume_choice(status, choice):
    assert resume_choice(batch(raw("b", status=status)), SUCCESS, FAILURE) == choice


def test_a_terminal_status_in_neither_set_is_resubmitted():
    only_failed = frozenset({BatchStatus.FAILED})
    assert resume_choice(batch(raw("b", status="expired")), SUCCESS, only_failed) == "resubmit"


def test_pick_own_prefers_a_running_batch_then_a_completed_one():
    running, done, failed = (
        batch(raw("run", status="in_progress")),
        batch(raw("done", status="completed")),
        batch(raw("bad", status="failed")),
    )
    assert pick_own([failed, done, running], SUCCESS, FAILURE) == ("reattach", running)
    assert pick_own([failed, done], SUCCESS, FAILURE) == ("done", done)
    assert pick_own([failed], SUCCESS, FAILURE) == ("resubmit", None)
    assert pick_own([], SUCCESS, FAILURE) == ("resubmit", None)
