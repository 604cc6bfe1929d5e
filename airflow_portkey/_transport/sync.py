"""The sync transport: requests, one session per hook, driving the core's plans.

requests has no limit on a whole request, trusts the environment (``.netrc``, CA and proxy
variables) by default and buffers any answer whole: this driver turns all of that off and
reads the body itself, under the request's deadline and the answer size cap
(:mod:`airflow_portkey._transport.common` decides the CA, the proxy and the framing rules,
alike for both paths). ``FAILURES`` maps requests' and urllib3's exceptions to the core's
failure kinds.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import time
from collections.abc import Mapping
from typing import IO, Any

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions

from airflow_portkey._core.messages import ApiRequest, ApiResponse, Outcome, TransportFailure
from airflow_portkey._core.settings import PortkeySettings
from airflow_portkey._transport.common import (
    MAX_ANSWER_BYTES,
    Connection,
    MalformedAnswer,
    check_framing,
    classify,
    request_headers,
    too_large,
)
from airflow_portkey._transport.watchdog import Guard, guarding, watch

# A download (batch output, possibly gigabytes) gets one more second for every this many bytes
# received beyond the request's time limit: a slow but steady transfer finishes, a drip does not.
DOWNLOAD_BYTES_PER_EXTRA_SECOND = 256 << 10


_TIMED_OUT = "no whole answer within the request's time limit"


class _DeadlinePassed(Exception):
    """The request's total time limit passed while its answer was still arriving."""


class _FinalAnswer(http.client.HTTPResponse):
    """Skips every informational (1xx) answer before the final one: http.client skips only
    ``100 Continue`` and would take ``103 Early Hints`` for the answer. 101 is final (this
    provider never asks to switch protocols)."""

    def _read_status(self) -> tuple[str, int, str]:
        while True:
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if not 100 <= status < 200 or status == 101:
                return version, status, reason
            http.client._read_headers(self.fp)  # type: ignore[attr-defined]


class _GuardedHTTPConnection(urllib3.connection.HTTPConnection):
    """Hands each socket it uses to the current request's deadline guard (a new socket
    before its TLS handshake, a kept-alive one when a request goes out on it)."""

    response_class = _FinalAnswer

    def _new_conn(self) -> Any:
        sock = super()._new_conn()
        watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        watch(self.sock)
        super().request(*args, **kwargs)


class _GuardedHTTPSConnection(_GuardedHTTPConnection, urllib3.connection.HTTPSConnection):
    """The TLS connection, guarded alike (its handshake runs on the socket already watched)."""


class _GuardedHTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


_GUARDED_POOLS = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


class _NoHeaderParseWarning(logging.Filter):
    """Drops urllib3's "Failed to parse headers" warning: it quotes the server's unparsed bytes
    (a hostile server may echo a key there, which no redaction of ours reaches) with a
    traceback, and the outcome is reported anyway: as a timeout when the watchdog cut the
    headers short, else as the answer or failure it turned out to be."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("Failed to parse"))


logging.getLogger(urllib3.connection.__name__).addFilter(_NoHeaderParseWarning())


class _GuardedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter whose pools (direct or through an HTTP proxy) use the guarded
    connections."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _GUARDED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools have classes of their own
            manager.pool_classes_by_scheme = _GUARDED_POOLS
        return manager


# The first row whose exception is anywhere in the raised exception's chain gives the kind.
FAILURES: tuple[tuple[type[BaseException], str], ...] = (
    (_DeadlinePassed, "timeout"),
    (MalformedAnswer, "malformed"),
    (requests.Timeout, "timeout"),
    # urllib3 makes NewConnectionError a ConnectTimeoutError for history's sake: it is not one.
    (urllib3.exceptions.NewConnectionError, "connect"),
    (urllib3.exceptions.TimeoutError, "timeout"),
    (TimeoutError, "timeout"),
    (ssl.SSLEOFError, "dropped"),
    (ssl.SSLError, "tls"),
    (http.client.RemoteDisconnected, "dropped"),
    (http.client.IncompleteRead, "dropped"),
    (urllib3.exceptions.IncompleteRead, "dropped"),
    (urllib3.exceptions.InvalidHeader, "malformed"),
    (urllib3.exceptions.DecodeError, "malformed"),
    (http.client.HTTPException, "malformed"),  # a bad status line, an over-long header
    (ConnectionRefusedError, "connect"),
    (urllib3.exceptions.ProxyError, "connect"),
    (urllib3.exceptions.ProtocolError, "dropped"),
    (ConnectionError, "dropped"),
    (requests.ConnectionError, "connect"),
)


class SyncTransport:
    """Sends one request at a time on a keep-alive requests session."""

    def __init__(
        self,
        settings: PortkeySettings,
        headers: Mapping[str, str],
        *,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self._connection = Connection.of(settings)
        self._read_timeout = settings.read_timeout
        self._max_answer_bytes = max_answer_bytes
        self.session = requests.Session()
        for prefix in ("https://", "http://"):
            self.session.mount(prefix, _GuardedAdapter())
        self.session.trust_env = False  # no .netrc, no CA or proxy variables of its own
        self.session.headers.update(request_headers(headers))
        self.session.verify = self._connection.ca
        proxy = self._connection.proxy
        self.session.proxies = {"http": proxy, "https": proxy} if proxy else {}

    def close(self) -> None:
        self.session.close()

    def drop_connections(self) -> None:
        """Close every kept-alive connection, so that the next request opens a new one."""
        for adapter in self.session.adapters.values():
            adapter.close()

    def send(self, request: ApiRequest, sink: IO[bytes] | None = None) -> Outcome:
        if request.fresh_connection:
            self.drop_connections()
        connection = self._connection
        deadline = time.monotonic() + connection.total_timeout
        files = None
        if request.upload is not None:
            upload = request.upload
            files = {"file": (upload.filename, upload.read(), upload.content_type)}
        with guarding(deadline) as guard:
            try:
                outcome = self._exchange(request, sink, guard, files)
            except Exception as error:
                outcome = TransportFailure(*classify(error, FAILURES))
        if guard.fired:
            # The watchdog shut the request's socket down at its deadline: whatever the
            # libraries made of that (a dropped connection, a short body), it is a timeout.
            return TransportFailure("timeout", _TIMED_OUT)
        return outcome

    def _exchange(
        self, request: ApiRequest, sink: IO[bytes] | None, guard: Guard, files: Any
    ) -> Outcome:
        connection = self._connection
        with self.session.request(
            request.method,
            connection.base_url + request.path,
            params=request.params,
            json=request.json_body,
            data=request.form,
            files=files,
            timeout=(connection.connect_timeout, self._read_timeout),
            stream=True,
            # A redirect would carry the keys to whatever host it names; the async path
            # does not follow them either, so both paths answer a 3xx with the same error.
            allow_redirects=False,
        ) as response:
            to_disk = request.stream and sink is not None and response.status_code < 300
            headers = _lower(response.headers)
            try:
                check_framing(headers, None if to_disk else self._max_answer_bytes)
                if to_disk:
                    assert sink is not None
                    sink.seek(0)
                    sink.truncate()
                    self._read(response, guard, sink.write, None, DOWNLOAD_BYTES_PER_EXTRA_SECOND)
                    body = b""
                else:
                    parts: list[bytes] = []
                    self._read(response, guard, parts.append, self._max_answer_bytes, None)
                    body = b"".join(parts)
            except BaseException:
                response.raw.close()  # its connection's state is unknown: never reuse it
                raise
            return ApiResponse(response.status_code, headers, body)

    def _read(
        self,
        response: requests.Response,
        guard: Guard,
        write: Any,
        limit: int | None,
        bytes_per_extra_second: int | None,
    ) -> None:
        """Read the (decoded) body chunk by chunk, as it arrives, within the deadline: a
        server that drips one byte at a time cannot hold the request beyond it. A download
        earns more time by the bytes that arrive on the wire (not decoded: a slow gzip
        stream that inflates well would otherwise earn time it never spent)."""
        raw = response.raw
        sock = getattr(raw.connection, "sock", None)
        deadline = guard.deadline
        size = 0
        while True:
            if bytes_per_extra_second:
                guard.extend(deadline + raw.tell() / bytes_per_extra_second)
            left = guard.deadline - time.monotonic()
            if left <= 0:
                raise _DeadlinePassed("the answer did not arrive within the request's time limit")
            if sock is not None:
                sock.settimeout(min(self._read_timeout, left))
            chunk = raw.read1(1 << 16, decode_content=True)
            if not chunk:
                raw.release_conn()
                return
            size += len(chunk)
            if limit is not None and size > limit:
                raise MalformedAnswer(too_large(limit))
            write(chunk)


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}
