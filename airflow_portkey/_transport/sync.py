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
import ssl
import time
from collections.abc import Mapping
from typing import IO, Any

import requests
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

# A download (batch output, possibly gigabytes) gets one more second for every this many bytes
# received beyond the request's time limit: a slow but steady transfer finishes, a drip does not.
DOWNLOAD_BYTES_PER_EXTRA_SECOND = 256 << 10


class _DeadlinePassed(Exception):
    """The request's total time limit passed while its answer was still arriving."""


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
        try:
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
                        self._read(
                            response, deadline, sink.write, None, DOWNLOAD_BYTES_PER_EXTRA_SECOND
                        )
                        body = b""
                    else:
                        parts: list[bytes] = []
                        self._read(response, deadline, parts.append, self._max_answer_bytes, None)
                        body = b"".join(parts)
                except BaseException:
                    response.raw.close()  # its connection's state is unknown: never reuse it
                    raise
                return ApiResponse(response.status_code, headers, body)
        except Exception as error:
            return TransportFailure(*classify(error, FAILURES))

    def _read(
        self,
        response: requests.Response,
        deadline: float,
        write: Any,
        limit: int | None,
        bytes_per_extra_second: int | None,
    ) -> None:
        """Read the (decoded) body chunk by chunk, as it arrives, within the deadline: a
        server that drips one byte at a time cannot hold the request beyond it."""
        raw = response.raw
        sock = getattr(raw.connection, "sock", None)
        size = 0
        while True:
            extra = size / bytes_per_extra_second if bytes_per_extra_second else 0.0
            left = deadline + extra - time.monotonic()
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
