"""Tier 4 (deployment): Airflow's own processes on loopback against the emulator process.

Slow and process-heavy, so ``make test`` skips it; ``make test-deployment`` runs it
(it sets PORTKEY_DEPLOYMENT_TESTS=1).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deployment.harness import (
    BUDGET,
    Airflow,
    Deployment,
    Emulator,
    processes_of_run,
    sigterm_as_interrupt,
    stop_group,
)

ENABLED = os.environ.get("PORTKEY_DEPLOYMENT_TESTS") == "1"
# Waits stop this long after the session starts; stopping everything takes under 30 s more.
BUDGET_S = float(os.environ.get("PORTKEY_DEPLOY_BUDGET_S", "530"))
DAG_IDS = ("portkey_deploy_wait", "portkey_deploy_cancel", "portkey_deploy_many")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ENABLED:
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="deployment tier: run `make test-deployment`")
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    root = Path(tempfile.mkdtemp(prefix="airflow-portkey-deploy-"))
    marker = secrets.token_hex(8)
    emulator: Emulator | None = None
    airflow: Airflow | None = None
    with sigterm_as_interrupt():
        try:
            started = time.monotonic()
            BUDGET["deadline"] = started + BUDGET_S
            airflow = Airflow.prepare(root, marker=marker)
            emulator = Emulator.start(airflow.env, airflow.log_dir)
            airflow.env["AIRFLOW_CONN_PORTKEY_DEFAULT"] = emulator.connection_json()
            airflow.migrate()
            for component in ("api-server", "dag-processor", "scheduler", "triggerer"):
                airflow.start(component)
            airflow.wait_ready(DAG_IDS)
            deployment = Deployment(emulator, airflow, marker, root)
            deployment.timings["startup_s"] = time.monotonic() - started
            print(f"\ndeployment ready in {deployment.timings['startup_s']:.1f}s under {root}")
            yield deployment
        finally:
            if airflow is not None:
                print(f"\nCPU seconds by component: {airflow.cpu_report()}")
                airflow.stop_all()
            if emulator is not None:
                stop_group(emulator.proc)
            # Task processes live in process groups of their own, and one that ignores its
            # SIGTERM outlives its supervisor's group: sweep whatever is left of the run.
            leftovers = processes_of_run(marker, root)
            if leftovers:
                print(f"\nkilling processes that outlived their groups: {leftovers}")
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if leftovers:
                time.sleep(1)
            remaining = processes_of_run(marker, root)
            if request.session.testsfailed or os.environ.get("PORTKEY_DEPLOY_KEEP"):
                print(f"\ndeployment logs kept in {root / 'logs'}")
            else:
                shutil.rmtree(root, ignore_errors=True)
            assert not remaining, f"processes of this run still alive: {remaining}"
