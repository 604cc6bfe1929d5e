"""Tier 2: real Airflow on SQLite. DAG files are parsed from disk and run with ``dag.test()``.

The database, the DagBag, ``run_dag`` and ``finish_after_polls`` live in the root conftest, so
that tiers 2 and 3 share one migrated database and one parse of the DAG files per session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_portkey.testing import PortkeyEmulator
from tests.conftest import DAGS_FOLDER, EXAMPLE_DAGS, SCENARIO_DAGS, DagRunResult

__all__ = ["DAGS_FOLDER", "EXAMPLE_DAGS", "SCENARIO_DAGS", "DagRunResult"]


@pytest.fixture
def emulator(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PortkeyEmulator]:
    """A Portkey emulator that Airflow's default Portkey connection points at.

    ``@pytest.mark.emulator(in_progress_s=...)`` passes options to the emulator.
    """
    marker = request.node.get_closest_marker("emulator")
    options = {"api_key": "pk-airflow-test", **(marker.kwargs if marker else {})}
    with PortkeyEmulator(**options) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_PORTKEY_DEFAULT", emu.airflow_conn_json())
        yield emu
