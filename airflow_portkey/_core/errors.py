"""One hierarchy of errors for everything this provider raises (pure: no Airflow import).

Rooted in ``Exception``, not ``AirflowException``: Airflow's contributors decided to stop
raising AirflowException in providers (apache/airflow#55420), and the sans-IO core must not
import Airflow.

API errors carry the HTTP status and Portkey's own message, never a credential: messages are
built from the response body, which Portkey does not fill with request headers.
"""

from __future__ import annotations


class PortkeyError(Exception):
    """Anything this provider raises."""


class PortkeyConfigError(PortkeyError, ValueError):
    """A connection or task argument that cannot work; raised before any request is sent."""


class PortkeyInvalidBatchIdError(PortkeyConfigError):
    """A batch id that is empty or could reach another path of the API."""


class PortkeyTransportError(PortkeyError):
    """No usable HTTP answer: connection refused or dropped, timeout, unreadable body."""

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        """The failure's kind (connect, timeout, tls, dropped) when no answer came at all."""


class PortkeyResponseError(PortkeyTransportError):
    """An answer came but could not be read (malformed JSON, not the expected object)."""


class PortkeyProtocolError(PortkeyResponseError):
    """An answer about something other than what was asked (another batch's id): a kept-alive
    connection out of step. Retried on a fresh connection."""


class PortkeyAPIError(PortkeyError):
    """Portkey (or the provider behind it) answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        method: str = "",
        path: str = "",
        error_type: str | None = None,
        code: str | None = None,
        provider: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.portkey_message = message
        self.method = method
        self.path = path
        self.error_type = error_type
        self.code = code
        self.provider = provider
        self.hint = hint
        where = f" on {method} {path}" if method else ""
        text = f"Portkey answered {status_code}{where}: {message}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class PortkeyValidationError(PortkeyAPIError):
    """400 or 422: the request was refused as invalid."""


class PortkeyAuthError(PortkeyAPIError):
    """401 or 403: the key, virtual key or provider credential was refused."""


class PortkeyNotFoundError(PortkeyAPIError):
    """404: no such batch or file (or a wrong base URL)."""


class PortkeyConflictError(PortkeyAPIError):
    """409: the request conflicts with the batch's state (e.g. cancelling a finished batch)."""


class PortkeyBudgetExceededError(PortkeyAPIError):
    """412: a Portkey budget or usage limit is exhausted."""


class PortkeyTimeoutError(PortkeyAPIError):
    """408: Portkey or the provider timed out."""


class PortkeyRateLimitError(PortkeyAPIError):
    """429: rate limited, still so once the retry budget was spent."""


class PortkeyHeldBackError(PortkeyError):
    """Nothing was sent: the connection's rate budget held the request until its deadline."""


class PortkeyServerError(PortkeyAPIError):
    """5xx: Portkey or the provider failed, still so once the retry budget was spent."""


class PortkeyBatchFailedError(PortkeyError):
    """A batch ended in a status the task was told to treat as failure."""


class PortkeyBatchTimeoutError(PortkeyError):
    """A batch did not reach a terminal status before the task's deadline."""
