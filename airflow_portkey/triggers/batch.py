"""PortkeyBatchTrigger: wait for batches in the triggerer, without holding a worker slot."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_portkey._core.answers import redact
from airflow_portkey._core.defaults import (
    DEFAULT_MAX_TRANSIENT_FAILURES,
    DEFAULT_STILL_WAITING_EVERY,
)
from airflow_portkey._core.waits import WaitOutcome, WaitSpec, event_payload
from airflow_portkey.batches import BatchStatus, normalize_status
from airflow_portkey.exceptions import PortkeyError
from airflow_portkey.hooks.portkey import PortkeyHook


@functools.lru_cache(maxsize=64)
def _statuses(words: tuple[str, ...]) -> frozenset[BatchStatus]:
    """One set object for every trigger given the same statuses (a triggerer holds thousands)."""
    return frozenset(map(normalize_status, words))


class PortkeyBatchTrigger(BaseTrigger):
    """Poll one or more batches until each is done or an absolute deadline passes.

    Fires exactly one event: ``{"status": "success" | "failure" | "timeout" | "error",
    "batch_id", "batch_ids", "batch", "batches", "reason"}``. With several batches the status
    is the worst of theirs (error, then timeout, then failure, then success).
    It serialises ids, numbers and strings only: credentials are read from the connection
    in the triggerer, never stored with the trigger.

    :param batch_ids: the batch id, or several.
    :param portkey_conn_id: the Portkey connection.
    :param deadline: Unix time (seconds) at which waiting stops with a ``timeout`` event.
    :param poll_interval: seconds between polls of one batch.
    :param success_statuses: statuses that end the wait as success.
    :param failure_statuses: statuses that end the wait as failure.
    :param max_transient_failures: failed polls in a row tolerated before an ``error`` event.
    :param exponential_backoff: double the interval after each poll (up to 10 minutes).
    :param cancel_on_kill: cancel the batches when a user kills the deferred task
        (mark failed, clear; Airflow 3.3+ calls ``on_kill`` for that).
    :param trace_id: ``x-portkey-trace-id`` of the task that deferred.
    :param metadata: ``x-portkey-metadata`` of the task that deferred.
    :param first_poll_delay: seconds to wait before the first poll; the tasks pass their poll
        interval, since they read the batch just before deferring.
    :param still_waiting_interval: seconds between "still waiting" log lines while a batch
        shows no change (status changes and progress are logged as they happen).
    """

    def __init__(
        self,
        batch_ids: str | Sequence[str],
        *,
        portkey_conn_id: str,
        deadline: float,
        poll_interval: float,
        success_statuses: Sequence[str] = ("completed",),
        failure_statuses: Sequence[str] = ("failed", "expired", "cancelled"),
        max_transient_failures: int = DEFAULT_MAX_TRANSIENT_FAILURES,
        exponential_backoff: bool = False,
        cancel_on_kill: bool = False,
        trace_id: str | None = None,
        metadata: dict[str, str] | None = None,
        first_poll_delay: float = 0.0,
        still_waiting_interval: float = DEFAULT_STILL_WAITING_EVERY,
    ) -> None:
        super().__init__()
        self.batch_ids = [batch_ids] if isinstance(batch_ids, str) else list(batch_ids)
        self.portkey_conn_id = portkey_conn_id
        self.deadline = float(deadline)
        self.poll_interval = float(poll_interval)
        self.success_statuses = [normalize_status(s).value for s in success_statuses]
        self.failure_statuses = [normalize_status(s).value for s in failure_statuses]
        self.max_transient_failures = int(max_transient_failures)
        self.exponential_backoff = bool(exponential_backoff)
        self.cancel_on_kill = bool(cancel_on_kill)
        self.trace_id = trace_id
        self.metadata = dict(metadata or {})
        self.first_poll_delay = float(first_poll_delay)
        self.still_waiting_interval = float(still_waiting_interval)
        # Check everything now, in the worker, so a bad argument fails the task before deferral.
        self._specs = [self._spec(batch_id) for batch_id in self.batch_ids]
        if not self._specs:
            raise ValueError("PortkeyBatchTrigger needs at least one batch id")

    def _spec(self, batch_id: str) -> WaitSpec:
        return WaitSpec(
            batch_id,
            success=_statuses(tuple(self.success_statuses)),
            failure=_statuses(tuple(self.failure_statuses)),
            deadline=self.deadline,
            poll_interval=self.poll_interval,
            max_transient_failures=self.max_transient_failures,
            backoff=self.exponential_backoff,
            first_poll_delay=self.first_poll_delay,
            still_waiting_every=self.still_waiting_interval,
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "batch_ids": list(self.batch_ids),
                "portkey_conn_id": self.portkey_conn_id,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "success_statuses": list(self.success_statuses),
                "failure_statuses": list(self.failure_statuses),
                "max_transient_failures": self.max_transient_failures,
                "exponential_backoff": self.exponential_backoff,
                "cancel_on_kill": self.cancel_on_kill,
                "trace_id": self.trace_id,
                "metadata": dict(self.metadata),
                "first_poll_delay": self.first_poll_delay,
                "still_waiting_interval": self.still_waiting_interval,
            },
        )

    def _hook(self) -> PortkeyHook:
        # Keep idle connections open across polls: closed after 5 s (a usual poll interval),
        # every poll would open a new one (and, over TLS, pay a handshake).
        return PortkeyHook(
            self.portkey_conn_id,
            trace_id=self.trace_id,
            metadata=self.metadata,
            keepalive_expiry=self.poll_interval + 30.0,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self._hook()
        try:
            outcomes = await hook.await_batches(self._specs)
        except Exception as error:  # one event from the closed set, whatever went wrong
            reason = str(error)
            if not isinstance(error, PortkeyError):  # a bug or Airflow's own (a missing conn)
                self.log.exception("Waiting for batches %s failed", ", ".join(self.batch_ids))
                reason = redact(f"{type(error).__name__}: {reason}", hook.loaded_secrets)
            outcomes = [WaitOutcome("error", spec.batch_id, None, reason) for spec in self._specs]
        finally:
            await hook.aclose()
        yield TriggerEvent(event_payload(outcomes))

    async def on_kill(self) -> None:
        """Cancel the batches when a user kills the task (Airflow 3.3+), if asked to.

        Airflow 3.3.2 also calls ``on_kill`` on a triggerer that stalled past
        ``triggerer_health_check_threshold`` for the triggers another triggerer took over, as if
        a user had acted. The task is then still deferred, and its wait goes on elsewhere: so a
        trigger whose task instance is still ``deferred`` cancels nothing.
        """
        if not self.cancel_on_kill:
            return
        if await self._task_still_deferred():
            self.log.warning(
                "on_kill called, but the task is still deferred (another triggerer took this "
                "trigger over): batches %s left running",
                ", ".join(self.batch_ids),
            )
            return
        hook = self._hook()
        try:
            results = await hook.acancel_batches(self.batch_ids)
        finally:
            await hook.aclose()
        for batch_id, result in zip(self.batch_ids, results, strict=True):
            if isinstance(result, BaseException):
                self.log.warning("Could not cancel batch %s on kill: %s", batch_id, result)

    async def _task_still_deferred(self) -> bool:
        """Whether the task instance of this trigger is still deferred; False when unknown."""
        ti = getattr(self, "task_instance", None)
        if ti is None:
            return False
        try:
            from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
            from asgiref.sync import sync_to_async

            states = await sync_to_async(RuntimeTaskInstance.get_task_states)(
                dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id]
            )
        except Exception as error:  # cannot tell: a user's kill is the reading that stops spend
            self.log.info("Could not read the task's state before cancelling: %s", error)
            return False
        map_index = getattr(ti, "map_index", -1)
        key = ti.task_id if map_index is None or map_index < 0 else f"{ti.task_id}_{map_index}"
        state = (states.get(ti.run_id) or {}).get(key)
        return str(getattr(state, "value", state)) == "deferred"
