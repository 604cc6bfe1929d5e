"""Tier-1 fixtures: a PortkeyEmulator on loopback and hooks whose connection points at it.

Connections come from AIRFLOW_CONN_<ID> variables (JSON), as a user would configure them;
nothing between the hook and the emulator is patched.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog

from airflow_portkey._core.retry import RetryPolicy
from airflow_portkey.hooks.portkey import PortkeyHook
from airflow_portkey.testing import PortkeyEmulator

from .support import (
    API_KEY,
    CONN_ID,
    FAST_RETRIES,
    IMPORT_PROBE,
    PROVIDER_API_KEY,
    MakeHook,
    set_connection,
)


@pytest.fixture(scope="session")
def shared_emulator() -> Iterator[PortkeyEmulator]:
    """One hosted-mode emulator for the session, checking the API key and the provider key
    like api.portkey.ai. Long lifecycle durations: a seeded batch stays where it was put."""
    with PortkeyEmulator(
        api_key=API_KEY,
        provider_api_key=PROVIDER_API_KEY,
        validating_s=30,
        in_progress_s=300,
        finalizing_s=30,
        cancel_delay_s=60,
    ) as emu:
        yield emu


@pytest.fixture
def emulator(shared_emulator: PortkeyEmulator) -> Iterator[PortkeyEmulator]:
    """The session's emulator, with no batches, files, faults or recorded requests."""
    shared_emulator.reset()
    yield shared_emulator
    shared_emulator.reset()


@pytest.fixture
def make_hook(emulator: PortkeyEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeHook]:
    """``make_hook(**extras)``: a hook on a fresh connection to the emulator with these extras.

    Without a routing extra the connection uses the virtual key ``vk-unit``. Keyword options:
    ``conn_id``, ``host``, ``password``, ``retry_policy`` (default: fast retries) and
    ``hook_kwargs`` (more PortkeyHook arguments, e.g. trace_id, metadata).
    """
    hooks: list[PortkeyHook] = []

    def make(
        *,
        conn_id: str = CONN_ID,
        host: str | None = None,
        password: str | None = API_KEY,
        retry_policy: RetryPolicy | None = FAST_RETRIES,
        hook_kwargs: dict[str, Any] | None = None,
        **extras: Any,
    ) -> PortkeyHook:
        names = {key.removeprefix("extra__portkey__") for key in extras}
        routing = {"provider", "virtual_key", "config", "secret_virtual_key", "secret_config"}
        if not names & routing:
            extras["secret_virtual_key"] = "vk-unit"
        set_connection(
            monkeypatch,
            conn_id,
            host=emulator.base_url if host is None else host,
            password=password,
            extra=extras,
        )
        hook = PortkeyHook(conn_id, retry_policy=retry_policy, **(hook_kwargs or {}))
        hooks.append(hook)
        return hook

    yield make
    for hook in hooks:
        hook.close()


@pytest.fixture
def hook(make_hook: MakeHook) -> PortkeyHook:
    """A hook on the default test connection (API key + virtual key), fast retries."""
    return make_hook()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog that also sees the hook's own log lines (at DEBUG and above).

    Airflow 3 hooks log through structlog straight to stdout; for the test, structlog hands
    each line to the standard logging module (same logger name, level and text) instead.
    """
    previous = structlog.get_config()

    def message_only(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> str:
        return str(event_dict["event"])

    structlog.configure(
        processors=[structlog.stdlib.PositionalArgumentsFormatter(), message_only],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    caplog.set_level(logging.DEBUG)
    try:
        yield caplog
    finally:
        structlog.configure(**previous)


# -- a fresh interpreter, started as soon as collection ends ----------------------------------

_import_probe_key = pytest.StashKey[subprocess.Popen[str]]()


def _lowest_priority() -> None:
    os.nice(19)  # runs in idle time: timing-sensitive tests keep the CPU


def _start_import_probe() -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", IMPORT_PROBE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
        preexec_fn=_lowest_priority if hasattr(os, "nice") else None,
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Importing Airflow in a new interpreter takes seconds: start it while other tests run."""
    if any(item.name.startswith("test_importing_the_hook") for item in session.items):
        session.config.stash[_import_probe_key] = _start_import_probe()


def pytest_unconfigure(config: pytest.Config) -> None:
    probe = config.stash.get(_import_probe_key, None)
    if probe is not None and probe.poll() is None:
        probe.kill()
        probe.wait()


@pytest.fixture
def import_probe(request: pytest.FixtureRequest) -> subprocess.Popen[str]:
    """``python -c IMPORT_PROBE`` in a fresh interpreter (already running, usually)."""
    probe = request.config.stash.get(_import_probe_key, None)
    return probe if probe is not None else _start_import_probe()
