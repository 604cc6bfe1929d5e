"""The async transport: aiohttp, one ClientSession per event loop and connection, shared.

A triggerer polls thousands of batches from one event loop. A session per trigger would hold a
connection (about 300 KiB over TLS) per waiting batch; one session per loop and connection
settings, shared by every hook on that loop, holds as many connections as requests are in
flight at once. Each hook takes a lease on the shared session and gives it back in
:meth:`AsyncTransport.aclose`; the session closes when its last user leaves, or when the loop
shuts down (``asyncio.run`` closes what is still open).

Only the batch API's JSON calls run here: uploads and downloads stay on the sync path, which
streams them. The CA, the proxy and the framing rules come from
:mod:`airflow_portkey._transport.common`, alike for both paths; ``FAILURES`` maps aiohttp's
exceptions to the core's failure kinds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import weakref
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

import aiohttp
import aiohttp.http_exceptions as http_exceptions
import yarl

from airflow_portkey._core.messages import ApiRequest, ApiResponse, Outcome, TransportFailure
from airflow_portkey._core.settings import PortkeySettings
from airflow_portkey._transport.common import (
    MAX_ANSWER_BYTES,
    Connection,
    MalformedAnswer,
    check_framing,
    classify,
    request_headers,
    ssl_context,
    too_large,
)

# The first row whose exception is anywhere in the raised exception's chain gives the kind.
FAILURES: tuple[tuple[type[BaseException], str], ...] = (
    (MalformedAnswer, "malformed"),
    (asyncio.TimeoutError, "timeout"),  # the total limit, connect and read timeouts
    (aiohttp.ClientConnectorCertificateError, "tls"),
    (aiohttp.ClientSSLError, "tls"),
    (aiohttp.ClientProxyConnectionError, "connect"),
    (aiohttp.ClientConnectorError, "connect"),
    (aiohttp.ServerDisconnectedError, "dropped"),
    (http_exceptions.ContentEncodingError, "malformed"),  # a gzip body that does not inflate
    (http_exceptions.ContentLengthError, "dropped"),  # the body ended early
    (http_exceptions.TransferEncodingError, "dropped"),
    (http_exceptions.HttpProcessingError, "malformed"),  # bad status line, headers, framing
    (aiohttp.ClientResponseError, "malformed"),
    (aiohttp.ClientError, "dropped"),
    (ssl.SSLError, "tls"),
    (ConnectionRefusedError, "connect"),
    (OSError, "dropped"),
)

_NO_CONTENT_TYPE = frozenset({"Content-Type"})

# Connections one shared session keeps at most (aiohttp's default); a hook's own
# max_connections bounds its requests in flight.
SESSION_CONNECTIONS = 100


@dataclass(frozen=True, slots=True)
class _Key:
    connection: Connection
    keepalive: float
    headers: tuple[tuple[str, str], ...]
    """The connection's own headers (credentials, routing): every request of the session."""


@dataclass(slots=True)
class _Shared:
    session: aiohttp.ClientSession
    users: int = 0


@dataclass(slots=True)
class _LoopSessions:
    sessions: dict[_Key, _Shared] = field(default_factory=dict)
    keeper: AsyncGenerator[None, None] | None = None


# Weak keys: a finished loop takes its entry with it (no value refers to the loop once its
# sessions are closed).
_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSessions] = (
    weakref.WeakKeyDictionary()
)


async def _close_at_shutdown(sessions: dict[_Key, _Shared]) -> AsyncGenerator[None, None]:
    """Started once per loop: ``asyncio.run`` closes every async generator still open before
    it closes the loop, and so this closes the sessions that hooks left open."""
    try:
        yield
    finally:
        still_open = list(sessions.values())
        sessions.clear()
        for one in still_open:
            await one.session.close()


def _new_session(key: _Key, *, force_close: bool = False) -> aiohttp.ClientSession:
    connection = key.connection
    connector = aiohttp.TCPConnector(
        ssl=ssl_context(connection.ca),
        limit=SESSION_CONNECTIONS,
        keepalive_timeout=None if force_close else key.keepalive,
        force_close=force_close,
        # Happy eyeballs (aiohttp's default delay): a dead first address does not fail the
        # request while another one answers.
        happy_eyeballs_delay=0.25,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        headers=dict(key.headers),
        timeout=aiohttp.ClientTimeout(
            total=connection.total_timeout, sock_connect=connection.connect_timeout
        ),
        trust_env=False,  # no .netrc and no proxy variables: common.proxy_for decided
        auto_decompress=True,
        raise_for_status=False,
    )
    # aiohttp would send a GET again by itself after a dropped connection; the core's retry
    # rules decide that (airflow_portkey._core.retry), for both paths alike.
    session._retry_connection = False
    return session


async def _acquire(key: _Key) -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    per_loop = _loops.get(loop)
    if per_loop is None:
        per_loop = _loops[loop] = _LoopSessions()
    if per_loop.keeper is None:
        per_loop.keeper = _close_at_shutdown(per_loop.sessions)
        await per_loop.keeper.asend(None)
    shared = per_loop.sessions.get(key)
    if shared is None or shared.session.closed:
        shared = per_loop.sessions[key] = _Shared(_new_session(key))
    shared.users += 1
    return shared.session


async def _release(key: _Key, session: aiohttp.ClientSession) -> None:
    per_loop = _loops.get(asyncio.get_running_loop())
    shared = per_loop.sessions.get(key) if per_loop else None
    if shared is None or shared.session is not session:
        return  # already closed at shutdown, or replaced
    shared.users -= 1
    if shared.users <= 0:
        del per_loop.sessions[key]  # type: ignore[union-attr]
        await session.close()


class Slots:
    """At most ``size`` requests in flight, the slots handed out in the order they were asked
    for. asyncio.Semaphore would do, but its ``acquire`` is a coroutine (and a scan of its
    waiters) on every request, free slot or not: here a free slot is taken inline."""

    __slots__ = ("free", "waiters")

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def wait(self) -> None:
        """Take a slot when one is handed over (none free, or others asked first)."""
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Hand the slot to the first waiter still waiting, or free it."""
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


# Equal keys, one object: thousands of triggers on one connection hold one key between them.
_keys: dict[_Key, _Key] = {}


def shared_sessions() -> int:
    """How many shared sessions the running loop holds open (for tests)."""
    per_loop = _loops.get(asyncio.get_running_loop())
    return len(per_loop.sessions) if per_loop else 0


class AsyncTransport:
    """One hook's use of the shared session for its loop and connection settings.

    :param max_connections: this hook's requests in flight at most.
    :param keepalive_expiry: seconds an idle connection stays open for reuse.
    """

    def __init__(
        self,
        settings: PortkeySettings,
        headers: Mapping[str, str],
        *,
        max_connections: int,
        keepalive_expiry: float,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        shared = request_headers(settings.headers())
        key = _Key(Connection.of(settings), keepalive_expiry, tuple(shared.items()))
        if len(_keys) > 256:
            _keys.clear()  # settings seen once (tests, short-lived configurations)
        self._key = _keys.setdefault(key, key)  # one object for every hook of a connection
        # What this hook sends beyond the connection's headers (its trace id and metadata)
        # travels with each request, so that hooks of different tasks share one session.
        own = {name: value for name, value in headers.items() if shared.get(name) != value}
        self._headers = own or None
        self._max_answer_bytes = max_answer_bytes
        self._max_connections = max_connections
        self._slots = Slots(max_connections)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def send(self, request: ApiRequest) -> Outcome:
        session = self._session
        if session is None or session.closed or self._loop is not asyncio.get_running_loop():
            session = await self._shared()
        limit = self._max_answer_bytes
        # The exchange is written out here, not in a coroutine of its own: one fewer on every
        # request.
        slots = self._slots
        if slots.free and not slots.waiters:
            slots.free -= 1  # a free slot, and no one asked before: no coroutine at all
        else:
            await slots.wait()
        fresh = None
        try:
            if request.fresh_connection:
                # A kept-alive connection answered another request: this one goes on a
                # connection of its own, closed after it.
                session = fresh = _new_session(self._key, force_close=True)
            async with session.request(
                request.method,
                self._url(request),
                json=request.json_body,
                headers=self._headers,
                # A POST without a body goes without a Content-Type, as on the sync path: the
                # gateway refuses aiohttp's application/octet-stream.
                skip_auto_headers=_NO_CONTENT_TYPE
                if request.method == "POST" and request.json_body is None
                else None,
                proxy=self._key.connection.proxy,
                allow_redirects=False,  # as on the sync path: a redirect would carry the keys
            ) as response:
                try:
                    headers = response.headers  # looked up by lower-case name, as the core does
                    check_framing(headers, limit)
                    if "content-length" in headers and "content-encoding" not in headers:
                        body = await response.read()  # framing checked: at most `limit` bytes
                    else:
                        body = await _read_capped(response, limit)
                except BaseException:
                    response.close()  # its connection's state is unknown: never reuse it
                    raise
                return ApiResponse(response.status, headers, body)
        except Exception as error:
            return TransportFailure(*classify(error, FAILURES))
        finally:
            try:
                if fresh is not None:
                    await fresh.close()
            finally:
                slots.release()

    async def _shared(self) -> aiohttp.ClientSession:
        if self._session is not None and self._loop is not None and not self._loop.is_closed():
            await self.aclose()  # a lease on another loop's session: give it back first
        self._session = await _acquire(self._key)
        self._loop = asyncio.get_running_loop()
        self._slots = Slots(self._max_connections)  # its waiters belong to this loop
        return self._session

    def _url(self, request: ApiRequest) -> yarl.URL:
        """The request's URL, as built: a Bedrock id is an escaped ARN that must reach the
        server verbatim."""
        target = self._key.connection.base_url + request.path
        if request.params:
            target += "?" + urlencode(request.params)
        return yarl.URL(target, encoded=True)

    async def aclose(self) -> None:
        """Give the shared session back; the last user to leave closes it."""
        session, self._session = self._session, None
        if session is not None and self._loop is asyncio.get_running_loop():
            await _release(self._key, session)
        self._loop = None


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The decoded body of an answer of unknown length, refused as soon as it grows beyond
    ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise MalformedAnswer(too_large(limit))
        parts.append(chunk)
    return b"".join(parts)
