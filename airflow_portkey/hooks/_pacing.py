"""Where a connection's rate budget and shared reads live: one per event loop and connection
(every trigger and task on a triggerer's loop), one per process for the sync path.

The rules are in :mod:`airflow_portkey._core.pacing`; this module only keeps them per loop
and per connection and sleeps where they say, whatever the transport underneath.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from airflow_portkey._core.messages import ApiRequest, HeldBack, Outcome, Reply
from airflow_portkey._core.pacing import MAX_HOLD_S, RateBudget, SharedReads, paced, share_key
from airflow_portkey._core.settings import PortkeySettings

ConnectionKey = tuple[str | None, ...]

# False sends every request at once, as before the shared budget (the benchmarks' baseline).
enabled = True

# The budget's clock on a loop: asyncio's own loop.time() is this, and reading it directly
# spares asking for the running loop (a getpid() system call each time) on every request.
_clock = time.monotonic


def connection_key(settings: PortkeySettings) -> ConnectionKey:
    """One budget per connection as the server counts it: the same id, URL, keys and routing
    (a connection whose secrets or upstream changed starts afresh)."""
    return (
        settings.conn_id,
        settings.base_url,
        settings.api_key,
        settings.virtual_key,
        settings.provider,
        settings.config,
        settings.provider_api_key,
        settings.custom_host,
    )


@dataclass(eq=False)
class _Read:
    """A shared read that one wait sends for all: its answer and when it left (None: not yet)."""

    sent_at: float | None = None
    answer: asyncio.Future[tuple[Outcome, float] | None] | None = None
    """Made when a second wait joins: most reads have no other wait to tell."""


@dataclass(eq=False)
class LoopPace:
    """The budget and shared reads of one connection on one event loop."""

    budget: RateBudget
    reads: SharedReads = field(default_factory=SharedReads)
    pending: dict[str, _Read] = field(default_factory=dict)

    def goes_at_once(self, request: ApiRequest) -> bool:
        """Whether ``request`` leaves at once, untouched by the budget and shared with no
        other wait (most requests): the driver then sends it itself and only tells
        :meth:`observe` the outcome, without :meth:`send`'s machinery."""
        return share_key(request) is None and self.budget.idle(_clock())

    def observe(self, outcome: Outcome, hold_cap: float = MAX_HOLD_S) -> None:
        """Learn from the outcome of a request sent at once (a 429 holds the connection)."""
        self.budget.observe(outcome, _clock(), hold_cap)

    async def send(
        self,
        request: ApiRequest,
        transmit: Callable[[], Awaitable[Outcome]],
        seen: dict[str, float],
        hold_cap: float = MAX_HOLD_S,
    ) -> tuple[Reply, float]:
        """Send ``request`` within the budget, or take another wait's answer to the same read.

        Returns the reply and its age: seconds since the shared read it answers was sent (0
        for a request this call sent itself). ``seen`` holds, per read, when the last answer
        the calling plan saw was sent, so that no plan is handed the same answer twice.
        """
        key = share_key(request)
        if key is None:
            return await self._paced(request, transmit, None, hold_cap), 0.0
        while True:
            now = _clock()
            seen_at = seen.get(key, -math.inf)
            shared = self.reads.lookup(key, now, request.share_for, seen_at)
            if shared is not None:
                seen[key] = shared.sent_at
                return shared.response, now - shared.sent_at
            read = self.pending.get(key)
            if read is not None and (read.sent_at is None or read.sent_at > seen_at):
                joined = await self._join(read, request)
                if isinstance(joined, HeldBack):
                    return joined, 0.0
                if joined is None:
                    continue  # the wait that sent it gave up or was cancelled: try again
                outcome, sent_at = joined
                seen[key] = sent_at
                return outcome, _clock() - sent_at
            return await self._lead(key, request, transmit, seen, hold_cap), 0.0

    async def _join(
        self, read: _Read, request: ApiRequest
    ) -> tuple[Outcome, float] | HeldBack | None:
        if read.answer is None:
            read.answer = asyncio.get_running_loop().create_future()
        patience = None if request.deadline is None else max(0.0, request.deadline - time.time())
        # asyncio.wait, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
        # comes as the answer does (the leader cancelled too), and the wait would poll on.
        done, _ = await asyncio.wait({read.answer}, timeout=patience)
        if not done:
            return HeldBack(0.0)
        return read.answer.result()

    async def _lead(
        self,
        key: str,
        request: ApiRequest,
        transmit: Callable[[], Awaitable[Outcome]],
        seen: dict[str, float],
        hold_cap: float,
    ) -> Reply:
        read = _Read()
        self.pending[key] = read
        try:
            reply = await self._paced(request, transmit, read, hold_cap)
            if not isinstance(reply, HeldBack) and read.sent_at is not None:
                self.reads.remember(key, read.sent_at, reply, request.share_for)
                seen[key] = read.sent_at
                if read.answer is not None:
                    read.answer.set_result((reply, read.sent_at))
            return reply
        finally:
            if read.answer is not None and not read.answer.done():
                read.answer.set_result(None)
            if self.pending.get(key) is read:
                del self.pending[key]

    async def _paced(
        self,
        request: ApiRequest,
        transmit: Callable[[], Awaitable[Outcome]],
        read: _Read | None,
        hold_cap: float,
    ) -> Reply:
        budget = self.budget
        # Nothing to wait for and nothing to book (the common case): no steps at all.
        steps = None if budget.idle(_clock()) else paced(budget, request, _clock, time.time)
        while steps is not None:
            try:
                pause = next(steps)
            except StopIteration as done:
                held: HeldBack | None = done.value
                if held is not None:
                    return held
                break
            await asyncio.sleep(pause)
        if read is not None:
            read.sent_at = _clock()
        outcome = await transmit()
        self.budget.observe(outcome, _clock(), hold_cap)
        return outcome


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[ConnectionKey, LoopPace]] = (
    weakref.WeakKeyDictionary()
)


def loop_pace(settings: PortkeySettings) -> LoopPace:
    """The running loop's budget and shared reads for this connection (made on first use)."""
    per_loop = _loops.setdefault(asyncio.get_running_loop(), {})
    key = connection_key(settings)
    pace = per_loop.get(key)
    if pace is None:
        pace = per_loop[key] = LoopPace(RateBudget(settings.max_requests_per_second))
    elif pace.budget.max_per_second != settings.max_requests_per_second:
        pace.budget.set_rate(settings.max_requests_per_second)
    return pace


class ProcessPace:
    """The budget of one connection for the sync path, shared by the threads of a process."""

    def __init__(self, max_per_second: float | None) -> None:
        self.budget = RateBudget(max_per_second)
        self._lock = threading.Lock()

    def send(
        self, request: ApiRequest, transmit: Callable[[], Outcome], hold_cap: float = MAX_HOLD_S
    ) -> Reply:
        steps = paced(self.budget, request, time.monotonic, time.time)
        while True:
            try:
                with self._lock:
                    pause = next(steps)
            except StopIteration as done:
                held: HeldBack | None = done.value
                if held is not None:
                    return held
                break
            time.sleep(pause)
        outcome = transmit()
        with self._lock:
            self.budget.observe(outcome, time.monotonic(), hold_cap)
        return outcome


_processes: dict[ConnectionKey, ProcessPace] = {}
_processes_lock = threading.Lock()


def process_pace(settings: PortkeySettings) -> ProcessPace:
    """This process's budget for this connection (made on first use)."""
    key = connection_key(settings)
    with _processes_lock:
        pace = _processes.get(key)
        if pace is None:
            pace = _processes[key] = ProcessPace(settings.max_requests_per_second)
        elif pace.budget.max_per_second != settings.max_requests_per_second:
            pace.budget.set_rate(settings.max_requests_per_second)
        return pace
