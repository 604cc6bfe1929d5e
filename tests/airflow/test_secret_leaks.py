"""Secret-leak scan: distinctive credentials never reach a log, an error, an XCom, a rendered
template field, a trigger's serialised form or a URL the server received."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

API_KEY = "pk-LEAKSCAN-api-7f3a91"
VIRTUAL_KEY = "vk-LEAKSCAN-virtual-2c8e"
PROVIDER_KEY = "sk-LEAKSCAN-provider-5d17"
CONFIG = "pc-LEAKSCAN-config-b604"
HEADER_VALUE = "aws-leak-header-secret-5150"
SECRETS = (API_KEY, VIRTUAL_KEY, PROVIDER_KEY, CONFIG, HEADER_VALUE)


@pytest.fixture
def secret_conn(emulator, monkeypatch):
    conn = {
        "conn_type": "portkey",
        "host": emulator.base_url,
        "password": API_KEY,
        "extra": {
            "secret_virtual_key": VIRTUAL_KEY,
            "provider": "openai",
            "provider_api_key": PROVIDER_KEY,
            "secret_config": CONFIG,
            "secret_headers": {"x-portkey-aws-secret-access-key": HEADER_VALUE},
            "max_retries": 1,
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_PORTKEY_DEFAULT", json.dumps(conn))
    return emulator


def stored_text(run_ids: list[str]) -> str:
    """Every XCom and rendered template field of the given runs, as text."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    parts = []
    with create_session() as session:
        for model in (XComModel, RenderedTaskInstanceFields):
            rows = session.scalars(select(model).where(model.run_id.in_(run_ids))).all()
            for row in rows:
                value = getattr(row, "value", None) or getattr(row, "rendered_fields", None)
                parts.append(json.dumps(value, default=str))
    return "\n".join(parts)


@pytest.mark.emulator(api_key=API_KEY, in_progress_s=3600)
def test_no_secret_anywhere_a_user_or_server_can_see(secret_conn, run_dag, capfd):
    emulator = secret_conn
    held = emulator.add_batch(status="in_progress", hold=True)["id"]
    runs = [
        run_dag("portkey_cancel_on_failure_teardown"),
        run_dag("portkey_cancel_on_failure_notifier"),
        run_dag("portkey_cancel_batches", batch_ids=[held]),
    ]
    # Errors whose bodies echo the key (a careless proxy) and that fail tasks.
    emulator.add_fault(
        "status", status=401, times=None, body={"error": {"message": f"bad key {API_KEY}"}}
    )
    runs.append(run_dag("sensor_deferrable_wait", batch_id=held))
    runs.append(run_dag("cancel_one", batch_id=held))
    assert runs[-1].states == {"cancel": "failed"}
    assert runs[-2].states["wait"] == "failed"

    captured = capfd.readouterr()
    logs = captured.out + captured.err
    assert "bad key ***" in logs, "the echoed key must be visible only redacted"
    stored = stored_text([run.run_id for run in runs])
    assert "cancelling" in stored  # the scan really read the XComs
    urls = "\n".join(f"{r.path}?{r.query}" for r in emulator.requests)
    bodies = "\n".join(r.body.decode("utf-8", "replace") for r in emulator.requests)
    for secret in SECRETS:
        assert secret not in logs, f"{secret} leaked into a task log"
        assert secret not in stored, f"{secret} leaked into an XCom or rendered field"
        assert secret not in urls, f"{secret} leaked into a URL"
        assert secret not in bodies, f"{secret} leaked into a request body"


@pytest.mark.emulator(api_key=API_KEY)
def test_trigger_serialisation_holds_no_secret(secret_conn):
    import time

    from airflow_portkey.hooks.portkey import PortkeyHook
    from airflow_portkey.triggers.batch import PortkeyBatchTrigger

    hook = PortkeyHook()
    batch = hook.get_batch(secret_conn.add_batch(status="in_progress", hold=True)["id"])
    trigger = PortkeyBatchTrigger(
        batch.id,
        portkey_conn_id="portkey_default",
        deadline=time.time() + 60,
        poll_interval=1,
        trace_id=hook.trace_id,
        metadata=hook.trace_metadata,
    )
    text = json.dumps(trigger.serialize())
    for secret in SECRETS:
        assert secret not in text
    assert batch.id in text


@pytest.mark.parametrize("dag_id", ["sensor_poke_wait", "sensor_deferrable_wait"])
@pytest.mark.emulator(api_key=API_KEY)
def test_a_batch_echoing_the_provider_key_reaches_xcom_redacted(secret_conn, run_dag, dag_id):
    echoed = [{"code": "invalid_key", "message": f"bad key {PROVIDER_KEY}", "line": 1}]
    batch = secret_conn.add_batch(status="completed", errors=echoed)
    run = run_dag(dag_id, batch_id=batch["id"])
    assert run.states == {"wait": "success", "downstream": "success"}
    stored = stored_text([run.run_id])
    assert "line 1: bad key ***" in stored
    assert PROVIDER_KEY not in stored
