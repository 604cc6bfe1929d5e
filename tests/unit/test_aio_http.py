"""The async path's lean HTTP/1.1 client, against a scripted HTTP server on loopback.

The server is real (asyncio, its own sockets); its script decides, request by request, to
answer, to answer and hang up, to hang up without answering, or to stay silent, and it
records every connection and request, which the tests assert on. The emulator covers the
batch API; this covers what only a transport can get wrong: reusing connections,
noticing one the server closed, retrying only what is safe to repeat, framing and timeouts.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from airflow_portkey._core.messages import ApiRequest, ApiResponse, TransportFailure
from airflow_portkey._transport.aio import (
    AsyncJsonClient,
    HttpxJsonClient,
    json_client,
    proxied,
)
from airflow_portkey.hooks.portkey import PortkeyHook
from airflow_portkey.testing._tls import write_tls_files

from .support import set_connection

T = TypeVar("T")
BATCH = {"id": "batch_1", "object": "batch", "status": "in_progress"}


def answer(
    body: Any = BATCH, *, status: int = 200, close: bool = False, chunked: bool = False
) -> bytes:
    payload = json.dumps(body).encode()
    head = [f"HTTP/1.1 {status} OK", "Content-Type: application/json", "X-Seen: a", "X-Seen: b"]
    if close:
        head.append("Connection: close")
    if chunked:
        head.append("Transfer-Encoding: chunked")
        half = len(payload) // 2
        parts = [payload[:half], payload[half:]]
        framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
        return ("\r\n".join(head) + "\r\n\r\n").encode() + framed
    head.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


@dataclass
class Seen:
    index: int
    connection: int
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ScriptedServer:
    """``script(seen) -> bytes | "close" | "hang"``: what to do with each request."""

    script: Callable[[Seen], bytes | str]
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    port: int = 0
    delay: float = 0.0
    tls: bool = False
    hang_up_after_answer: bool = False  # close after answering, without saying so

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                line, *rest = head.decode("latin-1").split("\r\n")
                method, target, _ = line.split(" ")
                headers = {}
                for item in filter(None, rest):
                    name, value = item.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                seen = Seen(len(self.requests), number, method, target, headers, body)
                self.requests.append(seen)
                action = self.script(seen)
                if self.delay:
                    await asyncio.sleep(self.delay)
                if action == "close":
                    return
                if action == "hang":
                    await asyncio.sleep(3600)
                assert isinstance(action, bytes)
                writer.write(action)
                await writer.drain()
                if b"Connection: close" in action or self.hang_up_after_answer:
                    return
        finally:
            self.open_now -= 1
            writer.close()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/v1"


@functools.cache
def tls_files() -> tuple[str, str, str]:
    """A throw-away CA, and a certificate for 127.0.0.1 it signs (ca, cert, key paths)."""
    return write_tls_files("127.0.0.1", tempfile.mkdtemp(prefix="aio-http-tls-"))


def run(
    script: Callable[[Seen], bytes | str],
    body: Callable[[ScriptedServer], Awaitable[T]],
    *,
    delay: float = 0.0,
    tls: bool = False,
    hang_up: bool = False,
) -> tuple[T, ScriptedServer]:
    """Start a scripted server on a fresh event loop, run ``body(server)``, stop the server."""
    context = None
    if tls:
        _, cert, key = tls_files()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)

    async def go() -> T:
        server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0, ssl=context)
        scripted.port = server.sockets[0].getsockname()[1]
        try:
            return await body(scripted)
        finally:
            server.close()

    scripted = ScriptedServer(script, delay=delay, tls=tls, hang_up_after_answer=hang_up)
    return asyncio.run(go()), scripted


def client(url: str, **overrides: Any) -> AsyncJsonClient:
    options: dict[str, Any] = {
        "headers": {"x-portkey-api-key": "pk-test"},
        "ssl_context": ssl.create_default_context(cafile=tls_files()[0])
        if url.startswith("https:")
        else None,
        "connect_timeout": 5.0,
        "read_timeout": 5.0,
        "max_connections": 4,
        "keepalive_expiry": 30.0,
    }
    return AsyncJsonClient(url, **(options | overrides))


GET = ApiRequest("GET", "/batches/batch_1")


def body_of(outcome: object) -> Any:
    assert isinstance(outcome, ApiResponse), outcome
    return json.loads(outcome.body)


def sends(
    *requests: ApiRequest, **options: Any
) -> Callable[[ScriptedServer], Awaitable[list[Any]]]:
    """A body that sends these requests one after the other on one client."""

    async def body(server: ScriptedServer) -> list[Any]:
        http = client(server.url, **options)
        try:
            return [await http.send(request) for request in requests]
        finally:
            await http.aclose()

    return body


def test_requests_share_one_kept_alive_connection() -> None:
    outcomes, server = run(lambda seen: answer(), sends(GET, GET, GET))
    assert [body_of(o)["status"] for o in outcomes] == ["in_progress"] * 3
    assert server.connections == 1
    assert [(s.method, s.target) for s in server.requests] == [("GET", "/v1/batches/batch_1")] * 3
    seen = server.requests[0].headers
    assert seen["host"] == f"127.0.0.1:{server.port}"
    assert seen["x-portkey-api-key"] == "pk-test"
    assert seen["accept"] == "application/json"


def test_json_body_query_and_repeated_headers() -> None:
    post = ApiRequest("POST", "/batches", params={"limit": "2", "after": "a b"}, json_body={"x": 1})
    (outcome,), server = run(lambda seen: answer({"ok": True}), sends(post))
    assert isinstance(outcome, ApiResponse)
    assert outcome.headers["x-seen"] == "a, b"  # repeated headers are joined, as httpx does
    (seen,) = server.requests
    assert seen.target == "/v1/batches?limit=2&after=a+b"
    assert seen.headers["content-type"] == "application/json"
    assert json.loads(seen.body) == {"x": 1}


def test_chunked_answer_is_reassembled() -> None:
    outcomes, server = run(lambda seen: answer(chunked=True), sends(GET, GET))
    assert [body_of(o) for o in outcomes] == [BATCH, BATCH]
    assert server.connections == 1


def test_connection_close_answer_opens_a_new_connection() -> None:
    outcomes, server = run(lambda seen: answer(close=True), sends(GET, GET))
    assert [body_of(o) for o in outcomes] == [BATCH, BATCH]
    assert [s.connection for s in server.requests] == [1, 2]


def hang_up_on_second(seen: Seen) -> bytes | str:
    """Answer, then hang up on the second request read: a server's idle timeout racing it."""
    return "close" if seen.index == 1 else answer()


def test_idempotent_request_goes_again_once_when_a_kept_alive_connection_was_closed() -> None:
    outcomes, server = run(hang_up_on_second, sends(GET, GET))
    assert [body_of(o) for o in outcomes] == [BATCH, BATCH]
    assert [s.connection for s in server.requests] == [1, 1, 2]


def test_request_that_must_not_repeat_is_not_resent_on_a_stale_connection() -> None:
    create = ApiRequest("POST", "/batches", json_body={"input_file_id": "f"}, idempotent=False)
    (first, second), server = run(hang_up_on_second, sends(GET, create))
    assert body_of(first) == BATCH
    assert isinstance(second, TransportFailure) and second.kind == "dropped"
    assert [s.method for s in server.requests] == ["GET", "POST"]  # sent once, not twice


def test_hang_up_on_a_new_connection_is_reported_not_retried() -> None:
    (outcome,), server = run(lambda seen: "close", sends(GET))
    assert isinstance(outcome, TransportFailure) and outcome.kind == "dropped"
    assert len(server.requests) == 1  # retrying is the protocol's decision, not the client's


def test_silent_server_is_a_read_timeout() -> None:
    (outcome,), server = run(lambda seen: "hang", sends(GET, read_timeout=0.3))
    assert outcome == TransportFailure("timeout", "ReadTimeout")
    assert len(server.requests) == 1


def test_refused_connection_is_a_connect_failure() -> None:
    async def body(server: ScriptedServer) -> Any:
        spare = socket.socket()
        spare.bind(("127.0.0.1", 0))  # bound, never listening: connecting is refused
        try:
            http = client(f"http://127.0.0.1:{spare.getsockname()[1]}/v1")
            return await http.send(GET)
        finally:
            spare.close()

    outcome, server = run(lambda seen: answer(), body)
    assert isinstance(outcome, TransportFailure) and outcome.kind == "connect"
    assert server.requests == []


def test_at_most_max_connections_in_flight() -> None:
    async def body(server: ScriptedServer) -> list[Any]:
        http = client(server.url, max_connections=2)
        try:
            return await asyncio.gather(*(http.send(GET) for _ in range(8)))
        finally:
            await http.aclose()

    outcomes, server = run(lambda seen: answer(), body, delay=0.05)
    assert [body_of(o) for o in outcomes] == [BATCH] * 8
    assert server.most_open == 2
    assert len(server.requests) == 8


def test_idle_connection_past_keepalive_expiry_is_replaced() -> None:
    async def body(server: ScriptedServer) -> list[Any]:
        http = client(server.url, keepalive_expiry=0.05)
        try:
            first = await http.send(GET)
            await asyncio.sleep(0.2)
            return [first, await http.send(GET)]
        finally:
            await http.aclose()

    outcomes, server = run(lambda seen: answer(), body)
    assert [body_of(o) for o in outcomes] == [BATCH, BATCH]
    assert [s.connection for s in server.requests] == [1, 2]


# -- the same over TLS (hosted Portkey is HTTPS only) ---------------------------------------


def test_tls_requests_share_one_connection() -> None:
    outcomes, server = run(lambda seen: answer(chunked=True), sends(GET, GET, GET), tls=True)
    assert [body_of(o) for o in outcomes] == [BATCH] * 3
    assert [s.connection for s in server.requests] == [1, 1, 1]
    assert server.requests[0].headers["x-portkey-api-key"] == "pk-test"


def test_tls_connection_closed_by_the_server_is_replaced() -> None:
    outcomes, server = run(lambda seen: answer(close=True), sends(GET, GET), tls=True)
    assert [body_of(o) for o in outcomes] == [BATCH, BATCH]
    assert [s.connection for s in server.requests] == [1, 2]


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_connection_the_server_closed_while_idle_is_noticed(tls: bool) -> None:
    async def body(server: ScriptedServer) -> list[Any]:
        http = client(server.url)
        try:
            first = await http.send(GET)
            await asyncio.sleep(0.2)  # meanwhile the server hangs up (FIN; over TLS close_notify)
            return [first, await http.send(GET)]
        finally:
            await http.aclose()

    outcomes, server = run(lambda seen: answer(), body, tls=tls, hang_up=True)
    assert [body_of(o) for o in outcomes] == [BATCH, BATCH]
    # Noticed before sending: a new connection, and no request went to the closed one.
    assert [s.connection for s in server.requests] == [1, 2]
    assert server.connections == 2


def test_tls_silent_server_is_a_read_timeout() -> None:
    (outcome,), server = run(lambda seen: "hang", sends(GET, read_timeout=0.3), tls=True)
    assert outcome == TransportFailure("timeout", "ReadTimeout")
    assert len(server.requests) == 1


def test_tls_untrusted_certificate_is_a_tls_failure() -> None:
    async def body(server: ScriptedServer) -> list[Any]:
        http = client(server.url, ssl_context=ssl.create_default_context())
        try:
            return [await http.send(GET)]
        finally:
            await http.aclose()

    (outcome,), server = run(lambda seen: answer(), body, tls=True)
    assert isinstance(outcome, TransportFailure) and outcome.kind == "tls"
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.detail
    assert server.requests == []


@pytest.mark.parametrize(
    ("env", "url", "expected"),
    [
        ({}, "https://api.portkey.ai/v1", False),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "https://api.portkey.ai/v1", True),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "http://gateway:8787/v1", False),
        ({"ALL_PROXY": "http://proxy:3128"}, "http://gateway:8787/v1", True),
        (
            {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "portkey.ai"},
            "https://api.portkey.ai/v1",
            False,
        ),
    ],
)
def test_proxy_from_the_environment_is_noticed(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str, expected: bool
) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        for variant in (name, name.lower()):
            monkeypatch.delenv(variant, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert proxied(url) is expected
    chosen = json_client(
        url,
        headers={},
        verify=True,
        connect_timeout=1,
        read_timeout=1,
        max_connections=1,
        keepalive_expiry=1,
    )
    assert isinstance(chosen, HttpxJsonClient if expected else AsyncJsonClient)
    asyncio.run(chosen.aclose())


def test_hook_goes_through_the_proxy_the_environment_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With HTTP_PROXY set, the async path sends through it: here the scripted server plays
    the proxy and receives the request for the gateway's absolute URL."""
    for name in ("NO_PROXY", "no_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    set_connection(
        monkeypatch,
        "portkey_proxied",
        host="http://gateway.internal:8787/v1",
        extra={"provider": "openai"},
    )

    async def body(proxy: ScriptedServer) -> Any:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        hook = PortkeyHook("portkey_proxied")
        try:
            return await hook.aget_batch("batch_1")
        finally:
            await hook.aclose()

    batch, proxy = run(lambda seen: answer(), body)
    assert batch.id == "batch_1"
    (seen,) = proxy.requests
    assert seen.target == "http://gateway.internal:8787/v1/batches/batch_1"
