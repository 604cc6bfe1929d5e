"""One rate budget per connection, and reads shared between waits: pure rules, any clock.

A triggerer that watches thousands of batches on one connection must not turn a rate limit
into a storm of refused requests, nor read one batch once per wait. The drivers
(:mod:`airflow_portkey.hooks._pacing`) keep one :class:`RateBudget` and one
:class:`SharedReads` per connection and event loop (the sync path: per process); the rules
themselves live here, with the clock passed in, so they are tested without sockets or sleeps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass

from airflow_portkey._core.messages import ApiRequest, ApiResponse, HeldBack, Outcome
from airflow_portkey._core.retry import parse_retry_after

# A Retry-After longer than this holds the connection only this long: a wrong header must not
# stop every wait for an hour (a refused request's own retry still honours it, capped alike).
MAX_HOLD_S = 60.0


class RateBudget:
    """When the next request on one connection may leave.

    Two rules. A 429 answer with ``Retry-After`` (or ``retry-after-ms``) holds *every*
    request on the connection until then, not only the refused one: the others would be
    refused too. With ``max_per_second`` requests leave at most that often, evenly spaced,
    in the order they asked; a request is delayed, never dropped.
    """

    def __init__(self, max_per_second: float | None = None) -> None:
        self.held_until = -math.inf
        self._next_slot = -math.inf
        self._spacing = 0.0
        self.max_per_second: float | None = None
        self.set_rate(max_per_second)

    def set_rate(self, max_per_second: float | None) -> None:
        """Change the cap (None: no cap); a connection's extras may change while it is used."""
        if max_per_second is not None and not max_per_second > 0:
            raise ValueError(f"max_per_second must be more than 0, got {max_per_second}")
        self.max_per_second = max_per_second
        self._spacing = 1.0 / max_per_second if max_per_second else 0.0

    def holding(self, now: float) -> bool:
        """Whether a 429's Retry-After still holds the connection at ``now``."""
        return now < self.held_until

    def idle(self, now: float) -> bool:
        """Nothing to wait for and nothing to book at ``now``: no cap, and no 429 holding."""
        return self.max_per_second is None and now >= self.held_until

    def delay(self, now: float) -> float:
        """Seconds until a request could leave, booking nothing."""
        return max(now, self.held_until, self._next_slot) - now

    def reserve(self, now: float, patience: float | None = None) -> float | None:
        """Book the next free moment to send; return the seconds until it.

        None, with nothing booked, when that is more than ``patience`` seconds away (the
        request's deadline comes first).
        """
        delay = self.delay(now)
        if patience is not None and delay > patience:
            return None
        if self._spacing:
            self._next_slot = now + delay + self._spacing
        return delay

    def observe(self, outcome: Outcome, now: float, cap: float = MAX_HOLD_S) -> float | None:
        """Learn from an answer; return the hold it starts (seconds), if it starts one.

        ``cap`` is the longest Retry-After the caller's retry policy honours: the hold never
        outlasts what the refused request itself would wait.
        """
        if not isinstance(outcome, ApiResponse) or outcome.status_code != 429:
            return None
        after = parse_retry_after(outcome.headers)
        if after is None:
            return None  # no hint: the refused request backs off on its own
        until = now + min(after, cap, MAX_HOLD_S)
        if until <= self.held_until:
            return None
        self.held_until = until
        return until - now


def paced(
    budget: RateBudget,
    request: ApiRequest,
    clock: Callable[[], float],
    wall_clock: Callable[[], float],
) -> Generator[float, None, HeldBack | None]:
    """When ``request`` may leave: yields seconds to sleep; returns None once it may be sent,
    or :class:`HeldBack` (after sleeping until its deadline) when the budget would hold it
    past its deadline. ``clock`` is the budget's (monotonic), ``wall_clock`` the deadline's.
    """
    give_up_at = None
    if request.deadline is not None:
        give_up_at = clock() + max(0.0, request.deadline - wall_clock())
    while True:
        now = clock()
        patience = None if give_up_at is None else max(0.0, give_up_at - now)
        delay = budget.reserve(now, patience)
        if delay is None:
            assert patience is not None
            needed = budget.delay(now)
            if patience > 0:
                yield patience
            return HeldBack(needed - patience)
        if delay <= 0:
            return None
        yield delay
        if not budget.holding(clock()):
            return None
        # A 429 came back while this request waited for its slot: book a new one after it.


def share_key(request: ApiRequest) -> str | None:
    """What identifies a read that waits may share, or None for a request never shared."""
    if request.share_for > 0 and request.method == "GET" and not request.stream:
        return request.path
    return None


@dataclass(frozen=True, slots=True)
class SharedAnswer:
    sent_at: float
    response: ApiResponse


class SharedReads:
    """When each read was last sent, and for reads that several waits make, its good answer.

    A wait takes another's answer when it was sent within the wait's ``share_for`` and after
    the last answer that wait saw (never the same answer twice): waits on one batch then make
    one request per interval between them, and each sees news no later than by its own polls.
    Answers are kept only for reads a second wait has asked for (most batches have one wait:
    their answers would be memory spent for nothing); that second wait reads once on its own.
    """

    def __init__(self) -> None:
        self._reads: dict[str, tuple[float, ApiResponse | None]] = {}
        self._shared: set[str] = set()
        self._sweep_at = 1024
        self._longest_share = 0.0

    def __len__(self) -> int:
        """How many answers are kept."""
        return sum(1 for _, response in self._reads.values() if response is not None)

    def lookup(
        self, key: str, now: float, share_for: float, seen_sent_at: float = -math.inf
    ) -> SharedAnswer | None:
        entry = self._reads.get(key)
        if entry is None or entry[0] <= seen_sent_at:
            return None  # never read, or this wait's own last read
        sent_at, response = entry
        if response is None:
            self._shared.add(key)  # a second wait reads it: keep its answers from now on
            return None
        if now - sent_at > share_for:
            return None
        return SharedAnswer(sent_at, response)

    def remember(self, key: str, sent_at: float, outcome: Outcome, share_for: float) -> None:
        """Note a read; keep its answer when it is good and another wait reads it too (an
        error is not shared beyond the waits already waiting for it)."""
        current = self._reads.get(key)
        if current is not None and current[0] >= sent_at:
            return
        kept = None
        if isinstance(outcome, ApiResponse) and 200 <= outcome.status_code < 300:
            kept = outcome if key in self._shared else None
        self._reads[key] = (sent_at, kept)
        self._longest_share = max(self._longest_share, share_for)
        if len(self._reads) >= self._sweep_at:
            self._sweep(sent_at)

    def _sweep(self, now: float) -> None:
        # Reads too old for any wait to take; the bound doubles so sweeps stay rare.
        horizon = now - self._longest_share
        self._reads = {k: e for k, e in self._reads.items() if e[0] >= horizon}
        self._shared &= self._reads.keys()
        self._sweep_at = max(1024, 2 * len(self._reads))
