"""Waiting for a batch, as a protocol plan: pure, driven by the sync hook or the async trigger.

One loop decides when a wait is over (success, failure, deadline, too many failed polls);
PollLog decides what a wait says on the way (status changes, progress, "still waiting").
The sensor's poke, the operators' waits and the trigger all use them, so none of them has a
loop or a logging rule of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pendulum

from airflow_portkey._core import ids, plans
from airflow_portkey._core.batches import (
    TERMINAL_STATUSES,
    Batch,
    BatchStatus,
    check_status_sets,
)
from airflow_portkey._core.defaults import (
    DEFAULT_MAX_TRANSIENT_FAILURES,
    DEFAULT_STILL_WAITING_EVERY,
)
from airflow_portkey._core.errors import (
    PortkeyAPIError,
    PortkeyHeldBackError,
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


def span(seconds: float) -> str:
    """A duration in words: to the second under an hour, to the minute beyond."""
    whole = max(0, round(seconds)) if seconds < 3600 else round(seconds / 60) * 60
    if whole == 0:
        return "0 seconds"
    return pendulum.duration(seconds=whole).in_words(locale="en")


def _moment(unix_seconds: float) -> str:
    return pendulum.from_timestamp(unix_seconds).format("YYYY-MM-DD HH:mm [UTC]")


class PollLog:
    """What a wait says about the batch it reads, the same in the sensor (every mode), the
    operators and the trigger:

    - every status change (the first read says where the batch stands);
    - progress whenever the request counts change: counts, percentage, time elapsed since
      the batch was created and, once there is a rate, an estimated finish;
    - a "still waiting" line every ``still_waiting_every`` seconds while nothing changes, so
      a provider that reports no counts is not silent for hours;
    - an unknown status word once per word, as a warning.

    ``now`` (Unix seconds) is passed in, so the rules run on a fake clock in tests.
    """

    def __init__(self, still_waiting_every: float = DEFAULT_STILL_WAITING_EVERY) -> None:
        if not still_waiting_every > 0:
            raise ValueError(
                f"still_waiting_every must be more than 0 seconds, got {still_waiting_every!r}"
            )
        self.still_waiting_every = still_waiting_every
        self._seen: Batch | None = None
        self._changed_at = 0.0
        self._said_at = 0.0
        self._first: tuple[float, int] | None = None  # (when, requests done) at the first read
        # Made on the first unknown word: a triggerer holds thousands of these, nearly all empty.
        self._unknown_words: set[str | None] | None = None

    def notes(self, batch: Batch, now: float) -> Sequence[Note]:
        # No list made when there is nothing to say (most polls of a long wait).
        notes: Sequence[Note] = ()
        if batch.status is BatchStatus.UNKNOWN and batch.raw_status not in (
            self._unknown_words or ()
        ):
            if self._unknown_words is None:
                self._unknown_words = set()
            self._unknown_words.add(batch.raw_status)
            notes = [
                Note(
                    logging.WARNING,
                    f"Batch {batch.id} reports status {batch.raw_status!r}, which this "
                    "provider does not know; waiting on until it changes or the deadline passes",
                )
            ]
        if self._first is None:
            self._first = (now, batch.request_counts.done)
        seen, self._seen = self._seen, batch
        changed = True
        if seen is None:
            message = f"Batch {batch.id} is {batch.status_word()}"
        elif seen.status_word() != batch.status_word():
            message = f"Batch {batch.id} is now {batch.status_word()} (was {seen.status_word()})"
        elif seen.request_counts != batch.request_counts:
            message = f"Batch {batch.id} progress"
        elif now - self._said_at >= self.still_waiting_every:
            unchanged = span(now - self._changed_at)
            message = f"Batch {batch.id} still {batch.status_word()}, no change for {unchanged}"
            changed = False
        else:
            return notes
        if changed:
            self._changed_at = now
        self._said_at = now
        return [*notes, Note(logging.INFO, f"{message}: {self._progress(batch, now, self._first)}")]

    def _progress(self, batch: Batch, now: float, first: tuple[float, int]) -> str:
        """Counts and percentage, elapsed time, and an estimated finish once there is a rate."""
        parts = [batch.request_counts.describe()]
        created = batch.timestamps.get("created_at")
        if created is None or created > now:  # no timestamp, or a clock ahead of ours
            parts.append(f"{span(now - first[0])} since this wait began")
        else:
            parts.append(f"{span(now - created)} since it was created")
        finish = self._estimated_finish(batch, now, first)
        if finish is not None:
            parts.append(f"about {span(finish - now)} left (around {_moment(finish)})")
        return "; ".join(parts)

    @staticmethod
    def _estimated_finish(batch: Batch, now: float, first: tuple[float, int]) -> float | None:
        counts = batch.request_counts
        if batch.is_terminal or counts.total <= 0 or not 0 < counts.done < counts.total:
            return None
        # The batch's own start gives a rate at the first read; without it, our first read.
        start = batch.timestamps.get("in_progress_at") or batch.timestamps.get("created_at")
        base_time, base_done = (start, 0) if start is not None and start < now else first
        if now <= base_time or counts.done <= base_done:
            return None  # no rate yet
        rate = (counts.done - base_done) / (now - base_time)
        return now + (counts.total - counts.done) / rate


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
    still_waiting_every: float = DEFAULT_STILL_WAITING_EVERY
    """Seconds between "still waiting" lines while nothing changes (see PollLog)."""

    def __post_init__(self) -> None:
        ids.check_batch_id(self.batch_id)
        check_status_sets(self.success, self.failure)
        if not self.poll_interval > 0:
            raise ValueError(f"poll_interval must be more than 0, got {self.poll_interval}")
        if self.max_transient_failures < 0:
            raise ValueError("max_transient_failures must be 0 or more")
        if not self.still_waiting_every > 0:
            raise ValueError(
                f"still_waiting_every must be more than 0, got {self.still_waiting_every}"
            )


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
    said = PollLog(spec.still_waiting_every)
    if spec.first_poll_delay > 0:
        yield Wait(max(0.0, min(spec.first_poll_delay, spec.deadline - clock())), "")
    while True:
        held_back = False
        try:
            # Waits on one batch share reads (one request per interval between them); the
            # connection's rate budget may delay a poll, up to the deadline and no further.
            batch = yield from plans.get_batch(
                ctx, spec.batch_id, share_for=interval, deadline=spec.deadline
            )
        except PortkeyHeldBackError:
            held_back = True  # not a failed poll: the deadline check below ends the wait
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
            notes = said.notes(batch, clock())
            if notes:  # most polls have nothing to say
                yield from notes
            verdict = classify(batch, spec.success, spec.failure)
            if verdict is not None:
                return WaitOutcome(verdict, spec.batch_id, batch, batch.describe())
        remaining = spec.deadline - clock()
        if remaining <= 0:
            state = last.describe() if last else "never read"
            why = " (the last poll held back by the connection's rate limit)" if held_back else ""
            return WaitOutcome(
                "timeout", spec.batch_id, last, f"deadline passed while waiting{why}; {state}"
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
