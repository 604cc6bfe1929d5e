"""The rate budget and shared reads, at the sans-IO seam: wait plans driven on a fake clock
against a scripted server, so what is asserted is what the server would have received.

``Loop`` below is a tiny discrete-event loop: it drives each plan as the hook's async driver
does (budget, shared reads, a shared answer shortening the next sleep by its age), with time
that moves only when every plan sleeps. Answers come back at once.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_portkey._core.batches import TERMINAL_STATUSES, BatchStatus
from airflow_portkey._core.messages import (
    ApiRequest,
    ApiResponse,
    HeldBack,
    Note,
    Plan,
    Reply,
    Wait,
)
from airflow_portkey._core.pacing import RateBudget, SharedReads, paced, share_key
from airflow_portkey._core.plans import CallContext
from airflow_portkey._core.waits import WaitOutcome, WaitSpec, wait_for_batch


def batch_answer(batch_id: str, status: str) -> ApiResponse:
    body = {"id": batch_id, "object": "batch", "status": status}
    return ApiResponse(200, {"content-type": "application/json"}, json.dumps(body).encode())


def too_many(retry_after: str) -> ApiResponse:
    body = {"error": {"message": "Rate limit reached", "type": "requests"}}
    return ApiResponse(429, {"retry-after": retry_after}, json.dumps(body).encode())


@dataclass
class Received:
    at: float
    path: str
    status: int


@dataclass
class Server:
    """Batches that turn ``completed`` at given times; ``refuse`` scripts 429 answers."""

    completes_at: dict[str, float]
    refuse: Callable[[float, int], ApiResponse | None] = lambda now, index: None
    log: list[Received] = field(default_factory=list)

    def answer(self, request: ApiRequest, now: float) -> ApiResponse:
        batch_id = request.path.rsplit("/", 1)[1]
        refusal = self.refuse(now, len(self.log))
        if refusal is not None:
            self.log.append(Received(now, request.path, 429))
            return refusal
        self.log.append(Received(now, request.path, 200))
        done = now >= self.completes_at.get(batch_id, math.inf)
        return batch_answer(batch_id, "completed" if done else "in_progress")


class Loop:
    """Plans on one fake event loop and one connection: one budget, one table of reads."""

    def __init__(self, server: Server, max_per_second: float | None = None) -> None:
        self.now = 0.0
        self.server = server
        self.budget = RateBudget(max_per_second)
        self.reads = SharedReads()
        self.ctx = CallContext("pk", clock=self.clock, rng=lambda: 0.5)
        self.finished: dict[int, tuple[float, Any]] = {}
        self._queue: list[tuple[float, int, Generator[float, None, Any]]] = []

    def clock(self) -> float:
        return self.now

    def start(self, plan: Plan[Any]) -> int:
        index = len(self._queue) + len(self.finished)
        heapq.heappush(self._queue, (self.now, index, self._drive(plan)))
        return index

    def run(self) -> None:
        while self._queue:
            at, index, task = heapq.heappop(self._queue)
            self.now = max(self.now, at)
            try:
                pause = next(task)
            except StopIteration as done:
                self.finished[index] = (self.now, done.value)
            else:
                heapq.heappush(self._queue, (self.now + pause, index, task))

    def _drive(self, plan: Plan[Any]) -> Generator[float, None, Any]:
        seen: dict[str, float] = {}
        reply: Reply | None = None
        age = 0.0
        while True:
            try:
                action = plan.send(reply)
            except StopIteration as done:
                return done.value
            reply = None
            if isinstance(action, Note):
                continue
            if isinstance(action, Wait):
                yield max(0.0, action.seconds - age)
                age = 0.0
                continue
            key = share_key(action)
            if key is not None:
                shared = self.reads.lookup(
                    key, self.now, action.share_for, seen.get(key, -math.inf)
                )
                if shared is not None:
                    seen[key] = shared.sent_at
                    reply, age = shared.response, self.now - shared.sent_at
                    continue
            held = yield from paced(self.budget, action, self.clock, self.clock)
            if held is not None:
                reply = held
                continue
            sent_at = self.now
            outcome = self.server.answer(action, self.now)
            self.budget.observe(outcome, self.now)
            if key is not None:
                self.reads.remember(key, sent_at, outcome, action.share_for)
                seen[key] = sent_at
            reply = outcome


def wait_spec(
    batch_id: str, *, deadline: float = 1000.0, interval: float = 1.0, **kw: Any
) -> WaitSpec:
    return WaitSpec(
        batch_id,
        success=frozenset({BatchStatus.COMPLETED}),
        failure=TERMINAL_STATUSES - {BatchStatus.COMPLETED},
        deadline=deadline,
        poll_interval=interval,
        **kw,
    )


def start_wait(loop: Loop, spec: WaitSpec) -> int:
    return loop.start(wait_for_batch(loop.ctx, spec, clock=loop.clock))


def outcome_of(loop: Loop, index: int) -> tuple[float, WaitOutcome]:
    at, outcome = loop.finished[index]
    assert isinstance(outcome, WaitOutcome)
    return at, outcome


# -- the budget on its own ---------------------------------------------------------------------


def test_a_429_with_retry_after_holds_every_request_on_the_connection() -> None:
    budget = RateBudget()
    assert budget.observe(too_many("2"), now=10.0) == 2.0
    assert budget.reserve(10.5) == pytest.approx(1.5)
    assert budget.reserve(10.5) == pytest.approx(1.5)  # another wait: held as well
    assert budget.reserve(12.0) == 0.0


def test_retry_after_ms_holds_too_and_a_429_without_a_hint_holds_nothing() -> None:
    budget = RateBudget()
    assert budget.observe(ApiResponse(429, {"retry-after-ms": "250"}), now=0.0) == 0.25
    assert budget.reserve(0.0) == pytest.approx(0.25)
    unhinted = RateBudget()
    assert unhinted.observe(ApiResponse(429, {}), now=0.0) is None
    assert unhinted.observe(batch_answer("batch_x", "in_progress"), now=0.0) is None
    assert unhinted.reserve(0.0) == 0.0


def test_a_hold_never_outlasts_the_retry_after_the_caller_honours() -> None:
    budget = RateBudget()
    assert budget.observe(too_many("3600"), now=0.0, cap=5.0) == 5.0
    assert budget.reserve(0.0) == 5.0


def test_the_cap_spaces_requests_evenly_and_drops_none() -> None:
    budget = RateBudget(max_per_second=4)
    delays = [budget.reserve(0.0) for _ in range(6)]
    assert delays == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.25])


def test_after_a_hold_the_cap_spaces_requests_from_its_end() -> None:
    budget = RateBudget(max_per_second=2)
    budget.observe(too_many("3"), now=0.0)
    assert [budget.reserve(1.0) for _ in range(3)] == pytest.approx([2.0, 2.5, 3.0])


def test_a_request_the_budget_would_hold_past_its_deadline_books_nothing() -> None:
    budget = RateBudget(max_per_second=1)
    assert budget.reserve(0.0) == 0.0
    assert budget.reserve(0.0, patience=0.5) is None
    assert budget.reserve(0.0) == 1.0  # the refused request took no slot


def test_paced_sleeps_until_the_deadline_then_says_held_back() -> None:
    now = [0.0]
    budget = RateBudget()
    budget.observe(too_many("30"), now=0.0)
    request = ApiRequest("GET", "/batches/batch_a", deadline=10.0)
    steps = paced(budget, request, lambda: now[0], lambda: now[0])
    assert next(steps) == 10.0
    now[0] = 10.0
    with pytest.raises(StopIteration) as done:
        next(steps)
    assert done.value.value == HeldBack(20.0)


def test_shared_reads_keep_answers_only_once_a_second_wait_reads_the_batch() -> None:
    reads = SharedReads()
    reads.remember("/batches/b", 1.0, batch_answer("b", "in_progress"), share_for=2.0)
    assert len(reads) == 0
    assert reads.lookup("/batches/b", 1.5, share_for=2.0, seen_sent_at=1.0) is None  # its own
    assert len(reads) == 0
    assert reads.lookup("/batches/b", 1.5, share_for=2.0) is None  # a second wait: reads once
    reads.remember("/batches/b", 1.5, batch_answer("b", "in_progress"), share_for=2.0)
    assert len(reads) == 1
    shared = reads.lookup("/batches/b", 2.0, share_for=2.0, seen_sent_at=1.0)
    assert shared is not None and shared.sent_at == 1.5


def test_shared_reads_never_hand_a_wait_the_same_answer_twice() -> None:
    reads = SharedReads()
    reads.remember("/batches/b", 0.0, batch_answer("b", "in_progress"), share_for=2.0)
    reads.lookup("/batches/b", 0.0, share_for=2.0)  # a second wait reads it too
    reads.remember("/batches/b", 5.0, batch_answer("b", "in_progress"), share_for=2.0)
    assert reads.lookup("/batches/b", 6.0, share_for=2.0) is not None
    assert reads.lookup("/batches/b", 6.0, share_for=2.0, seen_sent_at=5.0) is None
    assert reads.lookup("/batches/b", 7.5, share_for=2.0) is None  # older than share_for
    reads.remember("/batches/b", 6.0, too_many("1"), share_for=2.0)
    assert reads.lookup("/batches/b", 6.5, share_for=2.0, seen_sent_at=5.0) is None


def test_only_reads_that_ask_for_it_are_shared() -> None:
    assert share_key(ApiRequest("GET", "/batches/b", share_for=5.0)) == "/batches/b"
    assert share_key(ApiRequest("GET", "/batches/b")) is None
    assert share_key(ApiRequest("POST", "/batches/b/cancel", share_for=5.0)) is None


# -- waits on one connection ---------------------------------------------------------------------


def test_after_a_429_no_wait_on_the_connection_sends_until_retry_after_passed() -> None:
    server = Server(
        {"batch_a": 12.0, "batch_b": 12.0, "batch_c": 12.0},
        refuse=lambda now, index: too_many("5") if index == 0 else None,
    )
    loop = Loop(server)
    waits = [start_wait(loop, wait_spec(b)) for b in ("batch_a", "batch_b", "batch_c")]
    loop.run()
    first, *rest = server.log
    assert (first.at, first.status) == (0.0, 429)
    assert rest and min(r.at for r in rest) >= 5.0
    assert all(outcome_of(loop, w)[1].status == "success" for w in waits)


def test_the_cap_keeps_the_loop_under_the_rate_and_every_wait_still_polls() -> None:
    batches = [f"batch_{n}" for n in range(10)]
    server = Server(dict.fromkeys(batches, 30.0))
    loop = Loop(server, max_per_second=2)
    waits = [start_wait(loop, wait_spec(b, interval=1.0)) for b in batches]
    loop.run()
    times = [r.at for r in server.log]
    assert all(later - earlier >= 0.5 - 1e-9 for earlier, later in itertools.pairwise(times))
    # Ten waits at 1 s want 10 requests a second; at 2 a second each polls every 5 s, and
    # sees the completion no later than one round of the ten after it happened.
    for wait in waits:
        at, outcome = outcome_of(loop, wait)
        assert outcome.status == "success"
        assert 30.0 <= at <= 30.0 + 1.0 + len(batches) / 2


def test_waits_on_one_batch_share_one_read_per_interval() -> None:
    server = Server({"batch_a": 20.0})
    loop = Loop(server)
    delays = (0.0, 0.3, 0.9, 1.4, 1.9)
    waits = [
        start_wait(loop, wait_spec("batch_a", interval=2.0, first_poll_delay=d)) for d in delays
    ]
    loop.run()
    # Alone, five waits would read it 5 times every 2 s; sharing, once per 2 s, plus once
    # when the second wait comes.
    assert len(server.log) <= 20 / 2 + 2
    for wait in waits:
        at, outcome = outcome_of(loop, wait)
        assert outcome.status == "success"
        assert at <= 20.0 + 2.0


def test_a_deadline_that_passes_while_held_back_ends_the_wait_then_without_a_request() -> None:
    server = Server({}, refuse=lambda now, index: too_many("30") if index == 0 else None)
    loop = Loop(server)
    start_wait(loop, wait_spec("batch_a", deadline=100.0))
    held = start_wait(loop, wait_spec("batch_b", deadline=10.0))
    loop.run()
    at, outcome = outcome_of(loop, held)
    assert outcome.status == "timeout"
    assert at == 10.0
    assert "rate limit" in outcome.reason
    assert not [r for r in server.log if r.path.endswith("batch_b")]
