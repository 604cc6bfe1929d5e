"""A scripted, misbehaving HTTP server on loopback, plain or TLS, for both transports.

Real sockets in threads of their own (so the sync path and the async path meet the same
server): each accepted connection reads requests one after the other and hands each to the
scenario, which writes whatever it likes on the socket (a good answer, a drip, garbage, two
answers) and says whether the connection stays open. The server records every connection
and request, which the tests assert on.
"""

from __future__ import annotations

import functools
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from airflow_portkey.testing._tls import write_tls_files


@dataclass
class Seen:
    connection: int
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class Peer:
    """One accepted connection, as the scenario sees it."""

    def __init__(self, sock: socket.socket, number: int, server: MisbehavingServer) -> None:
        self.sock = sock
        self.number = number
        self.server = server

    def send(self, data: bytes) -> bool:
        """Write ``data``; False once the client has gone."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def stopping(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True when the server is shutting down."""
        return self.server.stop.wait(seconds)


# A scenario answers one request: it returns True to keep the connection open for the next.
Scenario = Callable[[Peer, Seen], bool]


@functools.cache
def tls_files(host: str = "localhost") -> tuple[str, str, str]:
    """A throw-away CA and a server certificate it signs for the loopback names."""
    return write_tls_files(host, tempfile.mkdtemp(prefix="transport-tls-"))


@dataclass
class MisbehavingServer:
    scenario: Scenario
    tls: bool = False
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/v1"

    @property
    def ca_file(self) -> str:
        return tls_files()[0]

    def serve(self, listener: socket.socket) -> None:
        context = None
        if self.tls:
            _, cert, key = tls_files()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
        listener.settimeout(0.05)  # a closed listener does not wake a thread blocked in accept
        while not self.stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            with self.lock:
                self.connections += 1
                self.open_now += 1
                number = self.connections
            threading.Thread(
                target=self._connection, args=(sock, number, context), daemon=True
            ).start()

    def _connection(self, sock: socket.socket, number: int, context: ssl.SSLContext | None) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(120)
        try:
            if context is not None:
                try:
                    sock = context.wrap_socket(sock, server_side=True)
                except (OSError, ssl.SSLError):
                    return  # the client refused the certificate
            reader = sock.makefile("rb")
            peer = Peer(sock, number, self)
            while not self.stop.is_set():
                seen = self._read_request(reader, number)
                if seen is None:
                    return
                with self.lock:
                    self.requests.append(seen)
                if not self.scenario(peer, seen):
                    return
        except OSError:
            return
        finally:
            with self.lock:
                self.open_now -= 1
            with suppress(OSError):
                sock.close()

    @staticmethod
    def _read_request(reader: object, number: int) -> Seen | None:
        line = reader.readline()  # type: ignore[attr-defined]
        if not line:
            return None
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            item = reader.readline().decode("latin-1").strip()  # type: ignore[attr-defined]
            if not item:
                break
            name, value = item.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        body = reader.read(int(headers.get("content-length", "0")))  # type: ignore[attr-defined]
        return Seen(number, method, target, headers, body)


@contextmanager
def misbehaving(
    scenario: Scenario, *, tls: bool = False, host: str = "127.0.0.1"
) -> Iterator[MisbehavingServer]:
    server = MisbehavingServer(scenario, tls=tls)
    if tls:
        tls_files()  # made here, once: the server's thread and the test must see the same CA
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, 0))
    listener.listen(64)
    server.port = listener.getsockname()[1]
    thread = threading.Thread(target=server.serve, args=(listener,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        thread.join(timeout=10)
        listener.close()


def response(
    body: bytes,
    *,
    status: int = 200,
    headers: tuple[str, ...] = (),
    length: bool = True,
) -> bytes:
    head = [f"HTTP/1.1 {status} OK", "Content-Type: application/json", *headers]
    if length:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body
