"""Tier 4 (deployment): Airflow distributed as production runs it (PostgreSQL, Redis,
CeleryExecutor with two workers, two triggerers) on loopback, against the emulator process.

Slow and process-heavy, so ``make test`` skips it; ``make test-deployment`` runs it
(it sets PORTKEY_DEPLOYMENT_TESTS=1).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deployment.harness import BUDGET, Deployment, deployment_running

ENABLED = os.environ.get("PORTKEY_DEPLOYMENT_TESTS") == "1"
# Waits stop this long after the session starts; stopping everything takes under a minute
# more. The whole tier took 30 minutes on a 2-core machine busy with other work (scenario 5's
# 1,000 sensors most of it).
BUDGET_S = float(os.environ.get("PORTKEY_DEPLOY_BUDGET_S", "2400"))
# Every DAG in tests/deployment/dags must be parsed before the tests start.
DAG_IDS = tuple(
    match
    for source in sorted((Path(__file__).parent / "dags").glob("*.py"))
    for match in re.findall(r"\bDAG\(\s*[\"']([\w.-]+)[\"']", source.read_text())
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The secrets check reads the logs of every scenario, whatever module holds it: last.
    items.sort(key=lambda item: Path(str(item.fspath)).name == "test_secrets.py")
    if ENABLED:
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="deployment tier: run `make test-deployment`")
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    BUDGET["deadline"] = time.monotonic() + BUDGET_S
    with deployment_running(
        DAG_IDS,
        warm_up_dag="portkey_deploy_wait",
        keep_logs=lambda: bool(request.session.testsfailed),
    ) as d:
        yield d
