"""Bad task arguments are refused with a message naming the field, before any request.

The hook-level twin (batch ids, connections) is in tests/unit/test_batch_ids.py and
tests/unit/test_settings.py.
"""

from __future__ import annotations

import json

import pytest

from airflow_portkey.exceptions import PortkeyConfigError
from airflow_portkey.operators.batch import (
    PortkeyCancelBatchOperator,
    PortkeyCreateBatchOperator,
)
from airflow_portkey.sensors.batch import PortkeyBatchSensor

ARN = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Amodel-invocation-job%2Fabc123"


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: PortkeyBatchSensor(task_id="s", batch_id="b", poke_interval=0), "poke_interval"),
        (lambda: PortkeyBatchSensor(task_id="s", batch_id="b", timeout=0), "timeout"),
        (
            lambda: PortkeyBatchSensor(
                task_id="s", batch_id="b", success_statuses=["completed", "failed"]
            ),
            "overlap",
        ),
        (
            lambda: PortkeyBatchSensor(task_id="s", batch_id="b", success_statuses=["running"]),
            "not a terminal",
        ),
        (
            lambda: PortkeyBatchSensor(task_id="s", batch_id="b", failure_statuses=["nonsense"]),
            "unknown batch status",
        ),
        (lambda: PortkeyCancelBatchOperator(task_id="c", batch_id="b", poll_interval=0), "poll"),
        (lambda: PortkeyCancelBatchOperator(task_id="c", batch_id="b", wait_timeout=-1), "wait"),
        (
            lambda: PortkeyCancelBatchOperator(task_id="c", batch_id="b", max_concurrency=0),
            "max_concurrency",
        ),
        (lambda: PortkeyCreateBatchOperator(task_id="c", input=[], timeout=0), "timeout"),
    ],
)
def test_task_arguments_are_refused_when_the_dag_is_parsed(make, field):
    with pytest.raises(ValueError, match=field):
        make()


@pytest.mark.parametrize(
    "batch_id",
    [None, "", "   ", 42, "a/b", "a?b", "a#b", "a b", "a\x00b", ".", "..", "x" * 513, []],
    ids=repr,
)
def test_cancel_refuses_every_id_before_any_request(batch_id, emulator):
    good = emulator.add_batch(status="in_progress", hold=True)["id"]
    ids = [good, batch_id] if batch_id != [] else []
    with pytest.raises(PortkeyConfigError, match="batch_id"):
        PortkeyCancelBatchOperator(task_id="c", batch_id=ids).execute({})
    assert emulator.requests == []
    assert emulator.get_batch(good)["status"] == "in_progress"


def test_ids_exactly_as_portkey_returns_them_pass_verbatim(emulator):
    emulator.add_batch(id=ARN, status="in_progress", hold=True, flavour="bedrock")
    result = PortkeyCancelBatchOperator(task_id="c", batch_id=ARN).execute({})
    assert result["id"] == ARN
    assert emulator.requests[0].path == f"/v1/batches/{ARN}/cancel"


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([{"custom_id": "a", "method": "POST", "url": "/v1/x"}], "lacks body"),
        ([{"custom_id": "a", "method": "POST", "url": "/v1/x", "body": {}}] * 2, "appears twice"),
        (["not a dict"], "is not a dict"),
        ("/no/such/file.jsonl", "does not exist"),
    ],
)
def test_create_refuses_bad_input_before_upload(requests, message, emulator):
    operator = PortkeyCreateBatchOperator(task_id="c", input=requests)
    with pytest.raises(PortkeyConfigError, match=message):
        operator.execute({})
    assert emulator.requests == []


@pytest.mark.parametrize(
    ("conn", "message"),
    [
        ({"conn_type": "http", "host": "http://127.0.0.1:1/v1"}, "of type 'http'"),
        ({"conn_type": "portkey", "host": "not a url"}, "host"),
        (
            {"conn_type": "portkey", "extra": {"provider": "openai", "secret_config": "oops"}},
            "secret_config",
        ),
        (
            {"conn_type": "portkey", "extra": {"provider": "openai", "request_timeout": 0}},
            "timeout",
        ),
    ],
)
def test_unusable_connections_fail_the_task_before_any_request(
    conn, message, emulator, monkeypatch
):
    conn = {"password": "pk-x", **conn}
    conn.setdefault("host", emulator.base_url)
    monkeypatch.setenv("AIRFLOW_CONN_PORTKEY_BAD", json.dumps(conn))
    batch_id = emulator.add_batch(status="in_progress", hold=True)["id"]
    operator = PortkeyCancelBatchOperator(
        task_id="c", batch_id=batch_id, portkey_conn_id="portkey_bad"
    )
    with pytest.raises(PortkeyConfigError, match=message):
        operator.execute({})
    assert emulator.requests == []


def test_a_missing_connection_names_it(emulator):
    batch_id = emulator.add_batch(status="in_progress", hold=True)["id"]
    operator = PortkeyCancelBatchOperator(task_id="c", batch_id=batch_id, portkey_conn_id="nope")
    with pytest.raises(Exception, match="nope"):
        operator.execute({})
    assert emulator.requests == []
