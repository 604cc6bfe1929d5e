"""The sync transport: requests, one session per hook, driving the core's plans.

Its except clauses map requests' exceptions to the protocol's failure kinds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO

import requests

from airflow_portkey._core.messages import ApiRequest, ApiResponse, Outcome, TransportFailure
from airflow_portkey._core.settings import PortkeySettings
from airflow_portkey._transport.common import failure_detail, ssl_error_in


class SyncTransport:
    """Sends one request at a time on a keep-alive requests session."""

    def __init__(self, settings: PortkeySettings, headers: Mapping[str, str]) -> None:
        self._settings = settings
        self.session = requests.Session()
        self.session.headers.update(headers)
        self.session.verify = settings.verify

    def close(self) -> None:
        self.session.close()

    def send(self, request: ApiRequest, sink: IO[bytes] | None = None) -> Outcome:
        settings = self._settings
        files = None
        if request.upload is not None:
            upload = request.upload
            files = {"file": (upload.filename, upload.read(), upload.content_type)}
        try:
            with self.session.request(
                request.method,
                settings.base_url + request.path,
                params=request.params,
                json=request.json_body,
                data=request.form,
                files=files,
                timeout=(settings.connect_timeout, settings.read_timeout),
                # Per request: requests lets REQUESTS_CA_BUNDLE override a session's verify.
                verify=settings.verify,
                stream=request.stream,
                # A redirect would carry the keys to whatever host it names; the async path
                # does not follow them either, so both paths answer a 3xx with the same error.
                allow_redirects=False,
            ) as response:
                if request.stream and sink is not None and response.status_code < 300:
                    sink.seek(0)
                    sink.truncate()
                    for chunk in response.iter_content(chunk_size=1 << 16):
                        sink.write(chunk)
                    body = b""
                else:
                    body = response.content
                return ApiResponse(response.status_code, _lower(response.headers), body)
        except requests.Timeout as error:
            return TransportFailure("timeout", type(error).__name__)
        except requests.ConnectionError as error:
            from urllib3.exceptions import ProtocolError

            tls = ssl_error_in(error)
            if tls is not None:
                return TransportFailure("tls", failure_detail(tls))

            # requests also reports a connection the server dropped as a ConnectionError.
            dropped = any(isinstance(arg, ProtocolError) for arg in error.args)
            return TransportFailure("dropped" if dropped else "connect", failure_detail(error))
        except requests.RequestException as error:
            return TransportFailure("dropped", failure_detail(error))


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}
