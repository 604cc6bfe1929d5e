"""What the sensor and the operators share: arguments, deferral, events, cancelling many.

Imported when a DAG file is parsed, so the hook, the protocol and the wait plans load only
inside the functions that a running task calls.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_portkey.exceptions import PortkeyConfigError, PortkeyError

if TYPE_CHECKING:
    from airflow_portkey._core.ownership import RunScope, Stamp
    from airflow_portkey._core.waits import WaitOutcome, WaitSpec
    from airflow_portkey.batches import Batch
    from airflow_portkey.hooks.portkey import PortkeyHook

log = logging.getLogger(__name__)
T = TypeVar("T")


def default_deferrable() -> bool:
    """``[operators] default_deferrable``, as Airflow's own operators read it."""
    from airflow.sdk.configuration import conf

    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))


def positive(name: str, value: float | timedelta) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(seconds)


def batch_ids_from(value: object, *, field: str = "batch_id") -> list[str]:
    """One id or many, from an argument, a rendered template or a (mapped) XCom.

    Accepts a string, a batch dict (as this provider's tasks push to XCom), or a sequence of
    either; a rendered template that reads as a list literal (``"['a', 'b']"``) counts as one.
    Every id is checked before any request is sent.
    """
    if isinstance(value, str) and value.strip().startswith("["):
        with contextlib.suppress(ValueError, SyntaxError):
            value = ast.literal_eval(value.strip())
    from airflow_portkey._core.ids import check_batch_id

    items: Sequence[Any]
    if isinstance(value, str | Mapping) or value is None:
        items = [value]
    elif isinstance(value, Sequence) or hasattr(value, "__iter__"):
        items = list(value)  # type: ignore[call-overload]
    else:
        items = [value]
    ids = []
    for item in items:
        if isinstance(item, Mapping):
            item = item.get("id")
        try:
            ids.append(check_batch_id(item))
        except PortkeyConfigError as error:
            raise PortkeyConfigError(f"{field}: {error}") from None
    if not ids:
        raise PortkeyConfigError(f"{field} is an empty list: there is no batch to act on")
    return list(dict.fromkeys(ids))  # the same id twice would be cancelled twice


def read_event(event: object, expected_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Check a trigger event before acting on it; a malformed one fails the task clearly."""
    from airflow_portkey._core.waits import EVENT_STATUSES

    if not isinstance(event, Mapping):
        raise PortkeyError(f"The Portkey trigger sent no usable event: {event!r:.200}")
    status = event.get("status")
    if status not in EVENT_STATUSES:
        raise PortkeyError(f"The Portkey trigger sent an event with unknown status {status!r}")
    ids = event.get("batch_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise PortkeyError("The Portkey trigger's event names no batch ids")
    if expected_ids is not None and list(expected_ids) != ids:
        raise PortkeyError(
            f"The Portkey trigger's event is for batches {ids}, not {list(expected_ids)}"
        )
    batches = event.get("batches")
    if not isinstance(batches, list) or len(batches) != len(ids):
        raise PortkeyError("The Portkey trigger's event does not carry one batch per id")
    if status in {"success", "failure"} and not all(isinstance(b, Mapping) for b in batches):
        raise PortkeyError(f"The Portkey trigger's {status} event lacks a batch")
    return dict(event)


def _in_task(hook: PortkeyHook, work: Callable[[], Awaitable[T]]) -> T:
    """Run the hook's async work from a (sync) task, closing its client afterwards.

    The connection is loaded first, in the task, so that the event loop never waits on it.
    """
    hook.settings  # noqa: B018 - loads the connection
    interrupted: list[BaseException] = []

    async def run() -> T:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()

        def on_callback_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            error = context.get("exception")
            if main is not None and "handle" in context and not isinstance(error, Exception):
                # A signal handler's exception (Airflow's execution_timeout, its SIGTERM) that
                # landed inside one of the loop's callbacks: asyncio would only log it, the
                # callback's future would never be resolved and the wait would hang for ever.
                assert error is not None
                interrupted.append(error)
                main.cancel()
                return
            loop.default_exception_handler(context)

        loop.set_exception_handler(on_callback_error)
        try:
            return await work()
        finally:
            await hook.aclose()

    try:
        return asyncio.run(run())
    except asyncio.CancelledError:
        if interrupted:
            raise interrupted[0] from None
        raise


def cancel_many(hook: PortkeyHook, batch_ids: Sequence[str]) -> list[Batch | BaseException]:
    """Cancel batches concurrently from a task; failures come back in place of the batch."""
    return _in_task(hook, lambda: hook.acancel_batches(batch_ids))


def wait_many(hook: PortkeyHook, specs: Sequence[WaitSpec]) -> list[WaitOutcome]:
    """Wait for batches concurrently from a task (the trigger's wait, run in the worker)."""
    return _in_task(hook, lambda: hook.await_batches(specs))


def cancel_now(portkey_conn_id: str, batch_ids: Sequence[str], log: Any, why: str) -> bool:
    """Cancel batches with a fresh, synchronous hook; log, never raise: a cancel that fails
    must not hide the error that led to it (and ``on_kill`` runs in a signal handler, which
    may interrupt an event loop or a request of the task's own hook). True if all went."""
    from airflow_portkey.hooks.portkey import PortkeyHook

    every = True
    hook = PortkeyHook(portkey_conn_id)
    try:
        for batch_id in batch_ids:
            try:
                log.warning("%s: cancelling batch %s", why, batch_id)
                hook.cancel_batch(batch_id)  # logs what the cancel did
            except Exception as error:  # keep going: every other batch must still be cancelled
                every = False
                log.error("%s: could not cancel batch %s: %s", why, batch_id, error)
    finally:
        hook.close()
    return every


class KillSwitch:
    """Stops a task's own wait once Airflow has called ``on_kill``.

    Airflow 3.3.2's SIGTERM handler only calls ``on_kill`` and lets ``execute`` run on, so a
    task told to stop would keep polling (and its worker slot) until the batch ends. The
    handler runs in the task's main thread, between two bytecodes of whatever ``execute`` is
    doing: raising from it stops a wait at once, and only a wait, never the code around it.
    """

    def __init__(self) -> None:
        self.waiting = False
        self.killed = False

    @contextlib.contextmanager
    def wait_phase(self) -> Iterator[None]:
        if self.killed:
            self.stop("starting to wait")
        self.waiting = True
        try:
            yield
        finally:
            self.waiting = False

    def stop(self, what: str) -> None:
        """Called from ``on_kill``: end the task as terminated if it is waiting."""
        self.killed = True
        if self.waiting:
            self.waiting = False
            from airflow.sdk.exceptions import AirflowTaskTerminated

            raise AirflowTaskTerminated(f"Task killed while {what}: its wait stops here")


def stamp_of(context: Any) -> Stamp | None:
    """The task instance that is running, as batches are stamped with it."""
    from airflow_portkey._core.ownership import Stamp

    ti = context.get("ti") if hasattr(context, "get") else None
    if ti is None:
        return None
    map_index = getattr(ti, "map_index", -1)
    return Stamp(
        str(ti.dag_id),
        str(ti.run_id),
        str(ti.task_id),
        map_index if isinstance(map_index, int) and map_index >= 0 else -1,
    )


def run_scope_of(context: Any) -> RunScope | None:
    """The DAG run a task or a callback runs for."""
    from airflow_portkey._core.ownership import RunScope

    if not hasattr(context, "get"):
        return None
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    dag_id = getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", None)
    run_id = getattr(ti, "run_id", None) or getattr(dag_run, "run_id", None)
    if not (dag_id and run_id):
        return None
    return RunScope(str(dag_id), str(run_id))


def failed_upstream(task: Any, context: Any) -> tuple[list[str], list[str]]:
    """The tasks upstream of a teardown (other teardowns aside) that did not succeed in this
    run: those that failed, and those that did not run because an upstream task failed."""
    ti = context["ti"]
    dag = task.dag
    upstream = [
        task_id
        for task_id in task.get_flat_relative_ids(upstream=True)
        if not getattr(dag.get_task(task_id), "is_teardown", False)
    ]
    if not upstream:
        return [], []
    states = ti.get_task_states(dag_id=ti.dag_id, task_ids=upstream, run_ids=[ti.run_id])
    by_state: dict[str, list[str]] = {"failed": [], "upstream_failed": []}
    for name, state in (states.get(ti.run_id) or {}).items():
        by_state.get(str(getattr(state, "value", state)), []).append(name)
    return sorted(by_state["failed"]), sorted(by_state["upstream_failed"])


# Portkey's clock and Airflow's may disagree: look this much further back than the run began.
_CLOCK_SKEW_S = 600.0
_FALLBACK_SEARCH_S = 7 * 24 * 3600.0


def run_started_at(context: Any) -> float:
    """Unix seconds before which no batch of this DAG run can have been created."""
    import time

    dag_run = context.get("dag_run") if hasattr(context, "get") else None
    for name in ("start_date", "queued_at", "run_after", "logical_date"):
        value = getattr(dag_run, name, None)
        if value is not None and hasattr(value, "timestamp"):
            return float(value.timestamp()) - _CLOCK_SKEW_S
    return time.time() - _FALLBACK_SEARCH_S


def conclude(
    payload: Mapping[str, Any],
    *,
    on_timeout: Any,
    timeout_error: type[Exception],
) -> dict[str, Any]:
    """Act on one batch's wait result (a trigger event, or the same built in the worker).

    Success returns the batch for XCom; failure raises PortkeyBatchFailedError with the
    batch's errors; a timeout calls ``on_timeout(batch_id)`` (which may cancel) and raises
    ``timeout_error``; an error raises PortkeyError with the trigger's reason.
    """
    from airflow_portkey.batches import Batch
    from airflow_portkey.exceptions import PortkeyBatchFailedError

    batch_id, status, reason = payload["batch_id"], payload["status"], payload["reason"]
    raw: Mapping[str, Any] = payload.get("batch") or {}
    if status == "success":
        batch = Batch.from_xcom(raw)
        if batch.partial:
            log.warning("Batch %s completed only in part", batch.id)
        log.info("Batch finished: %s", batch.describe())
        return batch.to_xcom()
    if status == "failure":
        raise PortkeyBatchFailedError(failure_message(Batch.from_xcom(raw)))
    if status == "timeout":
        on_timeout(batch_id)
        raise timeout_error(f"Batch {batch_id}: {reason}")
    raise PortkeyError(f"Waiting for batch {batch_id} failed: {reason}")


def failure_message(batch: Batch) -> str:
    errors = "; ".join(batch.errors[:5]) or "Portkey reported no error details"
    return (
        f"Batch {batch.id} ended {batch.status.value} "
        f"(provider said {batch.raw_status!r}): {errors}"
    )


def cancel_after_timeout(portkey_conn_id: str, batch_id: str, *, enabled: bool, log: Any) -> None:
    """What a task that timed out waiting does with the batch: cancel it, or say it left it."""
    if not enabled:
        log.warning("Timed out; batch %s left running (cancel_on_timeout is off)", batch_id)
        return
    cancel_now(portkey_conn_id, [batch_id], log, "Timed out (cancel_on_timeout)")
