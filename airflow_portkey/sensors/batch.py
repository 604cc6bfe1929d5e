"""PortkeyBatchSensor: hold downstream tasks until a Portkey batch has finished."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

# Only what a DAG file's parse needs loads here; the hook and the rest load in execute.
from airflow_portkey._core.defaults import (
    DEFAULT_CONN_ID,
    DEFAULT_MAX_TRANSIENT_FAILURES,
    DEFAULT_STILL_WAITING_EVERY,
    DEFER_TIMEOUT_MARGIN,
)
from airflow_portkey._tasks import (
    KillSwitch,
    batch_ids_from,
    cancel_after_timeout,
    cancel_now,
    conclude,
    default_deferrable,
    failure_message,
    positive,
    read_event,
)
from airflow_portkey.batches import (
    DEFAULT_FAILURE_STATUSES,
    DEFAULT_SUCCESS_STATUSES,
    Batch,
    BatchStatus,
    check_status_sets,
    parse_status_set,
)
from airflow_portkey.exceptions import PortkeyBatchFailedError, PortkeyConfigError
from airflow_portkey.links import PortkeyLogsLink

if TYPE_CHECKING:
    from airflow_portkey._core.waits import PollLog
    from airflow_portkey.hooks.portkey import PortkeyHook


class PortkeyBatchSensor(BaseSensorOperator):
    """Wait until a Portkey batch reaches a terminal status.

    The task succeeds when the batch ends in one of ``success_statuses`` and fails (or, with
    ``soft_fail``, is skipped) when it ends in one of ``failure_statuses``; its XCom value is
    the batch as JSON. ``cancelling`` is not terminal: the sensor waits on through it.

    :param batch_id: the batch to wait for (templated); a batch dict from XCom works too.
    :param portkey_conn_id: the Portkey connection (templated).
    :param success_statuses: statuses that mean success (default ``completed``).
    :param failure_statuses: statuses that fail the task (default ``failed``, ``expired``,
        ``cancelled``). A terminal status in neither set fails the task too. The sets must
        not overlap.
    :param poke_interval: seconds between polls (all modes).
    :param timeout: seconds to wait in all before the sensor times out.
    :param mode: ``poke`` (hold a worker slot and sleep) or ``reschedule`` (free the slot
        between polls); ignored when ``deferrable``.
    :param deferrable: wait in the triggerer instead of a worker slot. Defaults to
        ``[operators] default_deferrable``.
    :param soft_fail: skip the task instead of failing it on a failure status or a timeout.
    :param exponential_backoff: lengthen the interval between polls as the wait goes on.
    :param cancel_on_timeout: cancel the batch when the sensor times out (off by default:
        the sensor watches a batch it does not own).
    :param cancel_on_kill: cancel the batch when the task is killed (SIGTERM, a user marking
        it failed, ``execution_timeout``; in deferrable mode needs Airflow 3.3+).
    :param max_transient_failures: polls in a row that may fail (network, 5xx, 429) in
        deferrable mode before the task fails; each poll already retries on its own.
    :param still_waiting_interval: while the batch shows no change, a "still waiting" line
        is logged this often (seconds or a timedelta; default 10 minutes). Status changes and
        progress are logged as they happen. In ``reschedule`` mode each poke runs afresh and
        logs where the batch stands.
    """

    template_fields: Sequence[str] = ("batch_id", "portkey_conn_id")
    operator_extra_links = (PortkeyLogsLink(),)
    ui_color = "#f0e4ff"

    def __init__(
        self,
        *,
        batch_id: str | Any,
        portkey_conn_id: str = DEFAULT_CONN_ID,
        success_statuses: Iterable[str | BatchStatus] = DEFAULT_SUCCESS_STATUSES,
        failure_statuses: Iterable[str | BatchStatus] = DEFAULT_FAILURE_STATUSES,
        deferrable: bool | None = None,
        cancel_on_timeout: bool = False,
        cancel_on_kill: bool = False,
        max_transient_failures: int = DEFAULT_MAX_TRANSIENT_FAILURES,
        still_waiting_interval: float | timedelta = DEFAULT_STILL_WAITING_EVERY,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id
        self.portkey_conn_id = portkey_conn_id
        self.success_statuses = parse_status_set(success_statuses, name="success_statuses")
        self.failure_statuses = parse_status_set(failure_statuses, name="failure_statuses")
        check_status_sets(self.success_statuses, self.failure_statuses)
        if not self.poke_interval > 0:
            raise ValueError(f"poke_interval must be positive, got {self.poke_interval!r}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive, got {self.timeout!r}")
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.cancel_on_timeout = cancel_on_timeout
        self.cancel_on_kill = cancel_on_kill
        if max_transient_failures < 0:
            raise ValueError("max_transient_failures must be 0 or more")
        self.max_transient_failures = max_transient_failures
        self.still_waiting_interval = positive("still_waiting_interval", still_waiting_interval)
        self._said: PollLog | None = None  # what poke has logged (poke mode keeps it)
        self._last_verdict: str | None = None
        self._hook: PortkeyHook | None = None
        self._kill = KillSwitch()

    @property
    def hook(self) -> PortkeyHook:
        if self._hook is None:
            from airflow_portkey.hooks.portkey import PortkeyHook

            self._hook = PortkeyHook(self.portkey_conn_id)
        return self._hook

    def _the_batch_id(self) -> str:
        ids = batch_ids_from(self.batch_id, field="batch_id")
        if len(ids) != 1:
            raise PortkeyConfigError(
                f"batch_id: PortkeyBatchSensor waits for one batch, got {len(ids)}; "
                "map the sensor over the ids (.expand) to wait for each"
            )
        return ids[0]

    def execute(self, context: Any) -> Any:
        batch_id = self._the_batch_id()
        if not self.deferrable:
            try:
                with self._kill.wait_phase():
                    return super().execute(context)
            except (AirflowSensorTimeout, AirflowSkipException):
                # A timeout (a skip, with soft_fail) comes while the batch was still running.
                if self._last_verdict is None:
                    self._cancel_after_timeout(batch_id)
                raise
        # One poll first: a batch that has already finished needs no trip to the triggerer.
        done = self.poke(context)
        if done:
            return done.xcom_value if isinstance(done, PokeReturnValue) else None
        from airflow_portkey.triggers.batch import PortkeyBatchTrigger

        self.hook.settings  # noqa: B018 - the trace headers below come from the loaded hook
        self.defer(
            trigger=PortkeyBatchTrigger(
                batch_id,
                portkey_conn_id=self.portkey_conn_id,
                deadline=time.time() + self.timeout,
                poll_interval=self.poke_interval,
                success_statuses=[s.value for s in self.success_statuses],
                failure_statuses=[s.value for s in self.failure_statuses],
                max_transient_failures=self.max_transient_failures,
                exponential_backoff=self.exponential_backoff,
                cancel_on_kill=self.cancel_on_kill,
                trace_id=self.hook.trace_id,
                metadata=self.hook.trace_metadata,
                first_poll_delay=self.poke_interval,
                still_waiting_interval=self.still_waiting_interval,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) + DEFER_TIMEOUT_MARGIN,
        )

    def poke(self, context: Any) -> bool | PokeReturnValue:
        from airflow_portkey._core.waits import classify

        batch = self.hook.get_batch(self._the_batch_id())
        self._log_progress(batch)
        self._last_verdict = classify(batch, self.success_statuses, self.failure_statuses)
        if self._last_verdict == "success":
            if batch.partial:
                self.log.warning("Batch %s completed only in part", batch.id)
            return PokeReturnValue(is_done=True, xcom_value=batch.to_xcom())
        if self._last_verdict == "failure":
            raise PortkeyBatchFailedError(failure_message(batch))
        return False

    def _log_progress(self, batch: Batch) -> None:
        if self._said is None:
            from airflow_portkey._core.waits import PollLog

            self._said = PollLog(self.still_waiting_interval)
        for note in self._said.notes(batch, time.time()):
            self.log.log(note.level, "%s", note.message)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        """Resume after the trigger's event; everything needed comes from the event."""
        return conclude(
            read_event(event),
            on_timeout=self._cancel_after_timeout,
            timeout_error=AirflowSensorTimeout,
        )

    def _cancel_after_timeout(self, batch_id: str) -> None:
        cancel_after_timeout(
            self.portkey_conn_id, batch_id, enabled=self.cancel_on_timeout, log=self.log
        )

    def on_kill(self) -> None:
        if self.cancel_on_kill:
            cancel_now(self.portkey_conn_id, [self._the_batch_id()], self.log, "Task killed")
        self._kill.stop("poking the batch")
