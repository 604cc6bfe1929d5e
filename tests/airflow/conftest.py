"""Tier 2: real Airflow on SQLite. DAG files are parsed from disk and run with ``dag.test()``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from airflow_portkey.testing import PortkeyEmulator
from tests.conftest import DAGS_FOLDER, EXAMPLE_DAGS, SCENARIO_DAGS

__all__ = ["DAGS_FOLDER", "EXAMPLE_DAGS", "SCENARIO_DAGS"]


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A fresh metadata DB in the session's temporary AIRFLOW_HOME."""
    from airflow.utils import db

    db.resetdb()


@dataclass
class DagRunResult:
    state: str
    run_id: str
    states: dict[str, str]
    """task id (``task_id[map_index]`` for mapped tasks) -> final state"""
    xcoms: dict[str, Any]
    """task id -> return_value XCom"""


@pytest.fixture(scope="session")
def dagbag(airflow_db: None) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(DAGS_FOLDER))
    assert not bag.import_errors, bag.import_errors
    return bag


@pytest.fixture
def run_dag(dagbag: Any):
    """Run a DAG from the scenario or example folder through ``dag.test()``."""

    def run(dag_id: str, **conf: Any) -> DagRunResult:
        dag_run = dagbag.get_dag(dag_id).test(run_conf=conf)
        return _result(dag_run)

    return run


def _result(dag_run: Any) -> DagRunResult:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    states, xcoms = {}, {}
    with create_session() as session:
        for ti in dag_run.get_task_instances(session=session):
            name = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
            states[name] = str(ti.state.value if hasattr(ti.state, "value") else ti.state)
        rows = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.key == "return_value",
            )
        ).all()
        for row in rows:
            name = row.task_id if row.map_index < 0 else f"{row.task_id}[{row.map_index}]"
            xcoms[name] = XComModel.deserialize_value(row)
    state = dag_run.state.value if hasattr(dag_run.state, "value") else str(dag_run.state)
    return DagRunResult(state, dag_run.run_id, states, xcoms)


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


@pytest.fixture
def finish_after_polls(emulator: PortkeyEmulator) -> Iterator[Any]:
    """Move a held batch to a final status once the emulator has seen ``polls`` reads of it.

    Waiting for reads rather than for time keeps the scenario honest on a slow machine: the
    task under test must really have polled a running batch before it finishes.
    """
    import threading
    import time

    threads: list[threading.Thread] = []
    stop = threading.Event()

    def start(batch_id: str, status: str = "completed", polls: int = 2, **kwargs: Any) -> None:
        def watch() -> None:
            while not stop.is_set():
                if len(emulator.requests_to(route="batches.get", batch_id=batch_id)) >= polls:
                    emulator.set_status(batch_id, status, **kwargs)
                    return
                time.sleep(0.02)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        threads.append(thread)

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=2)
