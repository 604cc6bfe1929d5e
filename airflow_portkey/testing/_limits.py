"""A request-rate limit per key, as OpenAI limits an organisation's requests per second."""

from __future__ import annotations

import math

from ._responses import Response, openai_error


class RequestLimit:
    """``per_second`` requests a second per key: a bucket of one second's requests that refills
    continuously. A request that finds the bucket empty is refused (and uses nothing)."""

    def __init__(self, per_second: float) -> None:
        if not per_second > 0:
            raise ValueError(
                f"rate_limit must be more than 0 requests per second, got {per_second}"
            )
        self.per_second = float(per_second)
        self.capacity = max(1.0, self.per_second)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when counted)

    def admit(self, key: str, now: float) -> float | None:
        """None when the request may go on, else the seconds until it could."""
        tokens, counted = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - counted) * self.per_second)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return None
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.per_second

    def refusal(self, wait_s: float, provider: str | None) -> Response:
        """OpenAI's 429: whole seconds in Retry-After, the rest in the x-ratelimit headers."""
        limit = f"{self.per_second:g}"
        millis = max(1, math.ceil(wait_s * 1000))
        return openai_error(
            429,
            f"Rate limit reached for requests per second: Limit {limit}, Used {limit}, "
            f"Requested 1. Please try again in {millis}ms.",
            provider=provider,
            type="requests",
            code="rate_limit_exceeded",
            headers=(
                ("Retry-After", str(max(1, math.ceil(wait_s)))),
                ("x-ratelimit-limit-requests", limit),
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", f"{millis}ms"),
            ),
        )
