"""Opt-in pytest fixtures: ``pytest_plugins = ["airflow_portkey.testing.pytest_plugin"]``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .emulator import PortkeyEmulator


@pytest.fixture
def portkey_emulator() -> Iterator[PortkeyEmulator]:
    """A started PortkeyEmulator (hosted mode), stopped after the test."""
    with PortkeyEmulator() as emu:
        yield emu


@pytest.fixture
def portkey_connection(
    portkey_emulator: PortkeyEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PortkeyEmulator]:
    """The emulator, with AIRFLOW_CONN_PORTKEY_DEFAULT pointing at it."""
    monkeypatch.setenv("AIRFLOW_CONN_PORTKEY_DEFAULT", portkey_emulator.airflow_conn_json())
    yield portkey_emulator
