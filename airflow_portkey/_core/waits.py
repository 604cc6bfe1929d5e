"""Waiting for a batch, as a protocol plan: pure, driven by the sync hook or the async trigger.

One loop decides when a wait is over (success, failure, deadline, too many failed polls),
logs an unknown status once and progress only when it changes. The sensor's poke mode, the
cancel operator's wait and the trigger all use it, so none of them has a loop of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from airflow_portkey._core import ids, plans
from airflow_portkey._core.batches import (
    TERMINAL_STATUSES,
    Batch,
    BatchStatus,
    RequestCounts,
    check_status_sets,
)
from airflow_portkey._core.defaults import DEFAULT_MAX_TRANSIENT_FAILURES
from airflow_portkey._core.errors import (
    PortkeyAPIError,
    PortkeyRateLimitError,
    PortkeyServerError,
    PortkeyTimeoutError,
    PortkeyTransportError,
)
from airflow_portkey._core.messages import Note, Plan, Wait
from airflow_portkey._core.plans import CallContext

Verdict = Literal["success", "failure"]
EventStatus = Literal["success", "failure", "timeout", "error"]
EVENT_STATUSES: frozenset[str] = frozenset({"success", "failure", "timeout", "error"})

# Failures that a later poll may not see again; anything else (401, 404...) ends the wait.
TRANSIENT_ERRORS = (
    PortkeyTransportError,
    PortkeyServerError,
    PortkeyRateLimitError,
    PortkeyTimeoutError,
)


def classify(
    batch: Batch, success: frozenset[BatchStatus], failure: frozenset[BatchStatus]
) -> Verdict | None:
    """Whether a batch is done waiting for: None while it can still change."""
    if batch.status in success:
        return "success"
    if batch.status in failure:
        return "failure"
    if batch.status in TERMINAL_STATUSES:
        # Finished in a status the caller listed nowhere: waiting longer would wait forever.
        return "failure"
    return None


class PollLog:
    """What a wait says about each batch it reads: progress when the counts change, and an
    unknown status once per word. Shared by the wait plan and the poking sensor."""

    def __init__(self) -> None:
        self._progress: RequestCounts | None = None
        self._unknown_words: set[str | None] = set()

    def notes(self, batch: Batch) -> list[Note]:
        notes = []
        if batch.status is BatchStatus.UNKNOWN and batch.raw_status not in self._unknown_words:
            self._unknown_words.add(batch.raw_status)
            notes.append(
                Note(
                    logging.WARNING,
                    f"Batch {batch.id} reports status {batch.raw_status!r}, which this "
                    "provider does not know; waiting on until it changes or the deadline passes",
                )
            )
        if batch.request_counts != self._progress:
            self._progress = batch.request_counts
            notes.append(Note(logging.INFO, batch.describe()))
        return notes


@dataclass(frozen=True, slots=True)
class WaitSpec:
    """What to wait for, with an absolute wall-clock deadline (Unix seconds)."""

    batch_id: str
    success: frozenset[BatchStatus]
    failure: frozenset[BatchStatus]
    deadline: float
    poll_interval: float
    max_transient_failures: int = DEFAULT_MAX_TRANSIENT_FAILURES
    backoff: bool = False
    max_poll_interval: float = 600.0
    first_poll_delay: float = 0.0
    """Seconds before the first poll: a task that has just read the batch need not read it
    again at once (and an event in the first seconds of a deferral hits an Airflow 3.3 race)."""

    def __post_init__(self) -> None:
        ids.check_batch_id(self.batch_id)
        check_status_sets(self.success, self.failure)
        if not self.poll_interval > 0:
            raise ValueError(f"poll_interval must be more than 0, got {self.poll_interval}")
        if self.max_transient_failures < 0:
            raise ValueError("max_transient_failures must be 0 or more")


@dataclass(frozen=True, slots=True)
class WaitOutcome:
    status: EventStatus
    batch_id: str
    batch: Batch | None
    reason: str


def wait_for_batch(
    ctx: CallContext, spec: WaitSpec, clock: Callable[[], float] = time.time
) -> Plan[WaitOutcome]:
    failures = 0
    interval = spec.poll_interval
    last: Batch | None = None
    said = PollLog()
    if spec.first_poll_delay > 0:
        yield Wait(max(0.0, min(spec.first_poll_delay, spec.deadline - clock())), "")
    while True:
        try:
            batch = yield from plans.get_batch(ctx, spec.batch_id)
        except TRANSIENT_ERRORS as error:
            failures += 1
            if failures > spec.max_transient_failures:
                reason = f"{failures} polls in a row failed; the last: {error}"
                return WaitOutcome("error", spec.batch_id, last, reason)
            yield Note(
                logging.WARNING,
                f"Poll of batch {spec.batch_id} failed ({failures} of "
                f"{spec.max_transient_failures} tolerated in a row): {error}",
            )
        except PortkeyAPIError as error:
            return WaitOutcome("error", spec.batch_id, last, str(error))
        else:
            failures = 0
            last = batch
            verdict = classify(batch, spec.success, spec.failure)
            if verdict is not None:
                return WaitOutcome(verdict, spec.batch_id, batch, batch.describe())
            yield from said.notes(batch)
        remaining = spec.deadline - clock()
        if remaining <= 0:
            state = last.describe() if last else "never read"
            return WaitOutcome(
                "timeout", spec.batch_id, last, f"deadline passed while waiting; {state}"
            )
        yield Wait(min(interval, remaining), "")
        if spec.backoff:
            interval = min(interval * 2, spec.max_poll_interval)


def terminal_spec(
    batch_id: str, *, deadline: float, poll_interval: float, **options: object
) -> WaitSpec:
    """Wait until a batch has stopped, whatever its final status (after a cancel)."""
    return WaitSpec(
        batch_id,
        success=TERMINAL_STATUSES,
        failure=frozenset(),
        deadline=deadline,
        poll_interval=poll_interval,
        **options,  # type: ignore[arg-type]
    )


_SEVERITY = ("error", "timeout", "failure", "success")


def event_payload(outcomes: Sequence[WaitOutcome]) -> dict[str, Any]:
    """The one event of a wait: the worst status, every batch, and why."""
    status = min((o.status for o in outcomes), key=_SEVERITY.index)
    batches = [o.batch.to_xcom() if o.batch else None for o in outcomes]
    reasons = [o.reason for o in outcomes if o.status == status]
    return {
        "status": status,
        "batch_id": outcomes[0].batch_id,
        "batch_ids": [o.batch_id for o in outcomes],
        "batch": batches[0],
        "batches": batches,
        "reason": "; ".join(reasons),
    }
