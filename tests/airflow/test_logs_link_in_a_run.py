"""The "Portkey logs" link as Airflow computes it when a real task finishes (it keeps the URL
in XCom under the link's key, which the UI reads)."""

from __future__ import annotations

from urllib.parse import quote

import pytest


def link_xcom(dag_id: str, run_id: str, task_id: str) -> object:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run_id,
                XComModel.task_id == task_id,
                XComModel.key == "_link_PortkeyLogsLink",
            )
        ).first()
        return None if row is None else XComModel.deserialize_value(row)


def test_a_self_hosted_gateway_run_stores_an_empty_link(emulator, run_dag):
    batch = emulator.add_batch(status="in_progress", hold=True)
    result = run_dag("cancel_one", batch_id=batch["id"])
    assert result.states == {"cancel": "success"}
    assert link_xcom("cancel_one", result.run_id, "cancel") == ""


@pytest.mark.emulator(api_key="pk-hosted-link-test")
def test_a_hosted_connection_run_stores_the_logs_url_with_the_trace_id(
    emulator, run_dag, monkeypatch
):
    """Hosted Portkey is recognised by its host name; the emulator stands in for it through
    HOSTED_HOSTNAMES, and the link must carry the trace id the task's requests carried."""
    from airflow_portkey._core import settings

    monkeypatch.setattr(settings, "HOSTED_HOSTNAMES", frozenset({"127.0.0.1"}))
    batch = emulator.add_batch(status="in_progress", hold=True)
    result = run_dag("cancel_one", batch_id=batch["id"])
    assert result.states == {"cancel": "success"}
    (cancel,) = emulator.requests_to(route="batches.cancel", batch_id=batch["id"])
    trace_id = cancel.headers["x-portkey-trace-id"]
    url = link_xcom("cancel_one", result.run_id, "cancel")
    assert url == "https://app.portkey.ai/logs?trace_id=" + quote(trace_id, safe="")
