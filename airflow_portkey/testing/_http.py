"""A small HTTP/1.1 server on asyncio (keep-alive, Content-Length and chunked request bodies).

It runs its own event loop in a daemon thread, so tests and benchmarks in the calling thread
talk to it over real sockets. Requests are answered synchronously on the loop; only a delayed
answer (the "slow" fault) schedules a timer, so it never holds up other connections.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Callable
from email.utils import formatdate

from ._responses import Delay, Drop, Request, Response, Result, gateway_failure

Handler = Callable[[Request, bool], Result]

_MAX_HEAD = 64 * 1024
_REASONS = {
    100: "Continue",
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    # Formatting a date per request would be the costliest line here; once a second is enough.
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


class _Head:
    __slots__ = ("chunked", "headers", "keep_alive", "length", "method", "path", "query")

    def __init__(self, raw: bytes) -> None:
        lines = raw.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError("unsupported HTTP version")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError("malformed header line")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self.method = method
        self.path, _, self.query = target.partition("?")
        self.headers = headers
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self.length = 0 if self.chunked else int(headers.get("content-length", "0") or "0")
        if self.length < 0:
            raise ValueError("negative Content-Length")
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.0":
            self.keep_alive = "keep-alive" in connection
        else:
            self.keep_alive = "close" not in connection


def _take_chunked(buf: bytearray) -> tuple[bytes, int] | None:
    """(body, bytes consumed) once the whole chunked body is in `buf`, else None."""
    body = bytearray()
    pos = 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0].strip() or b"0", 16)
        pos = eol + 2
        if size == 0:
            while True:  # optional trailers, then an empty line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                empty = eol == pos
                pos = eol + 2
                if empty:
                    return bytes(body), pos
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos : pos + size]
        pos += size + 2


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._head: _Head | None = None
        self._continued = False
        self._busy = False  # a delayed answer is pending; later requests wait their turn
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._busy:
            self._drain()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _drain(self) -> None:
        while not self._busy and not self._closed:
            try:
                req = self._next_request()
            except ValueError:
                self._send(Response(400, b"Bad Request", "text/plain"), keep_alive=False)
                return
            if req is None:
                return
            self._dispatch(req, first=True)

    def _next_request(self) -> Request | None:
        buf = self._buf
        if self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise ValueError("request head too large")
                return None
            self._head = _Head(bytes(buf[:end]))
            del buf[: end + 4]
            self._continued = False
        head = self._head
        if head.chunked:
            taken = _take_chunked(buf)
            if taken is None:
                self._maybe_continue(head)
                return None
            body, used = taken
        else:
            if len(buf) < head.length:
                self._maybe_continue(head)
                return None
            body, used = bytes(buf[: head.length]), head.length
        del buf[:used]
        self._head = None
        return Request(head.method, head.path, head.query, head.headers, body, head.keep_alive)

    def _maybe_continue(self, head: _Head) -> None:
        if not self._continued and head.headers.get("expect", "").lower() == "100-continue":
            self._continued = True
            assert self._transport is not None
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _dispatch(self, req: Request, *, first: bool) -> None:
        try:
            result = self._server.handler(req, first)
        except Exception as exc:  # a bug in the emulator must show, not hang the client
            traceback.print_exc(file=sys.stderr)
            result = gateway_failure(500, f"emulator error: {exc!r}")
        if isinstance(result, Delay):
            self._busy = True
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(result.seconds, self._resume, req)
        elif isinstance(result, Drop):
            self._closed = True
            assert self._transport is not None
            if result.reset:
                self._transport.abort()
            else:
                self._transport.close()
        else:
            self._send(result, keep_alive=req.keep_alive)

    def _resume(self, req: Request) -> None:
        self._timer = None
        self._busy = False
        if self._closed:
            return
        self._dispatch(req, first=False)
        self._drain()

    def _send(self, response: Response, *, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None or self._closed:
            return
        status = response.status
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            f"Date: {_http_date()}",
        ]
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        if not keep_alive:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        transport.write(head + response.body)
        if not keep_alive:
            self._closed = True
            transport.close()


class HttpServer:
    """Serves `handler` on host:port from a daemon thread with its own event loop."""

    def __init__(
        self, handler: Handler, host: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.ssl_context = ssl_context  # set: serve HTTPS (TLS) instead of plain HTTP
        self.connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> int:
        """Start serving; returns the bound port once the socket is listening."""
        if self.running:
            return self.port
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="portkey-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("Portkey emulator did not start within 10 s")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        return self.port

    def stop(self) -> None:
        """Close every connection and stop the loop; returns when the thread has ended."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            server = loop.run_until_complete(
                loop.create_server(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    backlog=8192,  # benchmarks open thousands of connections at once
                    reuse_address=True,
                    ssl=self.ssl_context,
                )
            )
        except BaseException as exc:
            self._error = exc
            loop.close()
            self._ready.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            for conn in list(self.connections):
                conn.abort()
            # Let the aborted transports report connection_lost before the loop closes.
            loop.run_until_complete(asyncio.sleep(0.01))
            self.connections.clear()
            loop.close()
