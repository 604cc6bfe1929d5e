"""Which failures are retried, and after how long (full jitter, Retry-After)."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from airflow_portkey._core.messages import (
    ApiResponse,
    Outcome,
    TransportFailure,
)

RETRYABLE_STATUS_CODES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one call tries: ``max_retries`` more attempts within ``budget`` seconds."""

    max_retries: int = 5
    budget: float = 120.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_cap: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {self.max_retries}")
        for name in ("budget", "backoff_base", "backoff_max", "retry_after_cap"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, then ``Retry-After``."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


# Answers that say the server did not act on the request, so even a create may be repeated.
NOT_ACTED_ON_STATUS_CODES = frozenset({429})


def surely_not_acted_on(outcome: Outcome) -> bool:
    if isinstance(outcome, TransportFailure):
        return outcome.kind == "connect"
    return outcome.status_code in NOT_ACTED_ON_STATUS_CODES


def retry_delay(
    policy: RetryPolicy,
    attempt: int,
    outcome: Outcome,
    elapsed: float,
    rng: Callable[[], float] = random.random,
    *,
    idempotent: bool = True,
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or None when the call must not retry.

    Full jitter (a uniform wait up to the exponential bound) keeps many tasks that failed
    together from coming back together; a server's Retry-After wins, capped. A request that
    is not idempotent is repeated only when the server surely did not act on it.
    """
    if attempt >= policy.max_retries:
        return None
    if isinstance(outcome, TransportFailure) and outcome.kind == "tls":
        return None
    if not idempotent and not surely_not_acted_on(outcome):
        return None
    hinted = None
    if isinstance(outcome, ApiResponse):
        if outcome.status_code < 300:
            hinted = None  # an unreadable success body: retry like a dropped connection
        elif outcome.status_code not in RETRYABLE_STATUS_CODES:
            return None
        else:
            hinted = parse_retry_after(outcome.headers)
    if hinted is not None:
        delay = min(hinted, policy.retry_after_cap)
    else:
        delay = rng() * min(policy.backoff_max, policy.backoff_base * 2**attempt)
    if elapsed + delay > policy.budget:
        return None
    return delay
