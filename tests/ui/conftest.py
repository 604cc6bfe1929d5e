"""The connection as a user meets it: Airflow's own api-server (REST API and UI) on loopback,
the emulator as a process of its own, and Debian's Chromium driven through Selenium.

Slow (an api-server start and a browser), so ``make test`` skips it; ``make test-ui`` runs it
(it installs chromium and chromium-driver when they are missing and sets PORTKEY_UI_TESTS=1).
The processes are started with the deployment tier's harness, imported rather than copied.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.deployment.harness import (
    Airflow,
    Emulator,
    http_json,
    processes_of_run,
    sigterm_as_interrupt,
    stop_group,
    wait_for,
)
from tests.silent_server import SilentServer

ENABLED = os.environ.get("PORTKEY_UI_TESTS") == "1"
CHROMIUM = os.environ.get("PORTKEY_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PORTKEY_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOTS = Path(os.environ.get("PORTKEY_UI_SCREENSHOTS", tempfile.gettempdir()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ENABLED:
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="browser and REST tier: run `make test-ui`")
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@dataclass
class Stack:
    airflow: Airflow
    emulator: Emulator
    silent: SilentServer

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return self.airflow.api(method, path, body)

    def refused_url(self) -> str:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """An api-server with ``[core] test_connection = Enabled``, and the emulator."""
    root = Path(tempfile.mkdtemp(prefix="airflow-portkey-ui-"))
    marker = secrets.token_hex(8)
    airflow: Airflow | None = None
    emulator: Emulator | None = None
    silent = SilentServer()
    with sigterm_as_interrupt():
        try:
            # Only the api-server runs here: SQLite is enough, and no executor is needed.
            airflow = Airflow.prepare(
                root,
                marker=marker,
                database_url=f"sqlite:///{root}/airflow.db",
                broker_url="redis://127.0.0.1:9/0",
            )
            airflow.env["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
            airflow.env["AIRFLOW__CORE__TEST_CONNECTION"] = "Enabled"
            emulator = Emulator.start(airflow.env, airflow.log_dir)
            airflow.migrate()
            airflow.start("api-server")
            wait_for(
                "the api-server to answer",
                lambda: http_json("GET", f"{airflow.api_url}/api/v2/monitor/health", timeout=5),
                timeout=180,
                interval=1,
                diagnose=airflow.diagnose,
            )
            yield Stack(airflow, emulator, silent)
        finally:
            silent.close()
            if airflow is not None:
                airflow.stop_all()
            if emulator is not None:
                stop_group(emulator.proc)
            for pid in processes_of_run(marker, root):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if request.session.testsfailed:
                print(f"\nUI tier logs kept in {root / 'logs'}")
            else:
                shutil.rmtree(root, ignore_errors=True)


def chromium_options(user_data_dir: str) -> Any:
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={user_data_dir}",
        "--window-size=1400,2300",
    ):
        options.add_argument(flag)
    return options


@pytest.fixture(scope="session")
def browser(stack: Stack) -> Iterator[Any]:
    """Debian's Chromium, headless, with a fresh profile, through Debian's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: `make test-ui` installs chromium and chromium-driver")
    profile = tempfile.mkdtemp(prefix="portkey-ui-chromium-")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=chromium_options(profile))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def elapsed_since(start: float) -> float:
    return time.monotonic() - start
