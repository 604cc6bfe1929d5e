"""The "Portkey logs" extra link: hosted Portkey's logs filtered by the task's trace id; no
link for a self-hosted gateway; registered where Airflow looks for links."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_portkey.hooks.portkey import PortkeyHook
from airflow_portkey.links import PortkeyLogsLink
from airflow_portkey.operators.batch import (
    PortkeyBatchResultsOperator,
    PortkeyCancelBatchOperator,
    PortkeyCreateBatchOperator,
)
from airflow_portkey.sensors.batch import PortkeyBatchSensor

from .support import set_connection


@dataclass
class TaskTry:
    """What a task-instance key offers the link (Airflow passes the running task instance)."""

    dag_id: str = "nightly"
    run_id: str = "manual__2026-12-01T10:00:00+00:00"
    task_id: str = "submit"
    try_number: int = 2
    map_index: int = -1


def link_for(conn_id: str) -> str:
    operator = PortkeyCancelBatchOperator(task_id="submit", batch_id="b", portkey_conn_id=conn_id)
    return PortkeyLogsLink().get_link(operator, ti_key=TaskTry())  # type: ignore[arg-type]


def test_hosted_link_filters_portkeys_logs_by_the_trace_id_the_requests_carry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_connection(
        monkeypatch, "pk_hosted", host=None, password="pk-hosted-key", extra={"provider": "@openai"}
    )
    url = urlsplit(link_for("pk_hosted"))
    assert (url.scheme, url.netloc, url.path) == ("https", "app.portkey.ai", "/logs")
    (trace_id,) = parse_qs(url.query)["trace_id"]
    hook = PortkeyHook("pk_hosted")
    monkeypatch.setattr("airflow_portkey.hooks.portkey._current_context", lambda: {"ti": TaskTry()})
    hook.settings  # noqa: B018 - loads the connection and the task's trace headers
    assert (
        trace_id == hook.trace_id == "airflow/nightly/manual__2026-12-01T10:00:00+00:00/submit/try2"
    )


def test_self_hosted_gateway_gets_no_link(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(
        monkeypatch,
        "pk_gateway",
        host="http://127.0.0.1:8787/v1",
        password=None,
        extra={"provider": "openai"},
    )
    assert link_for("pk_gateway") == ""


def test_unusable_connection_gets_no_link_rather_than_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_connection(monkeypatch, "pk_broken", host=None, password=None, extra={})
    assert link_for("pk_broken") == ""


@pytest.mark.parametrize(
    "operator_class",
    [
        PortkeyCreateBatchOperator,
        PortkeyCancelBatchOperator,
        PortkeyBatchResultsOperator,
        PortkeyBatchSensor,
    ],
)
def test_every_task_that_touches_a_batch_offers_the_link(operator_class: type) -> None:
    assert [link.name for link in operator_class.operator_extra_links] == ["Portkey logs"]


def test_airflow_providers_links_lists_it() -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["airflow", "providers", "links", "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=True,
    )
    # The JSON list is the last line: the CLI may log before it.
    listed = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"extra_link_class_name": "airflow_portkey.links.PortkeyLogsLink"} in listed
