"""Every example DAG in dags/ runs through real Airflow against the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.airflow.conftest import EXAMPLE_DAGS


def test_every_example_dag_parses(dagbag):
    from_examples = {
        dag_id
        for dag_id in dagbag.dag_ids
        if Path(dagbag.get_dag(dag_id).fileloc).resolve().parent == EXAMPLE_DAGS.resolve()
    }
    assert from_examples == {
        "portkey_batch_lifecycle",
        "portkey_cancel_on_failure_teardown",
        "portkey_cancel_on_failure_notifier",
        "portkey_cancel_batches",
    }


def test_lifecycle_submits_waits_fetches_and_leaves_the_batch(emulator, run_dag):
    result = run_dag("portkey_batch_lifecycle")
    assert result.state == "success"
    assert result.states == {
        "submit_batch": "success",
        "wait_for_batch": "success",
        "fetch_results": "success",
        "cancel_if_abandoned": "success",
    }
    batch_id = result.xcoms["submit_batch"]["id"]
    assert result.xcoms["wait_for_batch"]["status"] == "completed"
    create = emulator.requests_to(route="batches.create")[0].json()
    assert create["metadata"]["airflow_dag_id"] == "portkey_batch_lifecycle"
    assert create["metadata"]["airflow_task_id"] == "submit_batch"
    assert create["metadata"]["team"] == "reviews"
    output = Path(result.xcoms["fetch_results"]["output_path"])
    lines = output.read_text().splitlines()
    assert [json.loads(line)["custom_id"] for line in lines] == [f"review-{n}" for n in range(1, 6)]
    # The run succeeded: the teardown sent nothing.
    assert emulator.get_batch(batch_id)["status"] == "completed"
    assert emulator.requests_to(route="batches.cancel") == []
    assert emulator.requests_to(route="batches.list") == []
    assert create["metadata"]["airflow_map_index"] == "-1"
    traces = {r.headers.get("x-portkey-trace-id") for r in emulator.requests}
    assert all(t and t.startswith("airflow/portkey_batch_lifecycle/") for t in traces)


@pytest.mark.emulator(in_progress_s=3600)
def test_teardown_example_cancels_the_running_batch(emulator, run_dag):
    result = run_dag("portkey_cancel_on_failure_teardown")
    assert result.state == "failed"
    assert result.states == {
        "submit_batch": "success",
        "load_warehouse": "failed",
        "cancel_batch": "success",
    }
    batch_id = result.xcoms["submit_batch"]["id"]
    assert len(emulator.requests_to(route="batches.cancel", batch_id=batch_id)) == 1
    # Found by its stamp, not by an XCom: the teardown names no task.
    assert [b["id"] for b in result.xcoms["cancel_batch"]] == [batch_id]
    assert result.xcoms["cancel_batch"][0]["status"] == "cancelling"
    assert emulator.get_batch(batch_id)["status"] in {"cancelling", "cancelled"}


@pytest.mark.emulator(in_progress_s=3600)
def test_notifier_example_cancels_from_the_failure_callback(emulator, run_dag):
    result = run_dag("portkey_cancel_on_failure_notifier")
    assert result.state == "failed"
    assert result.states == {"submit_batch": "success", "load_warehouse": "failed"}
    batch_id = result.xcoms["submit_batch"]["id"]
    assert len(emulator.requests_to(route="batches.cancel", batch_id=batch_id)) == 1
    assert emulator.get_batch(batch_id)["status"] in {"cancelling", "cancelled"}


def test_operations_example_cancels_the_given_ids_and_waits(emulator, run_dag):
    running = [emulator.add_batch(status="in_progress", hold=True)["id"] for _ in range(3)]
    finished = emulator.add_batch(status="completed", hold=True)["id"]
    result = run_dag("portkey_cancel_batches", batch_ids=[*running, finished])
    assert result.state == "success"
    final = result.xcoms["cancel_batches"]
    assert {b["id"]: b["status"] for b in final} == {
        **dict.fromkeys(running, "cancelled"),
        finished: "completed",
    }
