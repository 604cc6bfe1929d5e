"""Drive a core plan with scripted answers and a fake clock: no sockets, no sleeping.

``drive(plan, [answer, answer, ...])`` feeds the plan one scripted outcome per request it
yields, advances the fake clock by every Wait, and records what the plan asked for: the
requests (what a server would have received), the waits and the notes (what a log would say).
A plan that sends more requests than the script answers, or fewer, fails the test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_portkey._core.messages import (
    ApiRequest,
    ApiResponse,
    Note,
    Outcome,
    Plan,
    TransportFailure,
    Wait,
)
from airflow_portkey._core.plans import CallContext
from airflow_portkey._core.retry import RetryPolicy

CONN_ID = "portkey_core"
START = 1_700_000_000.0


class FakeClock:
    """A clock that moves only when a plan waits (or a test says so)."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, f"a wait of {seconds}s"
        self.now += seconds


# An answer, or a function of the request that gives one (to echo its path, say).
Answer = Outcome | Callable[[ApiRequest], Outcome]


@dataclass
class Run:
    """What one drive saw: the plan's result (or error) and everything it asked for."""

    requests: list[ApiRequest] = field(default_factory=list)
    waits: list[Wait] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    result: Any = None
    error: BaseException | None = None

    @property
    def calls(self) -> list[str]:
        """``"GET /batches/b1"`` per request, in order."""
        return [request.describe() for request in self.requests]

    @property
    def waited(self) -> list[float]:
        return [wait.seconds for wait in self.waits]

    def said(self, level: int | None = None) -> list[str]:
        return [n.message for n in self.notes if level is None or n.level == level]


def drive(
    plan: Plan[Any],
    script: Iterable[Answer],
    clock: FakeClock | None = None,
    *,
    raises: bool = False,
) -> Run:
    """Run ``plan`` to its end against ``script``.

    The plan's exception is kept in ``run.error`` when ``raises`` is true, re-raised otherwise.
    """
    answers = list(script)
    run = Run()
    reply: Outcome | None = None
    while True:
        try:
            action = plan.send(reply)
        except StopIteration as done:
            run.result = done.value
            break
        except Exception as error:
            if not raises:
                raise
            run.error = error
            break
        reply = None
        if isinstance(action, ApiRequest):
            run.requests.append(action)
            assert answers, f"the plan sent {action.describe()} but the script has no answer left"
            answer = answers.pop(0)
            reply = answer(action) if callable(answer) else answer
        elif isinstance(action, Wait):
            run.waits.append(action)
            if clock is not None:
                clock.advance(action.seconds)
        elif isinstance(action, Note):
            run.notes.append(action)
        else:  # pragma: no cover - a plan yields nothing else
            raise AssertionError(f"the plan yielded {action!r}")
    assert not answers, f"{len(answers)} scripted answers were never asked for: {answers}"
    return run


def context(
    clock: FakeClock | None = None,
    *,
    policy: RetryPolicy | None = None,
    rng: float = 1.0,
    secrets: tuple[str, ...] = (),
) -> CallContext:
    """A CallContext on the fake clock whose jitter always draws ``rng`` (1.0: the bound)."""
    return CallContext(
        conn_id=CONN_ID,
        secrets=secrets,
        policy=policy or RetryPolicy(),
        clock=clock or FakeClock(),
        rng=lambda: rng,
    )


# -- answers ----------------------------------------------------------------------------------


def answer(status: int, body: Any = b"", **headers: str) -> ApiResponse:
    """An HTTP answer; a dict or list body is sent as JSON. Header names in lower case."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    names = {name.replace("_", "-").lower(): value for name, value in headers.items()}
    return ApiResponse(status, names, raw)


def batch(batch_id: str = "batch_1", status: str = "in_progress", **fields: Any) -> ApiResponse:
    """A 200 answer holding a batch object, as OpenAI (and Portkey) shape it."""
    body: Mapping[str, Any] = {
        "id": batch_id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-in",
        "created_at": 1_700_000_000,
        "status": status,
        **fields,
    }
    return answer(200, body)


def error(status: int, message: str = "refused", **headers: str) -> ApiResponse:
    """An error answer in OpenAI's shape, as Portkey passes it on."""
    return answer(
        status,
        {"error": {"message": message, "type": "invalid_request_error", "code": None}},
        **headers,
    )


def failure(kind: str = "dropped", detail: str = "connection reset by peer") -> TransportFailure:
    return TransportFailure(kind, detail)
