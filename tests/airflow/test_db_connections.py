"""Connections stored in the metadata database (as the UI, the REST API and
``airflow connections add`` store them), not in AIRFLOW_CONN_ variables: every mode of the
sensor and the deferrable operators under ``dag.test()``, which runs triggers inline."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from airflow_portkey.testing import PortkeyEmulator

MODES = ["poke", "reschedule", "deferrable"]


@pytest.fixture
def db_connection(
    emulator: PortkeyEmulator, airflow_db: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PortkeyEmulator]:
    """``portkey_default`` in the metadata database only, with the credential extras' names."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    monkeypatch.delenv("AIRFLOW_CONN_PORTKEY_DEFAULT")
    conn = Connection(
        conn_id="portkey_default",
        conn_type="portkey",
        host=emulator.base_url,
        password=emulator.api_key,
        extra=json.dumps({"secret_virtual_key": "vk-stored-in-db", "max_retries": 1}),
    )
    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id == "portkey_default").delete()
        session.add(conn)
    yield emulator
    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id == "portkey_default").delete()


@pytest.mark.parametrize("mode", MODES)
def test_sensor_waits_with_a_db_stored_connection(mode, db_connection, run_dag, finish_after_polls):
    emulator = db_connection
    batch = emulator.add_batch(status="in_progress", hold=True)
    finish_after_polls(batch["id"], "completed", polls=2)
    result = run_dag(f"sensor_{mode}_wait", batch_id=batch["id"])
    assert result.states == {"wait": "success", "downstream": "success"}
    polls = emulator.requests_to(route="batches.get", batch_id=batch["id"])
    assert len(polls) >= 2
    assert {poll.headers["x-portkey-virtual-key"] for poll in polls} == {"vk-stored-in-db"}


def test_deferrable_cancel_and_wait_with_a_db_stored_connection(db_connection, run_dag):
    """The cancel operator's wait runs in the trigger: its lookup must find the DB row too."""
    emulator = db_connection
    batch = emulator.add_batch(status="in_progress", hold=True)
    result = run_dag("cancel_wait_deferrable", batch_id=batch["id"])
    assert result.states == {"cancel": "success"}
    assert result.xcoms["cancel"]["status"] == "cancelled"
    reads = emulator.requests_to(route="batches.get", batch_id=batch["id"])
    assert reads and {r.headers["x-portkey-virtual-key"] for r in reads} == {"vk-stored-in-db"}
