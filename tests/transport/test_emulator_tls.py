"""The hook over HTTPS, as hosted Portkey serves it: the emulator with tls=True.

The connection's ``verify`` extra names the emulator's CA file, so the hook trusts the
throw-away certificate; left at its default, verification refuses it before any request
reaches the server. Nothing between the hook and the emulator is patched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest
import requests

from airflow_portkey.batches import BatchStatus
from airflow_portkey.exceptions import PortkeyError
from airflow_portkey.hooks.portkey import PortkeyHook
from airflow_portkey.testing import PortkeyEmulator
from tests.unit.support import (
    API_KEY,
    CONN_ID,
    FAST_RETRIES,
    PROVIDER_API_KEY,
    run_async,
    set_connection,
)

REPO = Path(__file__).resolve().parents[2]
# What a client reports when the server's certificate is signed by a CA it does not trust.
UNTRUSTED = r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"
# requests reads REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE) from the environment, as many Docker
# images and company machines set it, and lets it override a session's verify
# (psf/requests#3829): the connection's CA must win either way.
BUNDLE_ENV = [
    pytest.param(False, id="no-ca-bundle-variable"),
    pytest.param(True, id="REQUESTS_CA_BUNDLE-set"),
]


def use_bundle_env(monkeypatch: pytest.MonkeyPatch, bundle_set: bool) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    if bundle_set:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())


@pytest.fixture(scope="module")
def tls_emulator() -> Iterator[PortkeyEmulator]:
    with PortkeyEmulator(
        api_key=API_KEY,
        provider_api_key=PROVIDER_API_KEY,
        in_progress_s=300,
        cancel_delay_s=60,
        tls=True,
    ) as emu:
        yield emu


@pytest.fixture
def emu(tls_emulator: PortkeyEmulator) -> Iterator[PortkeyEmulator]:
    tls_emulator.reset()
    yield tls_emulator
    tls_emulator.reset()


@pytest.fixture
def tls_hook(emu: PortkeyEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[PortkeyHook]:
    """A hook whose connection trusts the emulator's CA through its verify extra."""
    assert emu.ca_file is not None
    set_connection(
        monkeypatch,
        CONN_ID,
        host=emu.base_url,
        extra={"provider": "openai", "provider_api_key": PROVIDER_API_KEY, "verify": emu.ca_file},
    )
    hook = PortkeyHook(CONN_ID, retry_policy=FAST_RETRIES)
    yield hook
    hook.close()


@pytest.fixture
def default_hook(emu: PortkeyEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[PortkeyHook]:
    """A hook on the same server with verification left at its default (system CAs)."""
    set_connection(
        monkeypatch,
        CONN_ID,
        host=emu.base_url,
        extra={"provider": "openai", "provider_api_key": PROVIDER_API_KEY},
    )
    hook = PortkeyHook(CONN_ID, retry_policy=FAST_RETRIES)
    yield hook
    hook.close()


def test_emulator_serves_https_with_a_ca_file(emu: PortkeyEmulator) -> None:
    assert emu.base_url.startswith("https://127.0.0.1:")
    assert emu.ca_file is not None and Path(emu.ca_file).read_text().startswith(
        "-----BEGIN CERTIFICATE-----"
    )
    health = requests.get(emu.root_url + "/_emulator/health", verify=emu.ca_file, timeout=10)
    assert health.json() == {"ok": True, "base_url": emu.base_url}
    # The certificate names the loopback host names too.
    local = emu.root_url.replace("127.0.0.1", "localhost")
    assert requests.get(local + "/_emulator/health", verify=emu.ca_file, timeout=10).ok


def test_plain_emulator_has_no_ca_file() -> None:
    plain = PortkeyEmulator()
    assert plain.ca_file is None
    assert plain.base_url.startswith("http://")


@pytest.mark.parametrize("bundle_set", BUNDLE_ENV)
def test_get_batch_over_tls(
    emu: PortkeyEmulator, tls_hook: PortkeyHook, monkeypatch: pytest.MonkeyPatch, bundle_set: bool
) -> None:
    use_bundle_env(monkeypatch, bundle_set)
    seeded = emu.add_batch(status="in_progress")
    batch = tls_hook.get_batch(seeded["id"])
    assert batch.id == seeded["id"]
    assert batch.status is BatchStatus.IN_PROGRESS
    [seen] = emu.requests
    assert (seen.method, seen.path, seen.route) == (
        "GET",
        f"/v1/batches/{seeded['id']}",
        "batches.get",
    )
    assert seen.headers["x-portkey-api-key"] == API_KEY
    assert seen.headers["authorization"] == f"Bearer {PROVIDER_API_KEY}"


@pytest.mark.parametrize("bundle_set", BUNDLE_ENV)
def test_cancel_batch_over_tls(
    emu: PortkeyEmulator, tls_hook: PortkeyHook, monkeypatch: pytest.MonkeyPatch, bundle_set: bool
) -> None:
    use_bundle_env(monkeypatch, bundle_set)
    seeded = emu.add_batch(status="in_progress")
    batch = tls_hook.cancel_batch(seeded["id"])
    assert batch.status is BatchStatus.CANCELLING
    assert [(r.method, r.path) for r in emu.requests] == [
        ("POST", f"/v1/batches/{seeded['id']}/cancel")
    ]
    assert emu.get_batch(seeded["id"])["status"] == "cancelling"


@pytest.mark.parametrize("bundle_set", BUNDLE_ENV)
def test_aget_batch_over_tls(
    emu: PortkeyEmulator, tls_hook: PortkeyHook, monkeypatch: pytest.MonkeyPatch, bundle_set: bool
) -> None:
    use_bundle_env(monkeypatch, bundle_set)  # httpx is given the CA file itself
    seeded = emu.add_batch(status="finalizing")
    batch = run_async(tls_hook, lambda: tls_hook.aget_batch(seeded["id"]))
    assert batch.id == seeded["id"]
    assert batch.status is BatchStatus.FINALIZING
    [seen] = emu.requests
    assert (seen.method, seen.path) == ("GET", f"/v1/batches/{seeded['id']}")
    assert seen.headers["x-portkey-api-key"] == API_KEY


def test_airflow_conn_json_trusts_the_ca(
    emu: PortkeyEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_bundle_env(monkeypatch, False)
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", emu.airflow_conn_json())
    seeded = emu.add_batch()
    hook = PortkeyHook(CONN_ID, retry_policy=FAST_RETRIES)
    try:
        assert hook.get_batch(seeded["id"]).id == seeded["id"]
    finally:
        hook.close()


@pytest.mark.parametrize("call", ["get_batch", "cancel_batch", "aget_batch"])
def test_default_verification_refuses_a_self_signed_server(
    emu: PortkeyEmulator, default_hook: PortkeyHook, call: str
) -> None:
    seeded = emu.add_batch(status="in_progress")
    with pytest.raises(PortkeyError, match=UNTRUSTED) as refused:
        if call == "aget_batch":
            run_async(default_hook, lambda: default_hook.aget_batch(seeded["id"]))
        else:
            getattr(default_hook, call)(seeded["id"])
    # Named as a TLS failure and not retried: another handshake would be refused the same way.
    assert "tls error" in str(refused.value)
    assert not any("gave up after" in note for note in getattr(refused.value, "__notes__", []))
    # Refused during the handshake: no request reached the server, nothing changed.
    assert emu.requests == []
    assert emu.counts == {}
    assert emu.get_batch(seeded["id"])["status"] == "in_progress"


def test_cli_tls_prints_the_url_and_the_ca_file(tmp_path: Path) -> None:
    ca_copy = tmp_path / "emulator-ca.pem"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "airflow_portkey.testing", "--port", "0", "--tls"]
    with subprocess.Popen(
        [*cmd, "--ca-file", str(ca_copy)], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
    ) as proc:
        try:
            assert proc.stdout is not None
            url_line = proc.stdout.readline().strip()
            ca_line = proc.stdout.readline().strip()
            assert url_line.startswith("Portkey emulator listening on https://127.0.0.1:")
            assert ca_line == f"Portkey emulator CA certificate: {ca_copy}"
            root = url_line.rsplit(" ", 1)[1].removesuffix("/v1")
            health = requests.get(root + "/_emulator/health", verify=str(ca_copy), timeout=10)
            assert health.json()["ok"] is True
            with pytest.raises(requests.exceptions.SSLError):
                requests.get(root + "/_emulator/health", timeout=10)
            proc.terminate()
            assert proc.wait(5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_cli_ca_file_needs_tls() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "airflow_portkey.testing", "--ca-file", "x.pem"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 2
    assert "--ca-file needs --tls" in done.stderr


def test_cryptography_is_imported_only_for_tls() -> None:
    probe = (
        "import sys; from airflow_portkey.testing import PortkeyEmulator; "
        "e = PortkeyEmulator().start(); e.stop(); print('cryptography' in sys.modules); "
        "PortkeyEmulator(tls=True); print('cryptography' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        check=True,
    )
    assert done.stdout.split() == ["False", "True"]
