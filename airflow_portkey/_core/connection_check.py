"""What a connection check (Airflow's Test button) does and says: pure, no I/O.

One attempt with short timeouts, so the button answers within seconds rather than running the
full retry policy; and a message that says which field of the form to fix.
"""

from __future__ import annotations

from airflow_portkey._core.errors import (
    PortkeyAPIError,
    PortkeyAuthError,
    PortkeyError,
    PortkeyNotFoundError,
    PortkeyResponseError,
    PortkeyTransportError,
    PortkeyValidationError,
)
from airflow_portkey._core.settings import DEFAULT_BASE_URL, PortkeySettings

# Worst case, a host that accepts and never answers: connect + read, well under 10 seconds.
CHECK_CONNECT_TIMEOUT = 3.0
CHECK_READ_TIMEOUT = 5.0
# The whole check ends by then, even when a server trickles its answer byte by byte.
CHECK_DEADLINE = 9.0

_BASE_URL = "the Base URL field (host)"


def explain_failure(error: PortkeyError, settings: PortkeySettings) -> str:
    """The Test button's message for a failed check: what happened and which field to fix."""
    where = f"Portkey connection {settings.conn_id!r}"
    url = settings.base_url
    if isinstance(error, PortkeyResponseError):
        return (
            f"{where}: {url} answered, but not as Portkey does ({error}). Check {_BASE_URL}: "
            f"it should be Portkey's API ({DEFAULT_BASE_URL}) or a Portkey gateway, ending in /v1."
        )
    if isinstance(error, PortkeyTransportError):
        return f"{where}: {_transport_advice(error, settings)}"
    if isinstance(error, PortkeyAuthError):
        return (
            f"{where}: Portkey refused the credentials ({error.status_code}: "
            f"{error.portkey_message}). Check the Portkey API key field, and the Virtual key "
            "or Provider API key field if you use one."
        )
    if isinstance(error, PortkeyNotFoundError):
        return (
            f"{where}: {url} has no /batches endpoint (404). Check {_BASE_URL}: it usually "
            f"ends in /v1, as in {DEFAULT_BASE_URL}."
        )
    if isinstance(error, PortkeyValidationError):
        return (
            f"{where}: Portkey refused the routing ({error.status_code}: "
            f"{error.portkey_message}). Check the Provider, Virtual key and Config fields "
            "(one of them tells Portkey where to send requests)."
        )
    if isinstance(error, PortkeyAPIError):
        return f"{where}: {error}"
    return f"{where}: {error}"


def explain_deadline(settings: PortkeySettings) -> str:
    """The message when the whole check ran out of time (a trickling or stuck answer)."""
    return (
        f"Portkey connection {settings.conn_id!r}: no complete answer from {settings.base_url} "
        f"within {CHECK_DEADLINE:g} s (the test makes one quick attempt). Check {_BASE_URL}: "
        "is a Portkey API or gateway listening there, and is it reachable from the Airflow API "
        "server?"
    )


def _transport_advice(error: PortkeyTransportError, settings: PortkeySettings) -> str:
    url = settings.base_url
    if error.kind == "connect":
        return (
            f"could not connect to {url} ({error}). Check {_BASE_URL}: address, port, http/https."
        )
    if error.kind == "timeout":
        seconds = settings.connect_timeout + settings.read_timeout
        return (
            f"no answer from {url} within {seconds:g} s (the test makes one quick attempt). "
            f"Check {_BASE_URL}: is a Portkey API or gateway listening there, and is it reachable "
            "from the Airflow API server?"
        )
    if error.kind == "tls":
        return (
            f"TLS with {url} failed ({error}). Check the Verify TLS field (true, false or the "
            f"path of a CA bundle) and the scheme in {_BASE_URL}."
        )
    return f"{url} closed the connection without answering ({error}). Check {_BASE_URL}."
