"""Byte channels for the lean async HTTP client: a TCP connection, with or without TLS.

An asyncio Protocol of our own rather than streams, and TLS through ``ssl.SSLObject`` on
memory buffers rather than asyncio's SSL transport: asyncio's allocates a 256 KiB read buffer
for every TLS connection, and a triggerer keeps one connection open per waiting batch
(thousands of them). OpenSSL releases its own buffers while a connection is idle.
"""

from __future__ import annotations

import asyncio
import ssl

_READ_SIZE = 1 << 16


class _Socket(asyncio.Protocol):
    """Collects what arrives; ``receive`` waits for it, with a timeout."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def receive(self, timeout: float) -> bytes:
        """What has arrived, waiting up to ``timeout`` for something; b"" once closed."""
        if not self.buffer and not self.closed:
            loop = asyncio.get_running_loop()
            self.waiter = waiter = loop.create_future()
            expiry = loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                expiry.cancel()
                self.waiter = None
        return self.take()

    def send(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())


class Channel:
    """A connection's bytes, in the clear: ``send``, ``receive``, ``idle_ok``, ``close``."""

    def __init__(self, socket: _Socket) -> None:
        self._socket = socket

    def send(self, data: bytes) -> None:
        self._socket.send(data)

    async def receive(self, timeout: float) -> bytes:
        return await self._socket.receive(timeout)

    def idle_ok(self) -> bool:
        """Whether the connection survived its idle time: not closed, nothing unasked for."""
        return not self._socket.closed and not self._socket.buffer

    def close(self) -> None:
        self._socket.close()


class TlsChannel(Channel):
    """The same over TLS, encrypting and decrypting in memory."""

    def __init__(self, socket: _Socket, context: ssl.SSLContext, hostname: str) -> None:
        super().__init__(socket)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=hostname)

    async def handshake(self, deadline: float) -> None:
        """Shake hands by ``deadline`` (the event loop's clock)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                if not await self._fill(max(0.0, deadline - loop.time())):
                    # Not a refusal of the certificate: may pass, so the caller may retry.
                    raise ConnectionResetError(
                        "the server closed the connection during the TLS handshake"
                    ) from None
        self._flush()

    def send(self, data: bytes) -> None:
        self._tls.write(data)
        self._flush()

    async def receive(self, timeout: float) -> bytes:
        while True:
            try:
                return self._tls.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                self._flush()  # TLS 1.3 may need to answer (a key update)
                if not await self._fill(timeout):
                    return b""
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""  # closed, politely or not: the parser decides if the answer was whole

    def idle_ok(self) -> bool:
        # While idle a server may send session tickets (fine) or close_notify (not fine).
        if self._socket.buffer:
            self._incoming.write(self._socket.take())
            try:
                if self._tls.read(_READ_SIZE):
                    return False  # application data nobody asked for
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                return False
        return not self._socket.closed

    async def _fill(self, timeout: float) -> bool:
        data = await self._socket.receive(timeout)
        if not data:
            self._incoming.write_eof()
            return False
        self._incoming.write(data)
        return True

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._socket.send(data)


async def open_channel(
    host: str, port: int, *, context: ssl.SSLContext | None, timeout: float
) -> Channel:
    """Connect (and shake hands, over TLS) within ``timeout`` seconds.

    Raises asyncio.TimeoutError, ssl.SSLError (certificate or handshake refused) or OSError.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    _, socket = await asyncio.wait_for(loop.create_connection(_Socket, host, port), timeout)
    if context is None:
        return Channel(socket)
    channel = TlsChannel(socket, context, host)
    try:
        await channel.handshake(deadline)
    except BaseException:
        socket.close()
        raise
    return channel
