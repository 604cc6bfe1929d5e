"""Shared by every tier: a private, throw-away AIRFLOW_HOME, set before Airflow is imported.

Tier 1 (unit) needs Airflow's configuration but no database; tier 2 migrates the SQLite
database named here in its own conftest.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="airflow-portkey-tests-")
TESTS = Path(__file__).parent
EXAMPLE_DAGS = TESTS.parent / "dags"
SCENARIO_DAGS = TESTS / "airflow" / "dags"

# dag.test() serialises a DAG into the "dags-folder" bundle, and Airflow reads that folder once,
# when it is first imported: every DAG a test runs (examples and scenarios) is linked into it
# here, before any test module imports Airflow.
DAGS_FOLDER = Path(_AIRFLOW_HOME) / "dags"
DAGS_FOLDER.mkdir()
for _source in (EXAMPLE_DAGS, SCENARIO_DAGS):
    for _dag_file in _source.glob("*.py"):
        (DAGS_FOLDER / f"{_source.name}_{_dag_file.name}").symlink_to(_dag_file)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)

os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME}/airflow.db"


def pytest_unconfigure(config: object) -> None:
    import shutil

    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)
