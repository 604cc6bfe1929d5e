"""Operators that act on Portkey batches."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
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
    KillSwitch,
    batch_ids_from,
    cancel_many,
    cancel_now,
    conclude,
    default_deferrable,
    failed_upstream,
    positive,
    read_event,
    run_scope_of,
    run_started_at,
    stamp_of,
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
    from airflow_portkey.hooks.portkey import PortkeyHook

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

    Recommended for cancelling on pipeline failure, as a teardown that finds by their stamp
    every batch the DAG run created (every task, try and map index, ids that never reached an
    XCom included)::

        cancel = PortkeyCancelBatchOperator(task_id="cancel", this_dag_run=True)
        submit >> work >> cancel.as_teardown(setups=submit)

    As a teardown it cancels only when the run it tears down failed (a task upstream of it
    failed or was upstream_failed) and sends no request at all otherwise, so that a batch a
    successful run left running on purpose keeps running; ``when="always"`` cancels anyway.
    A teardown does not turn a failed DAG run into a successful one.

    :param batch_id: a batch id, a list of them (e.g. a mapped task's XCom), or batch dicts
        as this provider's tasks push (templated). Optional with ``this_dag_run``.
    :param this_dag_run: also cancel every batch this DAG run created that is still running,
        found by the stamp this provider puts in each batch's metadata.
    :param when: as a teardown, ``"failed"`` (cancel only when a task it tears down did not
        succeed) or ``"always"``. Outside a teardown it always cancels.
    :param search_pages: pages of 100 recent batches to look through for ``this_dag_run``.
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
        batch_id: str | Sequence[str] | Any = None,
        this_dag_run: bool = False,
        when: str = "failed",
        search_pages: int = 5,
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
        if batch_id is None and not this_dag_run:
            raise ValueError(
                "PortkeyCancelBatchOperator needs batch_id, this_dag_run=True, or both"
            )
        if when not in ("failed", "always"):
            raise ValueError(f'when must be "failed" or "always", got {when!r}')
        if isinstance(search_pages, bool) or not isinstance(search_pages, int) or search_pages < 1:
            raise ValueError(
                f"search_pages must be a whole number of at least 1, got {search_pages!r}"
            )
        self.batch_id = batch_id
        self.this_dag_run = this_dag_run
        self.when = when
        self.search_pages = search_pages
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
        self._kill = KillSwitch()

    def execute(self, context: Any) -> XCom | None:
        given = [] if self.batch_id is None else batch_ids_from(self.batch_id)
        one = self.batch_id is not None and _is_one(self.batch_id) and not self.this_dag_run
        if self.is_teardown and self.when == "failed":
            failed, not_run = failed_upstream(self, context)
            if not failed and not not_run:
                self.log.info("Every task this teardown tears down succeeded: nothing cancelled")
                return None
            self.log.info(
                "Tearing down: %s failed%s",
                ", ".join(failed) or "an upstream task",
                f"; not run as a result: {', '.join(not_run)}" if not_run else "",
            )
        from airflow_portkey.hooks.portkey import PortkeyHook

        hook = PortkeyHook(self.portkey_conn_id, max_connections=self.max_concurrency)
        found = self._this_dag_run(hook, context) if self.this_dag_run else []
        ids = self._batch_ids = list(dict.fromkeys([*given, *found]))
        if not ids:
            self.log.info("No batch of this DAG run is running: nothing to cancel")
            return _xcom([], one=False)
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
        with self._kill.wait_phase():
            outcomes = wait_many(hook, specs)
        return self._finish(batches, outcomes, one)

    def _this_dag_run(self, hook: PortkeyHook, context: Any) -> list[str]:
        scope = run_scope_of(context)
        if scope is None:
            raise PortkeyError("this_dag_run: the task context names no DAG run")
        found = hook.find_batches(
            lambda b: scope.holds(b) and not b.is_terminal,
            not_before=run_started_at(context),
            max_pages=self.search_pages,
        )
        self.log.info(
            "Found %d running batch(es) of DAG run %s by their stamp", len(found), scope.run_id
        )
        return [b.id for b in found]

    def execute_complete(self, context: Any, event: dict[str, Any]) -> XCom:
        """Resume after the trigger: every id and batch comes from the event."""
        payload = read_event(event)
        outcomes = [
            _outcome(batch_id, batch, payload)
            for batch_id, batch in zip(payload["batch_ids"], payload["batches"], strict=True)
        ]
        one = self.batch_id is not None and _is_one(self.batch_id) and not self.this_dag_run
        return self._finish([], outcomes, one)

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
        cancel_now(self.portkey_conn_id, self._batch_ids, self.log, "Task killed")
        self._kill.stop("waiting for the cancelled batches to stop")


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

    The batch id is recorded (``task_state_store``) and pushed to XCom (key ``batch_id``) as
    soon as the batch exists, before any wait. The return value (XCom ``return_value``) is the
    batch as JSON: as created, or as finished when ``wait_for_completion``.

    **This task owns its batch.** Every bad end after the create cancels it: the wait fails
    (``cancel_on_error``), times out (``cancel_on_timeout``), the task is killed (SIGTERM, a
    user marking it failed, ``execution_timeout``: ``cancel_on_kill``), or anything else goes
    wrong after the create (``cancel_on_error``). A cancel that fails is logged and the
    original error is raised. After a kill the task's own wait stops at once.

    **A retry re-attaches instead of submitting again** (``reattach``): it waits again for a
    batch an earlier try left running, returns one that completed, and submits a new one only
    after ``failed``, ``expired`` or ``cancelled``. The earlier batch is the one recorded in
    ``task_state_store``, or, if its id was never recorded (the worker died right after the
    create, or the create's answer was lost), the one stamped with this task instance in its
    metadata among the recent batches. A create whose answer is lost on the way looks for its
    batch by that stamp too, in the same try, instead of failing.

    :param input: the requests: a list of dicts (``custom_id``, ``method``, ``url``, ``body``),
        a local JSONL path, or an ObjectStoragePath. A path is templated; the requests
        themselves are data and are never rendered, so a prompt may hold ``{{ }}`` or
        ``{% %}`` (to fill prompts from the context, build the list in a ``@task``).
    :param endpoint: the endpoint every request goes to (templated).
    :param completion_window: the provider's completion window (templated).
    :param metadata: metadata for the batch (templated); the stamp of the task instance is
        added as ``airflow_dag_id``, ``airflow_run_id``, ``airflow_task_id`` and
        ``airflow_map_index`` (so at most 12 pairs of your own).
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
    :param cancel_on_error: cancel the batch when the wait fails (Portkey unreachable, an
        answer it cannot read) or the task fails after the create for any other reason. Turn
        it off together with ``retries`` to let a retry re-attach to a batch whose wait
        failed, rather than cancel it and submit a new one.
    :param reattach: on a retry, look for this task instance's earlier batch before creating.
    :param search_pages: pages of 100 recent batches to look through for the stamp.
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
    # The task_state_store key holding the batch id; renaming it breaks in-flight retries.
    state_key = "portkey_batch_id"

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
        cancel_on_error: bool = True,
        reattach: bool = True,
        search_pages: int = 5,
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
        self.cancel_on_error = cancel_on_error
        self.reattach = reattach
        if isinstance(search_pages, bool) or not isinstance(search_pages, int) or search_pages < 1:
            raise ValueError(
                f"search_pages must be a whole number of at least 1, got {search_pages!r}"
            )
        self.search_pages = search_pages
        self._owned: list[str] = []
        self._cancelled = False
        self._kill = KillSwitch()

    # -- execute -----------------------------------------------------------------------------

    def execute(self, context: Any) -> dict[str, Any] | None:
        from airflow_portkey._core.batch_input import batch_metadata, upload_from
        from airflow_portkey.hooks.portkey import PortkeyHook

        # Unwrapped here too: execute() may run without rendering (a unit test calls it).
        requests = self.input.value if isinstance(self.input, _LiteralValue) else self.input
        upload = upload_from(requests)  # checked before any request
        stamp = stamp_of(context)
        metadata = batch_metadata(self.metadata, stamp.metadata() if stamp else {})
        hook = PortkeyHook(self.portkey_conn_id)
        earlier = self._earlier_batch(hook, context) if self.reattach else None
        if earlier is not None and earlier[0] == "done":
            batch = earlier[1]
            self._remember(context, batch.id)
            self.log.info("An earlier try's batch already finished; not submitting again")
            return self._finished(batch)
        if earlier is not None:
            batch = earlier[1]
            self.log.info("Re-attaching to batch %s, which an earlier try started", batch.id)
        else:
            batch = self._create(hook, upload, metadata, context)
            self.log.info("Created batch %s (%s)", batch.id, self.endpoint)
        self._owned = [batch.id]
        with self._owning(batch.id):
            self._remember(context, batch.id)
            if hook.trace_id:
                self.log.info("Find it in Portkey's logs by trace id %s", hook.trace_id)
            if self._kill.killed:
                self._kill.stop("creating the batch")
            if not self.wait_for_completion:
                return batch.to_xcom()
            return self._wait(hook, batch.id, context)

    def _earlier_batch(self, hook: PortkeyHook, context: Any) -> tuple[str, Batch] | None:
        """An earlier try's batch to re-attach to or return, or None to create one."""
        from airflow_portkey._core.ownership import pick_own, resume_choice

        ti = context.get("ti") if hasattr(context, "get") else None
        recorded = self._recorded_id(context)
        if recorded:
            batch = hook.get_batch(recorded)
            choice = resume_choice(batch, self.success_statuses, self.failure_statuses)
            self.log.info("An earlier try recorded batch %s: %s", recorded, batch.describe())
            if choice != "resubmit":
                return choice, batch
        if (getattr(ti, "try_number", 1) or 1) <= 1:
            return None  # a first try has no earlier batch whose id could have been lost
        found = [b for b in self._stamped(hook, context) if b.id != recorded]
        choice, stamped = pick_own(found, self.success_statuses, self.failure_statuses)
        if stamped is None:
            self.log.info("No earlier batch of this task instance to re-attach to; submitting")
            return None
        self.log.info("Found batch %s by this task instance's stamp", stamped.id)
        return choice, stamped

    def _stamped(self, hook: PortkeyHook, context: Any) -> list[Batch]:
        stamp = stamp_of(context)
        if stamp is None:
            return []
        return hook.find_batches(
            stamp.owns, not_before=run_started_at(context), max_pages=self.search_pages
        )

    def _create(
        self, hook: PortkeyHook, upload: Any, metadata: dict[str, str], context: Any
    ) -> Batch:
        from airflow_portkey.exceptions import PortkeyTransportError

        file = hook.upload_file(upload.content, filename=upload.filename)
        try:
            return hook.create_batch(
                file["id"],
                endpoint=self.endpoint,
                completion_window=self.completion_window,
                metadata=metadata,
            )
        except PortkeyTransportError as error:
            # No answer: Portkey may have created the batch. Find it by its stamp rather than
            # fail (a retry would find it too) or create it again (a second, billed batch).
            mine = [
                b for b in self._stamped(hook, context) if b.raw.get("input_file_id") == file["id"]
            ]
            if not mine:
                raise
            self.log.warning(
                "The create's answer was lost (%s); found batch %s by its stamp", error, mine[0].id
            )
            return mine[0]

    def _wait(self, hook: PortkeyHook, batch_id: str, context: Any) -> dict[str, Any]:
        from airflow_portkey._core.waits import WaitSpec, event_payload

        deadline = time.time() + self.wait_timeout
        if self.deferrable:
            # Airflow 3.3.2 does not apply execution_timeout to a deferred task (the deferral's
            # own timeout alone ends it), so the trigger's deadline stops at it: its timeout
            # event then cancels the batch as a timeout of the task's own wait does.
            deadline = min(deadline, self._execution_deadline(context))
            from airflow_portkey.triggers.batch import PortkeyBatchTrigger

            self.defer(
                trigger=PortkeyBatchTrigger(
                    batch_id,
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
        spec = WaitSpec(
            batch_id,
            success=self.success_statuses,
            failure=self.failure_statuses,
            deadline=deadline,
            poll_interval=self.poll_interval,
            still_waiting_every=self.still_waiting_interval,
        )
        with self._kill.wait_phase():
            (outcome,) = wait_many(hook, [spec])
        return self._conclude(event_payload([outcome]))

    def _execution_deadline(self, context: Any) -> float:
        """Unix seconds at which this try's execution_timeout runs out (inf without one)."""
        ti = context.get("ti") if hasattr(context, "get") else None
        started: Any = getattr(ti, "start_date", None)
        if self.execution_timeout is None or started is None:
            return float("inf")
        return float(started.timestamp()) + float(self.execution_timeout.total_seconds())

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger: the batch id comes from the event (or the record)."""
        named = event.get("batch_id") if isinstance(event, dict) else None
        batch_id = named if isinstance(named, str) and named else self._recorded_id(context)
        self._owned = [batch_id] if batch_id else []
        with self._owning(batch_id):
            return self._conclude(read_event(event))

    def resume_execution(
        self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any
    ) -> Any:
        # A deferral that ends without the trigger's event (the task's execution_timeout,
        # or the framework's deferral timeout) resumes here and fails: cancel first.
        if next_method == "execute_complete":
            return super().resume_execution(next_method, next_kwargs, context)
        recorded = self._recorded_id(context)
        self._owned = [recorded] if recorded else []
        with self._owning(recorded):
            return super().resume_execution(next_method, next_kwargs, context)

    def _finished(self, batch: Batch) -> dict[str, Any]:
        from airflow_portkey._core.waits import WaitOutcome, event_payload

        outcome = WaitOutcome("success", batch.id, batch, batch.describe())
        return self._conclude(event_payload([outcome]))

    def _conclude(self, payload: dict[str, Any]) -> dict[str, Any]:
        # The timeout's cancel is _owning's to decide, with every other bad end.
        return conclude(payload, on_timeout=lambda _: None, timeout_error=PortkeyBatchTimeoutError)

    # -- ownership ---------------------------------------------------------------------------

    def _recorded_id(self, context: Any) -> str | None:
        store = context.get("task_state_store") if hasattr(context, "get") else None
        if store is None:
            return None
        value = store.get(self.state_key)
        return value if isinstance(value, str) and value else None

    def _remember(self, context: Any, batch_id: str) -> None:
        """Record the id for a retry (task_state_store) and for a teardown (XCom), at once."""
        store = context.get("task_state_store") if hasattr(context, "get") else None
        if store is not None:
            store.set(self.state_key, batch_id)
        ti = context.get("ti") if hasattr(context, "get") else None
        if ti is not None:
            ti.xcom_push(key="batch_id", value=batch_id)

    @contextlib.contextmanager
    def _owning(self, batch_id: str | None) -> Iterator[None]:
        """Cancel ``batch_id`` on every bad end of what runs inside, by the switches."""
        from airflow.sdk.exceptions import TaskDeferred

        try:
            yield
        except TaskDeferred:
            raise
        except BaseException as error:
            if batch_id is not None:
                self._cancel_for(batch_id, error)
            raise

    def _cancel_for(self, batch_id: str, error: BaseException) -> None:
        from airflow_portkey.exceptions import PortkeyBatchFailedError

        if isinstance(error, PortkeyBatchFailedError):
            return  # the batch has already ended
        if isinstance(error, PortkeyBatchTimeoutError):
            switch, why = "cancel_on_timeout", "Timed out waiting"
        elif _is_kill(error):
            switch, why = "cancel_on_kill", f"Task stopped ({type(error).__name__})"
        else:
            switch, why = (
                "cancel_on_error",
                f"Task failed after the create ({type(error).__name__})",
            )
        self._cancel(batch_id, switch, why)

    def _cancel(self, batch_id: str, switch: str, why: str) -> None:
        if self._cancelled:
            return
        if not getattr(self, switch):
            self.log.warning("%s; batch %s left running (%s is off)", why, batch_id, switch)
            return
        self._cancelled = True
        cancel_now(self.portkey_conn_id, [batch_id], self.log, f"{why} ({switch})")

    def on_kill(self) -> None:
        for batch_id in self._owned:
            self._cancel(batch_id, "cancel_on_kill", "Task killed")
        self._kill.stop(f"waiting for batch {', '.join(self._owned)}")


def _is_kill(error: BaseException) -> bool:
    """A task stopped from outside: SIGTERM, execution_timeout, a deferral that timed out."""
    from airflow.sdk.exceptions import (
        AirflowTaskTerminated,
        AirflowTaskTimeout,
        TaskDeferralTimeout,
    )

    return isinstance(
        error,
        AirflowTaskTerminated
        | AirflowTaskTimeout
        | TaskDeferralTimeout
        | KeyboardInterrupt
        | SystemExit,
    )


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
