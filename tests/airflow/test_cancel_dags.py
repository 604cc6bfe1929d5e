"""Cancelling through real Airflow runs: the teardown pattern, the operator, the notifier."""

from __future__ import annotations

import pytest


def test_teardown_cancels_the_batch_when_the_work_fails(emulator, run_dag):
    batch = emulator.add_batch(status="in_progress", hold=True)
    result = run_dag("teardown_pipeline", batch_id=batch["id"], fail=True)
    assert result.state == "failed", "the teardown must not turn a failed run into a success"
    assert result.states == {"submitted": "success", "work": "failed", "cancel": "success"}
    cancels = emulator.requests_to(route="batches.cancel", batch_id=batch["id"])
    assert len(cancels) == 1
    assert result.xcoms["cancel"]["status"] == "cancelling"
    assert emulator.get_batch(batch["id"])["status"] in {"cancelling", "cancelled"}


def test_teardown_log_names_the_failed_task_apart_from_those_not_run(emulator, run_dag, capfd):
    batch = emulator.add_batch(status="in_progress", hold=True)
    result = run_dag("teardown_after_a_chain", batch_id=batch["id"])
    assert result.states["boom"] == "failed"
    assert result.states["after_boom"] == result.states["last"] == "upstream_failed"
    assert len(emulator.requests_to(route="batches.cancel", batch_id=batch["id"])) == 1
    captured = capfd.readouterr()
    assert "Tearing down: boom failed; not run as a result: after_boom, last" in (
        captured.out + captured.err
    )


@pytest.mark.parametrize("status", ["completed", "in_progress"])
def test_teardown_sends_nothing_when_the_run_succeeded(status, emulator, run_dag):
    batch = emulator.add_batch(status=status, hold=True)
    result = run_dag("teardown_pipeline", batch_id=batch["id"], fail=False)
    assert result.state == "success"
    assert result.states["cancel"] == "success"
    # No request at all: a batch the successful run left running on purpose keeps running.
    assert emulator.requests == []
    assert emulator.get_batch(batch["id"])["status"] == status
    assert "cancel" not in result.xcoms


def test_teardown_when_always_cancels_after_a_successful_run(emulator, run_dag):
    batch = emulator.add_batch(status="in_progress", hold=True)
    result = run_dag("teardown_always_pipeline", batch_id=batch["id"], fail=False)
    assert result.state == "success"
    assert len(emulator.requests_to(route="batches.cancel", batch_id=batch["id"])) == 1
    assert result.xcoms["cancel"]["status"] == "cancelling"


def test_cancel_one_id(emulator, run_dag):
    batch = emulator.add_batch(status="in_progress", hold=True)
    result = run_dag("cancel_one", batch_id=batch["id"])
    assert result.states == {"cancel": "success"}
    assert result.xcoms["cancel"]["id"] == batch["id"]
    assert result.xcoms["cancel"]["status"] == "cancelling"
    assert [r.route for r in emulator.requests] == ["batches.cancel"]


@pytest.mark.parametrize("status", ["completed", "failed", "expired", "cancelled", "cancelling"])
def test_cancel_on_a_finished_batch_succeeds_and_leaves_it(status, emulator, run_dag):
    batch = emulator.add_batch(status=status, hold=True)
    result = run_dag("cancel_one", batch_id=batch["id"])
    assert result.states == {"cancel": "success"}
    assert result.xcoms["cancel"]["status"] == status
    assert emulator.get_batch(batch["id"])["status"] == status


@pytest.mark.parametrize("mode", ["wait_sync", "wait_deferrable"])
def test_cancel_and_wait_until_really_stopped(mode, emulator, run_dag):
    batch = emulator.add_batch(status="in_progress", hold=True)
    result = run_dag(f"cancel_{mode}", batch_id=batch["id"])
    assert result.states == {"cancel": "success"}
    assert result.xcoms["cancel"]["status"] == "cancelled"
    routes = [r.route for r in emulator.requests_to(batch_id=batch["id"])]
    assert routes[0] == "batches.cancel"
    assert routes.count("batches.cancel") == 1
    assert routes.count("batches.get") >= 1


def test_cancel_and_wait_times_out_when_the_batch_stays_cancelling(emulator, run_dag):
    batch = emulator.add_batch(status="cancelling", hold=True)
    emulator.add_fault("raw_cancel_body", batch_id=batch["id"], body={"status": "success"})
    result = run_dag("cancel_wait_timeout", batch_id=batch["id"])
    assert result.states == {"cancel": "failed"}
    assert emulator.get_batch(batch["id"])["status"] == "cancelling"


def test_cancel_a_list_from_a_mapped_task(emulator, run_dag):
    ids = [emulator.add_batch(status="in_progress", hold=True)["id"] for _ in range(4)]
    done = emulator.add_batch(status="completed", hold=True)["id"]
    result = run_dag("cancel_mapped", batch_ids=[*ids, done])
    assert result.states["cancel"] == "success"
    final = result.xcoms["cancel"]
    assert [b["id"] for b in final] == [*ids, done]
    assert [b["status"] for b in final] == ["cancelled"] * 4 + ["completed"]
    for batch_id in [*ids, done]:
        assert len(emulator.requests_to(route="batches.cancel", batch_id=batch_id)) == 1


def test_failure_callback_cancels_what_it_should_and_nothing_else(emulator, run_dag):
    mine = [emulator.add_batch(status="in_progress", hold=True)["id"] for _ in range(2)]
    other = emulator.add_batch(status="in_progress", hold=True)["id"]
    result = run_dag("notifier_pipeline", batch_ids=mine, fail=True)
    assert result.state == "failed"
    assert result.states["process"] == "failed"
    for batch_id in mine:
        assert emulator.get_batch(batch_id)["status"] in {"cancelling", "cancelled"}
    assert emulator.get_batch(other)["status"] == "in_progress"
    assert not emulator.requests_to(route="batches.cancel", batch_id=other)


def test_failure_callback_does_nothing_when_the_task_succeeds(emulator, run_dag):
    mine = emulator.add_batch(status="in_progress", hold=True)["id"]
    result = run_dag("notifier_pipeline", batch_ids=[mine], fail=False)
    assert result.state == "success"
    assert not emulator.requests_to(route="batches.cancel")
