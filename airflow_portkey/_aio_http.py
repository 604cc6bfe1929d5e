"""A small keep-alive HTTP/1.1 client for the async path's JSON calls (h11 on asyncio).

A triggerer may poll thousands of batches from one event loop. On this project's benchmark
machine an httpx request costs about 1.6 ms of CPU and the same request through h11 on
asyncio about 0.25 ms: the difference between a triggerer that keeps up and one that falls
behind. This client does only what the batch API's JSON calls need: one request at a time
per connection, keep-alive, TLS, connect and read timeouts. Uploads and downloads stay on the
sync path (requests); a proxy set in the environment sends the hook back to httpx, which
honours it (see :func:`proxied`).

Every answer comes back as the protocol's :class:`ApiResponse` or :class:`TransportFailure`,
so the retry rules stay in one place (:mod:`airflow_portkey._protocol`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import h11

from airflow_portkey._aio_socket import Channel, open_channel
from airflow_portkey._protocol import (
    ApiRequest,
    ApiResponse,
    Outcome,
    TransportFailure,
    ssl_error_in,
)

_READ_SIZE = 1 << 16


def proxied(url: str) -> bool:
    """Whether the environment routes ``url`` through a proxy (``HTTPS_PROXY``, ``NO_PROXY``...),
    read the way requests and httpx read it."""
    proxies = urllib.request.getproxies_environment()
    scheme = urlsplit(url).scheme
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(urlsplit(url).hostname or "")


class _Dropped(Exception):
    """The connection broke; ``answered`` says whether any of the answer had arrived."""

    def __init__(self, detail: str, *, answered: bool) -> None:
        super().__init__(detail)
        self.answered = answered


class _Connection:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = time.monotonic()

    def reusable(self, keepalive_expiry: float) -> bool:
        return (
            self.h11.our_state is h11.IDLE
            and time.monotonic() - self.idle_since < keepalive_expiry
            and self.channel.idle_ok()  # the server did not close it while it was idle
        )

    async def exchange(
        self, request: h11.Request, body: bytes, read_timeout: float
    ) -> tuple[int, dict[str, str], bytes]:
        events = [request, h11.Data(data=body)] if body else [request]
        try:
            data = b"".join(self.h11.send(e) or b"" for e in events)
            self.channel.send(data + (self.h11.send(h11.EndOfMessage()) or b""))
        except (OSError, h11.LocalProtocolError) as error:
            raise _Dropped(_describe(error), answered=False) from None
        status, headers, content = 0, dict[str, str](), bytearray()
        answered = False
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as error:
                raise _Dropped(f"malformed answer: {error}", answered=answered) from None
            if event is h11.NEED_DATA:
                try:
                    data = await self.channel.receive(read_timeout)
                except asyncio.TimeoutError:
                    raise  # TimeoutError is an OSError too; the caller reports it as a timeout
                except OSError as error:
                    raise _Dropped(_describe(error), answered=answered) from None
                answered = answered or bool(data)
                self.h11.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
                for name, value in event.headers:
                    key = name.decode("latin-1")
                    text = value.decode("latin-1")
                    headers[key] = f"{headers[key]}, {text}" if key in headers else text
            elif isinstance(event, h11.Data):
                content += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, headers, bytes(content)
            elif isinstance(event, h11.ConnectionClosed):
                raise _Dropped("the server closed the connection", answered=answered)
            # InformationalResponse (1xx): keep reading for the real answer.

    def release(self) -> bool:
        """Ready the connection for the next request; False when it cannot be reused."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self.idle_since = time.monotonic()
            return True
        return False

    def close(self) -> None:
        self.channel.close()


class AsyncJsonClient:
    """Send the batch API's JSON requests to one base URL, keeping connections open.

    :param base_url: scheme, host, port and path prefix (``https://api.portkey.ai/v1``).
    :param headers: sent with every request (credentials, trace headers).
    :param ssl_context: for https URLs.
    :param max_connections: requests in flight at once; more wait for a free connection.
    :param keepalive_expiry: seconds an idle connection stays open for reuse.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        ssl_context: ssl.SSLContext | None,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
        keepalive_expiry: float,
    ) -> None:
        parts = urlsplit(base_url)
        self._host = parts.hostname or ""
        self._tls = parts.scheme == "https"
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        host_header = parts.netloc.rsplit("@", 1)[-1]
        self._headers = [("Host", host_header), ("Accept", "application/json")]
        self._headers += [(name, value) for name, value in headers.items()]
        self._ssl = ssl_context if self._tls else None
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._keepalive_expiry = keepalive_expiry
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []

    async def send(self, request: ApiRequest) -> Outcome:
        target = self._prefix + request.path
        if request.params:
            target += "?" + urlencode(request.params)
        headers = list(self._headers)
        body = b""
        if request.json_body is not None:
            body = json.dumps(request.json_body).encode()
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        elif request.method not in ("GET", "HEAD"):
            headers.append(("Content-Length", "0"))
        message = h11.Request(method=request.method, target=target, headers=headers)
        async with self._slots:
            return await self._send(message, body, retry_stale=request.idempotent)

    async def _send(self, message: h11.Request, body: bytes, *, retry_stale: bool) -> Outcome:
        while True:
            reused = self._take_idle()
            connection = reused
            if connection is None:
                try:
                    connection = await self._connect()
                except asyncio.TimeoutError:
                    return TransportFailure("timeout", "ConnectTimeout")
                except ssl.SSLError as error:  # a certificate or handshake refused
                    return TransportFailure("tls", _describe(error))
                except OSError as error:  # refused, unreachable, name lookup
                    return TransportFailure("connect", _describe(error))
            try:
                status, headers, content = await connection.exchange(
                    message, body, self._read_timeout
                )
            except asyncio.TimeoutError:
                connection.close()
                return TransportFailure("timeout", "ReadTimeout")
            except _Dropped as error:
                connection.close()
                # A kept-alive connection the server had just closed: nothing was processed,
                # so a request that may be repeated goes again on a new connection, once.
                if reused is not None and not error.answered and retry_stale:
                    retry_stale = False
                    continue
                return TransportFailure("dropped", str(error))
            except BaseException:
                connection.close()  # cancelled mid-request: the connection's state is unknown
                raise
            if connection.release():
                self._idle.append(connection)
            else:
                connection.close()
            return ApiResponse(status, headers, content)

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable(self._keepalive_expiry):
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        channel = await open_channel(
            self._host, self._port, context=self._ssl, timeout=self._connect_timeout
        )
        return _Connection(channel)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class HttpxJsonClient:
    """The same calls through httpx, for when the environment sets a proxy (httpx honours
    ``HTTPS_PROXY`` and ``NO_PROXY``; the lean client does not)."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        ssl_context: ssl.SSLContext | None,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
        keepalive_expiry: float,
    ) -> None:
        import httpx

        self._base_url = base_url
        self._client = httpx.AsyncClient(
            headers=dict(headers),
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            verify=ssl_context or True,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=keepalive_expiry,
            ),
        )

    async def send(self, request: ApiRequest) -> Outcome:
        import httpx

        try:
            response = await self._client.request(
                request.method,
                self._base_url + request.path,
                params=request.params,
                json=request.json_body,
            )
        except httpx.TimeoutException as error:
            return TransportFailure("timeout", type(error).__name__)
        except httpx.ConnectError as error:
            tls = ssl_error_in(error)
            if tls is not None:
                return TransportFailure("tls", _describe(tls))
            return TransportFailure("connect", _describe(error))
        except httpx.HTTPError as error:
            return TransportFailure("dropped", _describe(error))
        headers = {name.lower(): value for name, value in response.headers.items()}
        return ApiResponse(response.status_code, headers, response.content)

    async def aclose(self) -> None:
        await self._client.aclose()


@functools.lru_cache(maxsize=8)
def ssl_context(verify: bool | str) -> ssl.SSLContext:
    """One SSL context per setting and process, as httpx builds it (certifi, SSL_CERT_FILE):
    building one costs milliseconds, which thousands of triggers would otherwise each pay."""
    if isinstance(verify, str):  # a CA bundle file or a directory of certificates
        if Path(verify).is_dir():
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)
    import httpx

    return httpx.create_ssl_context(verify=verify)


def json_client(
    base_url: str,
    *,
    headers: Mapping[str, str],
    verify: bool | str,
    connect_timeout: float,
    read_timeout: float,
    max_connections: int,
    keepalive_expiry: float,
) -> AsyncJsonClient | HttpxJsonClient:
    """The lean client, or httpx when the environment routes ``base_url`` through a proxy."""
    kind = HttpxJsonClient if proxied(base_url) else AsyncJsonClient
    return kind(
        base_url,
        headers=headers,
        ssl_context=ssl_context(verify) if base_url.startswith("https:") else None,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_connections=max_connections,
        keepalive_expiry=keepalive_expiry,
    )


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
