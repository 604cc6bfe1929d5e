"""PortkeyBatchTrigger on a real event loop against the emulator."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from airflow_portkey.triggers.batch import PortkeyBatchTrigger


def make_trigger(batch_ids, **overrides):
    options = {
        "portkey_conn_id": "portkey_default",
        "deadline": time.time() + 10,
        "poll_interval": 0.05,
        "trace_id": "airflow/dag/run/task/try1",
        "metadata": {"dag_id": "dag"},
    }
    return PortkeyBatchTrigger(batch_ids, **{**options, **overrides})


def run_to_event(trigger) -> tuple[list, float]:
    async def collect():
        started = time.monotonic()
        events = [event async for event in trigger.run()]
        return events, time.monotonic() - started

    return asyncio.run(collect())


def test_serialisation_round_trip_holds_no_credentials(emulator):
    trigger = make_trigger(["batch_a", "batch_b"], cancel_on_kill=True, exponential_backoff=True)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_portkey.triggers.batch.PortkeyBatchTrigger"
    text = json.dumps(kwargs)
    for secret in ("pk-airflow-test", "sk-test"):
        assert secret not in text
    assert all(
        isinstance(v, str | int | float | bool | list | dict | None) for v in kwargs.values()
    )
    rebuilt = PortkeyBatchTrigger(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)


def test_one_event_on_success(emulator, finish_after_polls):
    batch = emulator.add_batch(status="in_progress", hold=True)
    finish_after_polls(batch["id"], "completed", polls=3)
    events, _ = run_to_event(make_trigger(batch["id"]))
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "success"
    assert payload["batch_id"] == batch["id"]
    assert payload["batch"]["status"] == "completed"
    polls = emulator.requests_to(route="batches.get", batch_id=batch["id"])
    assert len(polls) >= 3
    assert polls[0].headers["x-portkey-trace-id"] == "airflow/dag/run/task/try1"
    assert json.loads(polls[0].headers["x-portkey-metadata"]) == {"dag_id": "dag"}


def test_failure_status_gives_failure_event(emulator):
    batch = emulator.add_batch(status="expired", hold=True)
    events, _ = run_to_event(make_trigger(batch["id"]))
    assert [e.payload["status"] for e in events] == ["failure"]
    assert events[0].payload["batch"]["status"] == "expired"


@pytest.fixture
def no_retry_conn(emulator, monkeypatch):
    """A connection whose calls do not retry, so that each 503 is exactly one failed poll."""
    conn = json.loads(emulator.airflow_conn_json())
    conn["extra"]["max_retries"] = 0
    monkeypatch.setenv("AIRFLOW_CONN_PORTKEY_NORETRY", json.dumps(conn))
    return "portkey_noretry"


def test_a_passing_run_of_transient_errors_is_tolerated(emulator, no_retry_conn):
    batch = emulator.add_batch(status="completed", hold=True)
    emulator.add_fault("server_error", status=503, times=2, route="batches.get")
    trigger = make_trigger(batch["id"], portkey_conn_id=no_retry_conn, max_transient_failures=2)
    events, _ = run_to_event(trigger)
    assert [e.payload["status"] for e in events] == ["success"]
    assert len(emulator.requests_to(route="batches.get")) == 3


def test_a_lasting_outage_ends_in_one_error_event(emulator, no_retry_conn):
    batch = emulator.add_batch(status="in_progress", hold=True)
    emulator.add_fault("server_error", status=503, times=None, route="batches.get")
    trigger = make_trigger(batch["id"], portkey_conn_id=no_retry_conn, max_transient_failures=2)
    events, _ = run_to_event(trigger)
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "error"
    assert "3 polls in a row failed" in payload["reason"]
    assert "503" in payload["reason"]
    assert len(emulator.requests_to(route="batches.get")) == 3


def test_an_answer_nested_too_deep_ends_in_one_error_event_naming_it(emulator, no_retry_conn):
    # 600 levels and an escape: deep enough to break the redaction walk, not json itself.
    batch = emulator.add_batch(status="completed", hold=True)
    deep = (
        f'{{"id":"{batch["id"]}","object":"batch","status":"completed","created_at":1,'
        f'"metadata":{{"note":"\\u0041","x":{"[" * 600}{"]" * 600}}}}}'
    )
    emulator.add_fault("status", status=200, body=deep.encode(), times=None, route="batches.get")
    trigger = make_trigger(batch["id"], portkey_conn_id=no_retry_conn, max_transient_failures=0)
    events, _ = run_to_event(trigger)
    assert [e.payload["status"] for e in events] == ["error"]
    assert "JSON nested deeper than 64 levels" in events[0].payload["reason"]
    assert "RecursionError" not in events[0].payload["reason"]


def test_an_unexpected_failure_gives_one_error_event_not_a_dead_trigger(emulator):
    # Airflow's own AirflowNotFoundException is no PortkeyError: the trigger must still fire.
    events, _ = run_to_event(make_trigger(["batch_a", "batch_b"], portkey_conn_id="pk_nowhere"))
    assert len(events) == 1
    payload = events[0].payload
    assert (payload["status"], payload["batch_ids"]) == ("error", ["batch_a", "batch_b"])
    assert "AirflowNotFoundException" in payload["reason"] and "pk_nowhere" in payload["reason"]


def test_deadline_gives_one_timeout_event(emulator):
    batch = emulator.add_batch(status="in_progress", hold=True)
    events, elapsed = run_to_event(make_trigger(batch["id"], deadline=time.time() + 0.5))
    assert [e.payload["status"] for e in events] == ["timeout"]
    assert events[0].payload["batch"]["status"] == "in_progress"
    # It waited for the deadline, and ended near it rather than polling on (generous bound).
    assert 0.4 <= elapsed < 10
    assert not emulator.requests_to(route="batches.cancel")


@pytest.mark.parametrize("cancel_on_kill", [True, False])
def test_on_kill_cancels_only_when_asked(cancel_on_kill, emulator):
    batch = emulator.add_batch(status="in_progress", hold=True)
    trigger = make_trigger(batch["id"], cancel_on_kill=cancel_on_kill)

    async def kill_mid_wait():
        task = asyncio.ensure_future(trigger.run().__anext__())
        await asyncio.sleep(0.3)
        task.cancel()
        await trigger.on_kill()

    asyncio.run(kill_mid_wait())
    cancels = emulator.requests_to(route="batches.cancel", batch_id=batch["id"])
    assert len(cancels) == (1 if cancel_on_kill else 0)
    expected = "cancelling" if cancel_on_kill else "in_progress"
    assert emulator.get_batch(batch["id"])["status"] == expected


def test_bad_arguments_fail_before_deferral(emulator):
    with pytest.raises(ValueError, match="overlap"):
        make_trigger("batch_a", success_statuses=["completed"], failure_statuses=["completed"])
    with pytest.raises(ValueError, match="poll_interval"):
        make_trigger("batch_a", poll_interval=0)
    with pytest.raises(Exception, match="batch_id"):
        make_trigger("../admin")
    assert not emulator.requests


def test_first_poll_waits_when_the_task_has_just_read_the_batch(emulator):
    batch = emulator.add_batch(status="completed", hold=True)
    started = time.monotonic()  # the clock RecordedRequest.received_at uses
    events, _ = run_to_event(make_trigger(batch["id"], first_poll_delay=0.5))
    assert [e.payload["status"] for e in events] == ["success"]
    (poll,) = emulator.requests_to(route="batches.get")
    # One poll, and it came after the delay, not at once.
    assert poll.received_at - started >= 0.45


def test_an_unexpected_failure_quoting_a_credential_gives_a_redacted_reason(emulator, monkeypatch):
    """A bug whose message quotes the connection's key (here planted in the wait itself, after
    the connection is read) still gives the one error event, with the key redacted."""
    from airflow_portkey.hooks.portkey import PortkeyHook

    async def buggy_wait(self, specs):
        settings = await self.aget_settings()
        raise RuntimeError(f"bug while waiting with {settings.api_key}")

    monkeypatch.setattr(PortkeyHook, "await_batches", buggy_wait)
    (event,) = run_to_event(make_trigger("batch_a"))[0]
    assert event.payload["status"] == "error"
    assert event.payload["reason"] == "RuntimeError: bug while waiting with ***"
