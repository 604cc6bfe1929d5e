"""The harness itself: the gateway listens on loopback only and cannot reach beyond it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from airflow_portkey.testing.gateway import (
    BLOCKED_MARK,
    PRELOADS,
    Gateway,
    check_installation,
    free_port,
    listening_addresses,
)
from tests.launchers import gone_within, group_running, killed_launcher


def test_gateway_listens_on_loopback_only(gateway: Gateway) -> None:
    assert listening_addresses(gateway.port) == {"127.0.0.1"}


def test_a_gateway_stops_with_its_whole_process_group(gateway: Gateway) -> None:
    """What the session fixture does at the end, checked on a second gateway."""
    other = Gateway(check_installation()).start()
    try:
        assert other.alive and other.port != gateway.port
        assert listening_addresses(other.port) == {"127.0.0.1"}
    finally:
        code = other.stop()
        other.cleanup()
    assert code == -signal.SIGTERM  # it has no handler: SIGTERM ends it at once
    assert not other.group_alive()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", other.port)):
        pass


def test_a_gateway_whose_launcher_is_killed_does_not_outlive_it(tmp_path: Path) -> None:
    """The launcher holds the gateway for good (no stop()), then dies by SIGKILL: the gateway
    must exit too."""
    script = (
        "import time\n"
        "from airflow_portkey.testing.gateway import Gateway, check_installation\n"
        "gateway = Gateway(check_installation()).start()\n"
        "print(gateway.proc.pid, gateway.port, flush=True)\n"
        "time.sleep(600)\n"
    )
    with killed_launcher(script, tmp_path) as line:
        pid, port = map(int, line.split())
        assert listening_addresses(port) == {"127.0.0.1"}
    # A leader already a zombie can still hold the socket while its other threads exit:
    # gone means the group is gone and nothing listens on its port any more.
    gone = gone_within(30, lambda: group_running(pid) or bool(listening_addresses(port)))
    if group_running(pid):
        os.killpg(pid, signal.SIGKILL)
    assert gone, f"gateway {pid} outlived its killed launcher"
    assert listening_addresses(port) == set()


# A tripwire below the guard: if the guard let anything through, the tripwire would see it and
# stop it, so this check itself never sends a packet off the machine.
_GUARD_CHECK = """
import net from 'node:net';
import dns from 'node:dns';
const tripped = [];
net.Socket.prototype.connect = function (...a) {
  const o = Array.isArray(a[0]) ? a[0][0] : a[0];
  tripped.push('connect ' + o.host + ':' + o.port);
  throw new Error('tripwire');
};
dns.lookup = (host) => { tripped.push('dns ' + host); throw new Error('tripwire'); };
await import(process.env.GUARD_URL);
const results = [];
for (const url of ['http://192.0.2.1/v1/batches', 'https://api.openai.com/v1/batches/b/output']) {
  try { await fetch(url); results.push('fetched ' + url); }
  catch (e) { results.push(String(e.cause && e.cause.message)); }
}
try { net.connect({host: '198.51.100.7', port: 80}); results.push('connected'); }
catch (e) { results.push(e.message); }
await new Promise((done) => {
  dns.lookup('example.com', (err) => { results.push(err.code); done(); });
});
try { await fetch(`http://127.0.0.1:${process.env.LOOPBACK_PORT}/`); results.push('fetched'); }
catch (e) { results.push(String(e.cause && e.cause.message)); }
console.log(JSON.stringify({results, tripped}));
"""


def test_offhost_guard_refuses_before_any_connection(gateway: Gateway) -> None:
    port = free_port()
    env = {**os.environ, "GUARD_URL": PRELOADS[1].as_uri(), "LOOPBACK_PORT": str(port)}
    env.pop("NODE_OPTIONS", None)
    out = subprocess.run(
        [gateway.node, "--input-type=module", "-e", _GUARD_CHECK],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["results"] == [
        "non-loopback blocked: 192.0.2.1",
        "non-loopback blocked: api.openai.com",
        "non-loopback connect blocked: 198.51.100.7",
        "ENOTFOUND",
        "tripwire",  # loopback is let through, down to the socket layer
    ]
    assert report["tripped"] == [f"connect 127.0.0.1:{port}"]
    assert out.stderr.count(BLOCKED_MARK) == 4
