"""Helpers shared by the tier-1 tests (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from airflow_portkey._core.retry import RetryPolicy
from airflow_portkey.hooks.portkey import PortkeyHook

T = TypeVar("T")

API_KEY = "pk-unit-test-key"
PROVIDER_API_KEY = "sk-unit-provider-key"
CONN_ID = "portkey_unit"

# Retries that take milliseconds, not seconds: 3 attempts in all.
FAST_RETRIES = RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.02)

MakeHook = Callable[..., PortkeyHook]

# Run by a fresh interpreter: does importing the hook import requests?
IMPORT_PROBE = "import airflow_portkey.hooks.portkey, sys; print('requests' in sys.modules)"


def set_connection(
    monkeypatch: pytest.MonkeyPatch,
    conn_id: str,
    *,
    host: str | None,
    password: str | None = API_KEY,
    extra: dict[str, Any] | None = None,
    conn_type: str = "portkey",
) -> None:
    """Define an Airflow connection through its AIRFLOW_CONN_<ID> variable (JSON form)."""
    body: dict[str, Any] = {"conn_type": conn_type}
    if host is not None:
        body["host"] = host
    if password is not None:
        body["password"] = password
    if extra is not None:
        body["extra"] = extra
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(body))


def run_async(hook: PortkeyHook, make: Callable[[], Awaitable[T]]) -> T:
    """Run one async hook call on a fresh event loop, closing the hook's client after it."""

    async def go() -> T:
        try:
            return await make()
        finally:
            await hook.aclose()

    return asyncio.run(go())
