"""Faults as the tasks meet them: the cancel operator, the sensor (poke, reschedule,
deferrable) and the trigger, each against a passing burst and a lasting outage.

A burst is retried within the budget and the task succeeds; an outage ends in a typed error
naming what Portkey answered, after a bounded, asserted number of requests. Which answers and
failures are retried, and how long each wait is, is proven once at the sans-IO seam
(tests/core/test_retry.py, tests/core/test_waits.py); the hook's transports meet every fault
kind of the emulator in tests/unit/test_retries.py. Here one error status and one dropped
connection stand for them: what only this tier shows is how a task reports them.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from airflow_portkey.exceptions import PortkeyError
from airflow_portkey.operators.batch import PortkeyCancelBatchOperator
from airflow_portkey.sensors.batch import PortkeyBatchSensor
from airflow_portkey.triggers.batch import PortkeyBatchTrigger

# One retry: its backoff (full jitter up to half a second) is most of what these tests wait for.
# How retries follow each other up to max_retries is proven in tests/core/test_retry.py and
# tests/unit/test_retries.py; here a burst is one failure, an outage one more than is retried.
MAX_RETRIES = 1
ATTEMPTS = MAX_RETRIES + 1

# name -> (add_fault kwargs, text the final error must contain)
FAULTS = {
    "503": ({"kind": "server_error", "status": 503}, "503"),
    "dropped": ({"kind": "drop"}, "dropped error"),
}


@pytest.fixture
def conn_id(emulator, monkeypatch):
    """Few, fast retries, so that an outage ends quickly."""
    conn = json.loads(emulator.airflow_conn_json())
    conn["extra"].update(max_retries=MAX_RETRIES, retry_budget=30)
    monkeypatch.setenv("AIRFLOW_CONN_PORTKEY_FAULTS", json.dumps(conn))
    return "portkey_faults"


def inject(emulator, fault: str, route: str, times: int | None) -> None:
    options, _ = FAULTS[fault]
    options = dict(options)
    emulator.add_fault(options.pop("kind"), route=route, times=times, **options)


def expected_text(fault: str) -> str:
    return FAULTS[fault][1]


# -- the cancel operator ------------------------------------------------------------------


def cancel(conn_id: str, batch_id: str):
    operator = PortkeyCancelBatchOperator(
        task_id="cancel", batch_id=batch_id, portkey_conn_id=conn_id
    )
    return operator.execute({})


@pytest.mark.parametrize("fault", FAULTS)
def test_cancel_operator_rides_out_a_burst(fault, emulator, conn_id):
    batch_id = emulator.add_batch(status="in_progress", hold=True)["id"]
    inject(emulator, fault, "batches.cancel", times=MAX_RETRIES)
    result = cancel(conn_id, batch_id)
    assert result["status"] == "cancelling"
    assert len(emulator.requests_to(route="batches.cancel")) == ATTEMPTS


@pytest.mark.parametrize("fault", FAULTS)
def test_cancel_operator_fails_clearly_in_an_outage(fault, emulator, conn_id):
    batch_id = emulator.add_batch(status="in_progress", hold=True)["id"]
    inject(emulator, fault, "batches.cancel", times=None)
    with pytest.raises(PortkeyError) as raised:
        cancel(conn_id, batch_id)
    message = str(raised.value)
    assert "Could not cancel 1 of 1 batches" in message
    assert batch_id in message and expected_text(fault) in message
    assert len(emulator.requests_to(route="batches.cancel")) == ATTEMPTS
    assert emulator.get_batch(batch_id)["status"] == "in_progress"


# -- the sensor in poke mode ----------------------------------------------------------------


def poke_sensor(conn_id: str, batch_id: str) -> PortkeyBatchSensor:
    return PortkeyBatchSensor(
        task_id="wait",
        batch_id=batch_id,
        portkey_conn_id=conn_id,
        mode="poke",
        deferrable=False,
        poke_interval=0.05,
        timeout=30,
    )


@pytest.mark.parametrize("fault", FAULTS)
def test_poke_sensor_rides_out_a_burst(fault, emulator, conn_id):
    batch_id = emulator.add_batch(status="completed", hold=True)["id"]
    inject(emulator, fault, "batches.get", times=MAX_RETRIES)
    result = poke_sensor(conn_id, batch_id).execute({})
    assert result["status"] == "completed"
    assert len(emulator.requests_to(route="batches.get")) == ATTEMPTS


@pytest.mark.parametrize("fault", FAULTS)
def test_poke_sensor_fails_clearly_in_an_outage(fault, emulator, conn_id):
    batch_id = emulator.add_batch(status="in_progress", hold=True)["id"]
    inject(emulator, fault, "batches.get", times=None)
    with pytest.raises(PortkeyError, match=expected_text(fault)):
        poke_sensor(conn_id, batch_id).execute({})
    assert len(emulator.requests_to(route="batches.get")) == ATTEMPTS


# -- the trigger (what the deferrable sensor and operators wait with) ------------------------


def run_trigger(conn_id: str, batch_id: str, tolerated: int) -> dict:
    trigger = PortkeyBatchTrigger(
        batch_id,
        portkey_conn_id=conn_id,
        deadline=time.time() + 60,
        poll_interval=0.05,
        max_transient_failures=tolerated,
    )

    async def first_event():
        return await trigger.run().__anext__()

    return asyncio.run(first_event()).payload


@pytest.mark.parametrize("fault", FAULTS)
def test_trigger_rides_out_a_burst(fault, emulator, conn_id):
    batch_id = emulator.add_batch(status="completed", hold=True)["id"]
    inject(emulator, fault, "batches.get", times=MAX_RETRIES)
    payload = run_trigger(conn_id, batch_id, tolerated=0)
    assert payload["status"] == "success"
    assert len(emulator.requests_to(route="batches.get")) == ATTEMPTS


@pytest.mark.parametrize("fault", FAULTS)
def test_trigger_ends_in_one_error_event_in_an_outage(fault, emulator, conn_id):
    batch_id = emulator.add_batch(status="in_progress", hold=True)["id"]
    inject(emulator, fault, "batches.get", times=None)
    payload = run_trigger(conn_id, batch_id, tolerated=1)
    assert payload["status"] == "error"
    assert expected_text(fault) in payload["reason"]
    # Two polls (one failure tolerated), each with its own retries.
    assert len(emulator.requests_to(route="batches.get")) == 2 * ATTEMPTS


# -- non-retryable answers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "hint"), [(401, "check the API key"), (404, "check the batch id")]
)
def test_client_errors_fail_at_once_and_say_what_to_do(status, hint, emulator, conn_id):
    batch_id = emulator.add_batch(status="in_progress", hold=True)["id"]
    emulator.add_fault("status", status=status, times=None, route="batches.get")
    with pytest.raises(PortkeyError, match=hint):
        poke_sensor(conn_id, batch_id).execute({})
    assert len(emulator.requests_to(route="batches.get")) == 1


# -- the sensor in reschedule and deferrable mode, through real Airflow runs ---------------


@pytest.mark.parametrize("mode", ["reschedule", "deferrable"])
def test_sensor_modes_ride_out_a_burst_in_a_dag_run(mode, emulator, run_dag, finish_after_polls):
    batch = emulator.add_batch(status="in_progress", hold=True)
    emulator.add_fault("server_error", status=503, times=1, route="batches.get")
    finish_after_polls(batch["id"], "completed", polls=3)  # the failed one, its retry, a poll
    result = run_dag(f"sensor_{mode}_wait", batch_id=batch["id"])
    assert result.states == {"wait": "success", "downstream": "success"}
    assert result.xcoms["wait"]["status"] == "completed"


@pytest.mark.parametrize("mode", ["reschedule", "deferrable"])
def test_sensor_modes_fail_in_a_lasting_outage(mode, emulator, run_dag):
    batch = emulator.add_batch(status="in_progress", hold=True)
    emulator.add_fault("status", status=401, times=None, route="batches.get")
    result = run_dag(f"sensor_{mode}_wait", batch_id=batch["id"])
    assert result.states == {"wait": "failed", "downstream": "upstream_failed"}
    assert len(emulator.requests_to(route="batches.get")) == 1
