"""Trace headers: derived from a task context (dag, run, task, map index, try), made safe for a
header, absent outside a task; metadata compact, ASCII and bounded. Pure: ``_core.trace``."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_portkey._core.trace import trace_from_context, trace_headers

RUN_ID = "manual__2024-05-01T10:00:00+00:00"


def ti(**overrides: Any) -> SimpleNamespace:
    fields: dict[str, Any] = {
        "dag_id": "nightly_batches",
        "run_id": RUN_ID,
        "task_id": "cancel_batch",
        "try_number": 2,
        "map_index": -1,
    }
    fields.update(overrides)
    return SimpleNamespace(**fields)


def test_trace_from_a_task_context() -> None:
    trace_id, metadata = trace_from_context({"ti": ti()})
    assert trace_id == f"airflow/nightly_batches/{RUN_ID}/cancel_batch/try2"
    assert metadata == {
        "source": "airflow",
        "dag_id": "nightly_batches",
        "run_id": RUN_ID,
        "task_id": "cancel_batch",
        "try_number": "2",
    }


def test_trace_from_a_mapped_task() -> None:
    trace_id, metadata = trace_from_context({"task_instance": ti(map_index=3, try_number=1)})
    assert trace_id == f"airflow/nightly_batches/{RUN_ID}/cancel_batch/map3/try1"
    assert metadata["map_index"] == "3"
    assert metadata["try_number"] == "1"


def test_trace_id_characters_are_made_safe() -> None:
    trace_id, metadata = trace_from_context({"ti": ti(run_id="my run #1 (ünï)")})
    assert trace_id == "airflow/nightly_batches/my_run__1___n__/cancel_batch/try2"
    assert metadata["run_id"] == "my run #1 (ünï)"  # metadata keeps the real value


def test_trace_from_context_without_a_task_instance() -> None:
    context = {
        "dag": SimpleNamespace(dag_id="d"),
        "task": SimpleNamespace(task_id="t"),
        "run_id": "r1",
    }
    trace_id, metadata = trace_from_context(context)
    assert trace_id == "airflow/d/r1/t"
    assert metadata == {"source": "airflow", "dag_id": "d", "run_id": "r1", "task_id": "t"}


@pytest.mark.parametrize(
    "context",
    [
        None,
        {},
        {"ti": None},
        {"ti": SimpleNamespace()},
        {"ti": ti(run_id=None)},
        {"ti": ti(dag_id="")},
        {"ti": ti(task_id=None)},
        {"run_id": "r1"},
    ],
    ids=["none", "empty", "ti-none", "ti-bare", "no-run", "no-dag", "no-task", "run-only"],
)
def test_no_trace_without_dag_run_and_task(context: dict[str, Any] | None) -> None:
    assert trace_from_context(context) == (None, {})


def test_trace_headers() -> None:
    assert trace_headers(None, {}) == {}
    headers = trace_headers("airflow/d/r/t", {"dag_id": "d", "long": "x" * 300, "name": "ünï"})
    assert headers["x-portkey-trace-id"] == "airflow/d/r/t"
    value = headers["x-portkey-metadata"]
    assert value.isascii()
    assert json.loads(value) == {"dag_id": "d", "long": "x" * 128, "name": "ünï"}
    assert " " not in value  # compact JSON


def test_an_explicit_trace_id_is_made_safe_for_a_header() -> None:
    assert trace_headers("run 7; ünïcode\tid", {}) == {"x-portkey-trace-id": "run_7___n_code_id"}
