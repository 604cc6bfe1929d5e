"""The examples in the docs run as written, in a user's project of their own: the README's
quickstart DAG, and docs/testing.md's DAG, conftest and test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
FILE_BLOCK = re.compile(r"```python\n# (?P<path>[\w/.]+\.py)\n(?P<code>.*?)```", re.DOTALL)
README_DAG = re.compile(
    r"Save this as `(?P<path>dags/\w+\.py)`:\n\n```python\n(?P<code>.*?)```", re.DOTALL
)

# Runs the README's DAG with the guide's fixtures; a minute-long first poll is shortened.
QUICKSTART_TEST = """
from pathlib import Path

from airflow.dag_processing.dagbag import DagBag


def test_readme_quickstart_submits_waits_fetches_and_leaves_the_completed_batch(
    portkey_connection,
):
    emulator = portkey_connection
    dag = DagBag(str(Path(__file__).parents[1] / "dags")).get_dag("portkey_quickstart")
    dag_run = dag.test()
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert dag_run.state == "success", states
    assert set(states) == {"submit", "wait", "fetch", "use_results", "cancel"}
    assert set(states.values()) == {"success"}
    assert len(emulator.requests_to(route="batches.create")) == 1
    batch_id = emulator.requests_to(route="batches.get")[0].batch_id
    assert emulator.get_batch(batch_id)["status"] == "completed"
"""


def _project(tmp_path: Path) -> Path:
    """A user's project made of the docs' files only."""
    files = FILE_BLOCK.findall((REPO / "docs" / "testing.md").read_text())
    assert {path for path, _ in files} == {
        "dags/my_batch_pipeline.py",
        "tests/conftest.py",
        "tests/test_my_batch_pipeline.py",
    }
    (quickstart,) = README_DAG.findall((REPO / "README.md").read_text())
    path, code = quickstart
    assert "poke_interval=60" in code
    files.append((path, code.replace("poke_interval=60", "poke_interval=1")))
    files.append(("tests/test_readme_quickstart.py", QUICKSTART_TEST))
    for path, code in files:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(code)
    return tmp_path


@dataclass
class ProjectRun:
    proc: subprocess.Popen[bytes]
    output: Path


RUN = pytest.StashKey[ProjectRun]()


def start_project_run(folder: Path) -> ProjectRun:
    """Write the user's project and start its pytest; tests/airflow/conftest.py calls this as
    collection ends, so that it runs while the rest of the session does."""
    project = _project(folder)
    # The user's shell: none of this test session's Airflow settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTEST"))}
    output = folder / "pytest-output.txt"
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
            cwd=project,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return ProjectRun(proc, output)


def test_readme_quickstart_and_testing_guide_run_in_a_users_project(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    run = request.config.stash.get(RUN, None) or start_project_run(tmp_path)
    try:
        code = run.proc.wait(900)
    except subprocess.TimeoutExpired:
        run.proc.kill()
        run.proc.wait()
        pytest.fail("the user's project did not finish its tests in 900 s")
    text = run.output.read_text(errors="replace")
    assert code == 0, text[-7000:]
    assert "2 passed" in text
