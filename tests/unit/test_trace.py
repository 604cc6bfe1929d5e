"""Trace headers as the server receives them: explicit, merged with the connection's metadata,
and absent outside a task. Deriving them from a task context is proven in
tests/core/test_trace.py; from a real task run in tests/airflow (the example DAGs)."""

from __future__ import annotations

import json

import pytest

from airflow_portkey.testing import PortkeyEmulator

from .support import MakeHook, run_async


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_explicit_trace_id_and_metadata_are_sent(
    emulator: PortkeyEmulator, make_hook: MakeHook, mode: str
) -> None:
    batch_id = emulator.add_batch()["id"]
    hook = make_hook(hook_kwargs={"trace_id": "nightly-42", "metadata": {"team": "ml", "n": "1"}})
    if mode == "sync":
        hook.get_batch(batch_id)
    else:
        run_async(hook, lambda: hook.acancel_batch(batch_id))
    (request,) = emulator.requests
    assert request.headers["x-portkey-trace-id"] == "nightly-42"
    assert json.loads(request.headers["x-portkey-metadata"]) == {"team": "ml", "n": "1"}
    assert hook.trace_id == "nightly-42"
    assert hook.trace_metadata == {"team": "ml", "n": "1"}


def test_hook_metadata_is_merged_over_the_connections(
    emulator: PortkeyEmulator, make_hook: MakeHook
) -> None:
    batch_id = emulator.add_batch()["id"]
    hook = make_hook(
        metadata={"env": "prod", "team": "data"},
        hook_kwargs={"trace_id": "t-1", "metadata": {"team": "ml"}},
    )
    hook.get_batch(batch_id)
    (request,) = emulator.requests
    assert json.loads(request.headers["x-portkey-metadata"]) == {"env": "prod", "team": "ml"}


def test_outside_a_task_no_trace_headers_are_sent(
    emulator: PortkeyEmulator, make_hook: MakeHook
) -> None:
    batch_id = emulator.add_batch()["id"]
    hook = make_hook()
    batch = hook.get_batch(batch_id)
    cancelled = run_async(hook, lambda: hook.acancel_batch(batch_id))
    assert (batch.id, cancelled.id) == (batch_id, batch_id)
    assert hook.trace_id is None
    assert hook.trace_metadata == {}
    for request in emulator.requests:
        assert "x-portkey-trace-id" not in request.headers
        assert "x-portkey-metadata" not in request.headers


def test_unsafe_characters_in_an_explicit_trace_id_are_replaced(
    emulator: PortkeyEmulator, make_hook: MakeHook
) -> None:
    batch_id = emulator.add_batch()["id"]
    hook = make_hook(hook_kwargs={"trace_id": "run 7; ünïcode\tid"})
    hook.get_batch(batch_id)
    (request,) = emulator.requests
    assert request.headers["x-portkey-trace-id"] == "run_7___n_code_id"
