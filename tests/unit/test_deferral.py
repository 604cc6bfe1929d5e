"""What a deferring task hands the triggerer: a trigger whose deadline is the sensor's timeout
from the moment it defers, and, for the create operator, no later than the task's
execution_timeout (Airflow 3.3.2 does not apply it to a deferred task). The DAG runs of
tests/airflow show that a wait times out; only the trigger's own deadline shows when (no timed
assertion: the deadline is read, not waited for). And a deferral that ends without the
trigger's event still cancels the batch the create recorded."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferralError, TaskDeferralTimeout, TaskDeferred

from airflow_portkey.hooks.portkey import PortkeyHook
from airflow_portkey.operators.batch import PortkeyCreateBatchOperator
from airflow_portkey.sensors.batch import PortkeyBatchSensor
from airflow_portkey.testing import PortkeyEmulator
from airflow_portkey.triggers.batch import PortkeyBatchTrigger


def test_a_deferring_sensor_gives_its_trigger_a_deadline_of_its_timeout_from_now(
    emulator: PortkeyEmulator, hook: PortkeyHook
) -> None:
    batch = emulator.add_batch(status="in_progress", hold=True)
    sensor = PortkeyBatchSensor(
        task_id="wait",
        batch_id=batch["id"],
        portkey_conn_id=hook.portkey_conn_id,
        deferrable=True,
        poke_interval=5,
        timeout=120,
    )
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    after = time.time()
    trigger = deferred.value.trigger
    assert isinstance(trigger, PortkeyBatchTrigger)
    assert before + 120 <= trigger.deadline <= after + 120
    # Airflow's own deferral timeout comes after the trigger's deadline, so that the trigger's
    # timeout event (and the cancel it may bring) is what ends the wait.
    assert deferred.value.timeout is not None
    assert deferred.value.timeout > timedelta(seconds=120)
    assert len(emulator.requests_to(route="batches.get", batch_id=batch["id"])) == 1


REQUESTS = [
    {
        "custom_id": "r-1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
    }
]


def deferrable_create(hook: PortkeyHook, **options: Any) -> PortkeyCreateBatchOperator:
    """A create operator that submits REQUESTS and waits for them on the triggerer."""
    return PortkeyCreateBatchOperator(
        task_id="create",
        input=REQUESTS,
        portkey_conn_id=hook.portkey_conn_id,
        wait_for_completion=True,
        deferrable=True,
        **options,
    )


def test_a_deferring_create_gives_its_trigger_a_deadline_at_its_execution_timeout(
    emulator: PortkeyEmulator, hook: PortkeyHook
) -> None:
    started = datetime.now(timezone.utc) - timedelta(seconds=5)
    pushed: dict[str, Any] = {}
    ti = SimpleNamespace(
        dag_id="dag",
        run_id="run",
        task_id="create",
        map_index=-1,
        try_number=1,
        start_date=started,
        xcom_push=lambda key, value: pushed.update({key: value}),
    )
    create = deferrable_create(
        hook, poll_interval=5, timeout=3600, execution_timeout=timedelta(seconds=60)
    )
    with pytest.raises(TaskDeferred) as deferred:
        create.execute({"ti": ti})
    trigger = deferred.value.trigger
    assert isinstance(trigger, PortkeyBatchTrigger)
    assert trigger.batch_ids == [pushed["batch_id"]]
    assert trigger.deadline == started.timestamp() + 60
    assert emulator.requests_to(route="batches.cancel") == []


class StateStore(dict):  # type: ignore[type-arg]
    """The task_state_store of a task instance, as the create operator uses it."""

    def set(self, key: str, value: str) -> None:
        self[key] = value


@pytest.mark.parametrize(
    ("reason", "raised"),
    [("Trigger timeout", TaskDeferralTimeout), ("Trigger failure", TaskDeferralError)],
    ids=["deferral-timeout", "trigger-failure"],
)
def test_a_deferral_that_ends_without_an_event_cancels_the_batch_the_create_recorded(
    reason: str, raised: type[BaseException], emulator: PortkeyEmulator, hook: PortkeyHook
) -> None:
    """Airflow resumes a deferral that timed out or whose trigger failed with __fail__, not
    with the trigger's event: the batch the create recorded is cancelled, then the task fails."""
    batch = emulator.add_batch(status="in_progress", hold=True)
    create = deferrable_create(hook)
    store = StateStore({PortkeyCreateBatchOperator.state_key: batch["id"]})
    with pytest.raises(raised):
        create.resume_execution("__fail__", {"error": reason}, {"task_state_store": store})
    assert len(emulator.requests_to(route="batches.cancel", batch_id=batch["id"])) == 1
    assert emulator.get_batch(batch["id"])["status"] in {"cancelling", "cancelled"}
