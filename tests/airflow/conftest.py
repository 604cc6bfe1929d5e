"""Tier 2: real Airflow on SQLite. DAG files are parsed from disk and run with ``dag.test()``.

The database, the DagBag, ``run_dag`` and ``finish_after_polls`` live in the root conftest, so
that tiers 2 and 3 share one migrated database and one parse of the DAG files per session.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

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


# -- the docs' examples, run as a user's project of its own --------------------------------------

_DOCS_EXAMPLES = "tests/airflow/test_docs_examples.py::"
_docs_folder_key = pytest.StashKey[Path]()


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """The docs' examples are checked last: their own pytest runs meanwhile (see below)."""
    late = [item for item in items if item.nodeid.startswith(_DOCS_EXAMPLES)]
    if late:
        items[:] = [item for item in items if not item.nodeid.startswith(_DOCS_EXAMPLES)] + late


def pytest_collection_finish(session: pytest.Session) -> None:
    """A user's project runs its own Airflow (a minute on a busy machine): start it now."""
    if not any(item.nodeid.startswith(_DOCS_EXAMPLES) for item in session.items):
        return
    from .test_docs_examples import RUN, start_project_run

    folder = Path(tempfile.mkdtemp(prefix="docs-examples-"))
    session.config.stash[_docs_folder_key] = folder
    # If the docs' files cannot be read, the test starts it again itself and says why.
    with contextlib.suppress(Exception):
        session.config.stash[RUN] = start_project_run(folder)


def pytest_unconfigure(config: pytest.Config) -> None:
    from .test_docs_examples import RUN

    run = config.stash.get(RUN, None)
    if run is not None and run.proc.poll() is None:
        run.proc.kill()
        run.proc.wait()
    folder = config.stash.get(_docs_folder_key, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
