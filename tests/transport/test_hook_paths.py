"""The hook's two paths over a misbehaving server: an answer about another batch is never
taken for the one asked, and the async path's shared session belongs to all its users."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_portkey._transport.aio import shared_sessions
from airflow_portkey.exceptions import PortkeyConfigError, PortkeyError, PortkeyTransportError
from airflow_portkey.hooks.portkey import PortkeyHook
from tests.unit.support import FAST_RETRIES, set_connection

from .paths import PATHS
from .server import MisbehavingServer, Peer, Seen, misbehaving, response

CONN_ID = "portkey_transport"


def batch(batch_id: str, status: str = "in_progress") -> bytes:
    body = {"id": batch_id, "object": "batch", "status": status, "created_at": 1}
    return response(json.dumps(body).encode())


def asked(seen: Seen) -> str:
    return seen.target.split("/")[3]


def use(monkeypatch: pytest.MonkeyPatch, server: MisbehavingServer) -> None:
    extra = {"provider": "openai", **({"verify": server.ca_file} if server.tls else {})}
    set_connection(monkeypatch, CONN_ID, host=server.url, extra=extra)


def on_path(path: str, call: Callable[[PortkeyHook], Any]) -> Any:
    """``call(hook)`` with a hook's sync method, or its async one on a fresh loop."""
    hook = PortkeyHook(CONN_ID, retry_policy=FAST_RETRIES)
    if path == "sync":
        return call(hook)

    async def go() -> Any:
        try:
            return await call(hook)
        finally:
            await hook.aclose()

    return asyncio.run(go())


def read(batch_id: str) -> Callable[[PortkeyHook], Any]:
    def call(hook: PortkeyHook) -> Any:
        return hook.get_batch(batch_id) if not asyncio_running() else hook.aget_batch(batch_id)

    return call


def asyncio_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def reads(*batch_ids: str) -> Callable[[PortkeyHook], Any]:
    """Read the batches one after the other on one hook (one kept-alive connection)."""

    def call(hook: PortkeyHook) -> Any:
        if not asyncio_running():
            return [hook.get_batch(batch_id) for batch_id in batch_ids]

        async def each() -> list[Any]:
            return [await hook.aget_batch(batch_id) for batch_id in batch_ids]

        return each()

    return call


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("path", PATHS)
def test_stale_answer_on_a_kept_alive_connection_is_retried_on_a_fresh_one(
    path: str, tls: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first connection answers its second request with an unrequested answer about the
    first batch, then the right one: the hook notices, and asks again on a new connection."""

    def out_of_step(peer: Peer, seen: Seen) -> bool:
        if peer.number == 1 and asked(seen) == "batch_2":
            peer.send(batch("batch_1", "completed"))
        return peer.send(batch(asked(seen)))

    with misbehaving(out_of_step, tls=tls) as server:
        use(monkeypatch, server)
        first, second = on_path(path, reads("batch_1", "batch_2"))
    assert (first.id, second.id) == ("batch_1", "batch_2")
    assert second.status.value == "in_progress"
    assert [(asked(s), s.connection) for s in server.requests] == [
        ("batch_1", 1),
        ("batch_2", 1),
        ("batch_2", 2),
    ]


@pytest.mark.parametrize("path", PATHS)
def test_extra_answer_after_an_answer_is_never_read_as_the_next(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def chatty(peer: Peer, seen: Seen) -> bool:
        return peer.send(batch(asked(seen)) + batch("batch_other", "completed"))

    with misbehaving(chatty) as server:
        use(monkeypatch, server)
        batches = on_path(path, reads("batch_1", "batch_2", "batch_3"))
    assert [(b.id, b.status.value) for b in batches] == [
        ("batch_1", "in_progress"),
        ("batch_2", "in_progress"),
        ("batch_3", "in_progress"),
    ]


@pytest.mark.parametrize("path", PATHS)
def test_answer_about_another_batch_every_time_is_a_typed_error(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with misbehaving(lambda peer, seen: peer.send(batch("batch_other"))) as server:
        use(monkeypatch, server)
        with pytest.raises(PortkeyTransportError, match="about 'batch_other', not 'batch_1'"):
            on_path(path, read("batch_1"))
    assert len(server.requests) == 1 + FAST_RETRIES.max_retries
    assert len({s.connection for s in server.requests}) == len(server.requests)


@pytest.mark.parametrize("path", PATHS)
def test_malformed_answer_is_retried_then_a_typed_error(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def malformed(peer: Peer, seen: Seen) -> bool:
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\n{}")
        return False

    with misbehaving(malformed) as server:
        use(monkeypatch, server)
        with pytest.raises(PortkeyTransportError, match="malformed error"):
            on_path(path, read("batch_1"))
    assert len(server.requests) == 1 + FAST_RETRIES.max_retries


def test_hooks_on_one_loop_share_one_session_and_one_closing_leaves_the_other_working(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with misbehaving(lambda peer, seen: peer.send(batch(asked(seen)))) as server:
        use(monkeypatch, server)

        async def go() -> list[Any]:
            first = PortkeyHook(CONN_ID, trace_id="trace-a")
            second = PortkeyHook(CONN_ID, trace_id="trace-b")
            seen = [await first.aget_batch("batch_1"), await second.aget_batch("batch_2")]
            sessions = shared_sessions()
            await first.aclose()
            seen.append(await second.aget_batch("batch_3"))  # still open for the other
            await second.aclose()
            return [sessions, shared_sessions(), [b.id for b in seen]]

        sessions_while_open, sessions_after, ids = asyncio.run(go())
    assert sessions_while_open == 1
    assert sessions_after == 0
    assert ids == ["batch_1", "batch_2", "batch_3"]
    assert {s.connection for s in server.requests} == {1}  # one connection for both hooks
    traces = [s.headers["x-portkey-trace-id"] for s in server.requests]
    assert traces == ["trace-a", "trace-b", "trace-b"]


def test_session_a_hook_left_open_is_closed_when_the_loop_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with misbehaving(lambda peer, seen: peer.send(batch(asked(seen)))) as server:
        use(monkeypatch, server)

        async def go() -> None:
            await PortkeyHook(CONN_ID).aget_batch("batch_1")  # never closed

        asyncio.run(go())
        closed = threading.Event()
        for _ in range(200):  # the server notices the close; bounded
            if server.open_now == 0:
                closed.set()
                break
            closed.wait(0.05)
    assert closed.is_set()


@pytest.mark.parametrize("path", PATHS)
def test_verify_path_that_does_not_exist_is_a_config_error_naming_verify_before_any_request(
    path: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = str(tmp_path / "no-such-ca.pem")
    with misbehaving(lambda peer, seen: peer.send(batch(asked(seen))), tls=True) as server:
        extra = {"provider": "openai", "verify": missing}
        set_connection(monkeypatch, CONN_ID, host=server.url, extra=extra)
        with pytest.raises(PortkeyConfigError, match=r"extra 'verify' .*no-such-ca\.pem"):
            on_path(path, read("batch_1"))
    assert server.connections == 0


def test_connection_test_names_a_verify_path_that_does_not_exist(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = str(tmp_path / "no-such-ca.pem")
    extra = {"provider": "openai", "verify": missing}
    set_connection(monkeypatch, CONN_ID, host="https://127.0.0.1:9/v1", extra=extra)
    ok, message = PortkeyHook(CONN_ID).test_connection()
    assert not ok
    assert "extra 'verify'" in message and "no-such-ca.pem" in message


ECHOED_KEY = "pk-ECHOED-" + "0123456789abcdef" * 4  # 74 characters, as a real key's length


def echo_key_in(where: str) -> Callable[[Peer, Seen], bool]:
    """A hostile server that answers with the API key it was sent, in the answer's framing."""

    def echo(peer: Peer, seen: Seen) -> bool:
        key = seen.headers.get("x-portkey-api-key", "?")
        framing = {
            "status line": f"HTTP/1.1 2x0 {key}\r\nContent-Length: 0\r\n\r\n",
            "content-length": f"HTTP/1.1 200 OK\r\nContent-Length: {key}\r\n\r\n",
            "bad header line": f"HTTP/1.1 200 OK\r\n{key}\r\n\r\n",
            "chunk size": f"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{key}\r\n",
        }
        peer.send(framing[where].encode())
        return False

    return echo


FRAMINGS = ["status line", "content-length", "bad header line", "chunk size"]


@pytest.mark.parametrize("where", FRAMINGS)
@pytest.mark.parametrize("path", PATHS)
def test_a_key_echoed_into_the_framing_reaches_neither_the_log_nor_the_error(
    path: str,
    where: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Airflow's masker knows the whole key only: no piece of it may be shown either.
    with misbehaving(echo_key_in(where)) as server:
        set_connection(
            monkeypatch, CONN_ID, host=server.url, password=ECHOED_KEY, extra={"provider": "openai"}
        )
        with pytest.raises(PortkeyError) as raised:
            on_path(path, read("batch_1"))
    out, err = capfd.readouterr()  # the hook logs through structlog to the console
    shown = out + err + caplog.text + str(raised.value)
    assert "GET /batches/batch_1" in shown
    assert ECHOED_KEY[:12] not in shown, shown
    assert "Failed to parse headers" not in shown  # urllib3's warning quotes the bytes


def test_the_connection_test_never_quotes_a_key_echoed_into_the_framing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with misbehaving(echo_key_in("content-length")) as server:
        set_connection(
            monkeypatch, CONN_ID, host=server.url, password=ECHOED_KEY, extra={"provider": "openai"}
        )
        ok, message = PortkeyHook(CONN_ID).test_connection()
    assert not ok and "invalid Content-Length" in message, message
    assert ECHOED_KEY[:12] not in message, message
