"""Airflow tasks through the gateway: the tier-2 scenario DAGs, run with dag.test()."""

from __future__ import annotations

import pytest

from airflow_portkey.testing import PortkeyEmulator, RecordedRequest

from .conftest import PROVIDER_API_KEY

BEARER = f"Bearer {PROVIDER_API_KEY}"


def _clean(requests: list[RecordedRequest]) -> None:
    for request in requests:
        assert request.headers["authorization"] == BEARER
        # The task's trace headers stop at the gateway.
        assert not [name for name in request.headers if name.startswith("x-portkey-")]


def test_cancel_operator(emulator: PortkeyEmulator, run_dag) -> None:
    batch = emulator.add_batch(status="in_progress")
    result = run_dag("cancel_one", batch_id=batch["id"])
    assert result.state == "success"
    assert result.states == {"cancel": "success"}
    assert result.xcoms["cancel"]["id"] == batch["id"]
    assert result.xcoms["cancel"]["status"] == "cancelling"
    (cancel,) = emulator.requests
    assert (cancel.method, cancel.path) == ("POST", f"/v1/batches/{batch['id']}/cancel")
    assert cancel.body == b""
    _clean(emulator.requests)


def test_cancel_operator_on_a_completed_batch(emulator: PortkeyEmulator, run_dag) -> None:
    batch = emulator.add_batch(status="completed")
    result = run_dag("cancel_one", batch_id=batch["id"])
    assert result.states == {"cancel": "success"}
    assert result.xcoms["cancel"]["status"] == "completed"
    assert [(r.method, r.route) for r in emulator.requests] == [
        ("POST", "batches.cancel"),  # 409 through the gateway ...
        ("GET", "batches.get"),  # ... answered by reading the batch
    ]
    _clean(emulator.requests)


@pytest.mark.parametrize(("final", "dag_state"), [("completed", "success"), ("failed", "failed")])
def test_deferrable_sensor(
    emulator: PortkeyEmulator, run_dag, finish_after_polls, final: str, dag_state: str
) -> None:
    batch = emulator.add_batch(status="in_progress")
    finish_after_polls(batch["id"], final, polls=2)
    result = run_dag("sensor_deferrable_wait", batch_id=batch["id"])
    assert result.state == dag_state
    if final == "completed":
        assert result.states == {"wait": "success", "downstream": "success"}
        assert result.xcoms["wait"]["status"] == "completed"
        assert result.xcoms["downstream"] == "completed"
    else:
        assert result.states == {"wait": "failed", "downstream": "upstream_failed"}
    polls = emulator.requests
    assert len(polls) >= 3  # the first poke, then the trigger's polls
    assert {(r.method, r.path) for r in polls} == {("GET", f"/v1/batches/{batch['id']}")}
    _clean(polls)
