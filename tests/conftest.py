"""Shared by every tier: a private, throw-away AIRFLOW_HOME, set before Airflow is imported.

Tier 0 (core) needs nothing of Airflow, tier 1 (unit) its configuration but no database. The
fixtures of real Airflow runs (one migrated SQLite database and one parse of the DAG files for
the whole session, ``run_dag``, ``finish_after_polls``) are defined here once, for tier 2
(tests/airflow) and tier 3 (tests/gateway) alike: each asks for them only when it runs a DAG.
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow_portkey.testing import PortkeyEmulator

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="airflow-portkey-tests-")
TESTS = Path(__file__).parent
EXAMPLE_DAGS = TESTS.parent / "dags"
SCENARIO_DAGS = TESTS / "airflow" / "dags"

# dag.test() serialises a DAG into its DAG bundle, and Airflow reads the bundles' folders once,
# when it is first imported: every DAG a test runs (examples and scenarios) is linked into one
# here, before any test module imports Airflow. Each DAG file is a bundle of its own, because
# every dag.test() parses and writes again every DAG of the bundle that holds its DAG.
DAGS_FOLDER = Path(_AIRFLOW_HOME) / "dags"
_bundles = []
for _source in (EXAMPLE_DAGS, SCENARIO_DAGS):
    for _dag_file in sorted(_source.glob("*.py")):
        _name = f"{_source.name}_{_dag_file.stem}"
        (DAGS_FOLDER / _name).mkdir(parents=True)
        (DAGS_FOLDER / _name / _dag_file.name).symlink_to(_dag_file)
        _bundles.append(
            {
                "name": _name,
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(DAGS_FOLDER / _name)},
            }
        )
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(_bundles)
# The example DAGs read their poll interval when they are parsed (once, for the session).
os.environ["PORTKEY_EXAMPLE_POLL_SECONDS"] = "0.2"

os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME}/airflow.db"


# What the session has loaded (Airflow, its ORM, the test modules) stays loaded: gc.freeze()
# keeps it out of the garbage collector's full passes, which otherwise walk it again and again
# while more is loaded (1.7 s of full passes before the first DAG run ended).
def pytest_collection_finish(session: object) -> None:
    gc.freeze()


def pytest_unconfigure(config: object) -> None:
    import shutil

    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


# -- real Airflow runs (tiers 2 and 3) ---------------------------------------------------------


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A fresh metadata DB in the session's temporary AIRFLOW_HOME.

    The SQLite file is new, so it is created from the models at once (``initdb``); ``resetdb``
    would first drop every table of an empty database.
    """
    from airflow.utils import db

    db.initdb()
    gc.freeze()  # see pytest_collection_finish


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
        _freeze_airflow_once()
        return _result(dag_run)

    return run


_after_first_run = threading.Event()


def _freeze_airflow_once() -> None:
    """The session's first run builds Airflow's in-process execution API: freeze that too
    (see pytest_collection_finish), once: later runs leave little that lasts."""
    if not _after_first_run.is_set():
        _after_first_run.set()
        gc.freeze()


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
def finish_after_polls(emulator: PortkeyEmulator) -> Iterator[Any]:
    """Move a held batch to a final status once the emulator has seen ``polls`` reads of it.

    Waiting for reads rather than for time keeps the scenario honest on a slow machine: the
    task under test must really have polled a running batch before it finishes.
    """
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
