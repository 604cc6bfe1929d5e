"""Operators that act on Portkey batches."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, literal

# Only what a DAG file's parse needs loads here; the hook and the rest load in execute.
from airflow_portkey._core.defaults import (
    DEFAULT_CONN_ID,
    DEFAULT_STILL_WAITING_EVERY,
    DEFER_TIMEOUT_MARGIN,
)
from airflow_portkey._tasks import (
    batch_ids_from,
    cancel_after_timeout,
    cancel_many,
    cancel_now,
    conclude,
    default_deferrable,
    positive,
    read_event,
    wait_many,
)
from airflow_portkey.batches import (
    TERMINAL_STATUSES,
    Batch,
    BatchStatus,
    check_status_sets,
    parse_status_set,
)
from airflow_portkey.exceptions import PortkeyBatchTimeoutError, PortkeyError
from airflow_portkey.links import PortkeyLogsLink

if TYPE_CHECKING:
    from airflow_portkey._core.waits import WaitOutcome

XCom = dict[str, Any] | list[dict[str, Any]]
_LiteralValue = type(literal(None))  # what airflow.sdk.literal wraps a value in


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
    :param still_waiting_interval: while waiting, a "still waiting" line is logged this often
        when nothing changes (status changes are logged as they happen).
    """

    template_fields: Sequence[str] = ("batch_id", "portkey_conn_id")
    operator_extra_links = (PortkeyLogsLink(),)
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
        still_waiting_interval: float | timedelta = DEFAULT_STILL_WAITING_EVERY,
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
        self.still_waiting_interval = positive("still_waiting_interval", still_waiting_interval)
        self._batch_ids: list[str] = []

    def execute(self, context: Any) -> XCom | None:
        ids = self._batch_ids = batch_ids_from(self.batch_id)
        one = _is_one(self.batch_id)
        from airflow_portkey.hooks.portkey import PortkeyHook

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
                    first_poll_delay=self.poll_interval,
                    still_waiting_interval=self.still_waiting_interval,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.wait_timeout) + DEFER_TIMEOUT_MARGIN,
            )
        from airflow_portkey._core.waits import terminal_spec

        specs = [
            terminal_spec(
                i,
                deadline=deadline,
                poll_interval=self.poll_interval,
                still_waiting_every=self.still_waiting_interval,
            )
            for i in pending
        ]
        outcomes = wait_many(hook, specs)
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
                continue
            batches.append(result)  # the hook has logged what the cancel did
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
    from airflow_portkey._core.waits import WaitOutcome

    batch = Batch.from_xcom(raw) if raw else None
    if batch is not None and batch.is_terminal:
        return WaitOutcome("success", batch_id, batch, batch.describe())
    return WaitOutcome(payload["status"], batch_id, batch, payload["reason"])


def _xcom(batches: list[Batch], one: bool) -> XCom:
    values = [b.to_xcom() for b in batches]
    return values[0] if one else values


class PortkeyCreateBatchOperator(BaseOperator):
    """Upload batch input, create a Portkey batch, and optionally wait until it finishes.

    The batch id is pushed to XCom (key ``batch_id``) as soon as the batch exists, before any
    wait, so a teardown or failure callback can cancel it even if this task dies waiting.
    The return value (XCom ``return_value``) is the batch as JSON: as created, or as finished
    when ``wait_for_completion``.

    This task owns its batch: when it is killed (SIGTERM, ``execution_timeout``, a user marking
    it failed) it cancels the batch (``cancel_on_kill``), and when its own wait times out it
    cancels it too (``cancel_on_timeout``).

    A task retry uploads the input again and creates a new batch: Portkey has no idempotency
    key for batches. The earlier try's batch was cancelled if that try was killed or timed
    out while waiting; if it failed for another reason after the batch was created, cancel it
    with a teardown (``PortkeyCancelBatchOperator(...).as_teardown(setups=...)``).

    :param input: the requests: a list of dicts (``custom_id``, ``method``, ``url``, ``body``),
        a local JSONL path, or an ObjectStoragePath. A path is templated; the requests
        themselves are data and are never rendered, so a prompt may hold ``{{ }}`` or
        ``{% %}`` (to fill prompts from the context, build the list in a ``@task``).
    :param endpoint: the endpoint every request goes to (templated).
    :param completion_window: the provider's completion window (templated).
    :param metadata: metadata for the batch (templated); the Airflow dag, run and task ids are
        added as ``airflow_dag_id``, ``airflow_run_id`` and ``airflow_task_id``.
    :param portkey_conn_id: the Portkey connection (templated).
    :param wait_for_completion: wait until the batch reaches a terminal status.
    :param poll_interval: seconds between polls while waiting.
    :param timeout: seconds to wait before giving up (and cancelling, see cancel_on_timeout).
    :param deferrable: wait in the triggerer instead of a worker slot. Defaults to
        ``[operators] default_deferrable``.
    :param success_statuses: statuses that end the wait as success (default ``completed``).
    :param failure_statuses: statuses that fail the task (default the other terminal ones).
    :param cancel_on_kill: cancel the batch when the task is killed.
    :param cancel_on_timeout: cancel the batch when the wait times out.
    :param still_waiting_interval: while waiting, a "still waiting" line is logged this often
        when nothing changes (status changes and progress are logged as they happen).
    """

    template_fields: Sequence[str] = (
        "input",
        "endpoint",
        "completion_window",
        "metadata",
        "portkey_conn_id",
    )
    operator_extra_links = (PortkeyLogsLink(),)
    ui_color = "#e4f0ff"

    def __init__(
        self,
        *,
        input: Any,
        endpoint: str = "/v1/chat/completions",
        completion_window: str = "24h",
        metadata: dict[str, str] | None = None,
        portkey_conn_id: str = DEFAULT_CONN_ID,
        wait_for_completion: bool = False,
        poll_interval: float | timedelta = 30.0,
        timeout: float | timedelta = timedelta(hours=24),
        deferrable: bool | None = None,
        success_statuses: Sequence[str] = ("completed",),
        failure_statuses: Sequence[str] = ("failed", "expired", "cancelled"),
        cancel_on_kill: bool = True,
        cancel_on_timeout: bool = True,
        still_waiting_interval: float | timedelta = DEFAULT_STILL_WAITING_EVERY,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # literal(): Airflow renders nothing inside it, so the requests reach Portkey as given.
        self.input = literal(input) if isinstance(input, list | tuple) else input
        self.endpoint = endpoint
        self.completion_window = completion_window
        self.metadata = metadata
        self.portkey_conn_id = portkey_conn_id
        self.wait_for_completion = wait_for_completion
        self.poll_interval = positive("poll_interval", poll_interval)
        self.wait_timeout = positive("timeout", timeout)
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.success_statuses = parse_status_set(success_statuses, name="success_statuses")
        self.failure_statuses = parse_status_set(failure_statuses, name="failure_statuses")
        check_status_sets(self.success_statuses, self.failure_statuses)
        self.cancel_on_kill = cancel_on_kill
        self.cancel_on_timeout = cancel_on_timeout
        self.still_waiting_interval = positive("still_waiting_interval", still_waiting_interval)
        self._owned: list[str] = []

    def execute(self, context: Any) -> dict[str, Any] | None:
        from airflow_portkey._core.batch_input import batch_metadata, upload_from
        from airflow_portkey._core.waits import WaitSpec, event_payload
        from airflow_portkey.hooks.portkey import PortkeyHook

        # Unwrapped here too: execute() may run without rendering (a unit test calls it).
        requests = self.input.value if isinstance(self.input, _LiteralValue) else self.input
        upload = upload_from(requests)  # checked before any request
        metadata = batch_metadata(self.metadata, _airflow_ids(context))
        hook = PortkeyHook(self.portkey_conn_id)
        file = hook.upload_file(upload.content, filename=upload.filename)
        batch = hook.create_batch(
            file["id"],
            endpoint=self.endpoint,
            completion_window=self.completion_window,
            metadata=metadata,
        )
        self._owned = [batch.id]
        ti = context.get("ti") if isinstance(context, dict) or hasattr(context, "get") else None
        if ti is not None:
            ti.xcom_push(key="batch_id", value=batch.id)
        self.log.info("Created batch %s from file %s (%s)", batch.id, file["id"], self.endpoint)
        if hook.trace_id:
            self.log.info("Find it in Portkey's logs by trace id %s", hook.trace_id)
        if not self.wait_for_completion:
            return batch.to_xcom()
        deadline = time.time() + self.wait_timeout
        spec = WaitSpec(
            batch.id,
            success=self.success_statuses,
            failure=self.failure_statuses,
            deadline=deadline,
            poll_interval=self.poll_interval,
            still_waiting_every=self.still_waiting_interval,
        )
        if self.deferrable:
            from airflow_portkey.triggers.batch import PortkeyBatchTrigger

            self.defer(
                trigger=PortkeyBatchTrigger(
                    batch.id,
                    portkey_conn_id=self.portkey_conn_id,
                    deadline=deadline,
                    poll_interval=self.poll_interval,
                    success_statuses=[s.value for s in self.success_statuses],
                    failure_statuses=[s.value for s in self.failure_statuses],
                    cancel_on_kill=self.cancel_on_kill,
                    trace_id=hook.trace_id,
                    metadata=hook.trace_metadata,
                    first_poll_delay=self.poll_interval,
                    still_waiting_interval=self.still_waiting_interval,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.wait_timeout) + DEFER_TIMEOUT_MARGIN,
            )
        (outcome,) = wait_many(hook, [spec])
        return self._conclude(event_payload([outcome]))

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger: the batch id comes from the event."""
        return self._conclude(read_event(event))

    def _conclude(self, payload: dict[str, Any]) -> dict[str, Any]:
        return conclude(
            payload, on_timeout=self._cancel_after_timeout, timeout_error=PortkeyBatchTimeoutError
        )

    def _cancel_after_timeout(self, batch_id: str) -> None:
        cancel_after_timeout(
            self.portkey_conn_id, batch_id, enabled=self.cancel_on_timeout, log=self.log
        )

    def on_kill(self) -> None:
        if self.cancel_on_kill and self._owned:
            cancel_now(self.portkey_conn_id, self._owned, self.log)


class PortkeyBatchResultsOperator(BaseOperator):
    """Download a finished batch's output (and its error file, if any), streaming.

    The XCom value is ``{"batch_id", "output_path", "output_bytes", "error_path",
    "error_bytes"}`` with the paths as strings.

    :param batch_id: the batch (templated); a batch dict from XCom works too.
    :param output_path: where to write the output JSONL: a local path or an ObjectStoragePath
        (templated).
    :param error_path: where to write the error file, when the batch has one (templated).
    :param portkey_conn_id: the Portkey connection (templated).
    """

    template_fields: Sequence[str] = ("batch_id", "output_path", "error_path", "portkey_conn_id")
    operator_extra_links = (PortkeyLogsLink(),)

    def __init__(
        self,
        *,
        batch_id: Any,
        output_path: Any,
        error_path: Any = None,
        portkey_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id
        self.output_path = output_path
        self.error_path = error_path
        self.portkey_conn_id = portkey_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        ids = batch_ids_from(self.batch_id)
        if len(ids) != 1:
            raise PortkeyError(f"batch_id: one batch at a time, got {len(ids)}")
        from airflow_portkey.hooks.portkey import PortkeyHook

        hook = PortkeyHook(self.portkey_conn_id)
        batch = hook.get_batch(ids[0])
        if batch.status is not BatchStatus.COMPLETED and not batch.output_file_id:
            raise PortkeyError(f"Batch {batch.id} has no output yet: {batch.describe()}")
        result: dict[str, Any] = {"batch_id": batch.id, "error_path": None, "error_bytes": 0}
        result["output_bytes"] = hook.download_batch_output(batch.id, self.output_path)
        result["output_path"] = str(self.output_path)
        self.log.info("Wrote %d bytes of output to %s", result["output_bytes"], self.output_path)
        if batch.error_file_id and self.error_path is not None:
            result["error_bytes"] = hook.download_file(batch.error_file_id, self.error_path)
            result["error_path"] = str(self.error_path)
            self.log.info("Wrote %d bytes of errors to %s", result["error_bytes"], self.error_path)
        return result


def _airflow_ids(context: Any) -> dict[str, str]:
    ti = context.get("ti") if hasattr(context, "get") else None
    if ti is None:
        return {}
    return {
        "airflow_dag_id": str(ti.dag_id),
        "airflow_run_id": str(ti.run_id),
        "airflow_task_id": str(ti.task_id),
    }
