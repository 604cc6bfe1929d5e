"""Both transports behind one call, so that every scenario runs on both paths alike."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from airflow_portkey._core.messages import ApiRequest, ApiResponse, Outcome, TransportFailure
from airflow_portkey._core.settings import PortkeySettings, settings_from_connection
from airflow_portkey._transport.aio import AsyncTransport
from airflow_portkey._transport.sync import SyncTransport

PATHS = ("sync", "async")
GET = ApiRequest("GET", "/batches/batch_1")
API_KEY = "pk-transport-test"


def settings_for(url: str, **extra: Any) -> PortkeySettings:
    return settings_from_connection(
        "transport_test",
        host=url,
        password=API_KEY,
        extra={"provider": "openai", "max_retries": 0, **extra},
    )


@dataclass
class Exchange:
    outcomes: list[Outcome]
    loop_lag_max: float = 0.0  # async path: the longest an event-loop ticker was held up
    ticks: int = 0
    elapsed: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def exchange(
    path: str, settings: PortkeySettings, *requests: ApiRequest, **options: Any
) -> Exchange:
    """Send ``requests`` one after the other on one transport of ``path``."""
    requests = requests or (GET,)
    headers = settings.headers()
    started = time.monotonic()
    if path == "sync":
        sync = SyncTransport(settings, headers, **options)
        try:
            outcomes = [sync.send(request) for request in requests]
        finally:
            sync.close()
        return Exchange(outcomes, elapsed=time.monotonic() - started)

    async def go() -> Exchange:
        lag = [0.0, 0]

        async def ticker() -> None:
            while True:
                before = time.monotonic()
                await asyncio.sleep(0.005)
                lag[0] = max(lag[0], time.monotonic() - before - 0.005)
                lag[1] += 1

        tick = asyncio.create_task(ticker())
        transport = AsyncTransport(
            settings, headers, max_connections=4, keepalive_expiry=30.0, **options
        )
        try:
            outcomes = [await transport.send(request) for request in requests]
        finally:
            await transport.aclose()
            tick.cancel()
        return Exchange(outcomes, lag[0], int(lag[1]), time.monotonic() - started)

    return asyncio.run(go())


def kind_of(outcome: Outcome) -> str:
    """ "ok <status>" for an answer, the failure's kind otherwise."""
    if isinstance(outcome, ApiResponse):
        return f"ok {outcome.status_code}"
    assert isinstance(outcome, TransportFailure)
    return outcome.kind
