"""Operators that act on Portkey batches."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator

from airflow_portkey._settings import DEFAULT_CONN_ID
from airflow_portkey._tasks import (
    DEFER_TIMEOUT_MARGIN,
    batch_ids_from,
    cancel_many,
    cancel_now,
    default_deferrable,
    positive,
    read_event,
    wait_many,
)
from airflow_portkey._waiting import WaitOutcome, terminal_spec
from airflow_portkey.batches import TERMINAL_STATUSES, Batch, BatchStatus
from airflow_portkey.exceptions import PortkeyBatchTimeoutError, PortkeyError
from airflow_portkey.hooks.portkey import PortkeyHook

XCom = dict[str, Any] | list[dict[str, Any]]


def _is_one(value: object) -> bool:
    return isinstance(value, str | dict) and not (
        isinstance(value, str) and value.strip().startswith("[")
    )


class PortkeyCancelBatchOperator(BaseOperator):
    """Cancel one or many Portkey batches (``POST /batches/{batch_id}/cancel``), idempotently.

    A batch that is already cancelling or finished is reported and left alone: nothing fails
    because a batch finished first. Many ids are cancelled concurrently. The XCom value is
    the batch as JSON after the cancel (a list of them when ``batch_id`` is a list).

    Recommended for cancelling on pipeline failure as a teardown:
    ``submit >> work >> cancel.as_teardown(setups=submit)``. The teardown runs whether the work
    failed or not, cancels only what is still running, and does not turn a failed DAG run
    into a successful one.

    :param batch_id: a batch id, a list of them (e.g. a mapped task's XCom), or batch dicts
        as this provider's tasks push (templated).
    :param portkey_conn_id: the Portkey connection (templated).
    :param wait_for_termination: after cancelling, wait until every batch has really stopped
        (``cancelling`` can last minutes) and return the final batches.
    :param wait_timeout: seconds to wait for that before the task fails.
    :param poll_interval: seconds between polls while waiting.
    :param deferrable: wait in the triggerer instead of a worker slot. Defaults to
        ``[operators] default_deferrable``.
    :param max_concurrency: cancel requests in flight at once.
    """

    template_fields: Sequence[str] = ("batch_id", "portkey_conn_id")
    ui_color = "#ffe4e1"

    def __init__(
        self,
        *,
        batch_id: str | Sequence[str] | Any,
        portkey_conn_id: str = DEFAULT_CONN_ID,
        wait_for_termination: bool = False,
        wait_timeout: float | timedelta = timedelta(minutes=30),
        poll_interval: float | timedelta = 10.0,
        deferrable: bool | None = None,
        max_concurrency: int = 16,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id
        self.portkey_conn_id = portkey_conn_id
        self.wait_for_termination = wait_for_termination
        self.wait_timeout = positive("wait_timeout", wait_timeout)
        self.poll_interval = positive("poll_interval", poll_interval)
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise ValueError(f"max_concurrency must be a whole number, got {max_concurrency!r}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency
        self._batch_ids: list[str] = []

    def execute(self, context: Any) -> XCom | None:
        ids = self._batch_ids = batch_ids_from(self.batch_id)
        one = _is_one(self.batch_id)
        hook = PortkeyHook(
            self.portkey_conn_id, max_connections=min(self.max_concurrency, len(ids))
        )
        results = cancel_many(hook, ids)
        batches = self._report(ids, results)
        pending = [b.id for b in batches if not b.is_terminal]
        if not self.wait_for_termination or not pending:
            return _xcom(batches, one)
        self.log.info(
            "Waiting up to %.0fs for %d batch(es) to stop", self.wait_timeout, len(pending)
        )
        deadline = time.time() + self.wait_timeout
        if self.deferrable:
            from airflow_portkey.triggers.batch import PortkeyBatchTrigger

            # Every id goes to the trigger, finished ones too (one read each), so that the
            # event alone carries the whole result: kwargs may not survive the deferral.
            self.defer(
                trigger=PortkeyBatchTrigger(
                    [b.id for b in batches],
                    portkey_conn_id=self.portkey_conn_id,
                    deadline=deadline,
                    poll_interval=self.poll_interval,
                    success_statuses=[s.value for s in TERMINAL_STATUSES],
                    failure_statuses=[],
                    trace_id=hook.trace_id,
                    metadata=hook.trace_metadata,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.wait_timeout) + DEFER_TIMEOUT_MARGIN,
            )
        specs = [
            terminal_spec(i, deadline=deadline, poll_interval=self.poll_interval) for i in pending
        ]
        outcomes = wait_many(PortkeyHook(self.portkey_conn_id), specs)
        return self._finish(batches, outcomes, one)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> XCom:
        """Resume after the trigger: every id and batch comes from the event."""
        payload = read_event(event)
        outcomes = [
            _outcome(batch_id, batch, payload)
            for batch_id, batch in zip(payload["batch_ids"], payload["batches"], strict=True)
        ]
        return self._finish([], outcomes, _is_one(self.batch_id))

    def _report(self, ids: list[str], results: list[Batch | BaseException]) -> list[Batch]:
        batches, failures = [], []
        for batch_id, result in zip(ids, results, strict=True):
            if isinstance(result, BaseException):
                failures.append(f"{batch_id}: {result}")
            elif result.status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
                batches.append(result)
            else:
                self.log.info("Batch %s was already %s; left alone", batch_id, result.status.value)
                batches.append(result)
        if failures:
            raise PortkeyError(
                f"Could not cancel {len(failures)} of {len(ids)} batches "
                f"({len(batches)} were cancelled or had already stopped): " + "; ".join(failures)
            )
        return batches

    def _finish(self, batches: list[Batch], outcomes: list[WaitOutcome], one: bool) -> XCom:
        final = {b.id: b for b in batches}
        final.update({o.batch_id: o.batch for o in outcomes if o.batch is not None})
        still = [o for o in outcomes if o.status != "success"]
        for batch in final.values():
            self.log.info("Final: %s", batch.describe())
        if still:
            kind = PortkeyBatchTimeoutError if still[0].status == "timeout" else PortkeyError
            raise kind(
                f"{len(still)} batch(es) had not stopped: "
                + "; ".join(f"{o.batch_id}: {o.reason}" for o in still)
            )
        return _xcom(list(final.values()), one)

    def on_kill(self) -> None:
        # The cancels may not have been sent yet when the kill came; sending again is harmless.
        cancel_now(self.portkey_conn_id, self._batch_ids, self.log)


def _outcome(batch_id: str, raw: dict[str, Any] | None, payload: dict[str, Any]) -> WaitOutcome:
    batch = Batch.from_xcom(raw) if raw else None
    if batch is not None and batch.is_terminal:
        return WaitOutcome("success", batch_id, batch, batch.describe())
    return WaitOutcome(payload["status"], batch_id, batch, payload["reason"])


def _xcom(batches: list[Batch], one: bool) -> XCom:
    values = [b.to_xcom() for b in batches]
    return values[0] if one else values
