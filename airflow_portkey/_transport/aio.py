"""A small keep-alive HTTP/1.1 client for the async path's JSON calls.

A triggerer may poll thousands of batches from one event loop. On this project's benchmark
machine an httpx request costs about 1.6 ms of CPU; the same request framed by
:mod:`airflow_portkey._transport._http1` on an asyncio Protocol about 0.1 ms: the difference
between a triggerer that keeps up and one that falls behind. This client does only what the
batch API's JSON calls need: one request at a time per connection, keep-alive, TLS, connect and read
timeouts. Uploads and downloads stay on the
sync path (requests); a proxy set in the environment sends the hook back to httpx, which
honours it (see :func:`proxied`).

Every answer comes back as the protocol's :class:`ApiResponse` or :class:`TransportFailure`,
so the retry rules stay in one place (:mod:`airflow_portkey._core.plans`).
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

from airflow_portkey._core.messages import ApiRequest, ApiResponse, Outcome, TransportFailure
from airflow_portkey._transport._aio_socket import Channel, open_channel
from airflow_portkey._transport._http1 import (
    Malformed,
    Response,
    ResponseParser,
    check_header,
    request_bytes,
)
from airflow_portkey._transport.common import failure_detail, ssl_error_in


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
        self.idle_since = time.monotonic()

    def reusable(self, keepalive_expiry: float) -> bool:
        return (
            time.monotonic() - self.idle_since < keepalive_expiry
            and self.channel.idle_ok()  # the server did not close it while it was idle
        )

    async def exchange(self, method: str, request: bytes, read_timeout: float) -> Response:
        try:
            self.channel.send(request)
        except OSError as error:
            raise _Dropped(failure_detail(error), answered=False) from None
        parser = ResponseParser(method=method)
        while True:
            try:
                data = await self.channel.receive(read_timeout)
            except asyncio.TimeoutError:
                raise  # TimeoutError is an OSError too; the caller reports it as a timeout
            except OSError as error:
                raise _Dropped(failure_detail(error), answered=parser.started) from None
            try:
                response = parser.feed(data)
            except Malformed as error:
                raise _Dropped(str(error), answered=parser.started) from None
            if response is not None:
                self.idle_since = time.monotonic()
                return response

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
        self._headers = [("Host", parts.netloc.rsplit("@", 1)[-1])]
        if not any(name.lower() == "accept" for name in headers):
            self._headers.append(("Accept", "application/json"))
        self._headers += headers.items()
        for name, value in self._headers:
            check_header(name, value)  # once here, so that no request can be split
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
        headers = self._headers
        body = b""
        if request.json_body is not None:
            body = json.dumps(request.json_body).encode()
            headers = [*headers, ("Content-Type", "application/json")]
        message = request_bytes(request.method, target, headers, body)
        async with self._slots:
            return await self._send(request.method, message, retry_stale=request.idempotent)

    async def _send(self, method: str, message: bytes, *, retry_stale: bool) -> Outcome:
        while True:
            reused = self._take_idle()
            connection = reused
            if connection is None:
                try:
                    connection = await self._connect()
                except asyncio.TimeoutError:
                    return TransportFailure("timeout", "ConnectTimeout")
                except ssl.SSLError as error:  # a certificate or handshake refused
                    return TransportFailure("tls", failure_detail(error))
                except OSError as error:  # refused, unreachable, name lookup
                    return TransportFailure("connect", failure_detail(error))
            try:
                response = await connection.exchange(method, message, self._read_timeout)
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
            if response.reusable:
                self._idle.append(connection)
            else:
                connection.close()
            return ApiResponse(response.status, response.headers, response.body)

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
                return TransportFailure("tls", failure_detail(tls))
            return TransportFailure("connect", failure_detail(error))
        except httpx.HTTPError as error:
            return TransportFailure("dropped", failure_detail(error))
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
