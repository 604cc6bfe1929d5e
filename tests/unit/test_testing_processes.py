"""The launchers of airflow_portkey.testing that the tests, the benchmarks, the deployment tier
and the demo share: the emulator as a process of its own (the gateway's launcher is exercised
by tests/gateway/test_harness.py)."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from airflow_portkey.testing.processes import EmulatorProcess
from tests.launchers import gone_within, group_running, killed_launcher

REPO = Path(__file__).resolve().parents[2]


def health(url: str, ca_file: str | None = None) -> bytes:
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    with opener.open(url + "/_emulator/health", timeout=10) as response:
        return bytes(response.read())


def test_emulator_process_serves_and_stops_with_its_group(tmp_path: Path) -> None:
    log = tmp_path / "emulator.log"
    emu = EmulatorProcess("--api-key", "pk-process", log_path=log).start()
    try:
        assert emu.alive
        assert emu.base_url == f"http://127.0.0.1:{emu.port}/v1"
        assert emu.ca_file is None
        assert json.loads(health(emu.root_url))["ok"] is True
    finally:
        code = emu.stop()
    assert code == 0  # SIGTERM is a clean stop
    assert not emu.alive
    assert "Portkey emulator listening on" in log.read_text()


def test_emulator_process_over_tls_names_its_ca_file() -> None:
    with EmulatorProcess("--tls", "--no-record") as emu:
        assert emu.scheme == "https" and emu.ca_file is not None
        assert json.loads(health(emu.root_url, emu.ca_file))["ok"] is True
    assert not emu.alive


def test_an_emulator_that_cannot_start_says_why() -> None:
    with pytest.raises(RuntimeError, match="--ca-file needs --tls"):
        EmulatorProcess("--ca-file", "/tmp/x.pem").start()


def test_the_launchers_import_nothing_of_the_client_side() -> None:
    code = (
        "import sys, airflow_portkey\n"
        "before = set(sys.modules)\n"
        "import airflow_portkey.testing.processes, airflow_portkey.testing.gateway\n"
        "new = set(sys.modules) - before\n"
        "bad = [m for m in new if m.split('.')[0] in ('airflow', 'requests', 'aiohttp', 'httpx')\n"
        "       or (m.startswith('airflow_portkey.') and '.testing' not in m)]\n"
        "print(sorted(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_an_emulator_process_whose_launcher_is_killed_does_not_outlive_it(
    tmp_path: Path,
) -> None:
    # The launcher holds the emulator for good (no stop()), then dies by SIGKILL, as a
    # benchmark worker killed by a timeout does: no finally, no atexit runs.
    script = (
        "import time\n"
        "from airflow_portkey.testing.processes import EmulatorProcess\n"
        f"emu = EmulatorProcess('--no-record', log_path={str(tmp_path / 'emu.log')!r})\n"
        "print(emu.start().pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    with killed_launcher(script, REPO) as line:
        emulator_pid = int(line)
        assert group_running(emulator_pid)  # the emulator leads a process group of its own
    gone = gone_within(30, lambda: group_running(emulator_pid))
    if not gone:
        os.killpg(emulator_pid, signal.SIGKILL)
    assert gone, f"emulator {emulator_pid} outlived its killed launcher"
