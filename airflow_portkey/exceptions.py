"""Every error this provider raises, rooted in :class:`PortkeyError`. Defined in the pure core
(:mod:`airflow_portkey._core.errors`); public here.
"""

from __future__ import annotations

from airflow_portkey._core.errors import (
    PortkeyAPIError,
    PortkeyAuthError,
    PortkeyBatchFailedError,
    PortkeyBatchTimeoutError,
    PortkeyBudgetExceededError,
    PortkeyConfigError,
    PortkeyConflictError,
    PortkeyError,
    PortkeyHeldBackError,
    PortkeyInvalidBatchIdError,
    PortkeyNotFoundError,
    PortkeyProtocolError,
    PortkeyRateLimitError,
    PortkeyResponseError,
    PortkeyServerError,
    PortkeyTimeoutError,
    PortkeyTransportError,
    PortkeyValidationError,
)

__all__ = [
    "PortkeyAPIError",
    "PortkeyAuthError",
    "PortkeyBatchFailedError",
    "PortkeyBatchTimeoutError",
    "PortkeyBudgetExceededError",
    "PortkeyConfigError",
    "PortkeyConflictError",
    "PortkeyError",
    "PortkeyHeldBackError",
    "PortkeyInvalidBatchIdError",
    "PortkeyNotFoundError",
    "PortkeyProtocolError",
    "PortkeyRateLimitError",
    "PortkeyResponseError",
    "PortkeyServerError",
    "PortkeyTimeoutError",
    "PortkeyTransportError",
    "PortkeyValidationError",
]
