"""``PortkeyHook.test_connection`` (Airflow's Test button): one quick attempt, and a message
that says which field to fix, against a good emulator, a wrong key, a refusing host and a host
that accepts connections and never answers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from airflow_portkey._core import connection_check
from airflow_portkey._core.connection_check import (
    CHECK_CONNECT_TIMEOUT,
    CHECK_DEADLINE,
    CHECK_READ_TIMEOUT,
)
from airflow_portkey.testing import PortkeyEmulator
from tests.silent_server import SilentServer

from .support import CONN_ID, MakeHook


@pytest.fixture
def quick_check(monkeypatch: pytest.MonkeyPatch) -> tuple[float, float]:
    """The check's limits cut to about a second, so the tests that wait them out are quick;
    returns (connect + read, whole-check deadline). The shipped limits are checked apart."""
    monkeypatch.setattr(connection_check, "CHECK_CONNECT_TIMEOUT", 0.5)
    monkeypatch.setattr(connection_check, "CHECK_READ_TIMEOUT", 1.0)
    monkeypatch.setattr(connection_check, "CHECK_DEADLINE", 3.0)
    return 1.5, 3.0


def test_the_shipped_limits_answer_the_button_within_10_seconds() -> None:
    assert CHECK_CONNECT_TIMEOUT + CHECK_READ_TIMEOUT < CHECK_DEADLINE < 10


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def refusing_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound and closed again: nothing listens there
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def test_a_good_connection_is_confirmed_with_one_cheap_call(
    emulator: PortkeyEmulator, make_hook: MakeHook
) -> None:
    ok, message = make_hook(
        provider="openai", provider_api_key="sk-unit-provider-key"
    ).test_connection()
    assert (ok, message) == (
        True,
        f"Connected to Portkey at {emulator.base_url} (routing to provider openai)",
    )
    (request,) = emulator.requests
    assert (request.method, request.path, request.query) == ("GET", "/v1/batches", {"limit": "1"})


def test_a_wrong_key_names_the_key_fields_and_is_tried_once(
    emulator: PortkeyEmulator, make_hook: MakeHook
) -> None:
    ok, message = make_hook(password="pk-not-the-key-000", max_retries=5).test_connection()
    assert ok is False
    assert message.startswith(
        f"Portkey connection {CONN_ID!r}: Portkey refused the credentials (401"
    )
    assert "Portkey API key field" in message
    assert "pk-not-the-key-000" not in message
    assert len(emulator.requests) == 1


def test_a_refusing_host_names_the_base_url_field(make_hook: MakeHook) -> None:
    url = refusing_url()
    ok, message = make_hook(host=url).test_connection()
    assert ok is False
    assert message.startswith(f"Portkey connection {CONN_ID!r}: could not connect to {url}")
    assert "Base URL field" in message


def test_a_silent_host_gets_one_short_attempt(
    silent_server: SilentServer, make_hook: MakeHook, quick_check: tuple[float, float]
) -> None:
    hook = make_hook(host=silent_server.base_url, request_timeout=600, max_retries=5)
    ok, message = hook.test_connection()
    assert ok is False
    budget, _ = quick_check
    assert message.startswith(
        f"Portkey connection {CONN_ID!r}: no answer from {silent_server.base_url} "
        f"within {budget:g} s"
    )
    assert len(silent_server.accepted) == 1, "one attempt, no retry"


def test_a_server_error_is_not_retried(emulator: PortkeyEmulator, make_hook: MakeHook) -> None:
    emulator.add_fault("server_error", times=None)
    ok, message = make_hook(max_retries=5).test_connection()
    assert ok is False
    assert message.startswith(f"Portkey connection {CONN_ID!r}: Portkey answered 5")
    assert len(emulator.requests) == 1


def test_a_wrong_path_names_the_base_url(emulator: PortkeyEmulator, make_hook: MakeHook) -> None:
    ok, message = make_hook(host=emulator.root_url + "/v2").test_connection()
    assert ok is False
    assert "Base URL field" in message and "/v1" in message


def test_an_unusable_field_is_named_before_any_request(
    emulator: PortkeyEmulator, make_hook: MakeHook
) -> None:
    ok, message = make_hook(secret_config="not-a-config").test_connection()
    assert ok is False
    assert message.startswith(f"Portkey connection {CONN_ID!r}: extra 'secret_config'")
    assert emulator.requests == []


def test_the_message_names_the_connection_being_tested_not_airflows_copy(
    emulator: PortkeyEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow's Test button tests a copy under a random id (``test_connection`` in its API
    routes, with the form in ``test_body``); the message names the form's connection."""
    from airflow.api_fastapi.core_api.datamodels.connections import ConnectionBody
    from airflow.models.connection import Connection

    monkeypatch.setenv("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")
    test_body = ConnectionBody(
        connection_id="my_portkey",
        conn_type="portkey",
        host=emulator.base_url,
        password="pk-wrong-key-123",
        extra='{"provider": "openai"}',
    )
    copy = Connection(
        conn_id="uVz85kj1", **test_body.model_dump(by_alias=True, exclude={"connection_id"})
    )
    monkeypatch.setenv("AIRFLOW_CONN_UVZ85KJ1", copy.get_uri())
    # What the API route runs, from a module of Airflow's API (its globals say so).
    route_globals = {"__name__": "airflow.api_fastapi.core_api.routes.public.connections"}
    exec("def route(test_body, copy):\n    return copy.test_connection()", route_globals)
    ok, message = route_globals["route"](test_body, copy)
    assert ok is False
    assert "'my_portkey'" in message and "uVz85kj1" not in message


def test_outside_airflows_api_the_hooks_own_id_is_named(make_hook: MakeHook) -> None:
    ok, message = make_hook(host=refusing_url()).test_connection()
    assert ok is False
    assert message.startswith(f"Portkey connection {CONN_ID!r}: ")


class TricklingServer(SilentServer):
    """Accepts, then sends an answer's status line a byte every 0.1 s, never finishing: each
    read gets a byte well within the read timeout, so only a limit on the whole request (or
    the check's own deadline) ends it."""

    def on_accept(self, conn: socket.socket) -> None:
        threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    @staticmethod
    def _trickle(conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
                conn.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:
            return


def test_a_trickling_host_is_cut_off_by_the_requests_time_limit(
    make_hook: MakeHook, quick_check: tuple[float, float]
) -> None:
    """The whole-request limit (not only the check's own deadline) ends a trickling answer:
    the button says no answer came within the check's quick timeouts."""
    server = TricklingServer()
    url = server.base_url
    try:
        ok, message = make_hook(host=url, max_retries=5).test_connection()
    finally:
        server.close()
    assert ok is False
    seconds, _ = quick_check
    assert message.startswith(
        f"Portkey connection {CONN_ID!r}: no answer from {url} within {seconds:g} s"
    )
    assert len(server.accepted) == 1


def test_the_button_answers_at_the_checks_deadline_whatever_the_request_still_waits_for(
    silent_server: SilentServer, make_hook: MakeHook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check's own deadline also bounds what no request limit covers (a name lookup that
    hangs, say): here it is set shorter than the read timeout, so it is what ends the wait."""
    monkeypatch.setattr(connection_check, "CHECK_CONNECT_TIMEOUT", 0.5)
    monkeypatch.setattr(connection_check, "CHECK_READ_TIMEOUT", 5.0)
    monkeypatch.setattr(connection_check, "CHECK_DEADLINE", 0.5)
    ok, message = make_hook(host=silent_server.base_url).test_connection()
    assert ok is False
    assert message.startswith(
        f"Portkey connection {CONN_ID!r}: no complete answer from {silent_server.base_url} "
        "within 0.5 s"
    )
