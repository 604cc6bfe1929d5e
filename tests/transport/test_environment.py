"""What both paths take from the environment, decided once for both
(airflow_portkey._transport.common): the CA to trust, the proxy, and never ``.netrc``."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import certifi
import pytest

from airflow_portkey._transport.common import proxy_for, resolve_ca

from .paths import PATHS, exchange, kind_of, settings_for
from .server import Peer, Seen, misbehaving, response

BATCH = {"id": "batch_1", "object": "batch", "status": "in_progress"}
CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")


def answer(peer: Peer, seen: Seen) -> bool:
    return peer.send(response(json.dumps(BATCH).encode()))


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CA_VARIABLES + PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


# (the connection's verify, the variables set: "ca" is the test CA, "other" certifi's bundle)
CA_CASES = {
    "no-variable-refuses": (True, {}, "tls"),
    "SSL_CERT_FILE": (True, {"SSL_CERT_FILE": "ca"}, "ok 200"),
    "REQUESTS_CA_BUNDLE": (True, {"REQUESTS_CA_BUNDLE": "ca"}, "ok 200"),
    "CURL_CA_BUNDLE": (True, {"CURL_CA_BUNDLE": "ca"}, "ok 200"),
    "SSL_CERT_FILE-before-REQUESTS_CA_BUNDLE": (
        True,
        {"SSL_CERT_FILE": "other", "REQUESTS_CA_BUNDLE": "ca"},
        "tls",
    ),
    "connection-verify-wins": (
        "ca",
        {"SSL_CERT_FILE": "other", "REQUESTS_CA_BUNDLE": "other"},
        "ok 200",
    ),
    "connection-verify-false": (False, {"SSL_CERT_FILE": "other"}, "ok 200"),
}


@pytest.mark.parametrize("case", CA_CASES.values(), ids=CA_CASES.keys())
@pytest.mark.parametrize("path", PATHS)
def test_both_paths_trust_the_same_ca(
    path: str, case: tuple[Any, dict[str, str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    verify, variables, expected = case
    with misbehaving(answer, tls=True) as server:
        files = {"ca": server.ca_file, "other": certifi.where()}
        for name, which in variables.items():
            monkeypatch.setenv(name, files[which])
        settings = settings_for(server.url, verify=files.get(verify, verify))
        (outcome,) = exchange(path, settings).outcomes
    assert kind_of(outcome) == expected


def test_ca_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_ca(str(tmp_path)) == str(tmp_path)
    assert resolve_ca(False) is False
    assert Path(str(resolve_ca(True))).exists()  # the system's bundle, or certifi's
    monkeypatch.setenv("CURL_CA_BUNDLE", "/c.pem")
    assert resolve_ca(True) == "/c.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/r.pem")
    assert resolve_ca(True) == "/r.pem"
    monkeypatch.setenv("SSL_CERT_FILE", "/s.pem")
    assert resolve_ca(True) == "/s.pem"


@pytest.mark.parametrize(
    ("variables", "url", "expected"),
    [
        ({}, "https://api.portkey.ai/v1", None),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "https://api.portkey.ai/v1", "http://proxy:3128"),
        ({"https_proxy": "proxy:3128"}, "https://api.portkey.ai/v1", "http://proxy:3128"),
        (
            {"HTTPS_PROXY": "http://up:1", "https_proxy": "http://low:2"},
            "https://a.b/v1",
            "http://low:2",
        ),
        ({"HTTPS_PROXY": "http://up:1", "https_proxy": ""}, "https://a.b/v1", None),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "http://gateway:8787/v1", None),
        ({"HTTP_PROXY": "http://proxy:3128"}, "http://gateway:8787/v1", "http://proxy:3128"),
        ({"ALL_PROXY": "http://proxy:3128"}, "http://gateway:8787/v1", "http://proxy:3128"),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "portkey.ai"},
            "https://api.portkey.ai/v1",
            None,
        ),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".portkey.ai"},
            "https://api.portkey.ai/v1",
            None,
        ),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "ai.portkey"},
            "https://api.portkey.ai/v1",
            "http://p:1",
        ),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, "https://api.portkey.ai/v1", None),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, "http://10.1.2.3:8787/v1", None),
        (
            {"HTTP_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"},
            "http://11.1.2.3:8787/v1",
            "http://p:1",
        ),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "gateway:8787"}, "http://gateway:8787/v1", None),
        (
            {"HTTP_PROXY": "http://p:1", "NO_PROXY": "gateway:9999"},
            "http://gateway:8787/v1",
            "http://p:1",
        ),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "::1"}, "http://[::1]:8787/v1", None),
    ],
)
def test_proxy_decision(
    variables: dict[str, str], url: str, expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert proxy_for(url) == expected


@pytest.mark.parametrize("path", PATHS)
def test_both_paths_send_through_the_proxy_the_environment_names(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scripted server plays the proxy: it receives the request for the absolute URL of
    a host that does not resolve, which only a proxy can reach."""
    with misbehaving(answer) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        (outcome,) = exchange(path, settings_for("http://gateway.invalid:8787/v1")).outcomes
    assert kind_of(outcome) == "ok 200"
    (seen,) = proxy.requests
    assert seen.target == "http://gateway.invalid:8787/v1/batches/batch_1"


@pytest.mark.parametrize("path", PATHS)
def test_no_proxy_cidr_sends_both_paths_direct(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with misbehaving(answer) as server:
        dead = socket.socket()
        dead.bind(("127.0.0.1", 0))  # a proxy address where nothing listens
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead.getsockname()[1]}")
        monkeypatch.setenv("NO_PROXY", "example.com, 127.0.0.0/8")
        (outcome,) = exchange(path, settings_for(server.url)).outcomes
        monkeypatch.setenv("NO_PROXY", "example.com")
        (through_dead_proxy,) = exchange(path, settings_for(server.url)).outcomes
        dead.close()
    assert kind_of(outcome) == "ok 200"
    assert [seen.target for seen in server.requests] == ["/v1/batches/batch_1"]
    assert kind_of(through_dead_proxy) == "connect"


@pytest.mark.parametrize("path", PATHS)
def test_netrc_never_replaces_the_provider_key(
    path: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("default login someone password netrc-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(netrc))
    with misbehaving(answer) as server:
        settings = settings_for(server.url, provider_api_key="sk-provider-key")
        (outcome,) = exchange(path, settings).outcomes
    assert kind_of(outcome) == "ok 200"
    (seen,) = server.requests
    assert seen.headers["authorization"] == "Bearer sk-provider-key"


@pytest.mark.parametrize("path", PATHS)
def test_no_authorization_from_netrc_without_a_provider_key(
    path: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".netrc").write_text("default login someone password netrc-secret\n")
    (tmp_path / ".netrc").chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    with misbehaving(answer) as server:
        exchange(path, settings_for(server.url))
    (seen,) = server.requests
    assert "authorization" not in seen.headers


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("path", PATHS)
def test_dead_first_address_falls_back_to_the_next(
    path: str, tls: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``localhost`` resolving to ::1 first (nothing listens there) and 127.0.0.1 second, as
    a dual-stack resolver answers: the request goes to the live address. The machine's own
    resolver knows only 127.0.0.1, so the name's answer is given here, at getaddrinfo."""
    real = socket.getaddrinfo

    def dual_stack(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "localhost":
            return real(host, port, *args, **kwargs)
        stream, tcp = socket.SOCK_STREAM, socket.IPPROTO_TCP
        return [
            (socket.AF_INET6, stream, tcp, "", ("::1", int(port), 0, 0)),
            (socket.AF_INET, stream, tcp, "", ("127.0.0.1", int(port))),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", dual_stack)
    with misbehaving(answer, tls=tls) as server:
        url = server.url.replace("127.0.0.1", "localhost")
        (outcome,) = exchange(path, settings_for(url, verify=server.ca_file)).outcomes
    assert kind_of(outcome) == "ok 200"
    assert len(server.requests) == 1
