"""Tier 3: the real open-source Portkey gateway in front of the emulator as the upstream provider.

    hook / Airflow task --> gateway (node, 127.0.0.1:N) --> PortkeyEmulator(mode="upstream")

One gateway serves the whole session; every test gets a fresh upstream emulator and an
``AIRFLOW_CONN_PORTKEY_DEFAULT`` that is a *self-hosted gateway* connection: host = the gateway,
``provider=openai``, ``provider_api_key`` and ``custom_host`` = the emulator's ``/v1`` URL.
Tests assert on what the upstream received (method, raw path, headers, body) and on what the
client got back.

Without Node.js or the pinned ``node_modules`` every test here fails (never skips) with the
install instructions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from airflow_portkey.testing import PortkeyEmulator

# The fixtures of real Airflow runs (run_dag, finish_after_polls) come from the root conftest;
# finish_after_polls asks for "emulator", which resolves to the upstream emulator below.
from airflow_portkey.testing.gateway import (
    BLOCKED_MARK,
    Gateway,
    GatewayUnavailable,
    check_installation,
)

PROVIDER_API_KEY = "sk-upstream-gateway-test"
CONN_ID = "portkey_default"

ConnFactory = Callable[..., str]


@pytest.fixture(scope="session")
def gateway() -> Iterator[Gateway]:
    """The gateway on a free loopback port, ready (GET / answered), stopped at session end."""
    try:
        node = check_installation()
    except GatewayUnavailable as missing:
        problem = str(missing)
    else:
        problem = ""
    if problem:
        pytest.fail(problem, pytrace=False)  # fail, never skip: tier 3 is part of `make test`
    with pytest.MonkeyPatch.context() as mp:
        # The hook honours *_PROXY on both paths: keep loopback traffic off any proxy.
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        mp.setenv("no_proxy", "127.0.0.1,localhost")
        gw = Gateway(node).start()
        try:
            yield gw
        finally:
            code = gw.stop()
            group_left = gw.group_alive()
            log = gw.log_text()
            gw.cleanup()
        assert code is not None, "the gateway did not exit"
        assert not group_left, "a process of the gateway's process group outlived it"
        assert BLOCKED_MARK not in log, f"the gateway tried to leave loopback:\n{log}"


@pytest.fixture(autouse=True)
def _gateway_watch(gateway: Gateway) -> Iterator[None]:
    """Per test: the gateway must stay up and must not try to reach beyond loopback.

    Its output during the test is printed at teardown, so a failing test shows it.
    """
    mark = gateway.log_size()
    yield
    output = gateway.log_text(mark)
    if output.strip():
        print(f"--- gateway output during this test ---\n{output}")
    assert gateway.alive, f"the gateway died during the test:\n{output}"
    assert BLOCKED_MARK not in output, f"the gateway tried to leave loopback:\n{output}"


@pytest.fixture
def emulator(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> Iterator[PortkeyEmulator]:
    """The upstream (OpenAI-compatible) emulator, and the default connection to the gateway.

    Named like tier 2's fixture so that its ``finish_after_polls`` drives this emulator.
    """
    with PortkeyEmulator(mode="upstream", provider_api_key=PROVIDER_API_KEY) as emu:
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(gateway, gateway_extra(emu))
        )
        yield emu


def gateway_extra(emu: PortkeyEmulator, **overrides: Any) -> dict[str, Any]:
    """Extras of a self-hosted gateway connection routed to ``emu`` (``None`` drops a key)."""
    extra: dict[str, Any] = {
        "provider": "openai",
        "provider_api_key": PROVIDER_API_KEY,
        "custom_host": emu.base_url,  # must end in /v1: the gateway appends the rest of the path
    }
    extra.update(overrides)
    return {key: value for key, value in extra.items() if value is not None}


def connection_json(gateway: Gateway, extra: dict[str, Any]) -> str:
    # No password: the open-source gateway has no Portkey API key.
    return json.dumps({"conn_type": "portkey", "host": gateway.base_url, "extra": extra})


@pytest.fixture
def make_conn(
    gateway: Gateway, emulator: PortkeyEmulator, monkeypatch: pytest.MonkeyPatch
) -> ConnFactory:
    """``make_conn(conn_id, **extra_overrides)``: another gateway connection; returns its id."""

    def make(conn_id: str, **overrides: Any) -> str:
        extra = gateway_extra(emulator, **overrides)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", connection_json(gateway, extra))
        return conn_id

    return make


@pytest.fixture
def hook(emulator: PortkeyEmulator) -> Iterator[Any]:
    """A hook on the default connection (through the gateway), closed after the test."""
    from airflow_portkey.hooks.portkey import PortkeyHook

    made = PortkeyHook(CONN_ID)
    yield made
    made.close()


@pytest.fixture
def raw(gateway: Gateway, emulator: PortkeyEmulator) -> Iterator[requests.Session]:
    """Plain requests to the gateway, with the self-hosted routing headers (no proxies)."""
    with requests.Session() as session:
        session.trust_env = False
        session.headers.update(routing_headers(emulator))
        yield session


def routing_headers(emu: PortkeyEmulator) -> dict[str, str]:
    return {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": emu.base_url,
        "Authorization": f"Bearer {PROVIDER_API_KEY}",
    }
