"""Trace headers that lead from a Portkey log back to the Airflow task that made the request."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

TRACE_ID_HEADER = "x-portkey-trace-id"
METADATA_HEADER = "x-portkey-metadata"

_UNSAFE = re.compile(r"[^A-Za-z0-9._:+\-/=@]")
# Portkey keeps metadata values as short strings.
_MAX_METADATA_VALUE = 128


def _clean(value: object) -> str:
    return _UNSAFE.sub("_", str(value))


def trace_from_context(context: Mapping[str, Any] | None) -> tuple[str | None, dict[str, str]]:
    """Trace id and metadata from an Airflow task context; nothing when the context lacks them.

    A hook used outside a task, or ``execute({})`` in a unit test, has no dag_id or run_id:
    its requests then go without trace headers rather than failing.
    """
    if not context:
        return None, {}
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", None)
    run_id = getattr(ti, "run_id", None) or context.get("run_id")
    task_id = getattr(ti, "task_id", None) or getattr(context.get("task"), "task_id", None)
    if not (dag_id and run_id and task_id):
        return None, {}
    try_number = getattr(ti, "try_number", None)
    map_index = getattr(ti, "map_index", -1)
    parts = [dag_id, run_id, task_id]
    if isinstance(map_index, int) and map_index >= 0:
        parts.append(f"map{map_index}")
    if try_number is not None:
        parts.append(f"try{try_number}")
    trace_id = "airflow/" + "/".join(_clean(part) for part in parts)
    metadata = {"source": "airflow", "dag_id": str(dag_id), "run_id": str(run_id)}
    metadata["task_id"] = str(task_id)
    if try_number is not None:
        metadata["try_number"] = str(try_number)
    if isinstance(map_index, int) and map_index >= 0:
        metadata["map_index"] = str(map_index)
    return trace_id, metadata


def trace_headers(trace_id: str | None, metadata: Mapping[str, str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    if trace_id:
        headers[TRACE_ID_HEADER] = _clean(trace_id)
    if metadata:
        values = {str(key): str(value)[:_MAX_METADATA_VALUE] for key, value in metadata.items()}
        # ensure_ascii keeps the header value ASCII whatever the run id holds.
        headers[METADATA_HEADER] = json.dumps(values, separators=(",", ":"), ensure_ascii=True)
    return headers


# Hosted Portkey's logs page. Its docs name the page (app.portkey.ai/logs) and filtering logs by
# trace id in it; the ``trace_id`` query parameter is the form seen in use, not documented.
PORTKEY_LOGS_URL = "https://app.portkey.ai/logs"


def logs_url(trace_id: str) -> str:
    """Hosted Portkey's logs, filtered by one trace id."""
    from urllib.parse import urlencode

    return f"{PORTKEY_LOGS_URL}?{urlencode({'trace_id': trace_id})}"
